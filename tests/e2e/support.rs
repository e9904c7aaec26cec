//! The e2e harness: the cluster of `make cluster` (read from `target/cluster/env`), the real
//! `kubectl` with its exit codes and messages, throw-away namespaces and Nodes, and polling with
//! generous deadlines. Every test talks to the real kube-apiserver, never to gpushare directly,
//! except where it checks gpushare's own endpoints.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a condition that crosses the API server, a watch and gpushare's caches may take on a
/// busy 2-core CI machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn cluster_dir() -> PathBuf {
    root().join("target/cluster")
}

/// `target/cluster/env`, as `make cluster` wrote it.
pub fn env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = cluster_dir().join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; start the control plane with `make cluster` (make e2e does)",
                path.display()
            )
        });
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

pub fn env_var(name: &str) -> &'static str {
    env()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from target/cluster/env"))
}

pub fn kubeconfig() -> &'static str {
    env_var("KUBECONFIG")
}

/// The cluster's release, `1.y.z` (`make cluster KUBE_VERSION=...`, else the pinned one).
pub fn kubernetes_release() -> &'static str {
    let version = env_var("KUBERNETES_VERSION");
    version.strip_prefix('v').unwrap_or(version)
}

/// The minor of the cluster's release: 36 for 1.36.3.
pub fn kubernetes_minor() -> u32 {
    kubernetes_release()
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("KUBERNETES_VERSION is not 1.y.z: {}", kubernetes_release()))
}

/// The kustomize components of `manifests/components/` a cluster of this release needs, as
/// `make cluster` deploys with them (docs/operator-guide.md, "Kubernetes versions").
pub fn release_components() -> Vec<&'static str> {
    let mut components = Vec::new();
    if kubernetes_minor() < 28 {
        components.push("no-match-conditions");
    }
    if kubernetes_minor() < 30 {
        components.push("no-prestop-sleep");
    }
    components
}

/// What a finished command printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs a command with an optional stdin, bounded by a deadline.
pub fn run(command: &mut Command, stdin: Option<&str>) -> Run {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin piped")
            .write_all(input.as_bytes())
            .expect("stdin written");
    }
    let output = child.wait_with_output().expect("command finishes");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The real kubectl, as the cluster admin, with a request timeout so nothing hangs forever.
pub fn kubectl(args: &[&str]) -> Run {
    kubectl_in(args, None)
}

pub fn kubectl_in(args: &[&str], stdin: Option<&str>) -> Run {
    // kubectl of the pinned release, as `make cluster` built it.
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| env_var("KUBECTL").to_string());
    let mut command = Command::new(kubectl);
    command
        .env("KUBECONFIG", kubeconfig())
        .arg("--request-timeout=30s")
        .args(args);
    run(&mut command, stdin)
}

/// `kubectl apply -f -` of YAML text.
pub fn apply(yaml: &str, extra: &[&str]) -> Run {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    kubectl_in(&args, Some(yaml))
}

pub fn get_json(args: &[&str]) -> Value {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    kubectl(&all).ok().json()
}

/// The `gpushare` binary of this build.
pub fn gpushare() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gpushare"));
    command.env("NO_COLOR", "1").env("KUBECONFIG", kubeconfig());
    command
}

/// The control-plane script, for outages (stop/start of serve or kube-apiserver).
pub fn cluster(action: &str) -> Run {
    let mut command = Command::new("bash");
    command
        .arg(root().join("tests/e2e/cluster.sh"))
        .arg(action)
        .env("GPUSHARE", env!("CARGO_BIN_EXE_gpushare"));
    run(&mut command, None)
}

/// Polls `check` until it returns `Some`, failing the test with `what` and the last observation
/// when the deadline passes.
#[track_caller]
pub fn eventually<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    eventually_within(DEADLINE, what, check)
}

