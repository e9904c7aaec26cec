//! End-to-end: gpushare deployed from `manifests/` on the real control plane of `make cluster`,
//! judged by the real kube-apiserver and kubectl: stored objects, kubectl's exit codes and
//! messages, the CEL matchConditions and failure policies, RBAC and watches.
//!
//! Run with `make e2e`. Tests run one at a time (`--test-threads=1`): some change the policy
//! ConfigMap or stop gpushare or kube-apiserver. Each test pins its workloads to a Node of its own
//! and works in a namespace of its own, so GPU capacity is never shared between tests.

mod consumers;
mod drain;
mod kinds;
mod ledger;
mod outage;
mod packaging;
mod plugin;
mod pods;
mod replicas;
mod shares;
mod support;
mod updates;

use serde_json::Value;
use support::*;

const GPU: &str = "gpushare.io/gpu";
const MODE: &str = "gpushare.io/mode";
const PCT: &str = "gpushare.io/mps-percentage";
const ASSIGNED_GPU: &str = "gpushare.io/assigned-gpu";
const ASSIGNED_MODE: &str = "gpushare.io/assigned-mode";
const NVD: &str = "NVIDIA_VISIBLE_DEVICES";
const MPS_PCT: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";

/// Waits until gpushare's caches know `node`: a managed, pinned Deployment is admitted (dry-run).
fn wait_for_node(node: &TestNode, ns: &Namespace) {
    let probe = deployment("node-probe", &ns.name, &node.name, 1, &[(GPU, "0")]);
    // In-cluster the Service spreads the probes over two replicas, each with its own node watch:
    // one answer in a row can come from the replica that sees the node first, so it takes enough
    // in a row that both must have answered (a miss is 2 x 2^-12).
    let wanted = if in_cluster() { 12 } else { 1 };
    let mut in_a_row = 0;
    eventually(&format!("gpushare to see node {}", node.name), || {
        let run = apply(&probe, &["--dry-run=server"]);
        if run.code != 0 {
            in_a_row = 0;
            return Err(run.stderr);
        }
        in_a_row += 1;
        match in_a_row >= wanted {
            true => Ok(()),
            false => Err(format!("{in_a_row} of {wanted} answers in a row")),
        }
    });
}

fn get_deployment(ns: &Namespace, name: &str) -> Value {
    get_json(&["-n", &ns.name, "deployment", name])
}

/// The policy ConfigMap as manifests/ ship it, re-applied when a test that changed it ends.
pub(crate) struct PolicyRestore;

impl Drop for PolicyRestore {
    fn drop(&mut self) {
        let path = root().join("manifests/policy-configmap.yaml");
        let _ = kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    }
}

fn set_policy(yaml: &str) -> Run {
    let indented: String = yaml.lines().map(|l| format!("    {l}\n")).collect();
    apply(
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gpushare-policy\n  namespace: gpushare-system\ndata:\n  policy.yaml: |\n{indented}"
        ),
        &[],
    )
}

// ---- kubectl apply ------------------------------------------------------------------------------

