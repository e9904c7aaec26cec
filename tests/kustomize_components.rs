//! The kustomize components under `manifests/components/`, rendered as a user's overlay would use
//! them (`kubectl kustomize` of an overlay in a temp dir) and checked against the base render:
//! each adds or changes only what it is for.
//!
//! - `cert-manager`: a self-signed CA chain, a Certificate for the Service's DNS names writing the
//!   Secret the pods mount, and `cert-manager.io/inject-ca-from` on the webhook configuration.
//! - `no-match-conditions` (Kubernetes < 1.28): one webhook without matchConditions for every rule
//!   the base registers, failing closed (or open, with the README's patch).
//! - `no-prestop-sleep` (Kubernetes < 1.30): the Deployment without its preStop sleep.

mod render;

use std::collections::BTreeSet;

use render::{
    by_key, differences, have_kubectl, kustomize, of_kind, overlay, read, repo_path, show, strings,
    the, Key,
};
use serde_json::{json, Value};

const WEBHOOK_KIND: &str = "MutatingWebhookConfiguration";

fn base() -> Vec<Value> {
    kustomize(&repo_path("manifests"))
}

/// The objects of `changed` that are new, and those whose content differs from `base`, by key.
fn compare(base: &[Value], changed: &[Value]) -> (Vec<Value>, Vec<(Key, Vec<String>)>) {
    let base = by_key(base, "manifests/");
    let changed = by_key(changed, "the overlay");
    for k in base.keys() {
        assert!(
            changed.contains_key(k),
            "the overlay must keep {} of manifests/",
            show(k)
        );
    }
    let added = changed
        .iter()
        .filter(|(k, _)| !base.contains_key(*k))
        .map(|(_, v)| v.clone())
        .collect();
    let modified = base
        .iter()
        .filter_map(|(k, v)| {
            let diff = differences(v, &changed[k]);
            (!diff.is_empty()).then(|| (k.clone(), diff))
        })
        .collect();
    (added, modified)
}

