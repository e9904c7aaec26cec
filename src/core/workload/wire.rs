//! The wire view: just the parts of a workload object gpushare reads (metadata, the pods count, the
//! pod template, the status of Jobs and Pods). Parsing only these keeps admission fast; everything
//! else in the object is skipped, and array positions are kept so patches can address entries by
//! index.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Deserializes `null` like a missing field: Kubernetes clients write both.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Types that remember whether the object they were read from was there at all.
pub trait Present {
    fn mark_present(&mut self) {}
}

/// Accepts only a JSON object, reading `null` or a missing field as the default. Serde would
/// otherwise read an array positionally as a struct, and patches would address paths that do
/// not exist in the object.
fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + Present,
{
    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Default + Present> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let mut value = T::deserialize(MapAccessDeserializer::new(map))?;
            value.mark_present();
            Ok(value)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<T, E> {
            Ok(T::default())
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<T, E> {
            Ok(T::default())
        }

        fn visit_some<S: Deserializer<'de>>(self, d: S) -> Result<T, S::Error> {
            d.deserialize_any(self)
        }
    }

    d.deserialize_any(ObjectVisitor(PhantomData))
}

/// `object`, on the heap: `None` only when the field is missing.
fn boxed_object<'de, D, T>(d: D) -> Result<Option<Box<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + Present,
{
    object(d).map(|value| Some(Box::new(value)))
}

/// A value read only from a JSON object (see `object`), e.g. a whole workload.
#[derive(Debug, Clone, Default)]
pub struct JsonObject<T>(pub T);

impl<'de, T: Deserialize<'de> + Default + Present> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object(d).map(JsonObject)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// False when the object had no metadata at all (a patch must then add it).
    #[serde(skip)]
    pub present: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub generate_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    /// Where a watch of stored objects resumes; empty in admission requests.
    #[serde(default, deserialize_with = "nullable")]
    pub resource_version: String,
    /// Set by the API server on stored objects (and in admission requests of UPDATEs); owners
    /// are named by it.
    #[serde(default, deserialize_with = "nullable")]
    pub uid: String,
    /// Set once the object is being deleted (a terminating Pod).
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    /// `None` when the object has no annotations map at all (a patch must then add the map).
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    #[serde(default, deserialize_with = "nullable")]
    pub api_version: String,
    #[serde(default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub uid: String,
    /// Set once the object is being deleted (a terminating Pod).
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub controller: bool,
}

impl Present for ObjectMeta {
    fn mark_present(&mut self) {
        self.present = true;
    }
}

/// Any workload object as it comes off the wire, reduced to what gpushare reads. The fields of
/// every kind's spec sit side by side (none of them clash), so one pass reads any kind before its
/// adapter (`super::adapt`) knows which fields count; a foreign kind is read and then ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawObject {
    #[serde(default, deserialize_with = "object")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "object")]
    pub spec: RawSpec,
    #[serde(default, deserialize_with = "object")]
    pub status: RawStatus,
}

