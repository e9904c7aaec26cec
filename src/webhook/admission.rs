//! The `admission.k8s.io/v1` AdmissionReview wire format, as the Kubernetes API reference defines
//! it: only the request fields gpushare reads are parsed (the object stays raw until needed), and
//! the response carries the same `uid`, `allowed`, a `status` on denial, and a base64 JSON Patch.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::core::verdict::Verdict;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview gpushare can answer (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BadReview {
    #[error("body is not an AdmissionReview: {0}")]
    Syntax(String),
    #[error("apiVersion/kind is {0}/{1}; expected admission.k8s.io/v1 AdmissionReview")]
    WrongType(String, String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has no uid")]
    NoUid,
    #[error("request.object is not a valid {kind}: {error}")]
    Object { kind: String, error: String },
    #[error("request.object is missing for a {0} request")]
    NoObject(String),
}

/// An AdmissionReview whose objects are read as `O`: raw JSON, or already typed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct AdmissionReview<O> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default = "none")]
    pub request: Option<AdmissionRequest<O>>,
}

fn none<T>() -> Option<T> {
    None
}

/// `request`, reduced to what the decision needs; `userInfo`, `options` and the rest are skipped without being parsed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct AdmissionRequest<O> {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    /// The resource and subresource, e.g. `apps/v1 deployments` and `scale` for `kubectl scale`.
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "none")]
    pub object: Option<O>,
    #[serde(default = "none")]
    pub old_object: Option<O>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl<O> AdmissionRequest<O> {
    /// The envelope without its objects, and the objects (`object`, `oldObject`).
    pub fn split(self) -> (AdmissionRequest<()>, Option<O>, Option<O>) {
        let envelope = AdmissionRequest {
            uid: self.uid,
            kind: self.kind,
            resource: self.resource,
            sub_resource: self.sub_resource,
            operation: self.operation,
            namespace: self.namespace,
            name: self.name,
            object: None,
            old_object: None,
            dry_run: self.dry_run,
        };
        (envelope, self.object, self.old_object)
    }
}

#[derive(Debug, Default, Deserialize, Serialize, Clone, PartialEq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone, PartialEq)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

/// Parses a body into a review with a request and a uid, its objects read as `O`.
pub fn parse<'a, O: Deserialize<'a>>(body: &'a [u8]) -> Result<AdmissionRequest<O>, BadReview> {
    // One UTF-8 check of the whole body costs less than serde_json's check of every string in it.
    let text = std::str::from_utf8(body)
        .map_err(|e| BadReview::Syntax(format!("the body is not UTF-8: {e}")))?;
    let review: AdmissionReview<O> =
        serde_json::from_str(text).map_err(|e| BadReview::Syntax(e.to_string()))?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(BadReview::WrongType(review.api_version, review.kind));
    }
    let request = review.request.ok_or(BadReview::NoRequest)?;
    if request.uid.is_empty() {
        return Err(BadReview::NoUid);
    }
    Ok(request)
}

/// A raw JSON `null` counts as absent (the API server sends `oldObject: null` on CREATE).
pub fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

/// The answer. It borrows the uid, warnings and message from the request and the verdict, so
/// answering copies nothing but the patch on its way to base64.
#[derive(Debug)]
pub struct ReviewResponse<'a> {
    uid: &'a str,
    allowed: bool,
    status: Option<Status<'a>>,
    /// The JSON Patch, as JSON: `to_json` writes its base64 straight into the answer.
    patch: Option<Vec<u8>>,
    warnings: &'a [String],
}

/// The `metav1.Status` of a denial.
#[derive(Debug)]
struct Status<'a> {
    code: u16,
    message: &'a str,
}