/// `eventually` with a deadline of its own (pods that start on the real node).
#[track_caller]
pub fn eventually_within<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A namespace of one test, deleted (with everything in it) when the test ends.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn new(name: &str) -> Namespace {
        // A leftover of an interrupted earlier run is finished off first.
        let _ = kubectl(&[
            "delete",
            "namespace",
            name,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=60s",
        ]);
        kubectl(&["create", "namespace", name]).ok();
        eventually(&format!("the default ServiceAccount of {name}"), || {
            let run = kubectl(&["-n", name, "get", "serviceaccount", "default"]);
            if run.code == 0 {
                Ok(())
            } else {
                Err(run.stderr)
            }
        });
        Namespace {
            name: name.to_string(),
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// A Node of one test: an edge device with `gpus` T4s offered to Kubernetes, labelled and with
/// allocatable as the NVIDIA device plugin and GPU feature discovery set them. Deleted on drop.
/// Workloads of a test pin themselves to its node, so tests never share GPU capacity.
pub struct TestNode {
    pub name: String,
}

impl TestNode {
    pub fn new(name: &str, gpus: u32) -> TestNode {
        let _ = kubectl(&["delete", "node", name, "--ignore-not-found"]);
        let yaml = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n    nvidia.com/gpu.present: \"true\"\n    nvidia.com/gpu.product: Tesla-T4\n    nvidia.com/gpu.count: \"{gpus}\"\n"
        );
        apply(&yaml, &[]).ok();
        let node = TestNode {
            name: name.to_string(),
        };
        node.set_allocatable(gpus);
        node
    }

    pub fn set_allocatable(&self, gpus: u32) {
        let patch = format!(
            "{{\"status\":{{\"capacity\":{{\"nvidia.com/gpu\":\"{gpus}\"}},\"allocatable\":{{\"nvidia.com/gpu\":\"{gpus}\"}}}}}}"
        );
        kubectl(&[
            "patch",
            "node",
            &self.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])
        .ok();
    }

    /// What a VM taking GPUs looks like to Kubernetes: fewer GPUs in the labels and allocatable.
    pub fn set_gpus(&self, gpus: u32) {
        kubectl(&[
            "label",
            "node",
            &self.name,
            "--overwrite",
            &format!("nvidia.com/gpu.count={gpus}"),
        ])
        .ok();
        self.set_allocatable(gpus);
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "node",
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// A Deployment manifest pinned to `node`, with gpushare annotations on its metadata. Its rollout
/// runs no surge pods (`Recreate`), so that it counts `replicas` pods. (A rolling update with
/// `maxSurge: 0` would too, but kubectl then reports every re-apply as `configured`: it always
/// sends the strategy's retainKeys directive.)
pub fn deployment(
    name: &str,
    namespace: &str,
    node: &str,
    replicas: u32,
    annotations: &[(&str, &str)],
) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("\n    {k}: \"{v}\""))
        .collect();
    let annotations = if annotations.is_empty() {
        " {}".to_string()
    } else {
        annotations
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  annotations:{annotations}
spec:
  replicas: {replicas}
  strategy: {{type: Recreate}}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers:
        - name: cuda
          image: nvcr.io/nvidia/k8s/cuda-sample:nbody
"#
    )
}

/// The value of an env var of the first container of a pod template (`/spec/template`).
pub fn template_env(object: &Value, template: &str, name: &str) -> Option<String> {
    object
        .pointer(&format!("{template}/spec/containers/0/env"))?
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

pub fn annotation(object: &Value, metadata: &str, key: &str) -> Option<String> {
    object
        .pointer(&format!("{metadata}/annotations"))?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// The prefix kubectl prints for a denial by gpushare's managed webhook.
pub const MANAGED_DENIED: &str = "admission webhook \"managed.gpushare.io\" denied the request: ";

/// Asserts kubectl's exit code and that its stderr carries the webhook's denial with `fragment`.
#[track_caller]
pub fn assert_denied(run: &Run, prefix: &str, fragment: &str) {
    assert_eq!(
        run.code, 1,
        "expected kubectl to fail; stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let denial = run
        .stderr
        .find(prefix)
        .map(|at| &run.stderr[at + prefix.len()..])
        .unwrap_or_else(|| panic!("no {prefix:?} in kubectl's stderr:\n{}", run.stderr));
    assert!(
        denial.contains(fragment),
        "denial does not mention {fragment:?}:\n{denial}"
    );
}

/// Whether gpushare runs as the Deployment of `manifests/` (`make cluster IN_CLUSTER=1`) rather
/// than as a local `gpushare serve`.
pub fn in_cluster() -> bool {
    env().get("GPUSHARE").map(String::as_str) == Some("in-cluster")
}

/// The Service's DNS name, which the webhook's certificate carries; in-cluster replicas are called
/// by it, dialled at their pod IPs (nothing on this machine resolves it).
pub const SERVICE_HOST: &str = "gpushare.gpushare-system.svc";

/// One replica of the cluster's gpushare, called directly rather than through kube-apiserver.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    /// Where to dial `url`'s host, when it is the Service name.
    pub ip: Option<std::net::IpAddr>,
}

impl Endpoint {
    /// The HTTP status of a GET of `path`, trusting the webhook's dev CA; "000" when it does not
    /// answer.
    pub fn status(&self, path: &str) -> String {
        let mut command = Command::new("curl");
        command.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ]);
        if let Some(ip) = self.ip {
            command
                .arg("--resolve")
                .arg(format!("{SERVICE_HOST}:8443:{ip}"));
        }
        command
            .arg("--cacert")
            .arg(env_var("GPUSHARE_WEBHOOK_CA"))
            .arg(format!("{}{path}", self.url));
        run(&mut command, None).stdout
    }
}

/// The replicas of `make cluster`'s gpushare: the local serve, or the Ready pods of its
/// Deployment (read through kubectl, so call it while kube-apiserver is up).
pub fn webhook_endpoints() -> Vec<Endpoint> {
    if !in_cluster() {
        return vec![Endpoint {
            url: env_var("GPUSHARE_WEBHOOK_URL").to_string(),
            ip: None,
        }];
    }
    gpushare_pods()
        .iter()
        .filter(|p| p["status"]["containerStatuses"][0]["ready"] == true)
        .filter_map(|p| p["status"]["podIP"].as_str()?.parse().ok())
        .map(|ip| Endpoint {
            url: format!("https://{SERVICE_HOST}:8443"),
            ip: Some(ip),
        })
        .collect()
}

/// What tells a restarted gpushare from the one that ran before: the local serve's pid, or the
/// uid and restart count of every replica pod.
pub fn serve_identity() -> String {
    if !in_cluster() {
        return std::fs::read_to_string(cluster_dir().join("gpushare.pid"))
            .expect("gpushare.pid")
            .trim()
            .to_string();
    }
    let mut replicas: Vec<String> = gpushare_pods()
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p["metadata"]["uid"].as_str().unwrap_or(""),
                p["status"]["containerStatuses"][0]["restartCount"]
            )
        })
        .collect();
    replicas.sort();
    replicas.join(",")
}

/// The HTTP status of a GET to a gpushare replica at `base`, trusting the webhook's dev CA;
/// "000" when it does not answer.
pub fn status_of(base: &str, path: &str) -> String {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "--cacert",
    ]);
    command
        .arg(env_var("GPUSHARE_WEBHOOK_CA"))
        .arg(format!("{base}{path}"));
    run(&mut command, None).stdout
}

/// The last lines of the local `gpushare serve`'s log (empty in-cluster), for failure messages.
pub fn serve_log_tail() -> String {
    let log = std::fs::read_to_string(cluster_dir().join("gpushare.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// gpushare's replica pods in-cluster, as kubectl lists them.
pub fn gpushare_pods() -> Vec<Value> {
    let pods = get_json(&[
        "-n",
        "gpushare-system",
        "pods",
        "-l",
        "app.kubernetes.io/name=gpushare",
    ]);
    pods["items"].as_array().cloned().unwrap_or_default()
}
