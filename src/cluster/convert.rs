//! Turns Kubernetes objects into the core's terms: a Node's GPU count and labels, and a stored
//! workload of any kind as the kind-neutral view, whose claim the core reads back from the
//! annotations gpushare wrote on it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::core::ApiResource;

use super::stored::StoredWorkload;
use crate::core::claim::Claim;
use crate::core::inventory::Node;
use crate::core::workload::{Kind, Workload, WorkloadKey};

pub const GPU_COUNT_LABEL: &str = "nvidia.com/gpu.count";
pub const GPU_REPLICAS_LABEL: &str = "nvidia.com/gpu.replicas";
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// A node with the GPU count it reports: label `nvidia.com/gpu.count`, else allocatable
/// `nvidia.com/gpu` divided by `nvidia.com/gpu.replicas` (time-sliced device plugins multiply it).
pub fn node(object: &K8sNode) -> Node {
    let labels: BTreeMap<String, String> = object.metadata.labels.clone().unwrap_or_default();
    let from_label = labels
        .get(GPU_COUNT_LABEL)
        .and_then(|v| v.trim().parse::<u32>().ok());
    let from_allocatable = || {
        let allocatable = object
            .status
            .as_ref()?
            .allocatable
            .as_ref()?
            .get(GPU_RESOURCE)?;
        let total: u32 = allocatable.0.trim().parse().ok()?;
        let replicas = labels
            .get(GPU_REPLICAS_LABEL)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|r| *r > 0);
        Some(total / replicas.unwrap_or(1))
    };
    Node {
        name: object.metadata.name.clone().unwrap_or_default(),
        reported_gpus: from_label.or_else(from_allocatable),
        forced_gpus: None,
        matches_any_placement: false,
        labels,
    }
}

/// The API resource of a workload kind, for a dynamic watch.
pub fn api_resource(kind: Kind) -> ApiResource {
    let api_version = match kind.group() {
        "" => kind.version().to_string(),
        group => format!("{group}/{}", kind.version()),
    };
    ApiResource {
        group: kind.group().into(),
        version: kind.version().into(),
        api_version,
        kind: kind.as_str().into(),
        plural: kind.plural().into(),
    }
}

/// The key of a stored object.
pub fn key(kind: Kind, object: &StoredWorkload) -> WorkloadKey {
    let meta = &object.raw.metadata;
    let namespace = match meta.namespace.as_str() {
        "" => "default",
        namespace => namespace,
    };
    WorkloadKey::new(kind, namespace, &meta.name)
}

/// A stored object in the core's terms.
pub fn workload(kind: Kind, object: StoredWorkload) -> Workload {
    let mut raw = object.raw;
    raw.metadata.present = true;
    Workload::from_raw(kind, raw)
}

/// What a stored workload holds (`None`: nothing).
pub fn claim(kind: Kind, object: StoredWorkload) -> Option<Claim> {
    Claim::of_stored(&workload(kind, object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_from(json: serde_json::Value) -> Node {
        node(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn gpu_count_prefers_the_label_then_allocatable_over_replicas() {
        let labelled = node_from(serde_json::json!({
            "metadata": {"name": "a", "labels": {"nvidia.com/gpu.count": "2"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}}
        }));
        assert_eq!(labelled.reported_gpus, Some(2));
        let sliced = node_from(serde_json::json!({
            "metadata": {"name": "b", "labels": {"nvidia.com/gpu.replicas": "4"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}}
        }));
        assert_eq!(sliced.reported_gpus, Some(2));
        let bare = node_from(
            serde_json::json!({"metadata": {"name": "c"}, "status": {"allocatable": {"cpu": "4"}}}),
        );
        assert_eq!(bare.reported_gpus, None);
    }

    #[test]
    fn a_watched_object_reads_like_an_admitted_one() {
        let object: StoredWorkload = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "m", "namespace": "ns", "annotations": {
                "gpushare.io/containers": "a,b",
                "gpushare.io/assigned-gpu": "1", "gpushare.io/assigned-mode": "mps",
                "gpushare.io/assigned-mps-percentage": "20"}},
            "spec": {"parallelism": 3, "template": {"spec": {"containers": [
                {"name": "a"}, {"name": "b"}, {"name": "c"}], "nodeSelector": {"edge": "1"}}}}
        }))
        .unwrap();
        let job = claim(Kind::Job, object).unwrap();
        assert_eq!(job.key.to_string(), "ns/Job/m");
        assert_eq!((job.clients(), job.committed_percentage()), (6, 60));
        assert_eq!(
            job.placement.node_selector.get("edge").map(String::as_str),
            Some("1")
        );
        let owned: StoredWorkload = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "annotations": {"gpushare.io/assigned-gpu": "0",
                "gpushare.io/assigned-mode": "time-slicing"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap();
        assert_eq!(
            claim(Kind::Pod, owned),
            None,
            "the controller counts, not its pods"
        );
        assert_eq!(api_resource(Kind::CronJob).api_version, "batch/v1");
        assert_eq!(api_resource(Kind::Pod).api_version, "v1");
    }
}
