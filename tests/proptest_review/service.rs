//! The services under test (the standalone webhook on a 2-GPU node under three policies), and what
//! every answer must look like: well formed, for the request's uid, and a patch that applies and
//! is idempotent (property (b)).

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use gpushare::core::inventory::Inventory;
use gpushare::core::policy::Policy;
use gpushare::core::workload::Kind;
use gpushare::webhook::admission::{API_VERSION, KIND};
use gpushare::webhook::metrics::Metrics;
use gpushare::webhook::service::{AdmissionService, StandaloneBackend};
use serde::Deserialize;
use serde_json::Value;

/// GPU 1 in mps, and every optional mutation switched on.
const MPS_POLICY: &str = r#"
gpuModes: { "1": mps }
hideGpuFromOtherContainers: true
mps: { hostIPC: true, pipeDirectory: /run/nvidia/mps }
namespaces: { exclude: [kube-system, gpushare-system, legacy] }
"#;

/// Every GPU in mps, tight limits, capacity only warned about, GPU 0 kept for a VM.
const WARN_POLICY: &str = r#"
defaultMode: mps
defaultMpsPercentage: 30
maxClientsPerGpu: 4
strategy: pack
enforcement: warn
reservedForVms: [0]
"#;

/// The standalone webhook on a 2-GPU node under one policy.
pub struct Service {
    pub name: &'static str,
    pub policy: Policy,
    pub service: AdmissionService,
}

/// Built once and shared by every case: a standalone backend keeps no state between requests.
pub fn services() -> &'static [Service] {
    static SERVICES: OnceLock<Vec<Service>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let service = |name, policy: Policy| Service {
            name,
            service: AdmissionService {
                backend: Arc::new(StandaloneBackend::new(
                    policy.clone(),
                    Inventory::standalone(Some(2)),
                )),
                metrics: Arc::new(Metrics::new()),
            },
            policy,
        };
        vec![
            service("default", Policy::default()),
            service("mps", Policy::from_yaml(MPS_POLICY).expect("valid")),
            service("warn", Policy::from_yaml(WARN_POLICY).expect("valid")),
        ]
    })
}

// ---- what every answer must look like -------------------------------------------------------

/// The answer as the API server reads it, spelled out here rather than borrowed from gpushare, so
/// that a field gpushare names wrongly (or one it should not send) fails the properties.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Answer {
    api_version: String,
    kind: String,
    response: Response,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(default)]
    pub status: Option<Status>,
    #[serde(default)]
    pub patch: Option<String>,
    #[serde(default)]
    pub patch_type: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The `metav1.Status` of a denial.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub code: u16,
    pub message: String,
    pub status: String,
}

/// Checks a serialized answer: an AdmissionReview whose denials carry a 4xx status and a
/// message, and whose patch is base64 JSON Patch. Returns the response and the decoded patch.
pub fn well_formed(answer: &[u8]) -> Result<(Response, Option<Value>), String> {
    let review: Answer = serde_json::from_slice(answer)
        .map_err(|e| format!("the answer is not an AdmissionReview: {e}"))?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(format!(
            "the answer is {}/{}",
            review.api_version, review.kind
        ));
    }
    let response = review.response;
    if response.warnings.iter().any(|w| w.trim().is_empty()) {
        return Err(format!("an empty warning: {:?}", response.warnings));
    }
    if !response.allowed {
        let status = response.status.as_ref().ok_or("a denial without status")?;
        if !(400..=499).contains(&status.code)
            || status.message.trim().is_empty()
            || status.status != "Failure"
        {
            return Err(format!(
                "a denial needs a 4xx code and a message: {status:?}"
            ));
        }
        if response.patch.is_some() {
            return Err("a denial carries a patch".into());
        }
        return Ok((response, None));
    }
    let Some(encoded) = response.patch.as_deref() else {
        if response.patch_type.is_some() {
            return Err("patchType without patch".into());
        }
        return Ok((response, None));
    };
    if response.patch_type.as_deref() != Some("JSONPatch") {
        return Err(format!("patchType is {:?}", response.patch_type));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("the patch is not JSON: {e}"))?;
    Ok((response, Some(patch)))
}

