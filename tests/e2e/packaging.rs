//! The other ways to deploy gpushare, judged by the real kube-apiserver: the Helm chart's render
//! and the cert-manager component's objects are accepted by a server-side dry run (schema,
//! admission and RBAC validation of the real server). cert-manager's own kinds (Issuer,
//! Certificate) need its CRDs and controller, which this control plane does not have; they are
//! checked by `tests/kustomize_components.rs` instead.

use serde::Deserialize as _;
use serde_json::Value;

use crate::support::*;

/// Every document of a multi-document YAML stream, except cert-manager's kinds.
fn without_cert_manager(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|v| v.is_object())
        .filter(|v| {
            !v["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("cert-manager.io/")
        })
        .collect()
}

fn server_dry_run(objects: Vec<Value>) -> Run {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    kubectl_in(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&list.to_string()),
    )
}

#[test]
fn the_helm_charts_render_is_accepted_by_the_real_api_server() {
    let helm = root().join("target/tools/helm");
    assert!(
        helm.exists(),
        "{} missing: make e2e builds it (make helm)",
        helm.display()
    );
    let mut command = std::process::Command::new(helm);
    command.args([
        "template",
        "gpushare-chart",
        "charts/gpushare",
        "--namespace",
        "gpushare-system",
    ]);
    command.args(["--set", "webhook.caBundle=Cg=="]);
    command.current_dir(root());
    let render = run(&mut command, None).ok();
    let objects = without_cert_manager(&render.stdout);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "MutatingWebhookConfiguration",
        "ClusterRole",
        "Role",
        "Service",
        "ConfigMap",
    ] {
        assert!(
            kinds.contains(&kind),
            "the chart renders no {kind}: {kinds:?}"
        );
    }
    let applied = server_dry_run(objects).ok();
    assert!(applied.stdout.contains("mutatingwebhookconfiguration.admissionregistration.k8s.io/gpushare-chart created (server dry run)"), "{}", applied.stdout);
}

#[test]
fn the_cert_manager_components_webhook_configuration_is_accepted_by_the_real_api_server() {
    let dir = root().join("target/e2e-cert-manager-overlay");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../../manifests]\ncomponents: [../../manifests/components/cert-manager]\n",
    )
    .unwrap();
    let render = kubectl(&["kustomize", dir.to_str().unwrap()]).ok();
    let objects = without_cert_manager(&render.stdout);
    let webhook = objects
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .expect("the component keeps the webhook configuration");
    assert_eq!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "gpushare-system/gpushare-tls"
    );
    let applied = server_dry_run(objects).ok();
    assert!(
        applied.stdout.contains("(server dry run)"),
        "{}",
        applied.stdout
    );
}
