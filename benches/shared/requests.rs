//! The admission requests both admission benchmarks send: `kubectl create`'d Deployments, after
//! the API server's defaulting, in the four cases that take different paths through gpushare.

use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

pub const UID_PLACEHOLDER: &str = "@@UID@@";
/// The policy the standalone server runs with.
pub const POLICY: &str =
    "# GPU 1 runs CUDA MPS; GPU 0 keeps the default, time-slicing.\ngpuModes:\n  \"1\": mps\n";
/// `gpushare serve --standalone --gpus`.
pub const GPUS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Case {
    Mps,
    TimeSlicing,
    Unmanaged,
    Denied,
}

impl Case {
    pub const ALL: [Case; 4] = [Case::Mps, Case::TimeSlicing, Case::Unmanaged, Case::Denied];

    pub fn annotations(self) -> Value {
        match self {
            Case::Mps => json!({ "gpushare.io/gpu": "1", "gpushare.io/mps-percentage": "20" }),
            Case::TimeSlicing => json!({ "gpushare.io/gpu": "0" }),
            Case::Unmanaged => Value::Null,
            Case::Denied => json!({ "gpushare.io/gpu": "0,1" }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Case::Mps => "detector",
            Case::TimeSlicing => "tracker",
            Case::Unmanaged => "ingest",
            Case::Denied => "trainer",
        }
    }

    pub fn allowed(self) -> bool {
        self != Case::Denied
    }

    pub fn patched(self) -> bool {
        matches!(self, Case::Mps | Case::TimeSlicing)
    }
}

/// `kubectl create`'s field ownership, as the API server records it before admission.
pub fn managed_fields() -> Value {
    json!([{
        "manager": "kubectl-create",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2025-06-02T09:14:07Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": { "f:labels": { ".": {}, "f:app": {}, "f:app.kubernetes.io/part-of": {}, "f:team": {}, "f:tier": {} } },
            "f:spec": {
                "f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {}, "f:selector": {},
                "f:strategy": { "f:rollingUpdate": { ".": {}, "f:maxSurge": {}, "f:maxUnavailable": {} }, "f:type": {} },
                "f:template": {
                    "f:metadata": { "f:labels": { ".": {}, "f:app": {} } },
                    "f:spec": {
                        "f:containers": { "k:{\"name\":\"model\"}": {
                            ".": {}, "f:env": { ".": {}, "k:{\"name\":\"BATCH_SIZE\"}": { ".": {}, "f:name": {}, "f:value": {} },
                            "k:{\"name\":\"LOG_LEVEL\"}": { ".": {}, "f:name": {}, "f:value": {} },
                            "k:{\"name\":\"MODEL_PATH\"}": { ".": {}, "f:name": {}, "f:value": {} },
                            "k:{\"name\":\"OMP_NUM_THREADS\"}": { ".": {}, "f:name": {}, "f:value": {} } },
                            "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                            "f:ports": { ".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": { ".": {}, "f:containerPort": {}, "f:protocol": {} } },
                            "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {} } },
                        "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                        "f:terminationGracePeriodSeconds": {}
                    }
                }
            }
        }
    }])
}

/// A Deployment as `kubectl create deployment NAME --image=... --port=8080` then `kubectl set env`
/// and `kubectl label` produce it, after the API server's defaulting (what a webhook receives).
pub fn deployment(case: Case) -> Value {
    let name = case.name();
    let mut object = json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": name,
            "namespace": "vision",
            "uid": "3f0c9f7e-8d0a-4c55-9a5e-2b1d6c7e8f90",
            "generation": 1,
            "creationTimestamp": "2025-06-02T09:14:07Z",
            "labels": {
                "app": name,
                "app.kubernetes.io/part-of": "line-inspection",
                "team": "vision",
                "tier": "inference"
            },
            "managedFields": managed_fields()
        },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "creationTimestamp": null, "labels": { "app": name } },
                "spec": {
                    "containers": [{
                        "name": "model",
                        "image": format!("registry.example.com/vision/{name}:1.4.2"),
                        "ports": [{ "containerPort": 8080, "protocol": "TCP" }],
                        "env": [
                            { "name": "MODEL_PATH", "value": format!("/models/{name}/model.plan") },
                            { "name": "LOG_LEVEL", "value": "info" },
                            { "name": "BATCH_SIZE", "value": "8" },
                            { "name": "OMP_NUM_THREADS", "value": "2" }
                        ],
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "securityContext": {},
                    "schedulerName": "default-scheduler"
                }
            },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" } },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600
        },
        "status": {}
    });
    let annotations = case.annotations();
    if !annotations.is_null() {
        object["metadata"]["annotations"] = annotations;
    }
    object
}

/// A complete `admission.k8s.io/v1` AdmissionReview for a CREATE of `case`'s Deployment.
pub fn review(case: Case, uid: &str) -> Value {
    let gvk = json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    let gvr = json!({ "group": "apps", "version": "v1", "resource": "deployments" });
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": case.name(),
            "namespace": "vision",
            "operation": "CREATE",
            "userInfo": {
                "username": "kubernetes-admin",
                "uid": "aeb4e5a7-2b0f-4a6b-9a8c-3d2c1f0e9b8a",
                "groups": ["kubeadm:cluster-admins", "system:authenticated"],
                "extra": { "authentication.kubernetes.io/credential-id": ["X509SHA256=6f1d0c2e8b7a9f3e"] }
            },
            "object": deployment(case),
            "oldObject": null,
            "dryRun": false,
            "options": {
                "kind": "CreateOptions",
                "apiVersion": "meta.k8s.io/v1",
                "fieldManager": "kubectl-create",
                "fieldValidation": "Strict"
            }
        }
    })
}

/// One case's body with a slot for the uid, so each request carries a fresh uid cheaply.
pub struct Template {
    pub case: Case,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Template {
    pub fn all() -> Vec<Template> {
        Case::ALL
            .iter()
            .map(|&case| {
                let text = serde_json::to_string(&review(case, UID_PLACEHOLDER))
                    .expect("reviews serialize");
                let (head, tail) = text
                    .split_once(UID_PLACEHOLDER)
                    .expect("the uid slot is there");
                Template {
                    case,
                    head: head.as_bytes().to_vec(),
                    tail: tail.as_bytes().to_vec(),
                }
            })
            .collect()
    }

    pub fn body(&self, uid: &str) -> Bytes {
        let mut body = Vec::with_capacity(self.head.len() + uid.len() + self.tail.len());
        body.extend_from_slice(&self.head);
        body.extend_from_slice(uid.as_bytes());
        body.extend_from_slice(&self.tail);
        Bytes::from(body)
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len() + 36
    }
}

/// The parts of an answer the benchmarks check.
#[derive(Deserialize)]
pub struct ReviewAnswer {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub response: AnswerBody,
}

#[derive(Deserialize)]
pub struct AnswerBody {
    pub uid: String,
    pub allowed: bool,
    #[serde(default)]
    pub patch: Option<String>,
}