impl Present for RawObject {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawSpec {
    /// Deployment, ReplicaSet, StatefulSet.
    #[serde(default)]
    pub replicas: Option<i64>,
    /// Job.
    #[serde(default)]
    pub parallelism: Option<i64>,
    /// Deployment, ReplicaSet, StatefulSet, DaemonSet, Job.
    #[serde(default, deserialize_with = "object")]
    pub template: PodTemplate,
    /// CronJob. Boxed, as only CronJobs have it: the view stays small for serde to move.
    #[serde(default, deserialize_with = "boxed_object")]
    pub job_template: Option<Box<JobTemplate>>,
    /// CronJob.
    #[serde(default, deserialize_with = "nullable")]
    pub concurrency_policy: String,
    /// Deployment: how a rollout replaces pods (its surge pods run beside the old ones).
    #[serde(default, deserialize_with = "nullable")]
    pub strategy: RolloutStrategy,
    /// DaemonSet: the same, under another name.
    #[serde(default, deserialize_with = "nullable")]
    pub update_strategy: RolloutStrategy,
    /// Pod: the pod spec is the object's spec.
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
    #[serde(default, deserialize_with = "nullable")]
    pub init_containers: Vec<Container>,
    /// Pod: added by `kubectl debug` through the `pods/ephemeralcontainers` subresource.
    #[serde(default, deserialize_with = "nullable")]
    pub ephemeral_containers: Vec<Container>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_name: String,
    #[serde(default, rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    #[serde(default)]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, deserialize_with = "claim_count")]
    pub resource_claims: usize,
}

impl Present for RawSpec {}

impl RawSpec {
    /// The pod spec fields, for a Pod (whose spec is a pod spec).
    pub fn into_pod_spec(self) -> PodSpec {
        PodSpec {
            containers: self.containers,
            init_containers: self.init_containers,
            ephemeral_containers: self.ephemeral_containers,
            node_selector: self.node_selector,
            node_name: self.node_name,
            host_ipc: self.host_ipc,
            volumes: self.volumes,
            resource_claims: self.resource_claims,
        }
    }
}

/// A Deployment's `spec.strategy` or a DaemonSet's `spec.updateStrategy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// `RollingUpdate` (the default when empty), `Recreate` or `OnDelete`.
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub type_: String,
    #[serde(default, deserialize_with = "nullable")]
    pub rolling_update: RollingUpdate,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    #[serde(default)]
    pub max_surge: Option<IntOrString>,
}

/// An `intstr.IntOrString` as Kubernetes writes it: `1` or `"25%"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(IntOrString::String(s)),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(IntOrString::Int)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid int-or-string {n}"))),
            other => Err(serde::de::Error::custom(format!(
                "invalid int-or-string {other}"
            ))),
        }
    }
}

/// A CronJob's `spec.jobTemplate`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobTemplate {
    #[serde(default, deserialize_with = "object")]
    pub spec: JobTemplateSpec,
}

impl Present for JobTemplate {}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobTemplateSpec {
    #[serde(default)]
    pub parallelism: Option<i64>,
    #[serde(default, deserialize_with = "object")]
    pub template: PodTemplate,
}

impl Present for JobTemplateSpec {}

/// The status fields that say whether a Job or a Pod has finished.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawStatus {
    #[serde(default, deserialize_with = "nullable")]
    pub conditions: Vec<Condition>,
    #[serde(default, deserialize_with = "nullable")]
    pub phase: String,
}

impl Present for RawStatus {}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Condition {
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub type_: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodTemplate {
    #[serde(default, deserialize_with = "object")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "object")]
    pub spec: PodSpec,
}

impl Present for PodTemplate {}

impl PodTemplate {
    pub fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.annotations.as_ref()
    }
}

impl Present for PodSpec {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
    #[serde(default, deserialize_with = "nullable")]
    pub init_containers: Vec<Container>,
    /// Only a Pod has them (they cannot be set in a template).
    #[serde(default, deserialize_with = "nullable")]
    pub ephemeral_containers: Vec<Container>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_name: String,
    #[serde(default, rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    #[serde(default)]
    pub volumes: Option<Vec<Volume>>,
    /// How many `resourceClaims` (Dynamic Resource Allocation) the pod spec has.
    #[serde(default, deserialize_with = "claim_count")]
    pub resource_claims: usize,
}

fn claim_count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(Option::<Vec<serde::de::IgnoredAny>>::deserialize(d)?.map_or(0, |claims| claims.len()))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, deserialize_with = "nullable")]
    pub resources: Resources,
    #[serde(default)]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

impl Container {
    pub fn env_entries(&self) -> &[EnvVar] {
        self.env.as_deref().unwrap_or_default()
    }

    /// The first entry for `name`: the one gpushare owns (it removes later duplicates).
    pub fn env_var(&self, name: &str) -> Option<&EnvVar> {
        self.env_entries().iter().find(|e| e.name == name)
    }

