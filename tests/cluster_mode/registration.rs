//! The registration follows the cluster (CONTRACT section 7, a small blast radius): the webhooks'
//! namespaceSelector follows the policy's excluded namespaces live, and a namespace is labelled
//! for the scale webhook before its first module is admitted.

use serde_json::{json, Value};

use super::*;

/// A configuration with the shape of manifests/webhook.yaml's selectors.
fn configuration() -> Value {
    let excluded = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
        "values": ["kube-system", "gpushare-system"]});
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "gpushare"},
        "webhooks": [
            {"name": "managed.gpushare.io", "namespaceSelector": {"matchExpressions": [excluded]}},
            {"name": "scale.gpushare.io", "namespaceSelector": {"matchExpressions": [excluded,
                {"key": "gpushare.io/managed-workloads", "operator": "In", "values": ["true"]}]}},
        ]
    })
}

fn excluded_by(api: &fake_apiserver::FakeApiServer, webhook: usize) -> Vec<String> {
    let configuration = api
        .get("MutatingWebhookConfiguration", None, "gpushare")
        .expect("the configuration");
    configuration["webhooks"][webhook]["namespaceSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_namespaces_follow_the_policy_into_every_webhook_live() {
    let cluster = Cluster::start(vec![
        node("edge-1", 2, "a"),
        policy("namespaces: {exclude: [kube-system, gpushare-system, lab]}\n"),
        configuration(),
    ])
    .await;
    eventually(
        "every webhook leaves out the excluded namespace lab",
        || async {
            (0..2)
                .all(|i| excluded_by(&cluster.api, i) == ["gpushare-system", "kube-system", "lab"])
        },
    )
    .await;
    cluster.api.apply(policy(
        "namespaces: {exclude: [kube-system, gpushare-system]}\n",
    ));
    eventually(
        "lab is sent again once the policy no longer excludes it",
        || async {
            (0..2).all(|i| excluded_by(&cluster.api, i) == ["gpushare-system", "kube-system"])
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_is_labelled_for_the_scale_webhook_before_its_first_module_is_admitted() {
    let cluster = Cluster::start(vec![node("edge-1", 2, "a")]).await;
    let labelled = |api: &fake_apiserver::FakeApiServer| {
        api.get("Namespace", None, "default").expect("default")["metadata"]["labels"]
            ["gpushare.io/managed-workloads"]
            == "true"
    };
    assert!(!labelled(&cluster.api));
    let dry = cluster
        .probe(&module("gpu", 1, &[("gpushare.io/gpu", "0")]))
        .await;
    assert!(dry.allowed);
    assert!(!labelled(&cluster.api), "a dry run changes nothing");
    let answer = cluster
        .create(module("gpu", 1, &[("gpushare.io/gpu", "0")]))
        .await;
    assert!(answer.allowed, "{:#}", answer.review);
    assert!(
        labelled(&cluster.api),
        "labelled by the time the module is admitted"
    );
}

/// The ledger holds what is in flight, never one entry per workload (CONTRACT section 6a): after
/// 40 modules are admitted and stored it empties again, so its size and the cost of a commit do
/// not grow with the number of managed workloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_empties_once_the_admitted_workloads_are_stored() {
    let cluster = Cluster::start(vec![node("edge-1", 2, "a")]).await;
    let ledger_entries = |api: &fake_apiserver::FakeApiServer| {
        api.get("ConfigMap", Some("gpushare-system"), "gpushare-ledger")
            .map(|cm| cm["data"].as_object().map_or(0, |data| data.len()))
            .unwrap_or(0)
    };
    for i in 0..40 {
        let answer = cluster
            .create(module(&format!("m{i}"), 1, &[("gpushare.io/gpu", "auto")]))
            .await;
        assert!(answer.allowed, "{:#}", answer.review);
    }
    assert!(ledger_entries(&cluster.api) > 0, "admissions were recorded");
    eventually("the ledger to hold nothing in flight", || async {
        ledger_entries(&cluster.api) == 0
    })
    .await;
    // Every module still counts, from its stored object: 40 clients fill GPU 0 and 1 as auto
    // spread them (20 each), so the next 30-client module fits neither.
    let big = cluster
        .probe(&module("big", 30, &[("gpushare.io/gpu", "auto")]))
        .await;
    assert!(
        !big.allowed,
        "the stored modules still count: {:#}",
        big.review
    );
}
