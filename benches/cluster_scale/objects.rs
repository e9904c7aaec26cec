//! The cluster the benchmark serves from: N nodes with 2 GPUs each and M Deployments, every other
//! one managed (already assigned, pinned to one node by `kubernetes.io/hostname`), and a ledger that
//! already records every managed one, as a cluster in steady state has.

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "bench";

pub fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

pub fn node(i: usize) -> Value {
    let name = node_name(i);
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "nvidia.com/gpu.count": "2"}},
        "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": "2"}}
    })
}

fn deployment_name(i: usize) -> String {
    format!("app-{i:06}")
}

/// Deployment `i`: managed when `i` is even, then pinned to node `i/2 % nodes`, GPU `i/2/nodes % 2`.
pub fn deployment(i: usize, nodes: usize, generation: u64) -> Value {
    let name = deployment_name(i);
    let mut template = json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "registry.example/app:1"}]}
    });
    let mut annotations = Map::new();
    if i.is_multiple_of(2) {
        let node = node_name(i / 2 % nodes);
        let gpu = (i / 2 / nodes % 2).to_string();
        for (k, v) in [
            ("gpushare.io/gpu", gpu.as_str()),
            ("gpushare.io/assigned-gpu", gpu.as_str()),
            ("gpushare.io/assigned-mode", "time-slicing"),
        ] {
            annotations.insert(k.into(), json!(v));
        }
        template["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        template["metadata"]["annotations"] = Value::Object(annotations.clone());
        template["spec"]["containers"][0]["env"] =
            json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": gpu}]);
    }
    annotations.insert("deployment.kubernetes.io/revision".into(), json!("1"));
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1,
            "labels": {"app": name}, "annotations": annotations},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template},
        // Status churn: what a pod change does to its Deployment.
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": generation % 2, "availableReplicas": generation % 2,
            "conditions": [{"type": "Available", "status": if generation % 2 == 1 { "True" } else { "False" },
                "reason": "MinimumReplicasAvailable", "lastUpdateTime": format!("2026-12-01T00:{:02}:00Z", generation % 60)}]}
    })
}

/// The ledger ConfigMap recording every managed Deployment (see `src/cluster/ledger.rs`).
pub fn ledger(deployments: usize, nodes: usize, now_ms: u64) -> Value {
    let mut data = Map::new();
    for i in (0..deployments).step_by(2) {
        let entry = json!({"gpu": i / 2 / nodes % 2, "mode": "time-slicing", "pods": 1, "containers": 1,
            "nodeSelector": {"kubernetes.io/hostname": node_name(i / 2 % nodes)}, "writtenMs": now_ms});
        data.insert(
            format!("Deployment.{NAMESPACE}.{}", deployment_name(i)),
            json!(entry.to_string()),
        );
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gpushare-ledger", "namespace": "gpushare-system"}, "data": data})
}

/// The uid of review `serial`: its last 12 digits are the serial in hex.
pub fn review_uid(serial: u64) -> String {
    format!("705ab4f5-6393-11e8-b7cc-{serial:012x}")
}

/// The dry-run CREATE every admission sends: a managed Deployment pinned to node 0, `auto` GPU.
pub fn review(uid: u64) -> Vec<u8> {
    let object = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": NAMESPACE, "annotations": {"gpushare.io/gpu": "auto"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "probe"}}, "template": {
            "metadata": {"labels": {"app": "probe"}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node_name(0)},
                "containers": [{"name": "main", "image": "registry.example/app:1"}]}}}
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": review_uid(uid),
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "probe", "namespace": NAMESPACE, "operation": "CREATE",
            "userInfo": {"username": "bench"}, "object": object, "oldObject": null,
            "dryRun": true, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}
    }))
    .expect("reviews serialize")
}
