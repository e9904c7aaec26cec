//! `gpushare apply -f` (the kubectl plugin's path for users who may not register webhooks) against
//! the in-process fake API server through a kubeconfig: the same verdict lines as `check`, decided
//! against the live claims, and server-side apply of the mutated objects only when all are allowed.
//! A user with rights in one namespace only is simulated by 403s on every cluster-wide read.

mod common;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{gpushare, run_with_deadline, ASSIGNED_GPU, VISIBLE_DEVICES};
use fake_apiserver::FakeApiServer;
use serde_json::{json, Value};

const NS: &str = "team";

fn node(name: &str, gpus: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "nvidia.com/gpu.count": gpus.to_string()}},
        "status": {"allocatable": {"nvidia.com/gpu": gpus.to_string()}}
    })
}

/// A Deployment manifest without a namespace, as users write them for `-n`.
fn deployment(name: &str, replicas: u32, gpu: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  annotations: {{gpushare.io/gpu: \"{gpu}\"}}\n\
         spec:\n  replicas: {replicas}\n  strategy: {{rollingUpdate: {{maxSurge: 0}}}}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n\
         \x20   spec:\n      containers: [{{name: cuda, image: nvcr.io/nvidia/k8s/cuda-sample:nbody}}]\n"
    )
}

/// A Deployment as the API server stores one that gpushare admitted on `gpu`.
fn stored(name: &str, replicas: u32, gpu: u32) -> Value {
    let assigned = json!({"gpushare.io/gpu": gpu.to_string(), "gpushare.io/assigned-gpu": gpu.to_string(),
        "gpushare.io/assigned-mode": "time-slicing"});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": assigned.clone()},
        "spec": {"replicas": replicas, "strategy": {"rollingUpdate": {"maxSurge": 0}},
            "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}, "annotations": assigned},
            "spec": {"containers": [{"name": "cuda", "image": "nbody",
                "env": [{"name": VISIBLE_DEVICES, "value": gpu.to_string()}]}]}}}
    })
}

