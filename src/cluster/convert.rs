//! Turns Kubernetes objects into the inventory's terms: a Node's GPU count and labels, and a
//! Deployment's committed allocation (from the annotations gpushare wrote on it).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use k8s_openapi::api::core::v1::Node as K8sNode;

use crate::core::annotations::{
    self, UserAnnotations, ASSIGNED_GPU, ASSIGNED_MODE, ASSIGNED_MPS_PERCENTAGE,
};
use crate::core::domain::{GpuIndex, Mode, Percentage};
use crate::core::inventory::{Module, ModuleKey, Node, Placement};
use crate::core::verdict::Assignment;
use crate::core::workload::Deployment;

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

pub fn module_key(object: &K8sDeployment) -> ModuleKey {
    ModuleKey {
        namespace: object
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: object.metadata.name.clone().unwrap_or_default(),
    }
}

/// The allocation a Deployment holds, if gpushare assigned it a GPU.
pub fn module(object: &K8sDeployment) -> Option<Module> {
    let assigned = object.metadata.annotations.as_ref()?;
    let gpu = GpuIndex(assigned.get(ASSIGNED_GPU)?.trim().parse().ok()?);
    let mode = Mode::parse(assigned.get(ASSIGNED_MODE)?.trim())?;
    let percentage = match mode {
        Mode::Mps => Some(
            assigned
                .get(ASSIGNED_MPS_PERCENTAGE)
                .and_then(|p| p.trim().parse().ok())
                .and_then(Percentage::new)?,
        ),
        Mode::TimeSlicing => None,
    };
    // The decision reads our own typed view; going through JSON keeps one parser for both.
    let view: Deployment = serde_json::to_value(object)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())?;
    let workload = view.workload();
    let containers = &workload.template.spec.containers;
    let selected = UserAnnotations::collect(
        workload.metadata.annotations.as_ref(),
        workload.template.annotations(),
    )
    .ok()
    .and_then(|user| user.get(annotations::CONTAINERS))
    .map(|list| {
        let names: Vec<&str> = list.split(',').map(str::trim).collect();
        containers
            .iter()
            .filter(|c| names.contains(&c.name.as_str()))
            .count()
    })
    .unwrap_or(containers.len()) as u32;
    let replicas = workload.replicas;
    Some(Module {
        placement: Placement {
            node_selector: workload.template.spec.node_selector.clone(),
            node_name: workload.template.spec.node_name.clone(),
        },
        assignment: Assignment {
            gpu,
            mode,
            percentage,
            memory_limit: None,
            replicas,
            clients: replicas.saturating_mul(selected),
        },
    })
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
    fn module_counts_replicas_times_selected_containers() {
        let d: K8sDeployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m", "namespace": "ns", "annotations": {
                "gpushare.io/containers": "a,b",
                "gpushare.io/assigned-gpu": "1", "gpushare.io/assigned-mode": "mps",
                "gpushare.io/assigned-mps-percentage": "20"}},
            "spec": {"replicas": 3, "selector": {}, "template": {"spec": {"containers": [
                {"name": "a"}, {"name": "b"}, {"name": "c"}], "nodeSelector": {"edge": "1"}}}}
        }))
        .unwrap();
        let m = module(&d).unwrap();
        assert_eq!(m.assignment.gpu, GpuIndex(1));
        assert_eq!(m.assignment.clients, 6);
        assert_eq!(m.assignment.committed_percentage(), 60);
        assert_eq!(
            m.placement.node_selector.get("edge").map(String::as_str),
            Some("1")
        );
        assert_eq!(module_key(&d).to_string(), "ns/m");
    }
}
