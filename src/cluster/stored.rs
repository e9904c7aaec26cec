//! A stored workload of any kind as a list or a watch delivers it, read in one pass straight into
//! the wire view admissions use. Everything gpushare does not read (status churn, managedFields,
//! the rest of the spec) is skipped while it is parsed and never built: a `DynamicObject` would
//! build the whole object as a JSON tree, through serde's flatten buffer, on every event of every
//! workload in the cluster.
//!
//! Objects the API server stores are its typed objects serialized, so they always read as the
//! wire view (which also takes `null` for a missing field).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as ApiMeta;
use kube::core::DynamicResourceScope;
use kube::Resource;
use serde::{Deserialize, Deserializer};

use crate::core::workload::{JsonObject, Kind, RawObject};

#[derive(Debug, Clone)]
pub struct StoredWorkload {
    /// The metadata kube's watcher and lists read: name, namespace and resourceVersion.
    api_meta: ApiMeta,
    pub raw: RawObject,
}

impl<'de> Deserialize<'de> for StoredWorkload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let JsonObject(raw) = JsonObject::<RawObject>::deserialize(d)?;
        let given = |value: &str| (!value.is_empty()).then(|| value.to_string());
        let api_meta = ApiMeta {
            name: given(&raw.metadata.name),
            namespace: given(&raw.metadata.namespace),
            resource_version: given(&raw.metadata.resource_version),
            ..ApiMeta::default()
        };
        Ok(StoredWorkload { api_meta, raw })
    }
}

/// The kind is the dynamic type: one Rust type lists and watches every workload kind.
impl Resource for StoredWorkload {
    type DynamicType = Kind;
    type Scope = DynamicResourceScope;

    fn kind(kind: &Kind) -> Cow<'_, str> {
        kind.as_str().into()
    }

    fn group(kind: &Kind) -> Cow<'_, str> {
        kind.group().into()
    }

    fn version(kind: &Kind) -> Cow<'_, str> {
        kind.version().into()
    }

    fn plural(kind: &Kind) -> Cow<'_, str> {
        kind.plural().into()
    }

    fn meta(&self) -> &ApiMeta {
        &self.api_meta
    }

    fn meta_mut(&mut self) -> &mut ApiMeta {
        &mut self.api_meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn keeps_what_the_watcher_and_the_core_read() {
        let object: StoredWorkload = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "42",
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                "annotations": {"gpushare.io/assigned-gpu": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": {"readyReplicas": 1, "conditions": [{"type": "Available"}]}
        }))
        .unwrap();
        assert_eq!(object.resource_version().as_deref(), Some("42"));
        assert_eq!(object.meta().name.as_deref(), Some("d"));
        assert_eq!(object.meta().namespace.as_deref(), Some("ns"));
        assert_eq!(object.raw.spec.replicas, Some(2));
        assert_eq!(object.raw.spec.template.spec.containers.len(), 1);
    }

    #[test]
    fn addresses_each_kind_by_its_own_api() {
        assert_eq!(
            StoredWorkload::url_path(&Kind::Deployment, None),
            "/apis/apps/v1/deployments"
        );
        assert_eq!(
            StoredWorkload::url_path(&Kind::CronJob, Some("ns")),
            "/apis/batch/v1/namespaces/ns/cronjobs"
        );
        assert_eq!(StoredWorkload::url_path(&Kind::Pod, None), "/api/v1/pods");
    }

    #[test]
    fn a_list_item_that_is_not_an_object_is_an_error() {
        assert!(serde_json::from_str::<StoredWorkload>("[1]").is_err());
    }
}
