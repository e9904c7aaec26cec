//! Cluster mode end to end: the real `gpushare serve` (no `--standalone`) reads a test API server
//! through a kubeconfig with the real kube client, and answers AdmissionReviews over HTTPS from its
//! caches. Allowed objects are persisted to the API server with the returned patch applied, as the
//! real API server would, so the watchers see what gpushare assigned.

mod common;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "cluster_mode/kinds.rs"]
mod kinds;
#[path = "cluster_mode/registration.rs"]
mod registration;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{gpushare, run_with_deadline, web, Answer, Review, Server, ASSIGNED_GPU};
use fake_apiserver::FakeApiServer;
use serde_json::{json, Value};

/// Generous: CI runs on 2 busy cores, and a watcher reconnecting after an outage backs off.
const DEADLINE: Duration = Duration::from_secs(45);

/// A policy edit must show in decisions within this (the contract's "without a restart", made measurable).
const POLICY_PROPAGATION: Duration = Duration::from_secs(2);

fn node(name: &str, gpus: u32, pool: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "pool": pool, "nvidia.com/gpu.count": gpus.to_string()}},
        "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": gpus.to_string()}}
    })
}

fn policy(yaml: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gpushare-policy", "namespace": "gpushare-system"},
        "data": {"policy.yaml": yaml}
    })
}

/// A Deployment `name` in `default` with `replicas` and these gpushare annotations.
fn module(name: &str, replicas: u32, annotations: &[(&str, &str)]) -> Value {
    let mut object = web(annotations);
    object["metadata"]["name"] = json!(name);
    object["metadata"]["namespace"] = json!("default");
    object["spec"]["replicas"] = json!(replicas);
    // No surge pods: the tests count replicas (the surge has rows of its own in the decision table).
    object["spec"]["strategy"] = json!({ "rollingUpdate": { "maxSurge": 0 } });
    object
}

/// A cluster: the test API server seeded with `objects`, and gpushare serving from it.
struct Cluster {
    api: FakeApiServer,
    webhook: Server,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(objects: Vec<Value>) -> Cluster {
        let api = FakeApiServer::start().await;
        for object in objects {
            api.apply(object);
        }
        let (webhook, dir) = Cluster::serve(&api).await;
        let cluster = Cluster {
            api,
            webhook,
            _dir: dir,
        };
        cluster.wait_ready().await;
        cluster
    }

    /// gpushare serving from `api`, not yet known to be ready; the temp dir holds its kubeconfig.
    async fn serve(api: &FakeApiServer) -> (Server, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = api.kubeconfig(dir.path());
        let webhook = tokio::task::spawn_blocking(move || Server::start_cluster(&kubeconfig, &[]))
            .await
            .expect("server starts");
        (webhook, dir)
    }

    async fn wait_ready(&self) {
        eventually("/readyz answers 200", || async {
            self.webhook.get("/readyz").await.0 == 200
        })
        .await;
    }

    async fn review(&self, review: &Review) -> Answer {
        self.webhook.review(&review.to_json()).await
    }

    /// CREATE as the API server would: admitted objects are stored with the patch applied.
    async fn create(&self, object: Value) -> Answer {
        let answer = self.review(&Review::create(object.clone())).await;
        if answer.allowed {
            self.api.apply(answer.apply(&object));
        }
        answer
    }

    /// UPDATE of the stored object to `object`; stored when admitted.
    async fn update(&self, object: Value) -> Answer {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("named")
            .to_string();
        let old = self
            .api
            .get("Deployment", Some("default"), &name)
            .expect("stored");
        let answer = self.review(&Review::update(object.clone(), old)).await;
        if answer.allowed {
            self.api.apply(answer.apply(&object));
        }
        answer
    }

    /// A dry-run CREATE: the same decision, no state change; used to probe the webhook's view.
    async fn probe(&self, object: &Value) -> Answer {
        self.review(&Review::create(object.clone()).dry_run(true))
            .await
    }
}