#[test]
fn apply_stores_the_mutated_deployment_its_replicaset_inherits_it_and_reapply_is_a_no_op() {
    let node = TestNode::new("e2e-apply", 2);
    let ns = Namespace::new("e2e-apply");
    wait_for_node(&node, &ns);
    let manifest = deployment("nbody", &ns.name, &node.name, 1, &[(GPU, "1")]);

    let created = apply(&manifest, &[]).ok();
    assert!(
        created.stdout.contains("deployment.apps/nbody created"),
        "{}",
        created.stdout
    );

    let stored = get_deployment(&ns, "nbody");
    assert_eq!(
        template_env(&stored, "/spec/template", NVD).as_deref(),
        Some("1")
    );
    for metadata in ["/metadata", "/spec/template/metadata"] {
        assert_eq!(
            annotation(&stored, metadata, ASSIGNED_GPU).as_deref(),
            Some("1"),
            "{metadata}"
        );
        assert_eq!(
            annotation(&stored, metadata, ASSIGNED_MODE).as_deref(),
            Some("time-slicing"),
            "{metadata}"
        );
    }

    // The Deployment controller of kube-controller-manager copies the mutated template.
    let replicaset = eventually("the Deployment's ReplicaSet", || {
        let list = get_json(&["-n", &ns.name, "replicasets", "-l", "app=nbody"]);
        list["items"]
            .get(0)
            .cloned()
            .ok_or_else(|| "no ReplicaSet yet".to_string())
    });
    assert_eq!(
        template_env(&replicaset, "/spec/template", NVD).as_deref(),
        Some("1")
    );
    assert_eq!(
        annotation(&replicaset, "/spec/template/metadata", ASSIGNED_GPU).as_deref(),
        Some("1")
    );

    let again = apply(&manifest, &[]).ok();
    assert!(
        again.stdout.contains("deployment.apps/nbody unchanged"),
        "{}",
        again.stdout
    );
    let after = get_deployment(&ns, "nbody");
    assert_eq!(
        after["metadata"]["generation"],
        stored["metadata"]["generation"]
    );
    assert_eq!(
        template_env(&after, "/spec/template", NVD).as_deref(),
        Some("1")
    );
}

// ---- each rule's denial, as kubectl prints it ---------------------------------------------------

#[test]
fn every_rule_denies_with_kubectls_webhook_message_and_stores_nothing() {
    let node = TestNode::new("e2e-rules", 2);
    let ns = Namespace::new("e2e-rules");
    wait_for_node(&node, &ns);
    let with =
        |annotations: &[(&str, &str)]| deployment("rule", &ns.name, &node.name, 1, annotations);
    let two_gpu_limit = with(&[(GPU, "0")]).replace(
        "          image: nvcr.io/nvidia/k8s/cuda-sample:nbody\n",
        "          image: nvcr.io/nvidia/k8s/cuda-sample:nbody\n          resources: {limits: {nvidia.com/gpu: 2}}\n",
    );
    let visible_all = with(&[]).replace(
        "          image: nvcr.io/nvidia/k8s/cuda-sample:nbody\n",
        "          image: nvcr.io/nvidia/k8s/cuda-sample:nbody\n          env: [{name: NVIDIA_VISIBLE_DEVICES, value: all}]\n",
    );
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "rule 1: a GPU list",
            with(&[(GPU, "0,1")]),
            MANAGED_DENIED,
            "one GPU",
        ),
        (
            "rule 1: nvidia.com/gpu 2",
            two_gpu_limit,
            MANAGED_DENIED,
            "nvidia.com/gpu",
        ),
        (
            // Written by hand, so it goes to the webhook that fails closed (CONTRACT 2b).
            "rule 1: NVIDIA_VISIBLE_DEVICES=all by hand",
            visible_all,
            MANAGED_DENIED,
            NVD,
        ),
        (
            "rule 2: index beyond the node's GPUs",
            with(&[(GPU, "2")]),
            MANAGED_DENIED,
            "VMs",
        ),
        (
            "rule 3: percentage out of range",
            with(&[(PCT, "150")]),
            MANAGED_DENIED,
            PCT,
        ),
        (
            "rule 3: a typo'd key",
            with(&[("gpushare.io/gpus", "0")]),
            MANAGED_DENIED,
            "did you mean gpushare.io/gpu?",
        ),
        (
            "rule 4: mps on a time-slicing GPU",
            with(&[(GPU, "0"), (MODE, "mps")]),
            MANAGED_DENIED,
            "time-slicing",
        ),
        (
            "rule 5: more client processes than the GPU takes",
            deployment("rule", &ns.name, &node.name, 49, &[(GPU, "0")]),
            MANAGED_DENIED,
            "maxClientsPerGpu",
        ),
    ];
    for (case, manifest, prefix, fragment) in &cases {
        let run = apply(manifest, &[]);
        assert!(
            run.stderr.contains("Error from server"),
            "{case}: {}",
            run.stderr
        );
        assert_denied(&run, prefix, fragment);
        let stored = kubectl(&[
            "-n",
            &ns.name,
            "get",
            "deployment",
            "rule",
            "--ignore-not-found",
            "-o",
            "name",
        ])
        .ok();
        assert_eq!(
            stored.stdout.trim(),
            "",
            "{case}: a denied Deployment was stored"
        );
    }
}

