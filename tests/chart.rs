//! The Helm chart `charts/gpushare` deploys what `manifests/` deploys: its default render equals
//! `kubectl kustomize manifests/` object by object (labels may add to the kustomization's, the policy
//! is compared as a policy), with cert-manager on it equals the overlay with the cert-manager
//! component, and its values (replicas, image, policy, names) land where they must.
//!
//! Needs `helm`: `make chart-test` builds it from tests/tools/helm and sets HELM. Without HELM and
//! without target/tools/helm the tests skip (so `make test` passes before the first
//! `make chart-test`).

mod render;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use gpushare::core::policy::Policy;
use render::{
    by_key, differences, have_kubectl, key, kustomize, overlay, parse_documents, read, repo_path,
    show, strings, take, the, Key,
};
use serde_json::Value;

const CHART: &str = "charts/gpushare";

fn helm() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HELM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "HELM={} does not exist (make helm builds it)",
            path.display()
        );
        return Some(path);
    }
    let built = repo_path("target/tools/helm");
    if built.is_file() {
        return Some(built);
    }
    eprintln!("SKIPPED: helm not found; `make chart-test` builds it and runs these tests");
    None
}

/// `helm template RELEASE charts/gpushare -n NAMESPACE ARGS...`.
fn template(helm: &PathBuf, release: &str, namespace: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(helm)
        .args(["template", release])
        .arg(repo_path(CHART))
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "`helm template {release} {CHART} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm prints UTF-8");
    parse_documents(&text, "`helm template`")
}

/// Both tools, or a skip.
fn tools() -> Option<PathBuf> {
    let helm = helm()?;
    have_kubectl().then_some(helm)
}

/// Labels may add to the other render's (Helm's own), never drop or change one.
fn take_labels_superset(
    chart: &mut Value,
    manifests: &mut Value,
    pointer: &str,
    errors: &mut Vec<String>,
) {
    let chart_labels = take(chart, pointer).unwrap_or(Value::Null);
    let manifest_labels = take(manifests, pointer).unwrap_or(Value::Null);
    for (label, value) in manifest_labels.as_object().into_iter().flatten() {
        if chart_labels.get(label) != Some(value) {
            errors.push(format!(
                "{pointer}: label {label}={value} is missing or differs in the chart ({})",
                chart_labels.get(label).unwrap_or(&Value::Null)
            ));
        }
    }
}

/// The policy text of a policy ConfigMap as the server reads it.
fn policy_of(config_map: &Value) -> Result<Policy, String> {
    let text = config_map["data"]["policy.yaml"]
        .as_str()
        .ok_or("no data key policy.yaml")?;
    Policy::from_yaml(text).map_err(|e| e.to_string())
}