    /// The entry for `name` that takes effect: the kubelet lets a later duplicate win.
    pub fn effective_env(&self, name: &str) -> Option<&EnvVar> {
        self.env_entries().iter().rev().find(|e| e.name == name)
    }

    /// The largest `nvidia.com/gpu` this container asks for in limits or requests.
    pub fn gpu_request(&self) -> Option<&Quantity> {
        let limit = self.resources.limits.get(NVIDIA_GPU_RESOURCE);
        let request = self.resources.requests.get(NVIDIA_GPU_RESOURCE);
        match (limit, request) {
            (Some(a), Some(b)) => Some(if b.exceeds(a) { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

pub const NVIDIA_GPU_RESOURCE: &str = "nvidia.com/gpu";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_from: Option<serde::de::IgnoredAny>,
}

impl EnvVar {
    /// The literal value, with a missing `value` read as empty, as the kubelet does.
    pub fn literal(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resources {
    #[serde(default, deserialize_with = "nullable")]
    pub limits: BTreeMap<String, Quantity>,
    #[serde(default, deserialize_with = "nullable")]
    pub requests: BTreeMap<String, Quantity>,
}

/// A resource quantity as written (`2`, `"2"`, `"500m"`); only whole GPU counts are meaningful here.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity(pub String);

impl Quantity {
    /// A whole count, or `None` when the quantity is not a plain integer.
    pub fn whole(&self) -> Option<u64> {
        self.0.trim().parse().ok()
    }

    fn exceeds(&self, other: &Quantity) -> bool {
        match (self.whole(), other.whole()) {
            (Some(a), Some(b)) => a > b,
            (None, _) => true,
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Quantity(s)),
            serde_json::Value::Number(n) => Ok(Quantity(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "invalid quantity {other}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub host_path: Option<HostPath>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostPath {
    #[serde(default, deserialize_with = "nullable")]
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub mount_path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubectl_create_output_and_tolerates_nulls() {
        let d: RawObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"creationTimestamp": null, "labels": {"app": "x"}, "name": "x"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}, "strategy": {},
                "template": {"metadata": {"creationTimestamp": null, "annotations": null},
                    "spec": {"containers": [{"image": "nginx", "name": "nginx", "resources": {},
                        "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}],
                        "nodeSelector": null}}},
            "status": {}
        }))
        .unwrap();
        assert_eq!(d.metadata.name, "x");
        assert_eq!(d.spec.replicas, Some(2));
        assert_eq!(d.spec.template.spec.containers[0].name, "nginx");
        assert!(d.spec.template.spec.containers[0].env_entries()[0]
            .value_from
            .is_some());
        assert!(d.spec.template.annotations().is_none());
    }

    #[test]
    fn reads_every_kind_in_one_shape() {
        let pod: RawObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": true}]},
            "spec": {"containers": [{"name": "c"}], "nodeName": "edge", "resourceClaims": [{"name": "gpu"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        assert!(pod.metadata.owner_references[0].controller);
        let spec = pod.spec.into_pod_spec();
        assert_eq!(
            (
                spec.containers.len(),
                spec.node_name.as_str(),
                spec.resource_claims
            ),
            (1, "edge", 1)
        );
        let cron: RawObject = serde_json::from_value(serde_json::json!({
            "spec": {"concurrencyPolicy": "Forbid", "schedule": "* * * * *", "jobTemplate": {"spec": {
                "parallelism": 3, "template": {"spec": {"containers": [{"name": "c"}]}}}}}
        }))
        .unwrap();
        let job = cron
            .spec
            .job_template
            .expect("the CronJob has a job template");
        assert_eq!(job.spec.parallelism, Some(3));
        assert_eq!(job.spec.template.spec.containers.len(), 1);
    }

    #[test]
    fn gpu_quantity_takes_the_larger_of_limits_and_requests() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "a", "resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": "2"}}
        }))
        .unwrap();
        assert_eq!(c.gpu_request().and_then(Quantity::whole), Some(2));
    }
}
