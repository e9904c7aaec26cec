//! The `admission.k8s.io/v1` AdmissionReview wire format, as the Kubernetes API reference defines
//! it: only the request fields gpushare reads are parsed (the object stays raw until needed), and
//! the response carries the same `uid`, `allowed`, a `status` on denial, and a base64 JSON Patch.

use std::borrow::Cow;

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
/// answering copies nothing but the patch on its way to base64. Read back (in tests) it owns them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse<'a> {
    pub api_version: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub response: Response<'a>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response<'a> {
    pub uid: Cow<'a, str>,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<Status<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub patch_type: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "no_warnings", default)]
    pub warnings: Cow<'a, [String]>,
}

#[allow(clippy::ptr_arg)] // serde hands over the field as it is
fn no_warnings(warnings: &Cow<'_, [String]>) -> bool {
    warnings.is_empty()
}

/// The `metav1.Status` of a denial.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status<'a> {
    pub code: u16,
    pub message: Cow<'a, str>,
    #[serde(default)]
    pub status: Cow<'a, str>,
}

impl<'a> ReviewResponse<'a> {
    pub fn new(uid: &'a str, verdict: &'a Verdict) -> ReviewResponse<'a> {
        let response = match verdict {
            Verdict::Allowed(m) => {
                let patch = (!m.patch.is_empty()).then(|| {
                    let json = serde_json::to_vec(&m.patch).expect("patch operations serialize");
                    base64::engine::general_purpose::STANDARD.encode(json)
                });
                Response {
                    patch_type: patch.as_ref().map(|_| Cow::Borrowed("JSONPatch")),
                    patch,
                    warnings: Cow::Borrowed(&m.warnings),
                    ..Response::allowed(uid)
                }
            }
            Verdict::Denied(d) => Response {
                allowed: false,
                status: Some(Status {
                    code: d.code(),
                    message: Cow::Borrowed(&d.message),
                    status: Cow::Borrowed("Failure"),
                }),
                ..Response::allowed(uid)
            },
        };
        ReviewResponse::with(response)
    }

    /// Allowed, unchanged: for kinds and operations gpushare does not handle.
    pub fn allow(uid: &'a str) -> ReviewResponse<'a> {
        ReviewResponse::with(Response::allowed(uid))
    }

    fn with(response: Response<'a>) -> ReviewResponse<'a> {
        ReviewResponse {
            api_version: Cow::Borrowed(API_VERSION),
            kind: Cow::Borrowed(KIND),
            response,
        }
    }

    /// The body of the HTTP answer.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("responses serialize")
    }
}

impl<'a> Response<'a> {
    fn allowed(uid: &'a str) -> Response<'a> {
        Response {
            uid: Cow::Borrowed(uid),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: Cow::Borrowed(&[]),
        }
    }
}
