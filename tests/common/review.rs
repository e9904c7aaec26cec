//! Complete `admission.k8s.io/v1` AdmissionReviews, as the API server sends them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A unique request uid, shaped like the API server's UUIDs.
pub fn new_uid() -> String {
    let n = NEXT_UID.fetch_add(1, Ordering::Relaxed);
    format!(
        "705ab4f5-6393-11e8-b7cc-{:012x}",
        u64::from(std::process::id()) << 16 | n
    )
}

/// A complete `admission.k8s.io/v1` AdmissionReview, as the API server sends it.
#[derive(Debug, Clone)]
pub struct Review {
    pub uid: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub resource: String,
    pub operation: String,
    pub namespace: String,
    pub object: Value,
    pub old_object: Value,
    pub dry_run: bool,
    /// `ephemeralcontainers`, `scale`, ...: the subresource the request is about.
    pub sub_resource: Option<String>,
}

impl Review {
    /// A Deployment review; the name is taken from the object.
    pub fn deployment(operation: &str, object: Value) -> Review {
        Review {
            uid: new_uid(),
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
            operation: operation.into(),
            namespace: "default".into(),
            object,
            old_object: Value::Null,
            dry_run: false,
            sub_resource: None,
        }
    }

    /// `kubectl debug`: an UPDATE of the Pod's `ephemeralcontainers` subresource.
    pub fn ephemeral(object: Value, old_object: Value) -> Review {
        Review {
            sub_resource: Some("ephemeralcontainers".into()),
            ..Review::update_of(object, old_object)
        }
    }

    pub fn create(object: Value) -> Review {
        Review::deployment("CREATE", object)
    }

    pub fn update(object: Value, old_object: Value) -> Review {
        Review {
            old_object,
            ..Review::deployment("UPDATE", object)
        }
    }

    pub fn pod(operation: &str, object: Value) -> Review {
        Review::of(operation, object)
    }

    /// A review of any object, its group, version, kind and resource taken from the object.
    pub fn of(operation: &str, object: Value) -> Review {
        let named = if object.is_null() {
            Value::Null
        } else {
            object.clone()
        };
        let api_version = named["apiVersion"]
            .as_str()
            .unwrap_or("apps/v1")
            .to_string();
        let kind = named["kind"].as_str().unwrap_or("Deployment").to_string();
        let (group, version) = api_version
            .rsplit_once('/')
            .map_or((String::new(), api_version.clone()), |(g, v)| {
                (g.to_string(), v.to_string())
            });
        Review {
            group,
            version,
            resource: format!("{}s", kind.to_ascii_lowercase()),
            kind,
            ..Review::deployment(operation, object)
        }
    }

    pub fn create_of(object: Value) -> Review {
        Review::of("CREATE", object)
    }

    pub fn update_of(object: Value, old_object: Value) -> Review {
        Review {
            old_object,
            ..Review::of("UPDATE", object)
        }
    }

    pub fn namespace(mut self, namespace: &str) -> Review {
        self.namespace = namespace.into();
        self
    }

    pub fn dry_run(mut self, dry_run: bool) -> Review {
        self.dry_run = dry_run;
        self
    }

    /// The same request with a fresh uid.
    pub fn again(&self) -> Review {
        Review {
            uid: new_uid(),
            ..self.clone()
        }
    }

    pub fn to_json(&self) -> Value {
        let named = if self.object.is_null() {
            &self.old_object
        } else {
            &self.object
        };
        let name = named
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::String(String::new()));
        let options = match self.operation.as_str() {
            "CREATE" => {
                json!({ "kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict" })
            }
            "UPDATE" => {
                json!({ "kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-edit", "fieldValidation": "Strict" })
            }
            "DELETE" => {
                json!({ "kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background" })
            }
            _ => Value::Null,
        };
        let gvk = json!({ "group": self.group, "version": self.version, "kind": self.kind });
        let gvr =
            json!({ "group": self.group, "version": self.version, "resource": self.resource });
        let mut review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": self.uid,
                "kind": gvk,
                "resource": gvr,
                "requestKind": gvk,
                "requestResource": gvr,
                "name": name,
                "namespace": self.namespace,
                "operation": self.operation,
                "userInfo": {
                    "username": "kubernetes-admin",
                    "uid": "aeb4e5a7-2b0f-4a6b-9a8c-3d2c1f0e9b8a",
                    "groups": ["kubeadm:cluster-admins", "system:authenticated"]
                },
                "object": self.object,
                "oldObject": self.old_object,
                "dryRun": self.dry_run,
                "options": options
            }
        });
        if let Some(sub_resource) = &self.sub_resource {
            review["request"]["subResource"] = json!(sub_resource);
            review["request"]["requestSubResource"] = json!(sub_resource);
        }
        review
    }
}