/// Applies a decoded JSON Patch to a copy of `object`.
pub fn apply(object: &Value, patch: &Value) -> Result<Value, String> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| format!("the patch is not a JSON Patch: {e}: {patch}"))?;
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &operations.0)
        .map_err(|e| format!("the patch does not apply: {e}\npatch: {patch}\nobject: {object}"))?;
    Ok(patched)
}

/// Sends a review through one service: the well-formed answer, or why it is not.
pub fn answer(s: &Service, review: &Value) -> Result<(Response, Option<Value>), String> {
    let body = serde_json::to_vec(review).expect("a Value serializes");
    let answer = futures::executor::block_on(s.service.review(&body))
        .map_err(|e| format!("a well-formed review was rejected: {e}"))?;
    well_formed(&answer)
}

/// The namespace the service decides for, resolved as it does.
fn effective_namespace(review: &Value) -> &str {
    let non_empty = |p| {
        review
            .pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    non_empty("/request/namespace")
        .or_else(|| non_empty("/request/object/metadata/namespace"))
        .unwrap_or("default")
}

/// The kind gpushare decides this request for, if any (CREATE or UPDATE of a workload kind).
fn handled(review: &Value) -> Option<Kind> {
    let at = |p| review.pointer(p).and_then(Value::as_str);
    if !matches!(at("/request/operation"), Some("CREATE" | "UPDATE")) {
        return None;
    }
    Kind::from_group_kind(
        at("/request/kind/group").unwrap_or_default(),
        at("/request/kind/kind").unwrap_or_default(),
    )
}

/// Property (b) for one review and one service: an answer for the same uid; unhandled requests
/// and excluded namespaces unchanged; a patch that applies, writes only the Deployment's
/// metadata and pod template, and gets no further patch when the patched object comes back.
pub fn check_review(s: &Service, review: &Value) -> Result<(), String> {
    let (response, patch) = answer(s, review)?;
    let uid = review.pointer("/request/uid").and_then(Value::as_str);
    if Some(&*response.uid) != uid {
        return Err(format!("uid {uid:?} answered as {:?}", response.uid));
    }
    let kind = handled(review);
    let untouched = kind.is_none() || s.policy.is_excluded(effective_namespace(review));
    if untouched && !(response.allowed && patch.is_none()) {
        return Err("an unhandled request or excluded namespace was not allowed unchanged".into());
    }
    let Some(patch) = patch else { return Ok(()) };
    // A Pod is its own pod template; every other kind keeps one under its spec.
    let template = match kind {
        Some(Kind::Pod) => "/spec/",
        Some(Kind::CronJob) => "/spec/jobTemplate/spec/template/",
        _ => "/spec/template/",
    };
    for op in patch.as_array().ok_or("the patch is not an array")? {
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        // `/metadata` itself is added whole when the object has none.
        if !(path == "/metadata" || path.starts_with("/metadata/") || path.starts_with(template)) {
            return Err(format!(
                "the patch writes outside metadata and the pod template: {op}"
            ));
        }
    }
    let object = review
        .pointer("/request/object")
        .ok_or("a patch without object")?;
    let mut again = review.clone();
    again["request"]["object"] = apply(object, &patch)?;
    let (second, second_patch) =
        answer(s, &again).map_err(|e| format!("the patched object: {e}"))?;
    if !second.allowed {
        let message = second.status.as_ref().map_or("", |s| &*s.message);
        return Err(format!(
            "the patched object is denied: {message}\nfirst patch: {patch}"
        ));
    }
    match second_patch {
        Some(Value::Array(ops)) if !ops.is_empty() => Err(format!(
            "not idempotent: the patched object gets another patch\nfirst: {patch}\nsecond: {}",
            Value::Array(ops)
        )),
        _ => Ok(()),
    }
}
