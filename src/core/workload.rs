//! A typed view of just the parts of a workload the decision reads: metadata annotations, replicas
//! and the pod template. Parsing only these keeps admission fast; everything else in the object is
//! skipped, and array positions are kept so patches can address entries by index.

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
    /// `None` when the object has no annotations map at all (a patch must then add the map).
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Present for ObjectMeta {
    fn mark_present(&mut self) {
        self.present = true;
    }
}

/// A Deployment, reduced to what gpushare reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Deployment {
    #[serde(default, deserialize_with = "object")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "object")]
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeploymentSpec {
    #[serde(default)]
    pub replicas: Option<i64>,
    #[serde(default, deserialize_with = "object")]
    pub template: PodTemplate,
}

impl Present for DeploymentSpec {}

impl Present for Deployment {}

/// A workload reduced to what the decision needs: where its pod template sits in the object, so
/// the same core serves every kind that embeds a pod template.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub metadata: &'a ObjectMeta,
    pub replicas: u32,
    pub template: &'a PodTemplate,
    /// JSON pointer of the pod template inside the object, e.g. `/spec/template`.
    pub template_path: &'static str,
}

impl Deployment {
    pub fn workload(&self) -> Workload<'_> {
        Workload {
            metadata: &self.metadata,
            replicas: self.replicas(),
            template: &self.spec.template,
            template_path: "/spec/template",
        }
    }

    /// Replicas as the API server defaults them: a missing value means 1.
    pub fn replicas(&self) -> u32 {
        self.spec
            .replicas
            .unwrap_or(1)
            .clamp(0, i64::from(u32::MAX)) as u32
    }
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
    #[serde(default, deserialize_with = "nullable")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_name: String,
    #[serde(default, rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    #[serde(default)]
    pub volumes: Option<Vec<Volume>>,
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

    /// The first entry for `name`: the one gpushare checks and owns.
    pub fn env_var(&self, name: &str) -> Option<&EnvVar> {
        self.env_entries().iter().find(|e| e.name == name)
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
        let d: Deployment = serde_json::from_value(serde_json::json!({
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
        assert_eq!(d.replicas(), 2);
        assert_eq!(d.spec.template.spec.containers[0].name, "nginx");
        assert!(d.spec.template.spec.containers[0].env_entries()[0]
            .value_from
            .is_some());
        assert!(d.spec.template.annotations().is_none());
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
