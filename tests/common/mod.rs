//! Helpers shared by the integration tests that run the real `gpushare` binary: fixtures,
//! development certificates, a `serve` child process that is killed on drop, complete
//! AdmissionReviews as the API server sends them, and JSON Patch application.
//!
//! Include it with `mod common;`; each test crate uses a different subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// How long anything that involves starting a process may take on a busy CI machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub const GPU: &str = "gpushare.io/gpu";
pub const MODE: &str = "gpushare.io/mode";
pub const MPS_PERCENTAGE: &str = "gpushare.io/mps-percentage";
pub const MPS_MEMORY_LIMIT: &str = "gpushare.io/mps-memory-limit";
pub const CONTAINERS: &str = "gpushare.io/containers";
pub const ASSIGNED_GPU: &str = "gpushare.io/assigned-gpu";
pub const ASSIGNED_MODE: &str = "gpushare.io/assigned-mode";
pub const ASSIGNED_MPS_PERCENTAGE: &str = "gpushare.io/assigned-mps-percentage";
pub const VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
pub const MPS_THREAD_PERCENTAGE: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";
pub const MPS_MEM_LIMIT: &str = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT";

// ---- the binary and fixtures ------------------------------------------------------------------

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gpushare")
}

/// A `gpushare` command with a predictable environment (no colours, info logs).
pub fn gpushare() -> Command {
    let mut command = Command::new(bin());
    command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("KUBECONFIG");
    command
}

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_text(name: &str) -> String {
    let path = fixture_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs a child to completion, failing the test (and killing the child) if it does not finish
/// within the deadline. Output is drained in threads so a chatty child never blocks on a pipe.
pub fn run_with_deadline(command: &mut Command, stdin: Option<&[u8]>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("gpushare starts");
    let mut guard = KillOnDrop(Some(child));
    let child = guard.0.as_mut().expect("child present");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        std::thread::spawn(move || {
            // A child that exits early closes the pipe; that is its business, not a test failure.
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for gpushare") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            panic!("gpushare did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    guard.0 = None;
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = pipe.read_to_end(&mut buffer);
        buffer
    })
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes ANSI escape sequences (colours), in case the log ignores `NO_COLOR`.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

// ---- certificates -----------------------------------------------------------------------------

/// Certificates made by `gpushare certs --out <tempdir>`.
pub struct Certs {
    pub dir: tempfile::TempDir,
    /// What `certs` printed on stdout (the caBundle).
    pub stdout: String,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = run_with_deadline(gpushare().arg("certs").arg("--out").arg(dir.path()), None);
        assert!(
            output.status.success(),
            "gpushare certs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Certs {
            dir,
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca()).expect("ca.crt is readable")
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}

// ---- the server -------------------------------------------------------------------------------

/// A running `gpushare serve --standalone`, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The plain-HTTP health and metrics port (`--health-listen`).
    pub health_addr: SocketAddr,
    pub certs: Certs,
    log: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl Server {
    /// `serve --standalone --gpus 2` on a free port with fresh certificates, plus `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with(Certs::new(), &["--gpus", "2"], extra)
    }

    pub fn start_with(certs: Certs, gpus: &[&str], extra: &[&str]) -> Server {
        let mut args = vec!["--standalone"];
        args.extend_from_slice(gpus);
        args.extend_from_slice(extra);
        Server::start_serve(certs, &args, &[])
    }

    /// `serve` in cluster mode, reading the cluster through `kubeconfig`.
    pub fn start_cluster(kubeconfig: &Path, extra: &[&str]) -> Server {
        let kubeconfig = kubeconfig.to_str().expect("temp paths are UTF-8");
        Server::start_serve(Certs::new(), extra, &[("KUBECONFIG", kubeconfig)])
    }

    /// `serve --listen 127.0.0.1:0 --health-listen 127.0.0.1:0 --drain-delay 0.1` with the
    /// certificates, `args` and `env`.
    pub fn start_serve(certs: Certs, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = gpushare();
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(if args.contains(&"--health-listen") {
                &[][..]
            } else {
                &["--health-listen", "127.0.0.1:0"][..]
            })
            .args(if args.contains(&"--drain-delay") {
                &[][..]
            } else {
                &["--drain-delay", "0.1"][..]
            })
            .arg("--tls-cert")
            .arg(certs.cert())
            .arg("--tls-key")
            .arg(certs.key())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("gpushare serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = mpsc::channel::<String>();
        let thread_log = log.clone();
        // Drains stderr for the life of the child so the pipe never fills and blocks the server.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                thread_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.clone());
                let _ = sender.send(line);
            }
        });
        let mut guard = KillOnDrop(Some(child));
        let started = Instant::now();
        let mut health_addr = None;
        let addr = loop {
            let left = DEADLINE.saturating_sub(started.elapsed());
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    health_addr = health_addr.or_else(|| address_after(&line, "on http://"));
                    if let Some(addr) = address_after(&line, "listening on https://") {
                        break addr;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "gpushare serve did not log `listening on https://...` within {DEADLINE:?}; stderr:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = guard.0.as_mut().and_then(|c| c.wait().ok());
                    panic!(
                        "gpushare serve exited ({status:?}) before listening; stderr:\n{}",
                        log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
                    )
                }
            }
        };
        let client = client_trusting(&certs.ca_pem())
            .resolve("localhost", addr)
            .build()
            .expect("reqwest client builds");
        Server {
            child: guard.0.take(),
            addr,
            health_addr: health_addr.unwrap_or_else(|| {
                panic!(
                    "gpushare serve did not log its health address (`... on http://...`); stderr:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
                )
            }),
            certs,
            log,
            client,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Sends SIGTERM, as the kubelet does when a pod stops.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the server to exit on its own.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the server is running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for gpushare") {
                self.child = None;
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "gpushare did not exit within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port())
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A plain-HTTP GET on the health port: the status and body.
    pub async fn get_health(&self, path: &str) -> (u16, String) {
        let response = reqwest::Client::builder()
            .no_proxy()
            .timeout(DEADLINE)
            .build()
            .expect("reqwest client builds")
            .get(format!("http://{}{path}", self.health_addr))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET http://.../{path}: {e}; server log:\n{}", self.log()));
        let status = response.status().as_u16();
        (status, response.text().await.expect("response body"))
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}; server log:\n{}", self.log()));
        let status = response.status().as_u16();
        (status, response.text().await.expect("response body"))
    }

    /// POSTs raw bytes to `/mutate`: the HTTP status and body.
    pub async fn post_raw(&self, body: Vec<u8>) -> (u16, Vec<u8>) {
        let response = self
            .client
            .post(self.url("/mutate"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /mutate: {e}; server log:\n{}", self.log()));
        let status = response.status().as_u16();
        (
            status,
            response.bytes().await.expect("response body").to_vec(),
        )
    }

    /// POSTs an AdmissionReview and checks the envelope: HTTP 200, an `admission.k8s.io/v1`
    /// AdmissionReview with the request's uid.
    pub async fn review(&self, review: &Value) -> Answer {
        let (status, body) = self
            .post_raw(serde_json::to_vec(review).expect("serializes"))
            .await;
        assert_eq!(
            status,
            200,
            "POST /mutate answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let answer: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        Answer::new(review, answer)
    }

    /// Asserts the server still answers `/healthz`.
    pub async fn assert_healthy(&self) {
        let (status, _) = self.get("/healthz").await;
        assert_eq!(
            status,
            200,
            "the server stopped serving; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The address after `marker` in a log line, e.g. `listening on https://127.0.0.1:PORT`.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A reqwest client that trusts only the given CA (no built-in roots).
pub fn client_trusting(ca_pem: &[u8]) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("ca.crt is PEM"))
        .tls_built_in_root_certs(false)
        .https_only(true)
        .no_proxy()
        .timeout(DEADLINE)
}

// ---- AdmissionReviews -------------------------------------------------------------------------

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A unique request uid, shaped like the API server's UUIDs.
pub fn new_uid() -> String {
    let n = NEXT_UID.fetch_add(1, Ordering::Relaxed);
    format!(
        "705ab4f5-6393-11e8-b7cc-{:012x}",
        u64::from(std::process::id()) << 16 | n
    )
}

/// A complete `admission.k8s.io/v1` AdmissionReview, as the API server sends it.
#[derive(Debug, Clone)]
pub struct Review {
    pub uid: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub resource: String,
    pub operation: String,
    pub namespace: String,
    pub object: Value,
    pub old_object: Value,
    pub dry_run: bool,
    /// `ephemeralcontainers`, `scale`, ...: the subresource the request is about.
    pub sub_resource: Option<String>,
}

impl Review {
    /// A Deployment review; the name is taken from the object.
    pub fn deployment(operation: &str, object: Value) -> Review {
        Review {
            uid: new_uid(),
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
            operation: operation.into(),
            namespace: "default".into(),
            object,
            old_object: Value::Null,
            dry_run: false,
            sub_resource: None,
        }
    }

    /// `kubectl debug`: an UPDATE of the Pod's `ephemeralcontainers` subresource.
    pub fn ephemeral(object: Value, old_object: Value) -> Review {
        Review {
            sub_resource: Some("ephemeralcontainers".into()),
            ..Review::update_of(object, old_object)
        }
    }

    pub fn create(object: Value) -> Review {
        Review::deployment("CREATE", object)
    }

    pub fn update(object: Value, old_object: Value) -> Review {
        Review {
            old_object,
            ..Review::deployment("UPDATE", object)
        }
    }

    pub fn pod(operation: &str, object: Value) -> Review {
        Review::of(operation, object)
    }

    /// A review of any object, its group, version, kind and resource taken from the object.
    pub fn of(operation: &str, object: Value) -> Review {
        let named = if object.is_null() {
            Value::Null
        } else {
            object.clone()
        };
        let api_version = named["apiVersion"]
            .as_str()
            .unwrap_or("apps/v1")
            .to_string();
        let kind = named["kind"].as_str().unwrap_or("Deployment").to_string();
        let (group, version) = api_version
            .rsplit_once('/')
            .map_or((String::new(), api_version.clone()), |(g, v)| {
                (g.to_string(), v.to_string())
            });
        Review {
            group,
            version,
            resource: format!("{}s", kind.to_ascii_lowercase()),
            kind,
            ..Review::deployment(operation, object)
        }
    }

    pub fn create_of(object: Value) -> Review {
        Review::of("CREATE", object)
    }

    pub fn update_of(object: Value, old_object: Value) -> Review {
        Review {
            old_object,
            ..Review::of("UPDATE", object)
        }
    }

    pub fn namespace(mut self, namespace: &str) -> Review {
        self.namespace = namespace.into();
        self
    }

    pub fn dry_run(mut self, dry_run: bool) -> Review {
        self.dry_run = dry_run;
        self
    }

    /// The same request with a fresh uid.
    pub fn again(&self) -> Review {
        Review {
            uid: new_uid(),
            ..self.clone()
        }
    }

    pub fn to_json(&self) -> Value {
        let named = if self.object.is_null() {
            &self.old_object
        } else {
            &self.object
        };
        let name = named
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::String(String::new()));
        let options = match self.operation.as_str() {
            "CREATE" => {
                json!({ "kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict" })
            }
            "UPDATE" => {
                json!({ "kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-edit", "fieldValidation": "Strict" })
            }
            "DELETE" => {
                json!({ "kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background" })
            }
            _ => Value::Null,
        };
        let gvk = json!({ "group": self.group, "version": self.version, "kind": self.kind });
        let gvr =
            json!({ "group": self.group, "version": self.version, "resource": self.resource });
        let mut review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": self.uid,
                "kind": gvk,
                "resource": gvr,
                "requestKind": gvk,
                "requestResource": gvr,
                "name": name,
                "namespace": self.namespace,
                "operation": self.operation,
                "userInfo": {
                    "username": "kubernetes-admin",
                    "uid": "aeb4e5a7-2b0f-4a6b-9a8c-3d2c1f0e9b8a",
                    "groups": ["kubeadm:cluster-admins", "system:authenticated"]
                },
                "object": self.object,
                "oldObject": self.old_object,
                "dryRun": self.dry_run,
                "options": options
            }
        });
        if let Some(sub_resource) = &self.sub_resource {
            review["request"]["subResource"] = json!(sub_resource);
            review["request"]["requestSubResource"] = json!(sub_resource);
        }
        review
    }
}