/// Fails, listing every difference, unless the chart's render deploys what the kustomize render does.
fn assert_equivalent(chart: &[Value], manifests: &[Value], what: &str) {
    let chart = by_key(chart, "the chart");
    let manifests = by_key(manifests, "the kustomization");
    let chart_keys: BTreeSet<&Key> = chart.keys().collect();
    let manifest_keys: BTreeSet<&Key> = manifests.keys().collect();
    let only = |a: &BTreeSet<&Key>, b: &BTreeSet<&Key>| -> Vec<String> {
        a.difference(b).map(|k| show(k)).collect()
    };
    assert_eq!(
        chart_keys,
        manifest_keys,
        "{what}: the chart and the kustomization must render the same objects; only in the chart: {:?}; only in the kustomization: {:?}",
        only(&chart_keys, &manifest_keys),
        only(&manifest_keys, &chart_keys),
    );
    let mut errors = Vec::new();
    for (k, manifest) in &manifests {
        let mut chart = chart[k].clone();
        let mut manifest = manifest.clone();
        let mut object_errors = Vec::new();
        take_labels_superset(
            &mut chart,
            &mut manifest,
            "/metadata/labels",
            &mut object_errors,
        );
        if chart.pointer("/spec/template/metadata").is_some() {
            take_labels_superset(
                &mut chart,
                &mut manifest,
                "/spec/template/metadata/labels",
                &mut object_errors,
            );
        }
        if k.0 == "ConfigMap" && manifest["data"].get("policy.yaml").is_some() {
            match (policy_of(&chart), policy_of(&manifest)) {
                (Ok(a), Ok(b)) if a == b => {}
                (a, b) => object_errors.push(format!(
                    "/data/policy.yaml: the policies differ:\n  chart: {a:?}\n  manifests: {b:?}"
                )),
            }
            take(&mut chart, "/data/policy.yaml");
            take(&mut manifest, "/data/policy.yaml");
        }
        object_errors.extend(differences(&chart, &manifest));
        errors.extend(
            object_errors
                .into_iter()
                .map(|e| format!("{}: {e}", show(k))),
        );
    }
    assert!(
        errors.is_empty(),
        "{what}: the chart (left) differs from the kustomization (right); update charts/gpushare/templates to match manifests/ (or the other way round):\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_default_render_equals_the_manifests() {
    let Some(helm) = tools() else { return };
    let manifests = kustomize(&repo_path("manifests"));
    // Helm keeps its release in the namespace, so by default the chart leaves the Namespace to the
    // user; with namespace.create the chart renders everything manifests/ does.
    let with_namespace = template(
        &helm,
        "gpushare",
        "gpushare-system",
        &["--set", "namespace.create=true"],
    );
    assert_equivalent(&with_namespace, &manifests, "namespace.create=true");

    let default = template(&helm, "gpushare", "gpushare-system", &[]);
    let without_namespace: Vec<Value> = manifests
        .iter()
        .filter(|o| o["kind"] != "Namespace")
        .cloned()
        .collect();
    assert_equivalent(&default, &without_namespace, "default values");
}

#[test]
fn with_cert_manager_it_equals_the_cert_manager_component() {
    let Some(helm) = tools() else { return };
    let manifests = overlay(&["manifests/components/cert-manager"], "");
    let chart = template(
        &helm,
        "gpushare",
        "gpushare-system",
        &["--set", "namespace.create=true,certManager.enabled=true"],
    );
    assert_equivalent(&chart, &manifests, "certManager.enabled=true");
}

#[test]
fn both_renders_log_json() {
    let Some(helm) = tools() else { return };
    for (origin, objects) in [
        ("manifests/", kustomize(&repo_path("manifests"))),
        (CHART, template(&helm, "gpushare", "gpushare-system", &[])),
    ] {
        let deployment = the(&objects, "Deployment", None);
        let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert!(
            args.windows(2).any(|w| w == ["--log-format", "json"]),
            "{origin}: the webhook must log JSON (--log-format json): {args:?}"
        );
    }
}

#[test]
fn replicas_image_and_policy_come_from_values() {
    let Some(helm) = helm() else { return };
    let objects = template(
        &helm,
        "gpushare",
        "gpushare-system",
        &[
            "--set",
            "replicaCount=3,image.repository=registry.example/gpushare,image.tag=1.2.3,logFormat=text",
            "--set",
            "policy.defaultMode=mps,policy.reservedForVms={1},policy.gpusPerNode=2",
            "--set-string",
            "policy.gpuModes.0=time-slicing",
        ],
    );
    let deployment = the(&objects, "Deployment", Some("gpushare"));
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/gpushare:1.2.3");
    assert!(strings(&container["args"])
        .windows(2)
        .any(|w| w == ["--log-format", "text"]));

    let config_map = the(&objects, "ConfigMap", Some("gpushare-policy"));
    let policy =
        policy_of(config_map).unwrap_or_else(|e| panic!("the rendered policy is invalid: {e}"));
    let expected = Policy::from_yaml(
        "defaultMode: mps\nreservedForVms: [1]\ngpusPerNode: 2\ngpuModes: {\"0\": time-slicing}\n",
    )
    .expect("the expected policy is valid");
    assert_eq!(policy, expected, "policy values must reach the ConfigMap");

    let default = template(&helm, "gpushare", "gpushare-system", &[]);
    let image =
        &the(&default, "Deployment", None)["spec"]["template"]["spec"]["containers"][0]["image"];
    let chart = parse_documents(
        &read(&repo_path("charts/gpushare/Chart.yaml")),
        "Chart.yaml",
    );
    let app_version = chart[0]["appVersion"]
        .as_str()
        .expect("Chart.yaml has appVersion");
    assert!(
        image
            .as_str()
            .is_some_and(|i| i.ends_with(&format!(":{app_version}"))),
        "the default image tag is the chart's appVersion {app_version}: {image}"
    );
}

/// Another release name and namespace: every reference between the objects follows.
#[test]
fn names_and_namespace_follow_the_release() {
    let Some(helm) = helm() else { return };
    let objects = template(
        &helm,
        "edge",
        "gpu-system",
        &[
            "--set",
            "certManager.enabled=true,namespace.create=true,statusPage.enabled=true",
        ],
    );
    let name = "edge-gpushare";
    for object in &objects {
        let (kind, namespace, object_name) = key(object);
        if kind == "Namespace" {
            continue;
        }
        assert!(
            object_name.starts_with(name),
            "{kind} {object_name} must be named after the release ({name}...)"
        );
        if ![
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
        ]
        .contains(&kind.as_str())
        {
            assert_eq!(
                namespace, "gpu-system",
                "{kind} {object_name} must be in the release namespace"
            );
        }
    }
    the(&objects, "Namespace", Some("gpu-system"));
    let deployment = the(&objects, "Deployment", Some(name));
    let pod = &deployment["spec"]["template"]["spec"];
    let args = strings(&pod["containers"][0]["args"]);
    assert!(
        args.windows(2)
            .any(|w| w == ["--policy-configmap", "gpu-system/edge-gpushare-policy"]),
        "serve must read the release's policy ConfigMap: {args:?}"
    );
    assert!(
        args.contains(&"--status-page"),
        "statusPage.enabled passes --status-page: {args:?}"
    );
    assert_eq!(pod["serviceAccountName"], name);
    the(&objects, "ConfigMap", Some("edge-gpushare-policy"));
    let role = the(&objects, "Role", Some(name));
    let policy_rule = role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| strings(&r["resources"]).contains(&"configmaps"))
        .expect("the Role grants the policy ConfigMap");
    assert!(
        strings(&policy_rule["resourceNames"]).contains(&"edge-gpushare-policy"),
        "the Role must name the release's policy ConfigMap: {policy_rule}"
    );
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        let subjects = &the(&objects, binding, Some(name))["subjects"];
        assert_eq!(subjects[0]["name"], name);
        assert_eq!(subjects[0]["namespace"], "gpu-system");
    }

    let service = the(&objects, "Service", Some(name));
    let webhooks = &the(&objects, "MutatingWebhookConfiguration", Some(name));
    for webhook in webhooks["webhooks"].as_array().expect("webhooks") {
        let target = &webhook["clientConfig"]["service"];
        assert_eq!(target["name"], name);
        assert_eq!(target["namespace"], "gpu-system");
        assert_eq!(target["port"], service["spec"]["ports"][0]["port"]);
        let excluded: Vec<&str> = webhook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["operator"] == "NotIn")
            .flat_map(|e| strings(&e["values"]))
            .collect();
        assert!(
            excluded.contains(&"gpu-system") && excluded.contains(&"kube-system"),
            "the webhook must never match its own namespace or kube-system: {excluded:?}"
        );
    }

    let certificate_name = webhooks["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        .as_str()
        .and_then(|v| v.strip_prefix("gpu-system/"))
        .expect("inject-ca-from names a Certificate in the release namespace");
    let certificate = the(&objects, "Certificate", Some(certificate_name));
    let dns = strings(&certificate["spec"]["dnsNames"]);
    assert!(dns.contains(&"edge-gpushare.gpu-system.svc"), "{dns:?}");
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "tls"))
        .expect("the tls volume");
    assert_eq!(
        volume["secret"]["secretName"],
        certificate["spec"]["secretName"]
    );
}

