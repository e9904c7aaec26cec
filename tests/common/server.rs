//! A running `gpushare serve` on free ports, its log captured, killed when dropped; HTTPS and
//! plain-HTTP requests to it, and reviews whose answers are checked for their envelope.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::answer::Answer;
use super::binary::{gpushare, strip_ansi, KillOnDrop};
use super::certs::Certs;
use super::DEADLINE;

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
