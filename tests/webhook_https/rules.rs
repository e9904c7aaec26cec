//! Which requests gpushare examines (kinds, owners, operations, namespaces), and CONTRACT
//! section 4 over the wire, one row per rule.

use serde_json::{json, Value};

use crate::assert_idempotent;
use crate::common::*;

#[tokio::test]
async fn foreign_kinds_controlled_pods_and_deletes_are_allowed_unchanged() {
    let server = Server::start(&[]);
    // A bare Pod is examined: two GPUs are denied, as on a Deployment.
    let pod = fixture_json("pod-gpu.json");
    server
        .review(&Review::pod("CREATE", pod.clone()).to_json())
        .await
        .assert_denied(403, GPU);
    // The same Pod created by a ReplicaSet is not: its controller's template was.
    let mut owned = pod;
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "gpu-5d4f", "uid": "2c5e1f0a-7b3d-4e8a-9f61-0d2c4b6a8e10", "controller": true}]);
    server
        .review(&Review::pod("CREATE", owned).to_json())
        .await
        .assert_allowed_unchanged();
    // A kind gpushare does not examine, with an annotation that would be denied.
    let mut foreign = Review::create(web(&[(GPU, "0,1")]));
    foreign.group = "argoproj.io".into();
    foreign.version = "v1alpha1".into();
    foreign.kind = "Rollout".into();
    foreign.resource = "rollouts".into();
    server
        .review(&foreign.to_json())
        .await
        .assert_allowed_unchanged();

    // DELETE: the API server sends object null and the stored object as oldObject.
    let stored = web(&[(GPU, "0,1")]);
    let mut delete = Review::deployment("DELETE", Value::Null);
    delete.old_object = stored;
    server
        .review(&delete.to_json())
        .await
        .assert_allowed_unchanged();
}

#[tokio::test]
async fn a_deployment_in_kube_system_is_allowed_unchanged() {
    let server = Server::start(&[]);
    for annotations in [vec![(GPU, "0")], vec![(GPU, "0,1")]] {
        let mut object = web(&annotations);
        object["metadata"]["namespace"] = json!("kube-system");
        let review = Review::create(object).namespace("kube-system");
        server
            .review(&review.to_json())
            .await
            .assert_allowed_unchanged();
    }
}

