//! UPDATE paths through the real kube-apiserver and kubectl: a changed annotation reassigns,
//! `kubectl rollout restart` and `kubectl set env` keep the GPU, removing the annotation unmanages,
//! and `kubectl scale` is judged against capacity.

use crate::support::*;
use crate::{get_deployment, wait_for_node, ASSIGNED_GPU, GPU, NVD};

#[test]
fn updates_reassign_on_a_changed_annotation_survive_rollout_restart_and_set_env_and_unmanage() {
    let node = TestNode::new("e2e-update", 2);
    let ns = Namespace::new("e2e-update");
    wait_for_node(&node, &ns);
    apply(
        &deployment("web", &ns.name, &node.name, 1, &[(GPU, "0")]),
        &[],
    )
    .ok();
    let target = "deployment/web";

    kubectl(&[
        "-n",
        &ns.name,
        "annotate",
        target,
        "--overwrite",
        "gpushare.io/gpu=1",
    ])
    .ok();
    let moved = get_deployment(&ns, "web");
    assert_eq!(
        template_env(&moved, "/spec/template", NVD).as_deref(),
        Some("1")
    );
    assert_eq!(
        annotation(&moved, "/metadata", ASSIGNED_GPU).as_deref(),
        Some("1")
    );

    kubectl(&["-n", &ns.name, "rollout", "restart", target]).ok();
    let restarted = get_deployment(&ns, "web");
    assert!(annotation(
        &restarted,
        "/spec/template/metadata",
        "kubectl.kubernetes.io/restartedAt"
    )
    .is_some());
    assert_eq!(
        template_env(&restarted, "/spec/template", NVD).as_deref(),
        Some("1")
    );
    assert_eq!(
        annotation(&restarted, "/spec/template/metadata", ASSIGNED_GPU).as_deref(),
        Some("1")
    );

    // gpushare owns NVIDIA_VISIBLE_DEVICES: a hand-set value is replaced, with a warning.
    let set = kubectl(&[
        "-n",
        &ns.name,
        "set",
        "env",
        target,
        "NVIDIA_VISIBLE_DEVICES=0",
    ])
    .ok();
    assert!(
        set.stderr.contains("Warning:") && set.stderr.contains(NVD),
        "{}",
        set.stderr
    );
    let owned = get_deployment(&ns, "web");
    assert_eq!(
        template_env(&owned, "/spec/template", NVD).as_deref(),
        Some("1")
    );

    // Removing every gpushare key returns the Deployment to unmanaged.
    kubectl(&["-n", &ns.name, "annotate", target, "gpushare.io/gpu-"]).ok();
    let released = get_deployment(&ns, "web");
    assert_eq!(template_env(&released, "/spec/template", NVD), None);
    for metadata in ["/metadata", "/spec/template/metadata"] {
        assert_eq!(
            annotation(&released, metadata, ASSIGNED_GPU),
            None,
            "{metadata}"
        );
    }
}

#[test]
fn kubectl_scale_past_capacity_is_denied_and_within_capacity_allowed() {
    let node = TestNode::new("e2e-scale", 1);
    let ns = Namespace::new("e2e-scale");
    wait_for_node(&node, &ns);
    apply(
        &deployment("scaled", &ns.name, &node.name, 30, &[(GPU, "0")]),
        &[],
    )
    .ok();
    let over = kubectl(&[
        "-n",
        &ns.name,
        "scale",
        "deployment/scaled",
        "--replicas=49",
    ]);
    assert_denied(&over, "denied the request: ", "exceeds the limit of 48");
    kubectl(&[
        "-n",
        &ns.name,
        "scale",
        "deployment/scaled",
        "--replicas=48",
    ])
    .ok();
    let stored = get_deployment(&ns, "scaled");
    assert_eq!(stored["spec"]["replicas"], 48);
}
