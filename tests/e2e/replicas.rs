//! gpushare's own replicas going away under load (CONTRACT section 6a, `make cluster IN_CLUSTER=1`):
//! a replica pod killed during a burst of admissions, and a rolling update of gpushare itself.
//! Both run only in-cluster, where kube-apiserver calls the Deployment of `manifests/` through its
//! Service; the local serve of `make cluster` has no second replica to fall back on.
//!
//! What they prove is the ledger's promise, read back through the real API server: every stored
//! workload carries its assignment, and once the dust settles the free capacity of the GPU is
//! exactly 100% minus what is stored (nothing lost, nothing leaked by an admission whose answer
//! never arrived).

use std::thread;

use serde_json::Value;

use crate::support::*;
use crate::{ASSIGNED_GPU, GPU, PCT};

fn mps_module(name: &str, ns: &Namespace, node: &TestNode, percentage: u32) -> String {
    deployment(
        name,
        &ns.name,
        &node.name,
        1,
        &[(GPU, "0"), (PCT, &percentage.to_string())],
    )
}

fn wait_for_two_ready_replicas() {
    eventually("two Ready gpushare replicas", || {
        let ready = webhook_endpoints().len();
        if ready == 2 {
            Ok(())
        } else {
            Err(format!("{ready} Ready"))
        }
    });
}

/// The percentages of the namespace's stored Deployments; fails when one has no assignment.
fn stored_percentages(ns: &Namespace) -> Vec<u32> {
    let list = get_json(&["-n", &ns.name, "deployments"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d: &Value| {
            let name = d["metadata"]["name"].as_str().unwrap_or("?");
            assert_eq!(
                annotation(d, "/metadata", ASSIGNED_GPU).as_deref(),
                Some("0"),
                "stored Deployment {name} carries its assignment"
            );
            annotation(d, "/metadata", PCT)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{name} has a percentage"))
        })
        .collect()
}

/// Once commitments settle, GPU 0 has exactly `free`% left: a module of that size is admitted and
/// one of a percent more is refused (both server-side dry runs, which take nothing).
fn assert_exactly_free(ns: &Namespace, node: &TestNode, free: u32) {
    eventually(&format!("exactly {free}% of GPU 0 to be free"), || {
        if free > 0 {
            let fits = apply(
                &mps_module("probe-fits", ns, node, free),
                &["--dry-run=server"],
            );
            if fits.code != 0 {
                return Err(format!("{free}% refused: {}", fits.stderr));
            }
        }
        if free < 100 {
            let over = apply(
                &mps_module("probe-over", ns, node, free + 1),
                &["--dry-run=server"],
            );
            if over.code == 0 {
                return Err(format!("{}% admitted", free + 1));
            }
        }
        Ok(())
    });
}

#[test]
fn a_replica_killed_during_a_burst_of_admissions_loses_no_commitment_and_leaks_none() {
    if !in_cluster() {
        return;
    }
    let _restore = crate::PolicyRestore;
    let node = TestNode::new("e2e-replica-kill", 1);
    let ns = Namespace::new("e2e-replica-kill");
    crate::set_policy(&crate::ledger::mps_policy(&node.name)).ok();
    crate::wait_for_node(&node, &ns);
    wait_for_two_ready_replicas();
    let victim = gpushare_pods()
        .first()
        .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .expect("a replica pod");

    // 12 modules of 10% (the GPU takes 10), created 4 at a time; the kill lands among them.
    let outcomes: Vec<(String, i32, String)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let (ns, node) = (&ns, &node);
                scope.spawn(move || {
                    (0..3)
                        .map(|round| {
                            let name = format!("m{}", round * 4 + worker);
                            let run = apply(&mps_module(&name, ns, node, 10), &[]);
                            (name, run.code, run.stderr)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        kubectl(&[
            "-n",
            "gpushare-system",
            "delete",
            "pod",
            &victim,
            "--grace-period=0",
            "--force",
        ])
        .ok();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });

    // A create refused because its replica died is refused cleanly, never stored unassigned.
    for (name, code, stderr) in &outcomes {
        assert!(
            *code == 0 || stderr.contains("denied") || stderr.contains("failed calling webhook"),
            "{name}: an unexpected failure: {stderr}"
        );
    }
    let stored = stored_percentages(&ns);
    assert!(
        stored.iter().sum::<u32>() <= 100,
        "GPU 0 over-committed: {stored:?}"
    );
    assert!(
        !stored.is_empty(),
        "some admissions that fit succeed: {outcomes:?}"
    );
    assert_exactly_free(&ns, &node, 100 - stored.iter().sum::<u32>());
    wait_for_two_ready_replicas();
}

fn rollout_status(timeout: &str) -> Run {
    kubectl(&[
        "-n",
        "gpushare-system",
        "rollout",
        "status",
        "deployment",
        "gpushare",
        &format!("--timeout={timeout}"),
    ])
}

#[test]
fn a_rolling_update_of_gpushare_during_admissions_refuses_nothing_that_fits() {
    if !in_cluster() {
        return;
    }
    let _restore = crate::PolicyRestore;
    let node = TestNode::new("e2e-rollout", 1);
    let ns = Namespace::new("e2e-rollout");
    crate::set_policy(&crate::ledger::mps_policy(&node.name)).ok();
    crate::wait_for_node(&node, &ns);
    wait_for_two_ready_replicas();
    let before = serve_identity();

    kubectl(&[
        "-n",
        "gpushare-system",
        "rollout",
        "restart",
        "deployment",
        "gpushare",
    ])
    .ok();
    // 1% modules one after another until the rollout is over (and a few after): each one fits.
    let mut created = 0u32;
    let mut after_rollout = 0;
    while after_rollout < 3 && created < 90 {
        let name = format!("m{created}");
        let run = apply(&mps_module(&name, &ns, &node, 1), &[]);
        assert_eq!(
            run.code, 0,
            "{name} fits and is refused during the rollout: {}",
            run.stderr
        );
        created += 1;
        if rollout_status("1s").code == 0 {
            after_rollout += 1;
        }
    }
    rollout_status("300s").ok();
    assert_ne!(serve_identity(), before, "gpushare's pods were replaced");
    assert_eq!(stored_percentages(&ns).iter().sum::<u32>(), created);
    assert_exactly_free(&ns, &node, 100 - created);
    wait_for_two_ready_replicas();
}