#[test]
fn the_grafana_dashboard_config_map_holds_the_dashboard() {
    let Some(helm) = helm() else { return };
    let objects = template(
        &helm,
        "gpushare",
        "gpushare-system",
        &["--set", "grafanaDashboard.enabled=true"],
    );
    let config_map = the(&objects, "ConfigMap", Some("gpushare-dashboard"));
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(&read(&repo_path(
        "charts/gpushare/dashboards/gpushare.json",
    )))
    .expect("the dashboard is JSON");
    let rendered: Value = serde_json::from_str(
        config_map["data"]["gpushare.json"]
            .as_str()
            .expect("the ConfigMap has gpushare.json"),
    )
    .expect("the rendered dashboard is JSON");
    assert_eq!(rendered, shipped);
}

/// values.schema.json rejects misspelt values instead of letting Helm ignore them.
#[test]
fn a_misspelt_value_is_an_error_naming_it() {
    let Some(helm) = helm() else { return };
    for (value, mentions) in [
        ("certmanager.enabled=true", "certmanager"),
        ("webhook.timeoutSeconds=10", "timeoutSeconds"),
        ("logFormat=yaml", "logFormat"),
    ] {
        let out = Command::new(&helm)
            .args(["template", "gpushare"])
            .arg(repo_path(CHART))
            .args(["--set", value])
            .output()
            .expect("helm runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(mentions),
            "--set {value} must fail naming {mentions}: {stderr}"
        );
    }
}

