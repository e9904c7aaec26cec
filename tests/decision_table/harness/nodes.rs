//! The nodes of a row (standalone, or explicit nodes with GPU counts) and the claims already
//! committed on them.

use std::collections::BTreeMap;

use gpushare::core::claim::{Assigned, Claim, Share};
use gpushare::core::domain::{GpuIndex, Percentage};
use gpushare::core::inventory::{Node, Placement};
use gpushare::core::pods::PodCount;
use gpushare::core::workload::{Kind, WorkloadKey};

pub enum Nodes {
    /// `Inventory::standalone(--gpus)`.
    Standalone(Option<u32>),
    Explicit(Vec<Node>),
}

/// A node whose GPU count the cluster side read from its `nvidia.com/gpu.count` label.
pub fn node(name: &str, pool: &str, gpus: Option<u32>) -> Node {
    let mut labels = BTreeMap::from([("pool".to_string(), pool.to_string())]);
    if let Some(n) = gpus {
        labels.insert("nvidia.com/gpu.count".into(), n.to_string());
    }
    Node {
        name: name.into(),
        labels: labels.into(),
        forced_gpus: None,
        reported_gpus: gpus,
        matches_any_placement: false,
    }
}

/// Two edge nodes: `node-a` (pool a) with 2 GPUs, `node-b` (pool b) with 1.
pub fn two_nodes() -> Nodes {
    Nodes::Explicit(vec![
        node("node-a", "a", Some(2)),
        node("node-b", "b", Some(1)),
    ])
}

/// Two edge nodes with 2 GPUs each.
pub fn two_full_nodes() -> Nodes {
    Nodes::Explicit(vec![
        node("node-a", "a", Some(2)),
        node("node-b", "b", Some(2)),
    ])
}

/// A module already admitted: `mps_pct` is per replica and makes it an mps module.
/// A module already admitted, keyed `namespace/name` (a Deployment) or `namespace/Kind/name`:
/// `mps_pct` is per pod and makes it an mps module; `clients` is pods x selected containers.
pub fn committed(key: &str, gpu: u32, mps_pct: Option<u64>, pods: u32, clients: u32) -> Claim {
    let parts: Vec<&str> = key.split('/').collect();
    let (namespace, kind, name) = match parts[..] {
        [namespace, name] => (namespace, Kind::Deployment, name),
        [namespace, kind, name] => (
            namespace,
            Kind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .expect("a workload kind"),
            name,
        ),
        _ => panic!("namespace/name or namespace/Kind/name: {key}"),
    };
    assert!(
        pods > 0 && clients.is_multiple_of(pods),
        "clients are pods x containers"
    );
    let share = match mps_pct {
        Some(p) => Share::Mps(Percentage::new(p).expect("1..=100")),
        None => Share::TimeSlicing,
    };
    Claim {
        key: WorkloadKey::new(kind, namespace, name),
        placement: Placement::default(),
        assigned: Assigned {
            gpu: GpuIndex(gpu),
            share,
        },
        pods: PodCount::fixed(pods),
        containers: clients / pods,
        extra_percentage: 0,
    }
}

pub fn pinned(mut claim: Claim, pool: &str) -> Claim {
    claim.placement.node_selector = [("pool", pool)].into_iter().collect();
    claim
}