/// What a row of the rules table expects.
enum Expect {
    /// Allowed and patched: NVIDIA_VISIBLE_DEVICES on container 0, and a warning mentioning this
    /// text when given.
    Patched(&'static str, Option<&'static str>),
    /// Allowed, no patch.
    Unchanged,
    /// Denied (a 4xx code), the message mentioning this text.
    Denied(&'static str),
}

fn container(object: &mut Value, index: usize) -> &mut Value {
    &mut object["spec"]["template"]["spec"]["containers"][index]
}

/// CONTRACT section 4, one row per rule, over HTTPS (the core's own table lives in
/// decision_table.rs; these rows prove the wire format carries each outcome).
#[tokio::test]
async fn rules_over_the_wire() {
    let policy = fixture_path("policy-gpu1-mps.yaml");
    let server = Server::start(&["--policy", policy.to_str().expect("UTF-8 path")]);
    let sidecar = json!({ "name": "sidecar", "image": "busybox", "resources": {} });

    let mut rows: Vec<(&str, Value, Expect)> = Vec::new();
    let mut template_only = web(&[]);
    template_only["spec"]["template"]["metadata"]["annotations"] = json!({ GPU: "0" });
    rows.push((
        "keys on the pod template only",
        template_only,
        Expect::Patched("0", None),
    ));
    let mut conflict = web(&[(GPU, "0")]);
    conflict["spec"]["template"]["metadata"]["annotations"] = json!({ GPU: "1" });
    rows.push((
        "a key set differently in both places",
        conflict,
        Expect::Denied(GPU),
    ));
    for value in [
        "all",
        "0-1",
        "GPU-8f6e0c2a-1b2c-4d5e-8f90-123456789abc,GPU-1234",
    ] {
        rows.push(("not one GPU", web(&[(GPU, value)]), Expect::Denied(GPU)));
    }
    rows.push((
        "an index the node lacks",
        web(&[(GPU, "2")]),
        Expect::Denied("VM"),
    ));
    for value in ["0", "101", "fifty"] {
        rows.push((
            "a percentage outside 1..100",
            web(&[(MPS_PERCENTAGE, value)]),
            Expect::Denied(MPS_PERCENTAGE),
        ));
    }
    rows.push((
        "an mps key with mode time-slicing",
        web(&[(MODE, "time-slicing"), (MPS_PERCENTAGE, "20")]),
        Expect::Denied(MPS_PERCENTAGE),
    ));
    rows.push((
        "a malformed memory limit",
        web(&[(GPU, "1"), (MPS_MEMORY_LIMIT, "1.5Gi")]),
        Expect::Denied(MPS_MEMORY_LIMIT),
    ));
    rows.push((
        "mode time-slicing on the mps GPU",
        web(&[(GPU, "1"), (MODE, "time-slicing")]),
        Expect::Denied("mps"),
    ));
    rows.push((
        "a listed container that does not exist",
        web(&[(GPU, "0"), (CONTAINERS, "nginx,worker")]),
        Expect::Denied("worker"),
    ));
    let mut two_gpus = web(&[(GPU, "0")]);
    container(&mut two_gpus, 0)["resources"] = json!({ "limits": { "nvidia.com/gpu": "2" } });
    rows.push((
        "nvidia.com/gpu: 2",
        two_gpus,
        Expect::Denied("nvidia.com/gpu"),
    ));
    let mut one_gpu = web(&[(GPU, "0")]);
    container(&mut one_gpu, 0)["resources"] = json!({ "limits": { "nvidia.com/gpu": "1" } });
    rows.push((
        "nvidia.com/gpu: 1 warns",
        one_gpu,
        Expect::Patched("0", Some("nvidia.com/gpu")),
    ));
    let mut value_from = web(&[(GPU, "0")]);
    container(&mut value_from, 0)["env"] = json!([{
        "name": VISIBLE_DEVICES,
        "valueFrom": { "configMapKeyRef": { "name": "gpus", "key": "visible" } }
    }]);
    rows.push((
        "valueFrom on an owned variable",
        value_from,
        Expect::Denied("valueFrom"),
    ));
    for (value, expect) in [
        ("all", Expect::Denied(VISIBLE_DEVICES)),
        ("0,1", Expect::Denied(VISIBLE_DEVICES)),
        // Written by hand: counted as gpushare.io/gpu: "1" (CONTRACT section 2b).
        ("1", Expect::Patched("1", None)),
        ("none", Expect::Unchanged),
        ("void", Expect::Unchanged),
        ("", Expect::Unchanged),
    ] {
        let mut unmanaged = web(&[]);
        container(&mut unmanaged, 0)["env"] = json!([{ "name": VISIBLE_DEVICES, "value": value }]);
        rows.push((
            "an unmanaged container's own NVIDIA_VISIBLE_DEVICES",
            unmanaged,
            expect,
        ));
    }
    let mut unselected = web(&[(GPU, "0"), (CONTAINERS, "nginx")]);
    let mut greedy = sidecar.clone();
    greedy["env"] = json!([{ "name": VISIBLE_DEVICES, "value": "all" }]);
    unselected["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(greedy);
    rows.push((
        "an unselected container asking for all GPUs",
        unselected,
        Expect::Denied(VISIBLE_DEVICES),
    ));
    let mut replicas = web(&[(GPU, "1"), (MPS_PERCENTAGE, "50")]);
    replicas["spec"]["replicas"] = json!(3);
    rows.push((
        "3 replicas x 50% on one GPU",
        replicas,
        Expect::Denied("100"),
    ));
    let mut clients = web(&[(GPU, "0")]);
    clients["spec"]["replicas"] = json!(49);
    rows.push(("49 client processes", clients, Expect::Denied("48")));

    for (name, object, expect) in rows {
        let answer = server
            .review(&Review::create(object.clone()).to_json())
            .await;
        match expect {
            Expect::Patched(gpu, warning) => {
                let patched = answer.apply(&object);
                assert_eq!(
                    env_value(&patched, 0, VISIBLE_DEVICES).as_deref(),
                    Some(gpu),
                    "{name}"
                );
                if let Some(warning) = warning {
                    assert!(
                        answer.warnings.iter().any(|w| w.contains(warning)),
                        "{name}: a warning mentioning {warning}: {:?}",
                        answer.warnings
                    );
                }
                assert_idempotent(&server, &patched).await;
            }
            Expect::Unchanged => {
                assert!(
                    answer.allowed && answer.unchanged(),
                    "{name}: {:#}",
                    answer.review
                )
            }
            Expect::Denied(mentions) => {
                // `Answer` already checked the 4xx code and the presence of a message.
                assert!(
                    !answer.allowed,
                    "{name}: expected a denial: {:#}",
                    answer.review
                );
                assert!(
                    answer.message.contains(mentions),
                    "{name}: the message should mention {mentions:?}: {}",
                    answer.message
                );
            }
        }
    }
}