/// Polls `condition` until it holds, failing after `DEADLINE`.
async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    within(DEADLINE, what, condition).await;
}

async fn within<F, Fut>(deadline: Duration, what: &str, condition: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn assigned(answer: &Answer, object: &Value) -> String {
    let patched = answer.apply(object);
    patched["metadata"]["annotations"][ASSIGNED_GPU]
        .as_str()
        .expect("assigned")
        .to_string()
}

const MPS_GPUS: &str = "gpuModes: {\"0\": mps, \"1\": mps}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_every_cache_then_node_counts_are_live() {
    let api = FakeApiServer::start().await;
    api.apply(node("edge-1", 2, "a"));
    api.fail_requests("/api/v1/nodes", 500);
    let (webhook, dir) = Cluster::serve(&api).await;
    // Nodes cannot be listed, so the caches cannot all have synced.
    assert_eq!(
        webhook.get("/readyz").await.0,
        503,
        "not ready before the node cache syncs"
    );
    assert_eq!(
        webhook.get("/healthz").await.0,
        200,
        "alive while not ready"
    );
    api.clear_failures();
    let cluster = Cluster {
        api,
        webhook,
        _dir: dir,
    };
    cluster.wait_ready().await;

    let gpu1 = module("detector", 1, &[("gpushare.io/gpu", "1")]);
    assert!(
        cluster.probe(&gpu1).await.allowed,
        "GPU 1 exists on a 2-GPU node"
    );
    // A GPU passed through to a VM: the node now offers one GPU to Kubernetes.
    cluster.api.apply(node("edge-1", 1, "a"));
    eventually("index 1 is denied once the node offers 1 GPU", || async {
        let answer = cluster.probe(&gpu1).await;
        !answer.allowed && answer.message.contains("VMs")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_gpu_is_never_chosen() {
    let cluster = Cluster::start(vec![
        node("edge-1", 2, "a"),
        policy("reservedForVms: [0]\n"),
    ])
    .await;
    for i in 0..3 {
        let object = module(&format!("auto-{i}"), 1, &[("gpushare.io/gpu", "auto")]);
        let answer = cluster.create(object.clone()).await;
        assert_eq!(
            assigned(&answer, &object),
            "1",
            "auto never picks reserved GPU 0"
        );
    }
    let pinned = cluster
        .probe(&module("pinned", 1, &[("gpushare.io/gpu", "0")]))
        .await;
    assert!(
        !pinned.allowed && pinned.message.contains("reserved"),
        "{}",
        pinned.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gpu_denies_the_next_module_until_a_deployment_is_deleted() {
    let cluster = Cluster::start(vec![node("edge-1", 1, "a"), policy(MPS_GPUS)]).await;
    let first = module("first", 1, &[("gpushare.io/mps-percentage", "60")]);
    assert!(cluster.create(first).await.allowed);
    eventually("the per-GPU gauge shows the committed 60%", || async {
        let (_, metrics) = cluster.webhook.get("/metrics").await;
        metrics.contains(
            "gpushare_gpu_committed_mps_percentage{node=\"edge-1\",gpu=\"0\",mode=\"mps\"} 60",
        ) && metrics.contains("gpushare_cache_synced{cache=\"deployments\"} 1")
    })
    .await;
    let second = module("second", 1, &[("gpushare.io/mps-percentage", "60")]);
    let denied = cluster.review(&Review::create(second.clone())).await;
    assert!(
        !denied.allowed && denied.message.contains("maxMpsPercentagePerGpu"),
        "{}",
        denied.message
    );

    cluster.api.delete("Deployment", Some("default"), "first");
    eventually("deleting a Deployment frees its share", || async {
        cluster.probe(&second).await.allowed
    })
    .await;
    let (_, metrics) = cluster.webhook.get("/metrics").await;
    assert!(
        metrics.contains(
            "gpushare_gpu_committed_mps_percentage{node=\"edge-1\",gpu=\"0\",mode=\"mps\"} 0"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_spreads_then_packs_after_a_live_policy_edit() {
    let cluster = Cluster::start(vec![node("edge-1", 2, "a"), policy(MPS_GPUS)]).await;
    let a = module("a", 1, &[("gpushare.io/mps-percentage", "30")]);
    let b = module("b", 1, &[("gpushare.io/mps-percentage", "20")]);
    assert_eq!(assigned(&cluster.create(a.clone()).await, &a), "0");
    assert_eq!(
        assigned(&cluster.create(b.clone()).await, &b),
        "1",
        "least-loaded spreads"
    );
    let c = module("c", 1, &[("gpushare.io/mps-percentage", "10")]);
    assert_eq!(
        assigned(&cluster.probe(&c).await, &c),
        "1",
        "least-loaded: GPU 1 has 20%, GPU 0 has 30%"
    );

    cluster
        .api
        .apply(policy(&format!("{MPS_GPUS}strategy: pack\n")));
    within(
        POLICY_PROPAGATION,
        "the pack strategy takes effect",
        || async {
            let answer = cluster.probe(&c).await;
            answer.allowed && assigned(&answer, &c) == "0"
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_replaces_its_own_allocation_instead_of_counting_it_twice() {
    let cluster = Cluster::start(vec![node("edge-1", 1, "a"), policy(MPS_GPUS)]).await;
    let annotations = [("gpushare.io/mps-percentage", "30")];
    assert!(
        cluster
            .create(module("scaler", 1, &annotations))
            .await
            .allowed
    );
    eventually("the cache shows the module", || async {
        let other = module("other", 1, &[("gpushare.io/mps-percentage", "71")]);
        !cluster.probe(&other).await.allowed
    })
    .await;
    let three = cluster.update(module("scaler", 3, &annotations)).await;
    assert!(
        three.allowed,
        "3 x 30% = 90% fits once the old 30% is replaced: {}",
        three.message
    );
    eventually("the cache shows 3 replicas", || async {
        cluster
            .api
            .get("Deployment", Some("default"), "scaler")
            .is_some_and(|d| d["spec"]["replicas"] == 3)
    })
    .await;
    let four = cluster.update(module("scaler", 4, &annotations)).await;
    assert!(
        !four.allowed && four.message.contains("120%"),
        "4 x 30% exceeds 100%: {}",
        four.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_keeps_the_last_valid_one_and_records_an_event() {
    let cluster = Cluster::start(vec![node("edge-1", 2, "a"), policy(MPS_GPUS)]).await;
    let mps = module("mps", 1, &[("gpushare.io/mps-percentage", "20")]);
    assert!(cluster.probe(&mps).await.allowed);

    cluster
        .api
        .apply(policy("gpuModes: {\"0\": mps}\nmaxClientsPerGpu: lots\n"));
    eventually("an InvalidPolicy Event on the ConfigMap", || async {
        cluster.api.events().iter().any(|e| {
            e["reason"] == "InvalidPolicy"
                && e.pointer("/regarding/name") == Some(&json!("gpushare-policy"))
        })
    })
    .await;
    let (_, metrics) = cluster.webhook.get("/metrics").await;
    assert!(
        metrics.contains("gpushare_policy_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    let still = cluster
        .probe(&module(
            "mps-1",
            1,
            &[
                ("gpushare.io/gpu", "1"),
                ("gpushare.io/mps-percentage", "20"),
            ],
        ))
        .await;
    assert!(
        still.allowed,
        "GPU 1 is still mps under the last valid policy: {}",
        still.message
    );

    cluster
        .api
        .delete("ConfigMap", Some("gpushare-system"), "gpushare-policy");
    eventually(
        "deleting the ConfigMap returns to the embedded default (time-slicing)",
        || async { !cluster.probe(&mps).await.allowed },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_caches_during_an_outage_and_resyncs_after_it() {
    let cluster = Cluster::start(vec![node("edge-1", 2, "a"), policy(MPS_GPUS)]).await;
    let gpu1 = module("late", 1, &[("gpushare.io/gpu", "1")]);
    cluster.api.stop().await;
    let answer = cluster.probe(&gpu1).await;
    assert!(
        answer.allowed,
        "answered from the caches while the API server is down"
    );
    assert_eq!(
        cluster.webhook.get("/readyz").await.0,
        200,
        "stays ready through the outage"
    );

    // While it is down the node loses a GPU to a VM and history is compacted: the watcher must relist.
    cluster.api.apply(node("edge-1", 1, "a"));
    cluster.api.compact();
    cluster.api.restart().await;
    eventually("after the outage the caches resync", || async {
        !cluster.probe(&gpu1).await.allowed
    })
    .await;
    assert!(
        cluster.webhook.log().contains("stale"),
        "the outage is logged:\n{}",
        cluster.webhook.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_table_of_a_seeded_cluster() {
    let cluster = Cluster::start(vec![
        node("edge-1", 2, "a"),
        policy("gpuModes: {\"1\": mps}\nreservedForVms: []\n"),
    ])
    .await;
    assert!(
        cluster
            .create(module(
                "vision",
                2,
                &[
                    ("gpushare.io/gpu", "1"),
                    ("gpushare.io/mps-percentage", "20")
                ]
            ))
            .await
            .allowed
    );
    assert!(
        cluster
            .create(module("tracker", 3, &[("gpushare.io/gpu", "0")]))
            .await
            .allowed
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = cluster.api.kubeconfig(dir.path());

    let output = run_with_deadline(
        gpushare().arg("status").env("KUBECONFIG", &kubeconfig),
        None,
    );
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NODE", "GPU", "MODE", "RESERVED", "CLIENTS", "MPS%", "RUNNING", "MODULES"]
    );
    // No kubelet here: counted, and no pod running (what an operator must see).
    assert_eq!(
        rows[1],
        [
            "edge-1",
            "0",
            "time-slicing",
            "no",
            "3/48",
            "-",
            "0",
            "default/Deployment/tracker(3)"
        ],
        "{table}"
    );
    assert_eq!(
        rows[2][..7],
        ["edge-1", "1", "mps", "no", "2/48", "40/100", "0"],
        "{table}"
    );
    assert_eq!(rows[2][7], "default/Deployment/vision(2x20%)");

    let output = run_with_deadline(
        gpushare()
            .args(["status", "-o", "json"])
            .env("KUBECONFIG", &kubeconfig),
        None,
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("status -o json is JSON");
    assert_eq!(json[1]["committedMpsPercentage"], 40);
    assert_eq!(json[1]["modules"], json!(["default/Deployment/vision"]));
    assert_eq!(json[1]["runningPods"], 0);
    let share = &json[1]["shares"][0];
    assert_eq!(
        (
            &share["kind"],
            &share["name"],
            &share["pods"],
            &share["mpsPercentage"]
        ),
        (
            &json!("Deployment"),
            &json!("vision"),
            &json!(2),
            &json!(20)
        )
    );

    cluster.api.stop().await;
    let output = run_with_deadline(
        gpushare().arg("status").env("KUBECONFIG", &kubeconfig),
        None,
    );
    assert!(
        !output.status.success(),
        "status fails when it cannot read the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_while_the_api_server_is_unreachable_and_becomes_ready_when_it_answers() {
    let api = FakeApiServer::start().await;
    api.apply(node("edge-1", 2, "a"));
    api.stop().await;
    let (webhook, dir) = Cluster::serve(&api).await;
    assert_eq!(
        webhook.get("/healthz").await.0,
        200,
        "serving without an API server"
    );
    assert_eq!(
        webhook.get("/readyz").await.0,
        503,
        "not ready before the caches sync"
    );
    api.restart().await;
    let cluster = Cluster {
        api,
        webhook,
        _dir: dir,
    };
    cluster.wait_ready().await;
    assert!(
        cluster
            .probe(&module("first", 1, &[("gpushare.io/gpu", "1")]))
            .await
            .allowed
    );
}
