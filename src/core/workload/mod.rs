//! The one kind-neutral view of a workload the core reads (CONTRACT section 2a): its key, its
//! metadata, its pod template, how many pods it runs per candidate node, and where patches go.
//! `adapt` builds it from any kind's wire view; nothing after that knows a kind's type.

mod adapt;
mod kind;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;

pub use kind::{Kind, Layout};
pub use wire::{Container, JsonObject, ObjectMeta, PodSpec, RawObject};

use crate::core::annotations::PREFIX;
use crate::core::inventory::Placement;

pub type Annotations = BTreeMap<String, String>;

/// Identifies a workload: kind, namespace and name (a Job and a Deployment may share a name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl WorkloadKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> WorkloadKey {
        WorkloadKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// `namespace/Kind/name`, as Kyverno's CLI names resources.
impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
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
    /// Pods counted per candidate node: replicas, parallelism, or 1 (CONTRACT section 2a).
    pub pods: u32,
    /// A Job that has completed or failed, or a Pod that has: it no longer counts.
    pub finished: bool,
    /// `Kind/name` of the controller that owns the object, when one does.
    pub controller: Option<String>,
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
            node_selector: self.pod.node_selector.clone(),
            node_name: self.pod.node_name.clone(),
        }
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
