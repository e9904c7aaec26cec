//! Cluster mode with every workload kind: the caches count Jobs, CronJobs and bare Pods like
//! Deployments, a finished Job frees its share, controller-owned Pods are not counted twice, and
//! `status` lists each module with its kind.

use serde_json::{json, Value};

use super::*;

const MPS_GPU0: &str = "gpuModes: {\"0\": mps}\n";

/// A stored object gpushare admitted: GPU 0, mps, `percentage` per pod, on both metadata.
fn assigned_to_gpu0(mut object: Value, percentage: &str) -> Value {
    let annotations = json!({
        "gpushare.io/mps-percentage": percentage,
        "gpushare.io/assigned-gpu": "0",
        "gpushare.io/assigned-mode": "mps",
        "gpushare.io/assigned-mps-percentage": percentage,
    });
    object["metadata"]["namespace"] = json!("default");
    object["metadata"]["annotations"] = annotations.clone();
    let template = match object["kind"].as_str() {
        Some("Pod") => None,
        Some("CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => Some("/spec/template"),
    };
    if let Some(template) = template.and_then(|t| object.pointer_mut(t)) {
        template["metadata"]["annotations"] = annotations;
    }
    object
}

fn named(mut object: Value, name: &str) -> Value {
    object["metadata"]["name"] = json!(name);
    object
}

/// A 60% Deployment probe on GPU 0 of a one-GPU node: allowed only while GPU 0 is free enough.
fn sixty() -> Value {
    module(
        "probe",
        1,
        &[
            ("gpushare.io/gpu", "0"),
            ("gpushare.io/mps-percentage", "60"),
        ],
    )
}

async fn metrics(cluster: &Cluster) -> String {
    cluster.webhook.get("/metrics").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_job_counts_until_it_finishes() {
    let job = assigned_to_gpu0(named(common::fixture_json("job-nbody.json"), "batch"), "60");
    let cluster = Cluster::start(vec![node("edge-1", 1, "a"), policy(MPS_GPU0), job.clone()]).await;
    let denied = cluster.probe(&sixty()).await;
    assert!(
        !denied.allowed && denied.message.contains("60% MPS committed"),
        "the Job holds 60% of GPU 0: {}",
        denied.message
    );
    let shown = metrics(&cluster).await;
    assert!(
        shown.contains("gpushare_modules{kind=\"Job\"} 1"),
        "{shown}"
    );
    assert!(
        shown.contains("gpushare_cache_synced{cache=\"jobs\"} 1"),
        "{shown}"
    );

    let mut complete = job;
    complete["status"] = json!({ "conditions": [{ "type": "Complete", "status": "True" }] });
    cluster.api.apply(complete);
    eventually("a Complete Job no longer counts", || async {
        cluster.probe(&sixty()).await.allowed
    })
    .await;
    let shown = metrics(&cluster).await;
    assert!(
        shown.contains("gpushare_modules{kind=\"Job\"} 0"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_cronjob_counts_once_stored_and_frees_when_deleted() {
    let cluster = Cluster::start(vec![node("edge-1", 1, "a"), policy(MPS_GPU0)]).await;
    let cron = common::with_annotations(
        common::fixture_json("cronjob-nightly.json"),
        &[("gpushare.io/mps-percentage", "70")],
    );
    let answer = cluster.review(&Review::create_of(cron.clone())).await;
    assert!(answer.allowed, "{:#}", answer.review);
    assert!(
        answer.warnings.iter().any(|w| w.contains("overlap")),
        "{:?}",
        answer.warnings
    );
    let mut stored = answer.apply(&cron);
    stored["metadata"]["namespace"] = json!("default");
    cluster.api.apply(stored);
    eventually("the cache shows the CronJob", || async {
        metrics(&cluster)
            .await
            .contains("gpushare_modules{kind=\"CronJob\"} 1")
    })
    .await;
    assert!(!cluster.probe(&sixty()).await.allowed, "70% + 60% > 100%");
    cluster.api.delete("CronJob", Some("default"), "nightly");
    eventually("deleting the CronJob frees its share", || async {
        cluster.probe(&sixty()).await.allowed
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_pods_count_and_controller_owned_or_finished_pods_do_not() {
    let pod = common::fixture_json("pod-infer.json");
    let mut owned = assigned_to_gpu0(named(pod.clone(), "web-5d4f-x2k4q"), "60");
    owned["metadata"]["ownerReferences"] = json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "web-5d4f", "uid": "3f2a9c1e-5b7d-4e8f-a1c3-9d0e2f4b6a8c", "controller": true }]);
    // Its ReplicaSet exists with that uid, and the Pod carries its template as it is. (The
    // ReplicaSet, a module of its own here, runs 0 replicas: only the Pod could hold GPU 0.)
    let mut replica_set = assigned_to_gpu0(
        named(common::fixture_json("replicaset-cam.json"), "web-5d4f"),
        "60",
    );
    replica_set["metadata"]["uid"] = json!("3f2a9c1e-5b7d-4e8f-a1c3-9d0e2f4b6a8c");
    replica_set["spec"]["replicas"] = json!(0);
    replica_set["spec"]["template"]["spec"] = owned["spec"].clone();
    let mut succeeded = assigned_to_gpu0(named(pod.clone(), "done"), "60");
    succeeded["status"] = json!({ "phase": "Succeeded" });
    let cluster = Cluster::start(vec![
        node("edge-1", 1, "a"),
        policy(MPS_GPU0),
        replica_set,
        owned.clone(),
        succeeded,
    ])
    .await;
    assert!(
        cluster.probe(&sixty()).await.allowed,
        "neither a ReplicaSet's Pod nor a Succeeded Pod holds GPU 0"
    );
    // Finished Pods are left out by the API server, not read and dropped.
    let selected = cluster.api.requests().iter().any(|r| {
        r.path == "/api/v1/pods"
            && r.query_param("fieldSelector")
                .is_some_and(|f| f.contains("status.phase!=Succeeded"))
    });
    assert!(selected, "the Pod watch selects running Pods");

    cluster
        .api
        .apply(assigned_to_gpu0(named(pod, "solo"), "60"));
    eventually("a bare Pod counts", || async {
        !cluster.probe(&sixty()).await.allowed
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_naming_a_controller_that_does_not_exist_counts_as_its_own_module() {
    let mut forged = assigned_to_gpu0(
        named(common::fixture_json("pod-infer.json"), "forged"),
        "60",
    );
    forged["metadata"]["ownerReferences"] = json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "nobody", "uid": "00000000-0000-0000-0000-000000000000", "controller": true }]);
    let cluster = Cluster::start(vec![node("edge-1", 1, "a"), policy(MPS_GPU0), forged]).await;
    let denied = cluster.probe(&sixty()).await;
    assert!(
        !denied.allowed && denied.message.contains("60% MPS committed"),
        "a forged owner exempts nothing: {}",
        denied.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_each_module_with_its_kind_and_reads_a_configmap_without_policy_yaml_as_invalid(
) {
    let job = assigned_to_gpu0(named(common::fixture_json("job-nbody.json"), "batch"), "30");
    let daemon = assigned_to_gpu0(
        named(common::fixture_json("daemonset-agent.json"), "agent"),
        "20",
    );
    // The key is misspelt: the ConfigMap holds no policy.yaml.
    let broken = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gpushare-policy", "namespace": "gpushare-system"},
        "data": {"policy.yml": "defaultMode: mps\n"}
    });
    let api = fake_apiserver::FakeApiServer::start().await;
    for object in [node("edge-1", 1, "a"), broken, job, daemon] {
        api.apply(object);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let output = run_with_deadline(
        gpushare()
            .args(["status", "-o", "json"])
            .env("KUBECONFIG", &kubeconfig),
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("invalid") && stderr.contains("policy.yaml"),
        "a ConfigMap without policy.yaml is invalid: {stderr}"
    );
    let rows: Value = serde_json::from_slice(&output.stdout).expect("status -o json is JSON");
    assert_eq!(
        rows[0]["mode"], "time-slicing",
        "the embedded default is shown: {rows:#}"
    );
    assert_eq!(
        rows[0]["modules"],
        json!(["default/DaemonSet/agent", "default/Job/batch"]),
        "{rows:#}"
    );
    assert_eq!(rows[0]["committedMpsPercentage"], 50, "{rows:#}");
}
