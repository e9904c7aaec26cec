//! Capacity that holds across replicas (CONTRACT section 6a): a second `gpushare serve` shares the
//! real API server with the one of `make cluster`, and admissions race for one GPU's capacity.
//! AdmissionReviews are posted to the replicas as kube-apiserver posts them; the objects are
//! never stored, so these tests also prove that commitments of workloads that were admitted but
//! never stored are freed.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::*;

/// Another `gpushare serve` replica in cluster mode, with the ServiceAccount's kubeconfig and the
/// webhook's certificates; killed when dropped.
pub struct Replica {
    pub url: String,
    child: Option<Child>,
}

impl Replica {
    pub fn start(name: &str) -> Replica {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let certs = cluster_dir().join("webhook-certs");
        let log =
            std::fs::File::create(cluster_dir().join(format!("{name}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gpushare"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--health-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .env("KUBECONFIG", env_var("GPUSHARE_SERVE_KUBECONFIG"))
            .env("POD_NAME", name)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("gpushare serve starts");
        let replica = Replica {
            url: format!("https://localhost:{port}"),
            child: Some(child),
        };
        eventually(&format!("replica {name} to be ready"), || {
            let code = status_of(&replica.url, "/readyz");
            if code == "200" {
                Ok(())
            } else {
                Err(code)
            }
        });
        replica
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A replica `make cluster` started, one that kube-apiserver calls: the local serve, or in-cluster
/// the Service name, which `client()` dials at the replica pods' IPs.
pub fn cluster_replica_url() -> String {
    webhook_endpoints()
        .first()
        .expect("a ready gpushare replica")
        .url
        .clone()
}

fn client() -> reqwest::Client {
    let ca = std::fs::read(env_var("GPUSHARE_WEBHOOK_CA")).expect("webhook CA");
    let pods: Vec<std::net::SocketAddr> = webhook_endpoints()
        .iter()
        .filter_map(|e| Some(std::net::SocketAddr::new(e.ip?, 8443)))
        .collect();
    reqwest::Client::builder()
        .resolve_to_addrs(SERVICE_HOST, &pods)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("PEM"))
        .tls_built_in_root_certs(false)
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

/// A complete AdmissionReview for the CREATE of `object` (a Deployment), as kube-apiserver sends it.
fn create_review(uid: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// An mps Deployment of one pod on GPU 0 of `node`, taking `percentage` of it.
fn mps_module(name: &str, namespace: &str, node: &str, percentage: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace,
            "annotations": {"gpushare.io/gpu": "0", "gpushare.io/mps-percentage": percentage.to_string()}},
        "spec": {"replicas": 1, "strategy": {"rollingUpdate": {"maxSurge": 0}},
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [{"name": "cuda", "image": "nvcr.io/nvidia/k8s/cuda-sample:nbody"}]}}}
    })
}

/// Posts one review; `Some(true)` allowed, `Some(false)` denied, `None` no answer.
async fn admit(client: &reqwest::Client, base: &str, review: &Value) -> Option<(bool, String)> {
    let response = client
        .post(format!("{base}/mutate"))
        .json(review)
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    let answer = &body["response"];
    Some((
        answer["allowed"].as_bool().unwrap_or(false),
        answer["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    ))
}

/// The policy that makes GPU 0 of the test's node an mps GPU with the default 100% cap.
pub fn mps_policy(node: &str) -> String {
    format!("nodes:\n  {node}: {{ gpuModes: {{ \"0\": mps }} }}")
}

/// Waits until GPU 0 of `node` has its whole capacity free again: a 100% module is admitted.
fn wait_until_free(ns: &Namespace, node: &TestNode) {
    let whole = crate::support::deployment(
        "whole",
        &ns.name,
        &node.name,
        1,
        &[
            ("gpushare.io/gpu", "0"),
            ("gpushare.io/mps-percentage", "100"),
        ],
    );
    eventually(
        "the commitments of never-stored workloads to be freed",
        || {
            let run = apply(&whole, &["--dry-run=server"]);
            if run.code == 0 {
                Ok(())
            } else {
                Err(run.stderr)
            }
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_commit_more_than_a_gpus_capacity_under_100_racing_admissions() {
    let _restore = crate::PolicyRestore;
    let node = TestNode::new("e2e-race", 1);
    let ns = Namespace::new("e2e-race");
    crate::set_policy(&mps_policy(&node.name)).ok();
    crate::wait_for_node(&node, &ns);
    wait_until_free(&ns, &node);
    let second = Replica::start("gpushare-replica-2");
    let bases = [cluster_replica_url(), second.url.clone()];
    let client = Arc::new(client());

    // 100 modules of 10% each, 50 to each replica at once: GPU 0 takes exactly 10.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = client.clone();
        let base = bases[i % 2].clone();
        let review = create_review(
            &format!("race-{i}"),
            &mps_module(&format!("m{i}"), &ns.name, &node.name, 10),
        );
        tasks.push(tokio::spawn(
            async move { admit(&client, &base, &review).await },
        ));
    }
    let mut allowed = 0;
    let mut denials = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Some((true, _)) => allowed += 1,
            Some((false, message)) => denials.push(message),
            None => panic!("a replica did not answer"),
        }
    }
    assert!(
        allowed <= 10,
        "{allowed} modules of 10% were admitted on one GPU"
    );
    // Any shortfall must be an explicit "could not record" denial, never capacity silently lost.
    let unrecorded = denials.iter().filter(|m| m.contains("record")).count();
    assert!(
        allowed + unrecorded >= 10,
        "only {allowed} admitted; denials: {denials:?}"
    );
    assert!(
        denials
            .iter()
            .all(|m| m.contains("exceeds") || m.contains("record")),
        "{denials:?}"
    );

    // None of them was stored: their commitments are freed by reconciliation.
    wait_until_free(&ns, &node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_in_a_burst_leaks_no_share_and_an_unstored_admission_is_freed() {
    let _restore = crate::PolicyRestore;
    let node = TestNode::new("e2e-kill", 1);
    let ns = Namespace::new("e2e-kill");
    crate::set_policy(&mps_policy(&node.name)).ok();
    crate::wait_for_node(&node, &ns);
    wait_until_free(&ns, &node);
    let client = Arc::new(client());

    // Admitted but never stored: the share is committed at once, so a second 100% is denied.
    let first = create_review(
        "unstored",
        &mps_module("unstored", &ns.name, &node.name, 100),
    );
    let (ok, message) = admit(&client, &cluster_replica_url(), &first)
        .await
        .expect("an answer");
    assert!(ok, "{message}");
    let taken = apply(
        &crate::support::deployment(
            "later",
            &ns.name,
            &node.name,
            1,
            &[
                ("gpushare.io/gpu", "0"),
                ("gpushare.io/mps-percentage", "100"),
            ],
        ),
        &[],
    );
    assert_denied(&taken, MANAGED_DENIED, "exceeds");
    wait_until_free(&ns, &node);

    // A burst at a replica that is killed in the middle of it.
    let mut doomed = Replica::start("gpushare-replica-doomed");
    let base = doomed.url.clone();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        let base = base.clone();
        let review = create_review(
            &format!("burst-{i}"),
            &mps_module(&format!("b{i}"), &ns.name, &node.name, 5),
        );
        tasks.push(tokio::spawn(
            async move { admit(&client, &base, &review).await },
        ));
        if i == 20 {
            doomed.kill();
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    wait_until_free(&ns, &node);
}
