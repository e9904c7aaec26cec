//! A drain that completes (CONTRACT section 7): on a single-node device, `kubectl drain` of the
//! node completes with the shipped PodDisruptionBudget, because gpushare lets every replica go
//! while no node can take an evicted one; once the node is schedulable again, one replica at a
//! time. Run on the real node of `make cluster` (in-cluster: gpushare's own replicas; otherwise
//! two stand-in pods with gpushare's pod labels, which the shipped budget selects).

use serde_json::Value;

use crate::support::*;
use crate::WebhookRestart;

const NODE: &str = "edge-node-1";

fn budget() -> Value {
    get_json(&["-n", "gpushare-system", "poddisruptionbudget", "gpushare"])
}

/// The budget's pod selector, as `-l` takes it.
fn selector() -> String {
    let labels = budget()["spec"]["selector"]["matchLabels"].clone();
    labels
        .as_object()
        .expect("the budget selects by labels")
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

fn wait_for_budget(max_unavailable: Value) {
    eventually(
        &format!("the budget's maxUnavailable to be {max_unavailable}"),
        || {
            let now = budget()["spec"]["maxUnavailable"].clone();
            if now == max_unavailable {
                Ok(())
            } else {
                Err(format!("it is {now}"))
            }
        },
    );
}

/// Uncordons the node and removes the stand-in whatever happened.
struct Uncordon;

impl Drop for Uncordon {
    fn drop(&mut self) {
        let _ = kubectl(&["uncordon", NODE]);
        let _ = kubectl(&[
            "-n",
            "gpushare-system",
            "delete",
            "deployment",
            "drain-stand-in",
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

fn ready_pods(selector: &str) -> usize {
    get_json(&["-n", "gpushare-system", "pods", "-l", selector])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| {
            pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

#[test]
fn a_drain_of_the_only_node_completes_with_the_shipped_disruption_budget() {
    let selector = selector();
    wait_for_budget(serde_json::json!(1));
    let stand_in = !in_cluster();
    // Dropped in reverse: the node is uncordoned first, then (in-cluster) gpushare waited for.
    let _restart = in_cluster().then_some(WebhookRestart);
    let _uncordon = Uncordon;
    if stand_in {
        let labels: String = selector
            .split(',')
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("key=value");
                format!("{k}: {v}, ")
            })
            .collect();
        let yaml = format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: drain-stand-in, namespace: gpushare-system}}
spec:
  replicas: 2
  selector: {{matchLabels: {{{labels}drain-stand-in: "true"}}}}
  template:
    metadata: {{labels: {{{labels}drain-stand-in: "true"}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {NODE}}}
      terminationGracePeriodSeconds: 1
      # gpushare-system enforces Pod Security restricted.
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: wait
          image: localhost/gpushare-test:latest
          imagePullPolicy: Never
          command: [sleep, "3600"]
          securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"#
        );
        apply(&yaml, &[]).ok();
    }
    eventually("two Ready replicas on the node", || {
        match ready_pods(&selector) {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} Ready")),
        }
    });

    let drain = kubectl(&[
        "drain",
        NODE,
        "--pod-selector",
        &selector,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=150s",
    ]);
    assert_eq!(
        drain.code, 0,
        "the drain must complete: {}\n{}",
        drain.stdout, drain.stderr
    );
    assert_eq!(ready_pods(&selector), 0, "every replica was evicted");
    if stand_in {
        // gpushare itself kept serving (it runs outside the cluster here) and lets every replica go
        // while no node can take one.
        assert_eq!(budget()["spec"]["maxUnavailable"], "100%");
        kubectl(&["uncordon", NODE]).ok();
        wait_for_budget(serde_json::json!(1));
        kubectl(&[
            "-n",
            "gpushare-system",
            "delete",
            "deployment",
            "drain-stand-in",
        ])
        .ok();
    }
}
