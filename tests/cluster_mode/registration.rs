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
