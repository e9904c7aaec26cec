//! The answer to one review, checked for its envelope, and its JSON Patch applied as the API
//! server applies it.

use base64::Engine as _;
use serde_json::Value;

/// The response of one review, checked for its envelope.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The whole AdmissionReview that came back.
    pub review: Value,
    pub allowed: bool,
    /// The decoded JSON Patch, when `response.patch` is present.
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
    pub code: Option<u64>,
    pub message: String,
}

impl Answer {
    pub(super) fn new(request: &Value, review: Value) -> Answer {
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review:#}");
        assert_eq!(review["kind"], "AdmissionReview", "{review:#}");
        let response = &review["response"];
        assert!(response.is_object(), "no response in {review:#}");
        assert_eq!(
            response["uid"], request["request"]["uid"],
            "the response must carry the request's uid"
        );
        let allowed = response["allowed"]
            .as_bool()
            .unwrap_or_else(|| panic!("response.allowed is not a boolean: {review:#}"));
        let patch = match response.get("patch").filter(|p| !p.is_null()) {
            None => {
                assert!(
                    response.get("patchType").is_none_or(Value::is_null),
                    "patchType without a patch: {review:#}"
                );
                None
            }
            Some(encoded) => {
                assert_eq!(response["patchType"], "JSONPatch", "{review:#}");
                let encoded = encoded.as_str().expect("response.patch is a base64 string");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .expect("response.patch is standard base64");
                let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "response.patch is not a JSON Patch ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                Some(patch)
            }
        };
        let warnings = response
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .map(|s| s.as_str().expect("warnings are strings").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let code = response.pointer("/status/code").and_then(Value::as_u64);
        let message = response
            .pointer("/status/message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if allowed {
            assert!(
                code.is_none_or(|c| (200..300).contains(&c)),
                "an allowed response with an error status: {review:#}"
            );
        } else {
            let code = code.unwrap_or_else(|| panic!("a denial without status.code: {review:#}"));
            assert!(
                (400..500).contains(&code),
                "a denial's code must be 4xx: {review:#}"
            );
            assert!(
                !message.trim().is_empty(),
                "a denial without a message: {review:#}"
            );
            assert!(patch.is_none(), "a denial carries no patch: {review:#}");
        }
        Answer {
            review,
            allowed,
            patch,
            warnings,
            code,
            message,
        }
    }

    /// True when the answer changes nothing: no patch, or an empty one.
    pub fn unchanged(&self) -> bool {
        self.patch.as_ref().is_none_or(|p| p.0.is_empty())
    }

    /// Asserts an allowed answer and applies its patch (if any) to `object`.
    pub fn apply(&self, object: &Value) -> Value {
        assert!(self.allowed, "expected allowed, got {:#}", self.review);
        apply_patch(object, self.patch.as_ref())
    }

    pub fn assert_allowed_unchanged(&self) {
        assert!(self.allowed, "expected allowed: {:#}", self.review);
        assert!(self.unchanged(), "expected no patch: {:#}", self.review);
    }

    pub fn assert_denied(&self, code: u64, mentions: &str) {
        assert!(!self.allowed, "expected a denial: {:#}", self.review);
        assert_eq!(self.code, Some(code), "{:#}", self.review);
        assert!(
            self.message.contains(mentions),
            "the denial message should mention {mentions:?}: {}",
            self.message
        );
    }
}

/// Applies a JSON Patch to a copy of `object`, as the API server does.
pub fn apply_patch(object: &Value, patch: Option<&json_patch::Patch>) -> Value {
    let mut patched = object.clone();
    if let Some(patch) = patch {
        json_patch::patch(&mut patched, patch).unwrap_or_else(|e| {
            panic!(
                "the returned patch does not apply ({e}):\npatch: {}\nobject: {object:#}",
                serde_json::to_string_pretty(patch).unwrap_or_default()
            )
        });
    }
    patched
}
