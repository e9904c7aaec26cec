//! Bugs found by the properties or the fuzzers (`fuzz/`), kept as inputs under
//! `tests/fixtures/fuzz-regressions/` and replayed here.

use std::path::{Path, PathBuf};

use gpushare::cli::check::{check, parse_documents, Document, Mark};
use gpushare::core::inventory::Inventory;
use gpushare::core::policy::Policy;
use serde_json::{json, Value};

use crate::reviews::{GPU, MEM};
use crate::service::{answer, check_review, services};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A saved AdmissionReview from `tests/fixtures/fuzz-regressions/`.
fn regression_review(name: &str) -> Value {
    let path = fixture(&format!("fuzz-regressions/{name}"));
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every service's answer to a review that passes the checks of property (b).
fn replay(review: &Value) -> Vec<crate::service::Response> {
    services()
        .iter()
        .map(|s| {
            check_review(s, review).unwrap_or_else(|e| panic!("policy {}: {e}", s.name));
            answer(s, review).expect("checked").0
        })
        .collect()
}

#[test]
fn a_managed_deployment_passes_the_review_checks() {
    // Keeps the checks honest: kubectl's Deployment with gpushare.io/gpu is patched under every
    // policy, and the patch applies and is idempotent.
    let mut object: Value = serde_json::from_str(&read(&fixture("deployment-web.json"))).unwrap();
    object["metadata"]["annotations"] = json!({ GPU: "1" });
    let review = json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "u-1",
            "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "operation": "CREATE",
            "namespace": "default",
            "object": object,
            "oldObject": null,
        },
    });
    for response in replay(&review) {
        assert!(response.allowed && response.patch.is_some(), "{response:?}");
    }
}

/// Found by `structured_reviews_get_valid_idempotent_answers`: `MemoryLimit::parse` split the
/// value one byte before its end, which panicked ("byte index is not a char boundary") when the
/// last character was multi-byte, here a full-width `Ｇ` as an IME types it.
#[test]
fn memory_limit_ending_in_a_multibyte_character() {
    for response in replay(&regression_review("memory-limit-multibyte.json")) {
        let status = response.status.expect("denied");
        assert_eq!(status.code, 400);
        assert!(status.message.contains(MEM), "{}", status.message);
    }
}

/// Found by `structured_reviews_get_valid_idempotent_answers`: an UPDATE removing every user key
/// from an assigned Deployment took the release path, which skipped rule 1 for init containers:
/// one naming two GPUs was let through, yet the same object was denied on its next UPDATE (once
/// `gpushare.io/assigned-gpu` was gone), so the verdict depended on history.
#[test]
fn release_still_checks_init_containers_for_several_gpus() {
    for response in replay(&regression_review("release-init-container-two-gpus.json")) {
        let status = response.status.expect("denied");
        assert_eq!(status.code, 403);
        assert!(
            status.message.contains("NVIDIA_VISIBLE_DEVICES"),
            "{}",
            status.message
        );
    }
}

/// Found by the `review` fuzz target: a managed Deployment without `spec` was read as an empty
/// Deployment and got a patch adding `/spec/template/metadata`, a path that does not exist;
/// `gpushare check` showed it as "internal error applying the patch". Now a 400 denial.
#[test]
fn deployment_without_spec_is_denied() {
    for response in replay(&regression_review("deployment-without-spec.json")) {
        assert_eq!(response.status.expect("denied").code, 400);
    }
}

/// Found by the `review` fuzz target once `deployment_without_spec_is_denied` passed: a managed
/// Deployment whose top-level `metadata` is missing (or null) and whose pod template carries the
/// annotations got a patch adding `/metadata/annotations` under a `/metadata` that did not exist
/// (now the patch adds `/metadata` whole); one whose `spec` is a JSON array (serde read a sequence
/// as a struct) got a patch under `/spec/template` (now it is a malformed request: HTTP 400).
#[test]
fn a_deployment_without_metadata_gets_a_patch_that_applies() {
    replay(&regression_review("deployment-without-metadata.json"));
}

#[test]
fn a_deployment_whose_spec_is_an_array_is_a_bad_request() {
    let body = serde_json::to_vec(&regression_review("deployment-spec-as-array.json"))
        .expect("serializes");
    for s in services() {
        let error = futures::executor::block_on(s.service.review(&body)).expect_err("HTTP 400");
        assert!(error.to_string().contains("expected an object"), "{error}");
    }
}

/// Found by `check_core_never_panics`: the capacity check added a GPU's committed MPS percentage
/// and clients to the module's demand in u32, unchecked. With a module already on the GPU, a
/// Deployment of 2147483647 replicas (the int32 maximum Kubernetes accepts) panicked "attempt to
/// add with overflow" in debug builds; in release builds both sums wrapped and the module was
/// allowed far over capacity (`gpushare check` and the cluster backend).
#[test]
fn capacity_with_huge_replicas_does_not_overflow() {
    let text = read(&fixture("fuzz-regressions/check-huge-replicas.yaml"));
    let documents = parse_documents("check-huge-replicas.yaml", &text)
        .expect("parses")
        .into_iter()
        .map(|value| Document {
            source: "check-huge-replicas.yaml".into(),
            value,
        })
        .collect();
    let policy = Policy::from_yaml(&read(&fixture("policy-gpu1-mps.yaml"))).expect("valid");
    let report = check(documents, &policy, Inventory::standalone(Some(2)));
    assert_eq!(report.lines.len(), 2);
    assert_eq!(report.lines[0].mark, Mark::Allowed, "{:?}", report.lines[0]);
    assert_eq!(
        report.lines[1].mark,
        Mark::Denied,
        "over capacity: {:?}",
        report.lines[1]
    );
}
