//! Turns Kubernetes objects into the core's terms: a Node's GPU count and labels, and a stored
//! workload of any kind as the kind-neutral view, whose claim the core reads back from the
//! annotations gpushare wrote on it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::core::ApiResource;

use super::stored::StoredWorkload;
use crate::core::claim::{Assigned, Claim};
use crate::core::handwritten;
use crate::core::inventory::{Inventory, Node, Owner};
use crate::core::policy::{HandWritten, Policy};
use crate::core::workload::{ControllerRef, Kind, Workload, WorkloadKey};

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
        labels: labels.into(),
    }
}

/// Whether new pods (gpushare's own among them) may land on the node: not cordoned, and no
/// taint that keeps pods without a toleration away.
pub fn schedulable(object: &K8sNode) -> bool {
    let Some(spec) = &object.spec else {
        return true;
    };
    !spec.unschedulable.unwrap_or(false)
        && spec
            .taints
            .iter()
            .flatten()
            .all(|taint| !matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute"))
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

/// What gpushare keeps of one stored object: what it holds as a module of its own, and, when a
/// built-in controller names it, what it holds if that controller really made it. Which one
/// counts is decided against the owners the cache knows (`Held::counted`), so an owner that
/// arrives, changes or goes later is taken into account.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub own: Option<Claim>,
    /// A Pod's node while it runs: the pods running now, shown beside the shares (`status`).
    pub running_on: Option<String>,
    /// Stored without gpushare's assignment and counted from the variables its containers write
    /// by hand: not counted while policy `handWrittenGpuEnv` is `allow`.
    pub by_hand: bool,
    /// Boxed: most stored objects that hold anything have no controller, and the cache keeps one
    /// `Held` per such object.
    pub controlled: Option<Box<Controlled>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Controlled {
    pub controller: ControllerRef,
    /// `Workload::gpu_fingerprint` of the object, to compare with its controller's template.
    pub fingerprint: u64,
    /// What it holds when the controller made it: only its ephemeral containers' GPU use.
    pub exempt: Option<Claim>,
}

impl Held {
    /// What the object counts as with the owners `view` knows and `policy` in force.
    pub fn counted(&self, view: &Inventory, policy: &Policy) -> Option<&Claim> {
        if let Some(controlled) = &self.controlled {
            if view.trusts_owner(&controlled.controller, controlled.fingerprint) {
                return controlled.exempt.as_ref();
            }
        }
        if self.by_hand && policy.hand_written_gpu_env == HandWritten::Allow {
            return None;
        }
        self.own.as_ref()
    }

    /// The uid of the built-in controller it names, if any.
    pub fn owner_uid(&self) -> Option<&str> {
        self.controlled.as_ref().map(|c| c.controller.uid.as_str())
    }
}

fn workload_running(phase: &str) -> bool {
    phase == "Running"
}

/// One stored object as the cache keeps it.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub key: WorkloadKey,
    /// Set when the object may own others (every kind but Pod), with its template's fingerprint.
    pub owner: Option<(String, Owner)>,
    /// `None` when it can hold nothing however its owner turns out (the common case: no GPU).
    pub held: Option<Held>,
}

/// A stored object in the cache's terms.
pub fn stored(kind: Kind, object: StoredWorkload) -> StoredObject {
    let raw_phase = object.raw.status.phase.clone();
    let workload = workload(kind, object);
    // The same key as `key` gives (stored objects always have a name), shared with the claims
    // built below instead of allocated again.
    let key = workload.key.clone();
    // Only a template that uses a GPU can vouch for objects that do (their fingerprints must be
    // equal): owners without one are not kept, so a cluster's unmanaged workloads cost nothing.
    let uses_gpu = workload.has_gpushare_annotations() || handwritten::any(&workload);
    let owner = (kind != Kind::Pod && uses_gpu && !workload.uid().is_empty()).then(|| {
        (
            workload.uid().to_string(),
            Owner {
                kind,
                fingerprint: workload.gpu_fingerprint(),
            },
        )
    });
    let own = Claim::of_stored(&workload, false);
    let by_hand = own.is_some()
        && Assigned::read(workload.pod_annotations()).is_none()
        && Assigned::read(workload.annotations()).is_none()
        && handwritten::any(&workload);
    let controlled = workload.builtin_controller().map(|controller| {
        Box::new(Controlled {
            controller: controller.clone(),
            fingerprint: workload.gpu_fingerprint(),
            exempt: Claim::of_stored(&workload, true),
        })
    });
    let holds_nothing = own.is_none() && controlled.as_ref().is_none_or(|c| c.exempt.is_none());
    // A terminating pod is on its way out (its grace period is the admin's to set).
    let running_on = (kind == Kind::Pod
        && workload_running(&raw_phase)
        && workload.metadata.deletion_timestamp.is_none())
    .then(|| workload.pod.node_name.clone())
    .filter(|node| !node.is_empty());
    let held = (!holds_nothing).then_some(Held {
        own,
        running_on,
        by_hand,
        controlled,
    });
    StoredObject { key, owner, held }
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
        let job = stored(Kind::Job, object).held.unwrap().own.unwrap();
        assert_eq!(job.key.to_string(), "ns/Job/m");
        assert_eq!((job.clients(), job.committed_percentage()), (6, 60));
        assert_eq!(job.placement.node_selector.get("edge"), Some("1"));
        let owned: StoredWorkload = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "annotations": {"gpushare.io/assigned-gpu": "0",
                "gpushare.io/assigned-mode": "time-slicing"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap();
        let pod = stored(Kind::Pod, owned)
            .held
            .expect("held as a module of its own");
        let mut view = Inventory::default();
        let policy = Policy::default();
        assert!(
            pod.counted(&view, &policy).is_none(),
            "trusted (standalone): the controller counts, not its pods"
        );
        view.verify_owners();
        assert!(
            pod.counted(&view, &policy).is_some(),
            "an owner the cache does not know: the pod counts as its own module"
        );
        assert_eq!(api_resource(Kind::CronJob).api_version, "batch/v1");
        assert_eq!(api_resource(Kind::Pod).api_version, "v1");
    }

    /// `stored` takes its key from the workload view (so its claims share it) and a deletion is
    /// looked up by `key`: the two must agree, or a deleted workload would keep its share.
    #[test]
    fn a_stored_object_is_keyed_as_its_deletion_is_looked_up() {
        for metadata in [
            serde_json::json!({"name": "d", "namespace": "ns"}),
            serde_json::json!({"name": "d"}),
            serde_json::json!({"name": "d", "namespace": "ns", "generateName": "d-"}),
        ] {
            for kind in [Kind::Deployment, Kind::Job, Kind::Pod] {
                let object = || -> StoredWorkload {
                    serde_json::from_value(serde_json::json!({
                        "metadata": metadata,
                        "spec": {"template": {"metadata": {"annotations": {"gpushare.io/gpu": "0"}},
                            "spec": {"containers": [{"name": "c"}]}},
                            "containers": [{"name": "c"}]}
                    }))
                    .unwrap()
                };
                let looked_up = key(kind, &object());
                assert_eq!(stored(kind, object()).key, looked_up, "{kind:?} {metadata}");
            }
        }
    }
}