// ---- server-side dry run ------------------------------------------------------------------------

#[test]
fn server_dry_run_prints_the_mutated_object_stores_nothing_and_takes_no_capacity() {
    let node = TestNode::new("e2e-dry-run", 1);
    let ns = Namespace::new("e2e-dry-run");
    wait_for_node(&node, &ns);
    // 48 clients fill GPU 0 (maxClientsPerGpu); a dry run that took them would deny the next.
    let full = deployment("full", &ns.name, &node.name, 48, &[(GPU, "0")]);
    for _ in 0..2 {
        let run = apply(&full, &["--dry-run=server", "-o", "yaml"]).ok();
        assert!(
            run.stdout.contains("name: NVIDIA_VISIBLE_DEVICES"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("gpushare.io/assigned-gpu: \"0\""),
            "{}",
            run.stdout
        );
    }
    let missing = kubectl(&["-n", &ns.name, "get", "deployment", "full"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("NotFound"), "{}", missing.stderr);
    apply(&full, &[]).ok();
}

// ---- capacity -----------------------------------------------------------------------------------

#[test]
fn capacity_holds_across_deployments_applied_one_by_one_and_from_one_directory() {
    let node = TestNode::new("e2e-capacity", 1);
    let ns = Namespace::new("e2e-capacity");
    wait_for_node(&node, &ns);
    let module = |name: &str| deployment(name, &ns.name, &node.name, 30, &[(GPU, "0")]);

    apply(&module("first"), &[]).ok();
    let second = apply(&module("second"), &[]);
    assert_denied(
        &second,
        MANAGED_DENIED,
        "30 client processes + 30 = 60 exceeds the limit of 48",
    );

    // Deleting the first frees its share: the second fits once gpushare has seen the delete.
    kubectl(&["-n", &ns.name, "delete", "deployment", "first"]).ok();
    eventually("the freed share to admit the second Deployment", || {
        let run = apply(&module("second"), &[]);
        if run.code == 0 {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
    kubectl(&["-n", &ns.name, "delete", "deployment", "second"]).ok();

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.yaml"), module("a")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), module("b")).unwrap();
    let both = eventually("the second share to be freed", || {
        let run = kubectl(&["apply", "-f", dir.path().to_str().unwrap()]);
        if run.stdout.contains("deployment.apps/a created") {
            Ok(run)
        } else {
            let _ = kubectl(&[
                "-n",
                &ns.name,
                "delete",
                "deployment",
                "a",
                "b",
                "--ignore-not-found",
            ]);
            Err(format!("{}{}", run.stdout, run.stderr))
        }
    });
    assert_denied(&both, MANAGED_DENIED, "exceeds the limit of 48");
    let stored = kubectl(&["-n", &ns.name, "get", "deployments", "-o", "name"]).ok();
    assert_eq!(stored.stdout.trim(), "deployment.apps/a");
}

// ---- the policy ConfigMap -----------------------------------------------------------------------

#[test]
fn policy_changes_apply_live_an_invalid_one_keeps_the_last_good_and_deleting_returns_to_default() {
    let _restore = PolicyRestore;
    let node = TestNode::new("e2e-policy", 2);
    let ns = Namespace::new("e2e-policy");
    wait_for_node(&node, &ns);
    let serving = serve_identity();
    let on_gpu_1 = deployment("policy", &ns.name, &node.name, 1, &[(GPU, "1")]);
    apply(&on_gpu_1, &["--dry-run=server"]).ok();

    set_policy("reservedForVms: [1]").ok();
    eventually("the new policy to reserve GPU 1", || {
        let run = apply(&on_gpu_1, &["--dry-run=server"]);
        if run.code == 1 && run.stderr.contains("reserved") {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });

    set_policy("reservedForVms: [1]\nstrategy: fastest").ok();
    let event = eventually("an InvalidPolicy Warning in gpushare-system", || {
        let events = get_json(&["-n", "gpushare-system", "events"]);
        events["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|e| e["reason"] == "InvalidPolicy")
                    .cloned()
            })
            .ok_or_else(|| "no InvalidPolicy event".to_string())
    });
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["involvedObject"]["name"], "gpushare-policy");
    assert!(
        event["message"].as_str().unwrap_or("").contains("fastest"),
        "{event}"
    );
    let still = apply(&on_gpu_1, &["--dry-run=server"]);
    assert_denied(&still, MANAGED_DENIED, "reserved");

    kubectl(&[
        "-n",
        "gpushare-system",
        "delete",
        "configmap",
        "gpushare-policy",
    ])
    .ok();
    eventually("the embedded default policy after the delete", || {
        let run = apply(&on_gpu_1, &["--dry-run=server"]);
        if run.code == 0 {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
    assert_eq!(serve_identity(), serving, "gpushare serve was restarted");
}

#[test]
fn mps_modules_share_one_gpu_by_percentage_under_a_per_node_policy() {
    let _restore = PolicyRestore;
    let node = TestNode::new("e2e-mps", 2);
    let ns = Namespace::new("e2e-mps");
    set_policy("nodes:\n  e2e-mps: { gpuModes: { \"1\": mps } }").ok();
    wait_for_node(&node, &ns);
    let module = |name: &str, pct: &str| deployment(name, &ns.name, &node.name, 1, &[(PCT, pct)]);
    eventually("the mps policy", || {
        let run = apply(&module("a", "60"), &[]);
        if run.code == 0 {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
    let a = get_deployment(&ns, "a");
    assert_eq!(
        template_env(&a, "/spec/template", NVD).as_deref(),
        Some("1")
    );
    assert_eq!(
        template_env(&a, "/spec/template", MPS_PCT).as_deref(),
        Some("60")
    );
    assert_denied(&apply(&module("b", "60"), &[]), MANAGED_DENIED, "60%");
    apply(&module("c", "40"), &[]).ok();
}

// ---- nodes --------------------------------------------------------------------------------------

#[test]
fn a_gpu_taken_by_a_vm_makes_its_index_unusable() {
    let node = TestNode::new("e2e-vm", 2);
    let ns = Namespace::new("e2e-vm");
    wait_for_node(&node, &ns);
    let on = |gpu: &str| deployment("vm", &ns.name, &node.name, 1, &[(GPU, gpu)]);
    apply(&on("1"), &["--dry-run=server"]).ok();

    node.set_gpus(1);
    eventually("GPU 1 to be gone", || {
        let run = apply(&on("1"), &["--dry-run=server"]);
        if run.code == 1 && run.stderr.contains("VMs") {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
    apply(&on("0"), &["--dry-run=server"]).ok();
}

// ---- outages ------------------------------------------------------------------------------------

/// Starts gpushare again when the outage test ends, whatever happened in it.
pub(crate) struct WebhookRestart;

impl Drop for WebhookRestart {
    fn drop(&mut self) {
        let run = cluster("start-webhook");
        if run.code != 0 && !std::thread::panicking() {
            panic!("gpushare did not come back: {}", run.stderr);
        }
    }
}

#[test]
fn with_gpushare_down_managed_workloads_are_rejected_unmanaged_admitted_and_kube_system_never_sent()
{
    let node = TestNode::new("e2e-outage", 2);
    let ns = Namespace::new("e2e-outage");
    wait_for_node(&node, &ns);
    let _restart = WebhookRestart;
    cluster("stop-webhook").ok();

    let managed = apply(
        &deployment("managed", &ns.name, &node.name, 1, &[(GPU, "0")]),
        &[],
    );
    assert_eq!(managed.code, 1, "{}", managed.stdout);
    assert!(
        managed
            .stderr
            .contains("failed calling webhook \"managed.gpushare.io\""),
        "{}",
        managed.stderr
    );

    apply(&deployment("plain", &ns.name, &node.name, 1, &[]), &[]).ok();

    let system = deployment(
        "e2e-never-sent",
        "kube-system",
        &node.name,
        1,
        &[(GPU, "0")],
    );
    apply(&system, &[]).ok();
    let stored = get_json(&["-n", "kube-system", "deployment", "e2e-never-sent"]);
    assert_eq!(template_env(&stored, "/spec/template", NVD), None);
    kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "deployment",
        "e2e-never-sent",
    ])
    .ok();
}

/// Starts kube-apiserver again when the test ends, whatever happened in it.
struct ApiserverRestart;

impl Drop for ApiserverRestart {
    fn drop(&mut self) {
        let run = cluster("start-apiserver");
        if run.code != 0 && !std::thread::panicking() {
            panic!("kube-apiserver did not come back: {}", run.stderr);
        }
    }
}

#[test]
fn through_a_kube_apiserver_restart_gpushare_stays_ready_answers_from_caches_and_resyncs() {
    let before = TestNode::new("e2e-restart-a", 2);
    let ns = Namespace::new("e2e-restart");
    wait_for_node(&before, &ns);
    // Read before the outage: in-cluster, the replicas are found through the API server.
    let replicas = webhook_endpoints();
    assert!(!replicas.is_empty(), "no ready gpushare replica");
    {
        let _restart = ApiserverRestart;
        cluster("stop-apiserver").ok();
        assert_ne!(
            kubectl(&["get", "--raw", "/readyz"]).code,
            0,
            "kube-apiserver still answers"
        );
        for _ in 0..5 {
            for replica in &replicas {
                assert_eq!(
                    replica.status("/readyz"),
                    "200",
                    "/readyz of {replica:?} during the outage"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    for replica in &replicas {
        assert_eq!(replica.status("/readyz"), "200", "{replica:?}");
    }
    // Answers still come from the caches: the node known before the outage is still there.
    let pinned = deployment("cached", &ns.name, &before.name, 1, &[(GPU, "1")]);
    eventually("admissions after the restart", || {
        let run = apply(&pinned, &["--dry-run=server"]);
        if run.code == 0 {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
    // The watches resume: a node created after the restart is seen, and a changed one too.
    let after = TestNode::new("e2e-restart-b", 2);
    wait_for_node(&after, &ns);
    before.set_gpus(1);
    eventually("the changed node after the restart", || {
        let run = apply(&pinned, &["--dry-run=server"]);
        if run.code == 1 && run.stderr.contains("VMs") {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
}

// ---- gpushare status ----------------------------------------------------------------------------

#[test]
fn gpushare_status_shows_the_real_clusters_nodes_and_modules() {
    let node = TestNode::new("e2e-status", 2);
    let ns = Namespace::new("e2e-status");
    wait_for_node(&node, &ns);
    apply(
        &deployment("shown", &ns.name, &node.name, 3, &[(GPU, "1")]),
        &[],
    )
    .ok();

    let table = run(gpushare().arg("status"), None).ok();
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("e2e-status ") && l.contains("shown"))
        .unwrap_or_else(|| panic!("no row for the module:\n{}", table.stdout));
    assert!(
        line.contains("time-slicing") && line.contains(" 3/48 "),
        "{line}"
    );

    let json = run(gpushare().args(["status", "-o", "json"]), None)
        .ok()
        .json();
    let rows = json.as_array().cloned().unwrap_or_default();
    let row = rows
        .iter()
        .find(|r| r["node"] == "e2e-status" && r["gpu"] == 1)
        .unwrap_or_else(|| panic!("no row for e2e-status GPU 1: {json}"));
    assert_eq!(row["clientProcesses"], 3, "{row}");

    let dir = tempfile::tempdir().unwrap();
    let unreachable = dir.path().join("kubeconfig");
    std::fs::write(
        &unreachable,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\nusers: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    let failed = run(
        gpushare().arg("status").env("KUBECONFIG", &unreachable),
        None,
    );
    assert_ne!(
        failed.code, 0,
        "status must fail when it cannot read the cluster"
    );
}