/// The response of one review, checked for its envelope.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The whole AdmissionReview that came back.
    pub review: Value,
    pub allowed: bool,
    /// The decoded JSON Patch, when `response.patch` is present.
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
    pub code: Option<u64>,
    pub message: String,
}

impl Answer {
    fn new(request: &Value, review: Value) -> Answer {
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review:#}");
        assert_eq!(review["kind"], "AdmissionReview", "{review:#}");
        let response = &review["response"];
        assert!(response.is_object(), "no response in {review:#}");
        assert_eq!(
            response["uid"], request["request"]["uid"],
            "the response must carry the request's uid"
        );
        let allowed = response["allowed"]
            .as_bool()
            .unwrap_or_else(|| panic!("response.allowed is not a boolean: {review:#}"));
        let patch = match response.get("patch").filter(|p| !p.is_null()) {
            None => {
                assert!(
                    response.get("patchType").is_none_or(Value::is_null),
                    "patchType without a patch: {review:#}"
                );
                None
            }
            Some(encoded) => {
                assert_eq!(response["patchType"], "JSONPatch", "{review:#}");
                let encoded = encoded.as_str().expect("response.patch is a base64 string");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .expect("response.patch is standard base64");
                let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "response.patch is not a JSON Patch ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                Some(patch)
            }
        };
        let warnings = response
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .map(|s| s.as_str().expect("warnings are strings").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let code = response.pointer("/status/code").and_then(Value::as_u64);
        let message = response
            .pointer("/status/message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if allowed {
            assert!(
                code.is_none_or(|c| (200..300).contains(&c)),
                "an allowed response with an error status: {review:#}"
            );
        } else {
            let code = code.unwrap_or_else(|| panic!("a denial without status.code: {review:#}"));
            assert!(
                (400..500).contains(&code),
                "a denial's code must be 4xx: {review:#}"
            );
            assert!(
                !message.trim().is_empty(),
                "a denial without a message: {review:#}"
            );
            assert!(patch.is_none(), "a denial carries no patch: {review:#}");
        }
        Answer {
            review,
            allowed,
            patch,
            warnings,
            code,
            message,
        }
    }

    /// True when the answer changes nothing: no patch, or an empty one.
    pub fn unchanged(&self) -> bool {
        self.patch.as_ref().is_none_or(|p| p.0.is_empty())
    }

    /// Asserts an allowed answer and applies its patch (if any) to `object`.
    pub fn apply(&self, object: &Value) -> Value {
        assert!(self.allowed, "expected allowed, got {:#}", self.review);
        apply_patch(object, self.patch.as_ref())
    }

    pub fn assert_allowed_unchanged(&self) {
        assert!(self.allowed, "expected allowed: {:#}", self.review);
        assert!(self.unchanged(), "expected no patch: {:#}", self.review);
    }

    pub fn assert_denied(&self, code: u64, mentions: &str) {
        assert!(!self.allowed, "expected a denial: {:#}", self.review);
        assert_eq!(self.code, Some(code), "{:#}", self.review);
        assert!(
            self.message.contains(mentions),
            "the denial message should mention {mentions:?}: {}",
            self.message
        );
    }
}

/// Applies a JSON Patch to a copy of `object`, as the API server does.
pub fn apply_patch(object: &Value, patch: Option<&json_patch::Patch>) -> Value {
    let mut patched = object.clone();
    if let Some(patch) = patch {
        json_patch::patch(&mut patched, patch).unwrap_or_else(|e| {
            panic!(
                "the returned patch does not apply ({e}):\npatch: {}\nobject: {object:#}",
                serde_json::to_string_pretty(patch).unwrap_or_default()
            )
        });
    }
    patched
}

// ---- Deployments ------------------------------------------------------------------------------

/// `tests/fixtures/deployment-web.json` (as `kubectl create deployment web --image=nginx
/// --dry-run=client -o json` writes it) with these annotations on its metadata.
pub fn web(annotations: &[(&str, &str)]) -> Value {
    with_annotations(fixture_json("deployment-web.json"), annotations)
}

pub fn with_annotations(mut object: Value, annotations: &[(&str, &str)]) -> Value {
    if !annotations.is_empty() {
        let map: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        object["metadata"]["annotations"] = Value::Object(map);
    }
    object
}

// ---- every kind ------------------------------------------------------------------------------

/// One object of each kind gpushare examines, as its users write it (`kubectl create ... -o json`
/// where kubectl can), with these annotations on its metadata.
pub fn every_kind(annotations: &[(&str, &str)]) -> Vec<Value> {
    [
        "deployment-web.json",
        "replicaset-cam.json",
        "statefulset-triton.json",
        "daemonset-agent.json",
        "job-nbody.json",
        "cronjob-nightly.json",
        "pod-infer.json",
    ]
    .iter()
    .map(|name| with_annotations(fixture_json(name), annotations))
    .collect()
}

/// Where an object keeps its pod template: `/spec/template`, a CronJob's, or `""` for a Pod.
pub fn template_of(object: &Value) -> &'static str {
    match object["kind"].as_str() {
        Some("CronJob") => "/spec/jobTemplate/spec/template",
        Some("Pod") => "",
        _ => "/spec/template",
    }
}

