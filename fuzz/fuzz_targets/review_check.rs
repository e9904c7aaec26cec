//! The webhook's whole path: any body -> `AdmissionService::review` under three policies. An
//! answer must be a well-formed AdmissionReview (a denial with a 4xx status and a message); a
//! patch must be base64 JSON Patch that applies to `request.object`, and sending the patched
//! object again must be allowed with no further patch (CONTRACT section 3: idempotency).
//! Any violation panics: libFuzzer reports it as a crash, `tests/fuzz_seeds.rs` as a failed seed.

use base64::Engine as _;
use futures::executor::block_on;
use gpushare::webhook::admission::{API_VERSION, KIND};
use gpushare::webhook::service::AdmissionService;
use serde_json::Value;

use crate::common;

/// Runs one body through the webhook under every policy of `common::services`; panics on any
/// violation.
pub fn run(body: &[u8]) {
    for service in common::services() {
        check(service, body);
    }
}

/// Decodes an answer, checking the shape every answer must have (read as the API server reads
/// it, not with gpushare's own types); returns whether it allowed and its JSON Patch, if any.
fn answer(bytes: &[u8]) -> (bool, Option<Value>) {
    let review: Value = serde_json::from_slice(bytes).expect("the answer is JSON");
    assert_eq!(review["apiVersion"], API_VERSION);
    assert_eq!(review["kind"], KIND);
    let response = &review["response"];
    let allowed = response["allowed"].as_bool().expect("allowed is a boolean");
    if !allowed {
        let code = response["status"]["code"]
            .as_u64()
            .expect("a denial has a status code");
        assert!((400..=499).contains(&code), "denial code {code}");
        let message = response["status"]["message"].as_str().unwrap_or("");
        assert!(!message.trim().is_empty(), "a denial without message");
        assert!(response.get("patch").is_none(), "a denial with a patch");
        return (false, None);
    }
    let Some(patch) = response.get("patch") else {
        assert!(
            response.get("patchType").is_none(),
            "patchType without patch"
        );
        return (true, None);
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("the patch is a string"))
        .expect("the patch is base64");
    let patch: Value = serde_json::from_slice(&bytes).expect("the patch is JSON");
    (true, Some(patch))
}

fn check(service: &AdmissionService, body: &[u8]) {
    // The standalone backend never waits (it records nothing), so no runtime is needed.
    let Ok(first) = block_on(service.review(body)) else {
        return;
    };
    let (_, patch) = answer(&first);
    let Some(patch) = patch else { return };
    let operations: json_patch::Patch =
        serde_json::from_value(patch.clone()).expect("the patch is a JSON Patch");
    // serde_json does not check UTF-8 in the strings it skips (e.g. `request.options`), so an
    // accepted body may hold invalid UTF-8 there; the replacement character keeps it JSON.
    let text = String::from_utf8_lossy(body);
    let mut review: Value = serde_json::from_str(&text).expect("an accepted body is JSON");
    let object = review
        .pointer_mut("/request/object")
        .expect("a patch comes with request.object");
    if let Err(e) = json_patch::patch(object, &operations.0) {
        panic!("the patch does not apply to request.object: {e}\npatch: {patch}\nobject: {object}");
    }
    let again = serde_json::to_vec(&review).expect("a Value serializes");
    let second =
        block_on(service.review(&again)).expect("the review with the patched object is accepted");
    let (allowed, second_patch) = answer(&second);
    assert!(
        allowed,
        "the patched object is denied\nfirst patch: {patch}"
    );
    let empty = match &second_patch {
        None => true,
        Some(Value::Array(ops)) => ops.is_empty(),
        Some(_) => false,
    };
    assert!(
        empty,
        "not idempotent: the patched object gets another patch\nfirst: {patch}\nsecond: {}",
        second_patch.unwrap_or_default()
    );
}
