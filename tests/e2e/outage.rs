//! A small blast radius (CONTRACT sections 2b and 7): while gpushare is down, only what could break
//! a GPU promise is refused. Workloads that write GPU variables by hand are refused, the pods of
//! admitted Deployments and Jobs are still created, scaling is refused only where modules live,
//! and namespaces the policy excludes are never sent to a webhook that fails closed.

use serde_json::Value;

use crate::support::*;
use crate::{set_policy, wait_for_node, PolicyRestore, WebhookRestart, GPU};

const EXCLUDED: &str = "e2e-down-excluded";

fn pods_of(ns: &str, selector: &str) -> Vec<Value> {
    get_json(&["-n", ns, "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn names(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Deletes the pods `selector` finds and waits for their controller to create a new one.
fn replaced(ns: &str, selector: &str) {
    let before = names(&pods_of(ns, selector));
    assert!(!before.is_empty(), "no pod of {selector} to replace");
    for pod in &before {
        kubectl(&["-n", ns, "delete", "pod", pod, "--wait=false"]).ok();
    }
    eventually(&format!("a new pod of {selector}"), || {
        let now = names(&pods_of(ns, selector));
        if now.iter().any(|p| !before.contains(p)) {
            Ok(())
        } else {
            Err(format!("pods: {now:?}"))
        }
    });
}

fn job(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, annotations: {{{GPU}: "1"}}}}
spec:
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      restartPolicy: Never
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers: [{{name: batch, image: localhost/gpushare-test:latest, command: ["sleep", "3600"]}}]
"#
    )
}

#[test]
fn with_gpushare_down_only_what_could_break_a_gpu_promise_is_refused() {
    let _restore = PolicyRestore;
    let node = TestNode::new("e2e-down", 2);
    let ns = Namespace::new("e2e-down");
    let plain_ns = Namespace::new("e2e-down-plain");
    let excluded = Namespace::new(EXCLUDED);
    set_policy(&format!(
        "namespaces: {{exclude: [kube-system, gpushare-system, {EXCLUDED}]}}"
    ))
    .ok();
    wait_for_node(&node, &ns);
    // The registration follows the policy: every webhook that fails closed leaves it out.
    eventually("the webhooks to leave out the excluded namespace", || {
        let configuration = get_json(&["mutatingwebhookconfiguration", "gpushare"]);
        let webhooks = configuration["webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let missing: Vec<String> = webhooks
            .iter()
            .filter(|w| !w["namespaceSelector"].to_string().contains(EXCLUDED))
            .filter_map(|w| w["name"].as_str().map(str::to_string))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not yet in {missing:?}"))
        }
    });

    // While gpushare is up: a module, a managed Job, and a plain Deployment elsewhere.
    apply(
        &deployment("admitted", &ns.name, &node.name, 1, &[(GPU, "0")]),
        &["-n", &ns.name],
    )
    .ok();
    apply(&job("batch", &node.name), &["-n", &ns.name]).ok();
    apply(
        &deployment("plain", &plain_ns.name, &node.name, 1, &[]),
        &[],
    )
    .ok();
    let labels = get_json(&["namespace", &ns.name])["metadata"]["labels"].clone();
    assert_eq!(
        labels["gpushare.io/managed-workloads"], "true",
        "labelled for the scale webhook before its first module was admitted: {labels}"
    );
    assert!(
        get_json(&["namespace", &plain_ns.name])["metadata"]["labels"]
            .get("gpushare.io/managed-workloads")
            .is_none(),
        "a namespace without modules is not labelled"
    );
    eventually("the pods of the module and the Job", || {
        let (module, job) = (
            pods_of(&ns.name, "app=admitted"),
            pods_of(&ns.name, "app=batch"),
        );
        if !module.is_empty() && !job.is_empty() {
            Ok(())
        } else {
            Err(format!("{} and {} pods", module.len(), job.len()))
        }
    });

    let _restart = WebhookRestart;
    cluster("stop-webhook").ok();

    let by_hand = deployment("by-hand", &ns.name, &node.name, 1, &[]).replace(
        "          image: nvcr.io/nvidia/k8s/cuda-sample:nbody\n",
        "          image: nvcr.io/nvidia/k8s/cuda-sample:nbody\n          env: [{name: NVIDIA_VISIBLE_DEVICES, value: \"0\"}]\n",
    );
    let refused = apply(&by_hand, &[]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("failed calling webhook \"managed.gpushare.io\""),
        "hand-written GPU variables are refused while gpushare is down: {}",
        refused.stderr
    );
    apply(&deployment("plain", &ns.name, &node.name, 1, &[]), &[]).ok();
    replaced(&ns.name, "app=admitted");
    replaced(&ns.name, "app=batch");

    kubectl(&[
        "-n",
        &plain_ns.name,
        "scale",
        "deployment",
        "plain",
        "--replicas=2",
    ])
    .ok();
    let scale = kubectl(&[
        "-n",
        &ns.name,
        "scale",
        "deployment",
        "admitted",
        "--replicas=2",
    ]);
    assert_ne!(scale.code, 0, "{}", scale.stdout);
    assert!(
        scale
            .stderr
            .contains("failed calling webhook \"scale.gpushare.io\""),
        "{}",
        scale.stderr
    );
    apply(
        &deployment("excluded", &excluded.name, &node.name, 1, &[(GPU, "0")]),
        &[],
    )
    .ok();
}
