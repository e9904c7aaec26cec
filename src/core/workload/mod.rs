//! The one kind-neutral view of a workload the core reads (CONTRACT section 2a): its key, its
//! metadata, its pod template, how many pods it runs per candidate node, and where patches go.
//! `adapt` builds it from any kind's wire view; nothing after that knows a kind's type.

mod adapt;
mod kind;
mod labels;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use kind::{Kind, Layout};
pub use labels::Labels;
pub use wire::{Container, JsonObject, ObjectMeta, PodSpec, RawObject};

use crate::core::keys::PREFIX;
use crate::core::pods::PodCount;

pub type Annotations = BTreeMap<String, String>;

/// Identifies a workload: kind, namespace and name (a Job and a Deployment may share a name).
/// The names are shared, not copied, by the clones: the cluster cache keys several maps and
/// indexes by the same workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: Kind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl WorkloadKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> WorkloadKey {
        WorkloadKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `namespace/Kind/name`, as Kyverno's CLI names resources.
impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// The controller that owns an object (its `ownerReferences` entry with `controller: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl ControllerRef {
    /// The kind of a built-in controller that builds objects from a pod template gpushare
    /// examined (`apps/v1` Deployment, ReplicaSet, StatefulSet, DaemonSet; `batch/v1` Job,
    /// CronJob); `None` for any other owner (a custom resource, a ConfigMap, a Pod).
    pub fn builtin(&self) -> Option<Kind> {
        Kind::from_api_version(&self.api_version, &self.kind).filter(|kind| *kind != Kind::Pod)
    }
}

/// `Kind/name`, as logs and messages name it.
impl fmt::Display for ControllerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Where a module's pods may run, from its pod template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub node_selector: Labels,
    pub node_name: String,
}

/// A workload of any kind, reduced to what the decision reads.
#[derive(Debug, Clone)]
pub struct Workload {
    pub key: WorkloadKey,
    /// The object's own metadata.
    pub metadata: ObjectMeta,
    /// The pod template's metadata; `None` for a Pod, whose metadata is `metadata`.
    pub template_metadata: Option<ObjectMeta>,
    pub pod: PodSpec,
    /// Pods counted per candidate node: replicas (and a rollout's surge), parallelism, or 1
    /// (CONTRACT section 2a).
    pub pods: PodCount,
    /// A Job that has completed or failed, or a Pod that has: it no longer counts.
    pub finished: bool,
    /// The controller that owns the object, when one does.
    pub controller: Option<ControllerRef>,
    /// A CronJob whose runs may overlap (`concurrencyPolicy: Allow`, the default).
    pub overlapping_runs: bool,
}

impl Workload {
    /// Reads one object of `kind`; the key takes the object's namespace (else `default`) and name
    /// (else its generateName).
    pub fn from_raw(kind: Kind, raw: RawObject) -> Workload {
        adapt::workload(kind, raw)
    }

    pub fn kind(&self) -> Kind {
        self.key.kind
    }

    pub fn layout(&self) -> Layout {
        self.key.kind.layout()
    }

    /// The object's `metadata.annotations`.
    pub fn annotations(&self) -> Option<&Annotations> {
        self.metadata.annotations.as_ref()
    }

    /// The pod template's own annotations (`None` for a Pod: it has only the object's).
    pub fn template_annotations(&self) -> Option<&Annotations> {
        self.template_metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
    }

    /// The annotations the pods get: the template's, or a Pod's own.
    pub fn pod_annotations(&self) -> Option<&Annotations> {
        match &self.template_metadata {
            Some(template) => template.annotations.as_ref(),
            None => self.annotations(),
        }
    }

    /// Where the pods may run: the pod template's nodeSelector and nodeName.
    pub fn placement(&self) -> Placement {
        Placement {
            node_selector: Labels::from(&self.pod.node_selector),
            node_name: self.pod.node_name.clone(),
        }
    }

    /// The object's uid (empty in the admission of a CREATE).
    pub fn uid(&self) -> &str {
        &self.metadata.uid
    }

    /// A built-in controller that owns the object, if one does.
    pub fn builtin_controller(&self) -> Option<&ControllerRef> {
        self.controller.as_ref().filter(|c| c.builtin().is_some())
    }

    /// What a controller copies from its template into the objects it makes and gpushare reads:
    /// the assigned annotations the pods get and every GPU variable of their containers, hashed.
    /// An object made by a controller has the fingerprint of the controller's template.
    pub fn gpu_fingerprint(&self) -> u64 {
        use crate::core::domain::GPU_VARIABLES;
        use crate::core::keys::ASSIGNED_KEYS;
        use std::hash::{Hash, Hasher};
        // A fixed hasher: fingerprints of one object must agree between replicas and restarts.
        let mut hasher = Fnv64::default();
        for key in ASSIGNED_KEYS {
            self.pod_annotations()
                .and_then(|a| a.get(key))
                .hash(&mut hasher);
        }
        for container in self.pod.containers.iter().chain(&self.pod.init_containers) {
            container.name.hash(&mut hasher);
            for entry in container.env_entries() {
                if GPU_VARIABLES.contains(&entry.name.as_str()) {
                    (&entry.name, &entry.value, entry.value_from.is_some()).hash(&mut hasher);
                }
            }
        }
        hasher.finish()
    }

    /// Whether any `gpushare.io/` key is set on the object or its pod template (assigned ones
    /// included): what makes an object gpushare does not examine worth a `SKIPPED` line.
    pub fn has_gpushare_annotations(&self) -> bool {
        [self.annotations(), self.template_annotations()]
            .into_iter()
            .flatten()
            .any(|a| a.keys().any(|k| k.starts_with(PREFIX)))
    }
}

/// FNV-1a: small, fast and the same in every process.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