/// The values operators expect land where they must, and the selector keeps releases apart.
#[test]
fn pod_labels_priority_env_spread_and_selector_come_from_values() {
    let Some(helm) = helm() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "podLabels: {team: edge}\n\
         priorityClassName: gpu-critical\n\
         extraEnv: [{name: RUST_LOG, value: debug}]\n\
         topologySpreadConstraints:\n\
         - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway,\n\
         \x20  labelSelector: {matchLabels: {app.kubernetes.io/instance: edge}}}\n",
    )
    .expect("values written");
    let objects = template(
        &helm,
        "edge",
        "gpu-system",
        &["-f", values.to_str().expect("UTF-8")],
    );
    let deployment = the(&objects, "Deployment", Some("edge-gpushare"));
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/instance"], "edge");
    assert!(
        selector.get("team").is_none(),
        "podLabels never reach the immutable selector"
    );
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "edge");
    assert_eq!(pod["spec"]["priorityClassName"], "gpu-critical");
    assert_eq!(
        pod["spec"]["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    let env = pod["spec"]["containers"][0]["env"].as_array().expect("env");
    assert!(env
        .iter()
        .any(|e| e["name"] == "RUST_LOG" && e["value"] == "debug"));
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAME"),
        "the chart's own env stays"
    );
    // The CLI finds the policy of a release of any name by these labels.
    let policy = the(&objects, "ConfigMap", Some("edge-gpushare-policy"));
    for pair in gpushare::cluster::policy_configmap::LABELS.split(',') {
        let (label, value) = pair.split_once('=').expect("label=value");
        assert_eq!(policy["metadata"]["labels"][label], value, "{label}");
    }
    for kind in ["Service", "PodDisruptionBudget"] {
        let object = the(&objects, kind, Some("edge-gpushare"));
        let selects = object["spec"]["selector"]
            .get("matchLabels")
            .unwrap_or(&object["spec"]["selector"]);
        assert_eq!(selects, selector, "{kind} selects the Deployment's pods");
    }
}

/// The probes use the plain-HTTP health port, so they work when --client-ca is set.
#[test]
fn probes_use_the_plain_http_health_port() {
    let Some(helm) = tools() else { return };
    for (origin, objects) in [
        ("manifests/", kustomize(&repo_path("manifests"))),
        (CHART, template(&helm, "gpushare", "gpushare-system", &[])),
    ] {
        let container =
            &the(&objects, "Deployment", None)["spec"]["template"]["spec"]["containers"][0];
        let health = container["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == "health"))
            .unwrap_or_else(|| panic!("{origin}: a container port named health"));
        let args = strings(&container["args"]);
        let listen = format!("0.0.0.0:{}", health["containerPort"]);
        assert!(
            args.windows(2)
                .any(|w| w == ["--health-listen", listen.as_str()]),
            "{origin}: serve listens for health on the declared port: {args:?}"
        );
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["port"], "health", "{origin} {probe}");
            assert_eq!(get["scheme"], "HTTP", "{origin} {probe}");
        }
    }
}

#[test]
fn a_service_monitor_scrapes_the_health_port_when_enabled() {
    let Some(helm) = helm() else { return };
    let default = template(&helm, "gpushare", "gpushare-system", &[]);
    assert!(
        default.iter().all(|o| o["kind"] != "ServiceMonitor"),
        "off by default"
    );
    let objects = template(
        &helm,
        "edge",
        "gpu-system",
        &[
            "--set",
            "serviceMonitor.enabled=true,serviceMonitor.labels.release=prom",
        ],
    );
    let monitor = the(&objects, "ServiceMonitor", Some("edge-gpushare"));
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["scheme"], "http");
    let service = the(&objects, "Service", Some("edge-gpushare-metrics"));
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&service["metadata"]["labels"][label], value, "{label}");
    }
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["name"], endpoint["port"]);
    assert_eq!(port["targetPort"], "health");
    let deployment = the(&objects, "Deployment", Some("edge-gpushare"));
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

/// Every webhook trusted, on every install path (issue: a third webhook once had no CA): with
/// `webhook.caBundle` every webhook of the configuration gets it, and with cert-manager the
/// configuration carries the annotation the CA injector fills every webhook from. Webhooks are
/// counted from the render, never assumed.
#[test]
fn every_webhook_of_every_render_is_trusted() {
    let Some(helm) = tools() else { return };
    let webhooks_of = |objects: &[Value]| -> Value {
        objects
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .cloned()
            .expect("a webhook configuration")
    };
    let with_bundle = template(
        &helm,
        "gpushare",
        "gpushare-system",
        &["--set", "webhook.caBundle=Q0E="],
    );
    let configuration = webhooks_of(&with_bundle);
    let webhooks = configuration["webhooks"].as_array().expect("webhooks");
    assert!(webhooks.len() >= 2, "{configuration:#}");
    for webhook in webhooks {
        assert_eq!(
            webhook["clientConfig"]["caBundle"], "Q0E=",
            "webhook {} has no caBundle",
            webhook["name"]
        );
    }
    let cert_manager = template(&helm, "edge", "gpu", &["--set", "certManager.enabled=true"]);
    let configuration = webhooks_of(&cert_manager);
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "gpu/edge-gpushare-tls",
        "cert-manager's CA injector fills every webhook of an annotated configuration"
    );
    for webhook in configuration["webhooks"].as_array().expect("webhooks") {
        assert!(
            webhook["clientConfig"]["caBundle"].is_null(),
            "a caBundle in the render would fight the injector: {}",
            webhook["name"]
        );
    }
}