/// The metadata that carry the assigned annotations: the object's and its pod template's.
pub fn metadata_of(object: &Value) -> Vec<String> {
    match template_of(object) {
        "" => vec!["/metadata".to_string()],
        template => vec!["/metadata".to_string(), format!("{template}/metadata")],
    }
}

/// The env of container `index`, as (name, value) pairs; `valueFrom` entries have value `None`.
pub fn env(object: &Value, index: usize) -> Vec<(String, Option<String>)> {
    object
        .pointer(&format!(
            "{}/spec/containers/{index}/env",
            template_of(object)
        ))
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().expect("env name").to_string(),
                        e.get("value").and_then(Value::as_str).map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn env_value(object: &Value, index: usize, name: &str) -> Option<String> {
    let env = env(object, index);
    let matching: Vec<_> = env.iter().filter(|(n, _)| n == name).collect();
    assert!(
        matching.len() <= 1,
        "{name} appears more than once: {env:?}"
    );
    matching.first().and_then(|(_, v)| v.clone())
}

/// The `gpushare.io/` annotations at a metadata pointer (`/metadata` or `/spec/template/metadata`).
pub fn gpushare_annotations(object: &Value, metadata: &str) -> Vec<(String, String)> {
    object
        .pointer(&format!("{metadata}/annotations"))
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter(|(k, _)| k.starts_with("gpushare.io/"))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .expect("annotation values are strings")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn annotation(object: &Value, metadata: &str, key: &str) -> Option<String> {
    object
        .pointer(&format!("{metadata}/annotations"))
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Asserts the assigned annotations on both the object's metadata and its pod template's.
pub fn assert_assigned(object: &Value, gpu: &str, mode: &str, percentage: Option<&str>) {
    for metadata in metadata_of(object) {
        let metadata = metadata.as_str();
        assert_eq!(
            annotation(object, metadata, ASSIGNED_GPU).as_deref(),
            Some(gpu),
            "{metadata} {ASSIGNED_GPU} in {object:#}"
        );
        assert_eq!(
            annotation(object, metadata, ASSIGNED_MODE).as_deref(),
            Some(mode),
            "{metadata} {ASSIGNED_MODE} in {object:#}"
        );
        assert_eq!(
            annotation(object, metadata, ASSIGNED_MPS_PERCENTAGE).as_deref(),
            percentage,
            "{metadata} {ASSIGNED_MPS_PERCENTAGE} in {object:#}"
        );
    }
}
