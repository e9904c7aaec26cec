//! Metrics that dashboards and alerts read, scraped from the real `gpushare serve`: the policy's
//! limits, following a policy change in standalone and cluster mode; latency buckets that cover
//! the webhook's whole timeout; scale denials counted by their rule.

mod common;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::time::{Duration, Instant};

use common::{new_uid, web, Review, Server, DEADLINE, GPU};
use fake_apiserver::FakeApiServer;
use serde_json::{json, Value};

/// The value of the sample `series` (name and labels as exposed), if present.
fn sample(exposition: &str, series: &str) -> Option<String> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

/// Scrapes the health port until `series` has `value`.
async fn scrape_until(server: &Server, series: &str, value: &str) {
    let started = Instant::now();
    loop {
        let (_, exposition) = server.get_health("/metrics").await;
        if sample(&exposition, series).as_deref() == Some(value) {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{series} did not become {value}; exposition:\n{exposition}\nlog:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const MAX_MPS: &str = "gpushare_policy_max_mps_percentage_per_gpu";
const CLIENTS_TS: &str = "gpushare_policy_max_clients_per_gpu{mode=\"time-slicing\"}";
const CLIENTS_MPS: &str = "gpushare_policy_max_clients_per_gpu{mode=\"mps\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_limits_follow_a_policy_file_edit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "maxClientsPerGpu: 60\nmaxMpsPercentagePerGpu: 80\n",
    )
    .expect("policy");
    let arg = policy.to_str().expect("UTF-8").to_string();
    let server = tokio::task::spawn_blocking(move || Server::start(&["--policy", &arg]))
        .await
        .expect("starts");
    scrape_until(&server, MAX_MPS, "80").await;
    scrape_until(&server, CLIENTS_TS, "60").await;
    // MPS allows 48 clients whatever the policy says.
    scrape_until(&server, CLIENTS_MPS, "48").await;

    // 0 is "no cap", as in the policy.
    std::fs::write(&policy, "maxClientsPerGpu: 12\nmaxMpsPercentagePerGpu: 0\n").expect("policy");
    scrape_until(&server, CLIENTS_MPS, "12").await;
    scrape_until(&server, MAX_MPS, "0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_buckets_reach_the_webhook_timeout_and_beyond() {
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("starts");
    server
        .review(&Review::create(web(&[(GPU, "0")])).to_json())
        .await;
    let (_, exposition) = server.get_health("/metrics").await;
    let bounds: Vec<f64> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("gpushare_admission_duration_seconds_bucket{le=\""))
        .filter_map(|l| l.split('"').next())
        .filter_map(|le| le.parse().ok())
        .collect();
    assert!(
        bounds.contains(&5.0),
        "a bucket at the 5 s timeout: {bounds:?}"
    );
    assert!(bounds.contains(&10.0), "a bucket at 10 s: {bounds:?}");
    assert!(
        bounds.iter().any(|b| *b <= 0.0001),
        "sub-millisecond buckets stay: {bounds:?}"
    );
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "edge-1", "labels": {"nvidia.com/gpu.count": "1"}},
        "status": {"allocatable": {"nvidia.com/gpu": "1"}}
    })
}

fn policy(yaml: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gpushare-policy", "namespace": "gpushare-system"},
        "data": {"policy.yaml": yaml}
    })
}

/// `kubectl scale deployment NAME --replicas N` as the webhook sees it (dry run: no commitment).
fn scale_review(name: &str, replicas: u32) -> Value {
    let scale = |replicas: u32| {
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"replicas": replicas}})
    };
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": new_uid(),
            "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": "scale",
            "name": name, "namespace": "default", "operation": "UPDATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": scale(replicas), "oldObject": scale(1), "dryRun": true
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_limits_follow_the_configmap_and_scale_denials_carry_their_rule() {
    let api = FakeApiServer::start().await;
    api.apply(node());
    api.apply(policy("maxClientsPerGpu: 10\n"));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let server = tokio::task::spawn_blocking(move || Server::start_cluster(&kubeconfig, &[]))
        .await
        .expect("starts");
    scrape_until(&server, CLIENTS_TS, "10").await;

    // A managed Deployment of 2 replicas, stored as the API server would store it.
    let mut object = web(&[(GPU, "0")]);
    object["metadata"]["namespace"] = json!("default");
    object["spec"]["replicas"] = json!(2);
    let started = Instant::now();
    let answer = loop {
        let answer = server
            .review(&Review::create(object.clone()).to_json())
            .await;
        if answer.allowed || started.elapsed() > DEADLINE {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    api.apply(answer.apply(&object));
    let name = object["metadata"]["name"]
        .as_str()
        .expect("named")
        .to_string();

    // Scaling it past 10 clients is refused once the webhook's cache holds it.
    let started = Instant::now();
    loop {
        let review = scale_review(&name, 11);
        let (status, body) = server
            .post_raw(serde_json::to_vec(&review).expect("JSON"))
            .await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_slice(&body).expect("an AdmissionReview");
        if body["response"]["allowed"] == false {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "scaling to 11 was never refused: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scrape_until(
        &server,
        "gpushare_admission_requests_total{operation=\"UPDATE\",kind=\"Deployment\",decision=\"denied\",reason=\"capacity\"}",
        "1",
    )
    .await;

    api.apply(policy("maxClientsPerGpu: 20\n"));
    scrape_until(&server, CLIENTS_TS, "20").await;
}
