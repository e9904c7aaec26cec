//! Every GPU consumer is counted (CONTRACT section 2b), through the real kube-apiserver and kubectl,
//! as a tenant whose only rights are the built-in `edit` role in one namespace plus
//! `pods/ephemeralcontainers`: GPU variables written by hand, owners gpushare does not know or
//! that do not exist, `kubectl debug`, and what a gpushare outage still lets through.

use serde_json::Value;

use crate::support::*;
use crate::{set_policy, PolicyRestore, ASSIGNED_GPU, GPU, NVD, PCT};

/// A tenant of `ns`: a ServiceAccount bound to the built-in `edit` role there, allowed to add
/// ephemeral containers (`kubectl debug`). Returns the `--as` argument that acts as it.
fn tenant(ns: &Namespace) -> String {
    let yaml = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: tenant, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: tenant-edit, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}
subjects: [{{kind: ServiceAccount, name: tenant, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: debug, namespace: {ns}}}
rules:
  - apiGroups: [""]
    resources: ["pods/ephemeralcontainers"]
    verbs: ["get", "update", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: tenant-debug, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: debug}}
subjects: [{{kind: ServiceAccount, name: tenant, namespace: {ns}}}]
"#,
        ns = ns.name
    );
    apply(&yaml, &[]).ok();
    format!("--as=system:serviceaccount:{}:tenant", ns.name)
}

/// `env` entries that select GPU 0 by hand at `percentage`.
fn by_hand(percentage: u32) -> String {
    format!(
        "[{{name: {NVD}, value: \"0\"}}, {{name: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, value: \"{percentage}\"}}]"
    )
}

/// A Deployment of one pod (no surge) on `node` whose container writes the GPU variables itself.
fn hand_deployment(name: &str, node: &str, percentage: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  strategy: {{rollingUpdate: {{maxSurge: 0}}}}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers: [{{name: cuda, image: localhost/gpushare-test:latest, env: {env}}}]
"#,
        env = by_hand(percentage)
    )
}

/// A bare Pod on `node` with the given metadata lines and container env.
fn pod(name: &str, node: &str, metadata: &str, env: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
{metadata}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers: [{{name: cuda, image: localhost/gpushare-test:latest, env: {env}}}]
"#
    )
}

fn assigned_gpu(object: &Value) -> Option<String> {
    annotation(object, "/metadata", ASSIGNED_GPU)
}

/// Waits until gpushare knows `node` and its mps policy: a 1% dry run on GPU 0 is admitted.
fn wait_for_mps_node(node: &TestNode, ns: &Namespace) {
    let probe = pod(
        "probe",
        &node.name,
        "  annotations: {gpushare.io/mps-percentage: \"1\"}",
        "[]",
    );
    eventually(
        &format!("gpushare to see the mps node {}", node.name),
        || {
            let run = apply(&probe, &["-n", &ns.name, "--dry-run=server"]);
            if run.code == 0 {
                Ok(())
            } else {
                Err(run.stderr)
            }
        },
    );
}

