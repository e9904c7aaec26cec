//! `gpushare status`: the per-node, per-GPU usage table, with each module's share of each GPU and
//! the pods running now, for people (`table`) and machines (`json`).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::core::inventory::{GpuRow, Inventory};
use crate::core::policy::Policy;
use crate::core::workload::WorkloadKey;

/// The pods running now, by module and node (cluster mode; unknown offline).
pub type RunningPods = HashMap<WorkloadKey, BTreeMap<String, u32>>;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    pub node: String,
    pub gpu: u32,
    pub mode: String,
    pub reserved_for_vm: bool,
    pub modules: Vec<String>,
    pub client_processes: u32,
    pub max_client_processes: u32,
    /// Committed MPS percentage (mps GPUs).
    pub committed_mps_percentage: u32,
    /// `maxMpsPercentagePerGpu`, `None` when uncapped.
    pub mps_percentage_cap: Option<u32>,
    /// Pods of these modules running on this node now; `None` when unknown (offline).
    pub running_pods: Option<u32>,
    /// Each module's share of this GPU.
    pub shares: Vec<ModuleShare>,
}

/// What one module holds of one GPU of one node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleShare {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Pods counted per candidate node (a rollout's surge included).
    pub pods: u32,
    pub client_processes: u32,
    /// The module's MPS percentage per pod (mps modules).
    pub mps_percentage: Option<u32>,
    pub committed_mps_percentage: u32,
    /// Its pods running on this node now; `None` when unknown (offline).
    pub running_pods: Option<u32>,
}

impl ModuleShare {
    /// `namespace/Kind/name`.
    pub fn module(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

pub fn rows(
    inventory: &Inventory,
    policy: &Policy,
    running: Option<&RunningPods>,
) -> Vec<StatusRow> {
    inventory
        .table(policy)
        .into_iter()
        .map(|row| status_row(row, inventory, policy, running))
        .collect()
}

fn status_row(
    row: GpuRow,
    inventory: &Inventory,
    policy: &Policy,
    running: Option<&RunningPods>,
) -> StatusRow {
    let GpuRow {
        node,
        gpu,
        mode,
        reserved,
        usage,
    } = row;
    let running_of = |key: &WorkloadKey| {
        running.map(|running| {
            running
                .get(key)
                .and_then(|nodes| nodes.get(&node))
                .copied()
                .unwrap_or(0)
        })
    };
    let shares: Vec<ModuleShare> = usage
        .modules
        .iter()
        .filter_map(|key| inventory.claim(key))
        .map(|claim| ModuleShare {
            namespace: claim.key.namespace.to_string(),
            kind: claim.key.kind.to_string(),
            name: claim.key.name.to_string(),
            pods: claim.pods(),
            client_processes: claim.clients(),
            mps_percentage: claim
                .assigned
                .share
                .percentage()
                .map(|p| p.get() + claim.extra_percentage),
            committed_mps_percentage: claim.committed_percentage(),
            running_pods: running_of(&claim.key),
        })
        .collect();
    let running_pods = running.map(|_| shares.iter().filter_map(|s| s.running_pods).sum());
    StatusRow {
        node,
        gpu: gpu.0,
        mode: mode.to_string(),
        reserved_for_vm: reserved,
        modules: usage.modules.iter().map(ToString::to_string).collect(),
        client_processes: usage.clients,
        max_client_processes: policy.max_clients(mode),
        committed_mps_percentage: usage.percentage,
        mps_percentage_cap: policy.max_mps_percentage_per_gpu,
        running_pods,
        shares,
    }
}

/// One module's share as the table shows it: `2x50%` (mps: pods x percentage) or `2` (pods).
fn share_text(share: &ModuleShare) -> String {
    match share.mps_percentage {
        Some(p) => format!("{}x{p}%", share.pods),
        None => share.pods.to_string(),
    }
}

pub fn render_table(rows: &[StatusRow]) -> String {
    let header = [
        "NODE", "GPU", "MODE", "RESERVED", "CLIENTS", "MPS%", "RUNNING", "MODULES",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let mps = match (r.mode.as_str(), r.mps_percentage_cap) {
                ("mps", Some(cap)) => format!("{}/{cap}", r.committed_mps_percentage),
                ("mps", None) => format!("{}", r.committed_mps_percentage),
                _ => "-".into(),
            };
            let modules: Vec<String> = r
                .shares
                .iter()
                .map(|s| format!("{}({})", s.module(), share_text(s)))
                .collect();
            [
                r.node.clone(),
                r.gpu.to_string(),
                r.mode.clone(),
                if r.reserved_for_vm {
                    "vm".into()
                } else {
                    "no".into()
                },
                format!("{}/{}", r.client_processes, r.max_client_processes),
                mps,
                r.running_pods.map_or("-".into(), |n| n.to_string()),
                if modules.is_empty() {
                    "-".into()
                } else {
                    modules.join(",")
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |fields: Vec<&str>| {
        let padded: Vec<String> = fields
            .iter()
            .zip(widths)
            .map(|(f, w)| format!("{f:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
    out
}
