//! The decision core, table-driven: one row per rule and edge case of CONTRACT sections 2-4, and
//! per workload kind of section 2a. Each row feeds `gpushare::core::decision::decide` an object as
//! its users write it, applies the returned JSON Patch, and checks what a user would see; allowed
//! rows read the claim back from the patched object and are re-decided to prove the mutation is
//! idempotent.

#[path = "decision_table/deployments.rs"]
mod deployments;
#[path = "decision_table/harness.rs"]
mod harness;
#[path = "decision_table/kinds.rs"]
mod kinds;

use std::panic::{self, AssertUnwindSafe};

use gpushare::core::claim::Claim;
use gpushare::core::domain::{GpuIndex, Mode};
use gpushare::core::inventory::Inventory;
use gpushare::core::policy::Policy;
use gpushare::core::verdict::{Outcome, Verdict};
use harness::*;
use serde_json::json;

#[test]
fn decision_table() {
    let mut rows = deployments::rows();
    assert!(
        rows.len() >= 45,
        "the table should cover every rule: {} rows",
        rows.len()
    );
    rows.extend(kinds::rows());
    let mut names = std::collections::HashSet::new();
    for row in &rows {
        assert!(names.insert(row.name), "duplicate row name {:?}", row.name);
    }
    let mut failures = Vec::new();
    for row in &rows {
        let result = panic::catch_unwind(AssertUnwindSafe(|| run(row))).unwrap_or_else(|panic| {
            Err(format!(
                "panicked: {:?}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or(panic.downcast_ref::<&str>().copied())
            ))
        });
        if let Err(reason) = result {
            failures.push(format!("- {}: {reason}", row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

// ---- what a table does not show well ----------------------------------------------------------

/// Admits `names` one after the other in standalone mode, committing each assignment like the
/// shells do, and returns the GPU each got.
fn admit_in_order(policy: &str, names: &[&str]) -> Vec<u32> {
    let policy = Policy::from_yaml(policy).expect("policy");
    let mut inventory = Inventory::standalone(Some(2));
    let mut gpus = Vec::new();
    for name in names {
        let mut object = web().ann(GPU, "auto").no_surge().0;
        object["metadata"]["name"] = json!(name);
        let Verdict::Allowed(mutation) =
            decide_json("default", &object, None, &policy, &inventory).expect("decide")
        else {
            panic!("{name} denied");
        };
        let Outcome::Assigned(claim) = mutation.outcome else {
            panic!("{name} not assigned")
        };
        gpus.push(claim.gpu().0);
        inventory.hold(claim);
    }
    gpus
}

#[test]
fn least_loaded_spreads_modules_as_they_are_admitted() {
    assert_eq!(admit_in_order("", &["a", "b", "c", "d"]), vec![0, 1, 0, 1]);
}

#[test]
fn pack_fills_one_gpu_before_the_next() {
    assert_eq!(
        admit_in_order("strategy: pack\nmaxClientsPerGpu: 2", &["a", "b", "c", "d"]),
        vec![0, 0, 1, 1]
    );
}

#[test]
fn create_then_update_of_the_mutated_object_needs_no_patch() {
    let policy = Policy::from_yaml(
        "gpuModes: { 1: mps }\nmps: { hostIPC: true, pipeDirectory: /run/nvidia-mps }",
    )
    .expect("policy");
    let inventory = Inventory::standalone(Some(2));
    let created = web().ann(PCT, "25").sidecar().0;
    let Verdict::Allowed(mutation) =
        decide_json("default", &created, None, &policy, &inventory).expect("decide")
    else {
        panic!("denied");
    };
    let mut stored = created.clone();
    json_patch::patch(&mut stored, &mutation.patch).expect("patch applies");
    // The user scales the stored object: gpushare keeps the GPU and writes nothing.
    let mut scaled = stored.clone();
    scaled["spec"]["replicas"] = json!(2);
    let Verdict::Allowed(update) =
        decide_json("default", &scaled, Some(&stored), &policy, &inventory).expect("decide")
    else {
        panic!("update denied");
    };
    assert!(
        update.patch.is_empty(),
        "unexpected patch {}",
        json!(update.patch)
    );
    let Outcome::Assigned(claim) = update.outcome else {
        panic!("not assigned: {:?}", update.outcome)
    };
    assert_eq!(
        (claim.gpu(), claim.mode(), claim.pods()),
        (GpuIndex(1), Mode::Mps, 3),
        "2 replicas and the default rollout's surge pod"
    );
    assert_eq!(
        Claim::of_stored(&workload("default", &scaled).expect("a workload"), false),
        Some(claim)
    );
}