struct Setup {
    api: FakeApiServer,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Setup {
    async fn new(objects: Vec<Value>) -> Setup {
        let api = FakeApiServer::start().await;
        for object in objects {
            api.apply(object);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = api.kubeconfig(dir.path());
        Setup {
            api,
            dir,
            kubeconfig,
        }
    }

    /// Every read a user bound to a Role in `team` may not make.
    fn namespace_only(&self) {
        self.api.fail_requests("/api/v1/nodes", 403);
        self.api.fail_requests("/api/v1/pods", 403);
        self.api
            .fail_requests("/api/v1/namespaces/gpushare-system/", 403);
        for resource in ["deployments", "replicasets", "statefulsets", "daemonsets"] {
            self.api
                .fail_requests(&format!("/apis/apps/v1/{resource}"), 403);
        }
        for resource in ["jobs", "cronjobs"] {
            self.api
                .fail_requests(&format!("/apis/batch/v1/{resource}"), 403);
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("manifest written");
        path
    }

    fn apply(&self, files: &[&Path], extra: &[&str]) -> Output {
        let mut command = gpushare();
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .args(["apply", "-n", NS, "-f"])
            .args(files)
            .args(extra);
        run_with_deadline(&mut command, None)
    }

    fn stored(&self, name: &str) -> Option<Value> {
        self.api.get("Deployment", Some(NS), name)
    }

    fn apply_patches(&self) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.query.contains("fieldManager=gpushare"))
            .count()
    }
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_manifest_is_stored_mutated_by_server_side_apply() {
    let setup = Setup::new(vec![node("edge-1", 2)]).await;
    let manifest = setup.file("nbody.yaml", &deployment("nbody", 1, "1"));
    let output = setup.apply(&[&manifest], &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "ALLOWED team/Deployment/nbody gpu=1 mode=time-slicing\ndeployment.apps/nbody serverside-applied\n"
    );
    let object = setup.stored("nbody").expect("stored");
    assert_eq!(object["metadata"]["annotations"][ASSIGNED_GPU], "1");
    assert_eq!(
        object["spec"]["template"]["metadata"]["annotations"][ASSIGNED_GPU],
        "1"
    );
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": VISIBLE_DEVICES, "value": "1"}])
    );
    let patch = setup
        .api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH");
    assert_eq!(
        patch.path,
        "/apis/apps/v1/namespaces/team/deployments/nbody"
    );
    assert!(
        patch.query.contains("fieldManager=gpushare") && patch.query.contains("force=true"),
        "server-side apply as field manager gpushare, conflicts forced: {}",
        patch.query
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_denied_document_prints_its_line_applies_nothing_and_exits_1() {
    let setup = Setup::new(vec![node("edge-1", 2)]).await;
    let good = setup.file("good.yaml", &deployment("good", 1, "0"));
    let bad = setup.file("bad.yaml", &deployment("bad", 1, "0,1"));
    let output = setup.apply(&[&good, &bad], &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "ALLOWED team/Deployment/good gpu=0 mode=time-slicing"
    );
    assert!(
        lines[1].starts_with("DENIED team/Deployment/bad: gpushare.io/gpu is \"0,1\""),
        "{stdout}"
    );
    assert_eq!(lines.len(), 2, "nothing applied is reported: {stdout}");
    assert!(stderr.contains("nothing applied"), "{stderr}");
    assert_eq!(setup.apply_patches(), 0, "no server-side apply at all");
    assert!(setup.stored("good").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_counts_the_live_claims_and_reapplying_a_stored_workload_keeps_its_gpu() {
    let policy = "maxClientsPerGpu: 3\n";
    let setup = Setup::new(vec![node("edge-1", 2), stored("tracker", 2, 0)]).await;
    let policy_file = setup.file("policy.yaml", policy);
    let policy_arg = ["--policy", policy_file.to_str().expect("utf-8")];

    // 2 stored clients on GPU 0: two more do not fit, and GPU 1 is chosen by auto.
    let full = setup.file("full.yaml", &deployment("vision", 2, "0"));
    let output = setup.apply(&[&full], &policy_arg);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("DENIED team/Deployment/vision:"),
        "{stdout}"
    );
    let auto = setup.file("auto.yaml", &deployment("vision", 2, "auto"));
    let output = setup.apply(&[&auto], &policy_arg);
    assert_eq!(
        text(&output).0.lines().next(),
        Some("ALLOWED team/Deployment/vision gpu=1 mode=time-slicing")
    );

    // Re-applied as it was written, the stored Deployment is its own UPDATE: not counted twice.
    let again = setup.file("tracker.yaml", &deployment("tracker", 3, "0"));
    let output = setup.apply(&[&again], &policy_arg);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("ALLOWED team/Deployment/tracker gpu=0"),
        "{stdout}"
    );
    assert_eq!(
        setup.stored("tracker").expect("stored")["spec"]["replicas"],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_only_user_decides_on_gpus_and_its_namespaces_workloads() {
    let setup = Setup::new(vec![node("edge-1", 2), stored("tracker", 48, 0)]).await;
    setup.namespace_only();

    // The node has 2 GPUs, but it cannot be read: --gpus 1 stands for it.
    let second = setup.file("second.yaml", &deployment("second", 1, "1"));
    let output = setup.apply(&[&second], &["--gpus", "1"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("DENIED team/Deployment/second:"),
        "{stdout}"
    );
    assert!(
        stderr.contains("you may not list nodes")
            && stderr.contains("1 GPUs (--gpus)")
            && stderr.contains("you may not read the policy ConfigMap"),
        "{stderr}"
    );

    // The namespace's own stored workload fills GPU 0 (48 clients): auto has nothing left on 1 GPU.
    let auto = setup.file("auto.yaml", &deployment("more", 1, "auto"));
    let output = setup.apply(&[&auto], &["--gpus", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output).1);
    let output = setup.apply(&[&auto], &["--gpus", "2"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("ALLOWED team/Deployment/more gpu=1"),
        "{stdout}"
    );
    assert!(setup.stored("more").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_kinds_are_applied_beside_and_a_refusal_by_the_api_server_exits_1() {
    let setup = Setup::new(vec![node("edge-1", 2)]).await;
    let config =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n";
    let both = setup.file(
        "app.yaml",
        &format!("{config}---\n{}", deployment("nbody", 1, "0")),
    );
    let output = setup.apply(&[&both], &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "ALLOWED team/Deployment/nbody gpu=0 mode=time-slicing\nconfigmap/settings serverside-applied\n\
         deployment.apps/nbody serverside-applied\n"
    );
    assert_eq!(
        setup
            .api
            .get("ConfigMap", Some(NS), "settings")
            .expect("stored")["data"]["mode"],
        "fast"
    );

    setup
        .api
        .fail_requests("/apis/apps/v1/namespaces/team/deployments/nbody", 403);
    let output = setup.apply(&[&both], &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deployment.apps/nbody: the API server did not apply it")
            && stderr.contains("applied before it: configmap/settings"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_input_and_a_foreign_namespace_exit_2_before_any_request() {
    let setup = Setup::new(vec![node("edge-1", 2)]).await;
    let missing = setup.dir.path().join("missing.yaml");
    let output = setup.apply(&[&missing], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output).1);

    let elsewhere = setup.file(
        "elsewhere.yaml",
        &deployment("x", 1, "0").replace("  name: x\n", "  name: x\n  namespace: other\n"),
    );
    let output = setup.apply(&[&elsewhere], &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pass -n other"), "{stderr}");
    assert_eq!(setup.apply_patches(), 0);
}

#[test]
fn invoked_as_kubectl_gpushare_it_is_the_same_program() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = dir.path().join("kubectl-gpushare");
    std::os::unix::fs::symlink(common::bin(), &plugin).expect("symlink");
    let manifest = dir.path().join("m.yaml");
    std::fs::write(&manifest, deployment("m", 1, "0")).expect("written");
    let output = run_with_deadline(
        std::process::Command::new(&plugin)
            .args(["check", "--gpus", "2"])
            .arg(&manifest),
        None,
    );
    assert_eq!(
        text(&output).0,
        "ALLOWED default/Deployment/m gpu=0 mode=time-slicing\n"
    );
    let output = run_with_deadline(std::process::Command::new(&plugin).arg("--help"), None);
    assert!(
        text(&output)
            .0
            .contains("Usage: kubectl gpushare <COMMAND>"),
        "{}",
        text(&output).0
    );
}
