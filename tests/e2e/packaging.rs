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
    command.args(["--kube-version", kubernetes_release()]);
    command.current_dir(root());
    let render = run(&mut command, None);
    if kubernetes_minor() < 30 {
        // The chart supports 1.30 and later: on an older cluster it refuses to render at all,
        // rather than rendering what the API server would refuse.
        assert_ne!(
            render.code,
            0,
            "the chart rendered for {}",
            kubernetes_release()
        );
        assert!(render.stderr.contains("kubeVersion"), "{}", render.stderr);
        return;
    }
    let render = render.ok();
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
    // With the components this release needs besides cert-manager's, as an overlay on it would.
    let components: Vec<String> = std::iter::once("cert-manager")
        .chain(release_components())
        .map(|c| format!("../../manifests/components/{c}"))
        .collect();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../../manifests]\ncomponents: [{}]\n",
            components.join(", ")
        ),
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

/// `make deploy` trusts every webhook: its `make inject-ca` step, run against the real API server
/// on a copy of the shipped configuration (renamed, and matching no namespace so it never calls
/// anything), sets the caBundle on each of its webhooks, however many there are.
#[test]
fn make_inject_ca_sets_the_ca_bundle_of_every_webhook() {
    const NAME: &str = "gpushare-inject-ca-test";
    let rendered = kubectl(&[
        "kustomize",
        root().join("manifests").to_str().expect("utf-8"),
    ])
    .ok();
    let mut configuration = serde_yaml::Deserializer::from_str(&rendered.stdout)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .find(|v| v["kind"] == "MutatingWebhookConfiguration")
        .expect("manifests/ render a webhook configuration");
    configuration["metadata"] = serde_json::json!({"name": NAME});
    let webhooks = configuration["webhooks"].as_array_mut().expect("webhooks");
    let count = webhooks.len();
    for webhook in webhooks.iter_mut() {
        webhook["namespaceSelector"] = serde_json::json!({"matchLabels": {NAME: "never"}});
    }
    let _ = kubectl(&[
        "delete",
        "mutatingwebhookconfiguration",
        NAME,
        "--ignore-not-found",
    ]);
    kubectl_in(&["create", "-f", "-"], Some(&configuration.to_string())).ok();
    let dir = tempfile::tempdir().expect("a temp dir");
    let bundle = dir.path().join("ca-bundle");
    std::fs::write(&bundle, "Q0EgYnVuZGxl\n").expect("write the bundle");
    let kubectl_command = format!(
        "{} --kubeconfig={}",
        std::env::var("KUBECTL").unwrap_or_else(|_| env_var("KUBECTL").to_string()),
        kubeconfig()
    );
    let mut make = std::process::Command::new("make");
    make.current_dir(root()).args([
        "--no-print-directory",
        "inject-ca",
        &format!("WEBHOOK_CONFIGURATION={NAME}"),
        &format!("CA_BUNDLE_FILE={}", bundle.display()),
        &format!("KUBECTL={kubectl_command}"),
    ]);
    let run = run(&mut make, None).ok();
    assert!(
        run.stdout
            .contains(&format!("caBundle set on {count} webhooks")),
        "{}",
        run.stdout
    );
    let stored = get_json(&["mutatingwebhookconfiguration", NAME]);
    let _ = kubectl(&["delete", "mutatingwebhookconfiguration", NAME]);
    let webhooks = stored["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), count);
    for webhook in webhooks {
        assert_eq!(
            webhook["clientConfig"]["caBundle"], "Q0EgYnVuZGxl",
            "webhook {} has no caBundle",
            webhook["name"]
        );
    }
}