impl<'a> ReviewResponse<'a> {
    pub fn new(uid: &'a str, verdict: &'a Verdict) -> ReviewResponse<'a> {
        match verdict {
            Verdict::Allowed(m) => ReviewResponse {
                patch: (!m.patch.is_empty()).then(|| {
                    // About what one operation of gpushare's takes, so the buffer seldom regrows.
                    let mut json = Vec::with_capacity(160 * m.patch.len());
                    serde_json::to_writer(&mut json, &m.patch).expect("patch operations serialize");
                    json
                }),
                warnings: &m.warnings,
                ..ReviewResponse::allow(uid)
            },
            Verdict::Denied(d) => ReviewResponse {
                allowed: false,
                status: Some(Status {
                    code: d.code(),
                    message: &d.message,
                }),
                ..ReviewResponse::allow(uid)
            },
        }
    }

    /// Allowed, unchanged: for kinds and operations gpushare does not handle.
    pub fn allow(uid: &'a str) -> ReviewResponse<'a> {
        ReviewResponse {
            uid,
            allowed: true,
            status: None,
            patch: None,
            warnings: &[],
        }
    }

    /// The body of the HTTP answer, written field by field: the answer is on every admission's
    /// path, and only the uid, the message and the warnings can hold characters JSON escapes.
    pub fn to_json(&self) -> Vec<u8> {
        // STANDARD pads; a patch is far from the size where the length overflows.
        let patch_len = self.patch.as_ref().map_or(0, |json| {
            base64::encoded_len(json.len(), true).expect("a patch's base64 length fits")
        });
        let message = self.status.as_ref().map_or("", |s| s.message);
        let mut out = Vec::with_capacity(160 + self.uid.len() + patch_len + message.len());
        out.extend_from_slice(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
        );
        json_string(&mut out, self.uid);
        out.extend_from_slice(if self.allowed {
            br#","allowed":true"#.as_slice()
        } else {
            br#","allowed":false"#.as_slice()
        });
        if let Some(status) = &self.status {
            out.extend_from_slice(
                format!(r#","status":{{"code":{},"message":"#, status.code).as_bytes(),
            );
            json_string(&mut out, status.message);
            out.extend_from_slice(br#","status":"Failure"}"#);
        }
        if let Some(json) = &self.patch {
            // Base64 needs no escaping in a JSON string.
            out.extend_from_slice(br#","patch":""#);
            let start = out.len();
            out.resize(start + patch_len, 0);
            BASE64
                .encode_slice(json, &mut out[start..])
                .expect("the answer has room for the patch's base64");
            out.extend_from_slice(br#"","patchType":"JSONPatch""#);
        }
        if !self.warnings.is_empty() {
            out.extend_from_slice(br#","warnings":"#);
            serde_json::to_writer(&mut out, self.warnings).expect("strings serialize");
        }
        out.extend_from_slice(b"}}");
        out
    }
}

fn json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("strings serialize");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::verdict::{Denial, Rule};
    use serde_json::{json, Value};

    fn read(response: &ReviewResponse) -> Value {
        serde_json::from_slice(&response.to_json()).expect("the answer is JSON")
    }

    #[test]
    fn an_allowed_answer_carries_the_patch_in_base64_and_the_warnings() {
        let patch: Vec<json_patch::PatchOperation> = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/annotations/x", "value": "y"}
        ]))
        .expect("a patch");
        let verdict = Verdict::Allowed(crate::core::verdict::Mutation {
            patch: patch.clone(),
            warnings: vec!["mind \"this\"".into()],
            outcome: crate::core::verdict::Outcome::Unmanaged,
        });
        let answer = read(&ReviewResponse::new("u", &verdict));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().expect("a patch"))
            .expect("base64");
        assert_eq!(
            serde_json::from_slice::<Vec<json_patch::PatchOperation>>(&decoded)
                .expect("JSON Patch"),
            patch
        );
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["warnings"], json!(["mind \"this\""]));
    }

    #[test]
    fn an_unchanged_answer_carries_only_the_uid_and_allowed() {
        assert_eq!(
            read(&ReviewResponse::allow("a\"b")),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": "a\"b", "allowed": true}})
        );
    }

    #[test]
    fn a_denial_carries_its_code_and_escaped_message() {
        let verdict = Verdict::Denied(Denial::new(Rule::Capacity, "line one\n\"two\""));
        let answer = read(&ReviewResponse::new("u", &verdict));
        let Verdict::Denied(denial) = &verdict else {
            unreachable!()
        };
        assert_eq!(
            answer["response"],
            json!({"uid": "u", "allowed": false,
                   "status": {"code": denial.code(), "message": "line one\n\"two\"", "status": "Failure"}})
        );
    }
}