/// (group, version, resource, operation) of every rule of the given webhooks.
fn registrations<'a>(
    webhooks: impl Iterator<Item = &'a Value>,
) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for webhook in webhooks {
        for rule in webhook["rules"].as_array().into_iter().flatten() {
            for group in strings(&rule["apiGroups"]) {
                for version in strings(&rule["apiVersions"]) {
                    for resource in strings(&rule["resources"]) {
                        for operation in strings(&rule["operations"]) {
                            out.insert((
                                group.into(),
                                version.into(),
                                resource.into(),
                                operation.into(),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

const EPHEMERAL_WEBHOOK: &str = "ephemeral.gpushare.io";
const SCALE_WEBHOOK: &str = "scale.gpushare.io";

fn webhooks(objects: &[Value]) -> &[Value] {
    the(objects, WEBHOOK_KIND, None)["webhooks"]
        .as_array()
        .expect("the configuration has webhooks")
}

#[test]
fn cert_manager_issues_the_mounted_secret_for_the_service_and_injects_its_ca() {
    if !have_kubectl() {
        return;
    }
    let base = base();
    let rendered = overlay(&["manifests/components/cert-manager"], "");
    let (added, modified) = compare(&base, &rendered);

    // Only the webhook configuration changes, and only by the annotation.
    let configuration = the(&rendered, WEBHOOK_KIND, None);
    let config_key = render::key(configuration);
    assert_eq!(
        modified.iter().map(|(k, _)| show(k)).collect::<Vec<_>>(),
        [show(&config_key)],
        "the component may change only the webhook configuration: {modified:?}"
    );
    let mut without_annotation = configuration.clone();
    let annotations = without_annotation["metadata"]["annotations"]
        .as_object_mut()
        .expect("the configuration has annotations");
    let inject = annotations
        .remove("cert-manager.io/inject-ca-from")
        .expect("the configuration asks cert-manager to inject the CA");
    if annotations.is_empty() {
        without_annotation["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("annotations");
    }
    let base_configuration = the(&base, WEBHOOK_KIND, None);
    assert_eq!(
        differences(&without_annotation, base_configuration),
        Vec::<String>::new(),
        "the component must change nothing else of the webhook configuration"
    );
    for webhook in webhooks(&rendered) {
        assert!(
            webhook["clientConfig"]["caBundle"].is_null(),
            "{}: the CA injector writes caBundle; the manifests must not",
            webhook["name"]
        );
    }

    // Only cert-manager objects are added.
    for object in &added {
        assert!(
            object["apiVersion"] == "cert-manager.io/v1"
                && ["Issuer", "Certificate"].contains(&object["kind"].as_str().unwrap_or_default()),
            "the component must add only cert-manager Issuers and Certificates: {}",
            show(&render::key(object))
        );
    }

    // inject-ca-from names the serving Certificate, which writes the Secret the pods mount...
    let (namespace, name) = inject
        .as_str()
        .and_then(|v| v.split_once('/'))
        .expect("inject-ca-from is NAMESPACE/NAME");
    let certificate = of_kind(&added, "Certificate")
        .into_iter()
        .find(|c| c["metadata"]["namespace"] == namespace && c["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!("inject-ca-from {inject} must name a Certificate of the component")
        });
    let deployment = the(&rendered, "Deployment", Some("gpushare"));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["metadata"]["namespace"], namespace);
    let tls_secret = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .expect("the pods mount a Secret");
    assert_eq!(
        certificate["spec"]["secretName"], tls_secret,
        "the Certificate must write the Secret the pods mount"
    );

    // ...for every DNS name the API server may use for the Service the webhooks call.
    for webhook in webhooks(&rendered) {
        let service = &webhook["clientConfig"]["service"];
        let (svc, ns) = (
            service["name"].as_str().expect("service name"),
            service["namespace"].as_str().expect("service namespace"),
        );
        the(&rendered, "Service", Some(svc));
        let dns = strings(&certificate["spec"]["dnsNames"]);
        for wanted in [
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ] {
            assert!(
                dns.contains(&wanted.as_str()),
                "the Certificate must cover {wanted}: {dns:?}"
            );
        }
    }
    assert!(
        strings(&certificate["spec"]["usages"]).contains(&"server auth"),
        "the serving certificate needs the server auth usage"
    );

    // The chain: the serving Certificate's Issuer is a CA Issuer whose CA is a Certificate issued
    // by a self-signed Issuer.
    let issuer = |reference: &Value| -> Value {
        assert_eq!(
            reference["kind"], "Issuer",
            "namespaced Issuers only: {reference}"
        );
        the(&added, "Issuer", reference["name"].as_str()).clone()
    };
    let ca_issuer = issuer(&certificate["spec"]["issuerRef"]);
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        .as_str()
        .expect("the serving certificate comes from a CA Issuer");
    let ca = of_kind(&added, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == ca_secret)
        .expect("a Certificate writes the CA Issuer's Secret");
    assert_eq!(ca["spec"]["isCA"], true, "the CA Certificate must be a CA");
    let root = issuer(&ca["spec"]["issuerRef"]);
    assert_eq!(
        root["spec"]["selfSigned"],
        json!({}),
        "the CA must be signed by a self-signed Issuer"
    );
    for object in &added {
        assert_eq!(
            object["metadata"]["namespace"],
            namespace,
            "{} must be in {namespace}",
            show(&render::key(object))
        );
    }
}

#[test]
fn without_match_conditions_one_webhook_takes_every_registered_rule_and_fails_closed() {
    if !have_kubectl() {
        return;
    }
    let base = base();
    let rendered = overlay(&["manifests/components/no-match-conditions"], "");
    let (added, modified) = compare(&base, &rendered);
    assert!(added.is_empty(), "the component adds nothing: {added:?}");
    let config_key = render::key(the(&rendered, WEBHOOK_KIND, None));
    assert!(
        modified.iter().all(|(k, _)| *k == config_key),
        "the component may change only the webhook configuration: {modified:?}"
    );

    // The scale webhook has no matchConditions to begin with: the component leaves it alone.
    // The ephemeral-containers webhook loses its condition: every `kubectl debug` is sent.
    let object_hooks = |objects: &[Value]| -> Vec<Value> {
        webhooks(objects)
            .iter()
            .filter(|w| w["name"] != SCALE_WEBHOOK && w["name"] != EPHEMERAL_WEBHOOK)
            .cloned()
            .collect()
    };
    let ephemeral_of = |objects: &[Value]| {
        let mut hook = webhooks(objects)
            .iter()
            .find(|w| w["name"] == EPHEMERAL_WEBHOOK)
            .cloned()
            .expect("the ephemeral-containers webhook");
        hook.as_object_mut()
            .expect("a webhook")
            .remove("matchConditions")
            .map(|_| hook.clone())
            .unwrap_or(hook)
    };
    assert!(
        webhooks(&rendered)
            .iter()
            .any(|w| w["name"] == EPHEMERAL_WEBHOOK && w["matchConditions"].is_null()),
        "without matchConditions every kubectl debug goes to gpushare"
    );
    assert_eq!(ephemeral_of(&rendered), ephemeral_of(&base));
    let scale_of = |objects: &[Value]| {
        webhooks(objects)
            .iter()
            .find(|w| w["name"] == SCALE_WEBHOOK)
            .cloned()
    };
    assert_eq!(
        scale_of(&rendered),
        scale_of(&base),
        "the scale webhook is unchanged"
    );
    let hooks = object_hooks(&rendered);
    assert_eq!(
        hooks.len(),
        1,
        "without matchConditions the managed/unmanaged split is impossible: one webhook must remain"
    );
    let hook = &hooks[0];
    assert!(
        hook["matchConditions"].is_null(),
        "the remaining webhook must have no matchConditions: {}",
        hook["matchConditions"]
    );
    assert_eq!(
        hook["failurePolicy"], "Fail",
        "the component fails closed by default"
    );
    assert_eq!(
        registrations(hooks.iter()),
        registrations(object_hooks(&base).iter()),
        "the remaining webhook must register every rule the manifests register"
    );
    // Everything but the conditions and the failure policy is the base's managed webhook.
    let managed = webhooks(&base)
        .iter()
        .find(|w| w["name"] == hook["name"])
        .expect("the remaining webhook is one of the manifests'");
    let mut expected = managed.clone();
    expected
        .as_object_mut()
        .expect("a webhook")
        .remove("matchConditions");
    expected["failurePolicy"] = json!("Fail");
    assert_eq!(differences(hook, &expected), Vec::<String>::new());

    // The README's patch for failing open.
    let fail_open = overlay(
        &["manifests/components/no-match-conditions"],
        &format!(
            "patches:\n  - target: {{kind: {WEBHOOK_KIND}, name: gpushare}}\n    patch: |-\n      apiVersion: admissionregistration.k8s.io/v1\n      kind: {WEBHOOK_KIND}\n      metadata: {{name: gpushare}}\n      webhooks:\n        - name: {}\n          failurePolicy: Ignore\n",
            hook["name"].as_str().expect("a webhook name")
        ),
    );
    let hooks = object_hooks(&fail_open);
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["failurePolicy"], "Ignore");
}

#[test]
fn without_prestop_sleep_only_the_lifecycle_hook_goes() {
    if !have_kubectl() {
        return;
    }
    let base = base();
    let rendered = overlay(
        &[
            "manifests/components/no-match-conditions",
            "manifests/components/no-prestop-sleep",
        ],
        "",
    );
    let deployment = the(&rendered, "Deployment", Some("gpushare"));
    for container in deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
    {
        assert!(
            container["lifecycle"].is_null(),
            "{}: no preStop hook below Kubernetes 1.30",
            container["name"]
        );
    }
    let mut expected = the(&base, "Deployment", Some("gpushare")).clone();
    for container in expected["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
    {
        container
            .as_object_mut()
            .expect("a container")
            .remove("lifecycle");
    }
    assert_eq!(differences(deployment, &expected), Vec::<String>::new());
}

#[test]
fn the_readme_documents_every_component() {
    let readme = read(&repo_path("README.md"));
    let components =
        std::fs::read_dir(repo_path("manifests/components")).expect("components exist");
    for entry in components {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            readme.contains(&format!("manifests/components/{name}")),
            "README.md must document manifests/components/{name}"
        );
    }
}