#[test]
fn every_route_to_a_gpu_is_counted_or_refused_and_two_60_percent_shares_never_both_stored() {
    let _restore = PolicyRestore;
    let node = TestNode::new("e2e-routes", 1);
    let ns = Namespace::new("e2e-routes");
    set_policy("nodes:\n  e2e-routes: { gpuModes: { \"0\": mps } }").ok();
    wait_for_mps_node(&node, &ns);
    let as_tenant = tenant(&ns);
    let tenant_apply = |yaml: &str| apply(yaml, &["-n", &ns.name, &as_tenant]);

    // The device's documented way: the variables written by hand, no annotation. Counted.
    tenant_apply(&hand_deployment("by-hand", &node.name, 60)).ok();
    let stored = get_json(&["-n", &ns.name, "deployment", "by-hand"]);
    assert_eq!(assigned_gpu(&stored).as_deref(), Some("0"), "{stored:#}");

    // Each other route to GPU 0 at 60% is refused: 60% + 60% > 100%.
    let bare = pod("bare", &node.name, "", &by_hand(60));
    assert_denied(&tenant_apply(&bare), MANAGED_DENIED, "60% MPS committed");
    kubectl(&["-n", &ns.name, "create", "configmap", "owner", &as_tenant]).ok();
    let owner_uid = get_json(&["-n", &ns.name, "configmap", "owner"])["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_string();
    let configmap_owned = pod(
        "configmap-owned",
        &node.name,
        &format!(
            "  annotations: {{{GPU}: \"0\", {PCT}: \"60\"}}\n  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {owner_uid}, controller: true}}]"
        ),
        "[]",
    );
    assert_denied(
        &tenant_apply(&configmap_owned),
        MANAGED_DENIED,
        "60% MPS committed",
    );
    let forged = pod(
        "forged-owner",
        &node.name,
        "  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: nobody, uid: 0d5c6a8e-0000-4000-8000-000000000000, controller: true}]",
        &by_hand(60),
    );
    let run = tenant_apply(&forged);
    assert_ne!(
        run.code, 0,
        "a forged owner exempts nothing: {}",
        run.stdout
    );
    assert!(run.stderr.contains("60% MPS committed"), "{}", run.stderr);

    // kubectl debug with the variables: one more client process at 60% of GPU 0.
    tenant_apply(&pod("plain", &node.name, "", "[]")).ok();
    let debug = kubectl(&[
        "-n",
        &ns.name,
        &as_tenant,
        "debug",
        "plain",
        "--image=localhost/gpushare-test:latest",
        "--container=debugger",
        &format!("--env={NVD}=0"),
        "--env=CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=60",
    ]);
    assert_ne!(debug.code, 0, "{}", debug.stdout);
    assert!(
        debug.stderr.contains("ephemeral.gpushare.io")
            && debug.stderr.contains("60% MPS committed"),
        "{}",
        debug.stderr
    );
    // A debug container that uses no GPU is not even sent.
    kubectl(&[
        "-n",
        &ns.name,
        &as_tenant,
        "debug",
        "plain",
        "--image=localhost/gpushare-test:latest",
        "--container=shell",
    ])
    .ok();

    // Freed within seconds of the deletion, the bare Pod then fits.
    kubectl(&[
        "-n",
        &ns.name,
        "delete",
        "deployment",
        "by-hand",
        "--wait=false",
    ])
    .ok();
    eventually("the hand-written share freed", || {
        let run = tenant_apply(&bare);
        if run.code == 0 {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
    let stored = get_json(&["-n", &ns.name, "pod", "bare"]);
    assert_eq!(assigned_gpu(&stored).as_deref(), Some("0"));
}

#[test]
fn the_devices_job_sample_unchanged_is_stored_with_both_jobs_on_gpu_0_and_a_third_is_denied() {
    let _restore = PolicyRestore;
    let node = TestNode::new("e2e-sample", 1);
    let ns = Namespace::new("e2e-sample");
    set_policy("nodes:\n  e2e-sample: { gpuModes: { \"0\": mps } }").ok();
    wait_for_mps_node(&node, &ns);
    let sample = std::fs::read_to_string(root().join("examples/allowed-ase-gpu-sharing.yaml"))
        .expect("the sample")
        .replace(
            "      hostPID: true\n",
            &format!(
                "      nodeSelector: {{kubernetes.io/hostname: {}}}\n      hostPID: true\n",
                node.name
            ),
        );
    apply(&sample, &["-n", &ns.name]).ok();
    for job in ["cuda-sample1", "cuda-sample2"] {
        let stored = get_json(&["-n", &ns.name, "job", job]);
        assert_eq!(assigned_gpu(&stored).as_deref(), Some("0"), "{job}");
        assert_eq!(
            annotation(&stored, "/metadata", "gpushare.io/assigned-mps-percentage").as_deref(),
            Some("50"),
            "{job}: the default percentage"
        );
        assert_eq!(
            template_env(
                &stored,
                "/spec/template",
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
            )
            .as_deref(),
            Some("50")
        );
    }
    let third = sample
        .split("\n---\n")
        .next()
        .expect("a first Job")
        .replace("cuda-sample1", "cuda-sample3");
    assert_denied(
        &apply(&third, &["-n", &ns.name]),
        MANAGED_DENIED,
        "exceeds maxMpsPercentagePerGpu",
    );
}

#[test]
fn a_pod_an_unknown_operator_made_comes_out_patched_and_counted() {
    let node = TestNode::new("e2e-argo", 1);
    let ns = Namespace::new("e2e-argo");
    crate::wait_for_node(&node, &ns);
    let as_tenant = tenant(&ns);
    let owned = pod(
        "train-step",
        &node.name,
        &format!(
            "  annotations: {{{GPU}: \"0\"}}\n  ownerReferences: [{{apiVersion: argoproj.io/v1alpha1, kind: Workflow, name: train, uid: 7b1e2c3d-0000-4000-8000-000000000001, controller: true}}]"
        ),
        "[]",
    );
    apply(&owned, &["-n", &ns.name, &as_tenant]).ok();
    let stored = get_json(&["-n", &ns.name, "pod", "train-step"]);
    assert_eq!(assigned_gpu(&stored).as_deref(), Some("0"));
    assert_eq!(template_env(&stored, "", NVD).as_deref(), Some("0"));
    let status = gpushare()
        .args(["status", "-o", "json"])
        .output()
        .expect("status");
    let rows: Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let counted = rows.as_array().into_iter().flatten().any(|row| {
        row["node"] == node.name.as_str() && row["modules"].to_string().contains("Pod/train-step")
    });
    assert!(counted, "status counts the Pod: {rows:#}");
}
