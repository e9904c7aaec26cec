//! Whether the API server can call each webhook of gpushare's MutatingWebhookConfigurations: one
//! without a `caBundle`, or with one that does not verify the serving certificate, fails every
//! call, so its `failurePolicy: Fail` refuses what it matches. For `gpushare status`: two reads,
//! and what the caller may not read is left unchecked with a note, never an error.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::webhook::tls;

/// The configuration `kubectl apply -k manifests/` registers; a Helm release's carries the label.
const NAME: &str = "gpushare";
const PART_OF: &str = "app.kubernetes.io/part-of";
const INJECT_CA_FROM: &str = "cert-manager.io/inject-ca-from";

/// What `status` prints on stderr.
#[derive(Debug, Default)]
pub struct Findings {
    /// A webhook the API server cannot call, with the fix.
    pub warnings: Vec<String>,
    /// What could not be checked.
    pub notes: Vec<String>,
}

pub async fn check(client: &Client) -> Findings {
    let mut findings = Findings::default();
    let configurations = match Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            findings.notes.push(format!(
                "cannot list MutatingWebhookConfigurations ({error}): the webhooks' CA bundles are not checked"
            ));
            return findings;
        }
    };
    let ours: Vec<_> = configurations
        .into_iter()
        .filter(|c| {
            c.name_any() == NAME || c.labels().get(PART_OF).map(String::as_str) == Some(NAME)
        })
        .collect();
    if ours.is_empty() {
        findings.notes.push(format!(
            "no MutatingWebhookConfiguration {NAME} (nor one labelled {PART_OF}={NAME}): the webhook is not registered"
        ));
    }
    // Serving certificates by Secret, each read once: None when it cannot be read.
    let mut secrets: BTreeMap<(String, String), Option<Vec<u8>>> = BTreeMap::new();
    for configuration in &ours {
        for webhook in configuration.webhooks.iter().flatten() {
            if let Some(warning) = check_webhook(client, configuration, webhook, &mut secrets).await
            {
                findings.warnings.push(warning);
            }
        }
    }
    findings
}

async fn check_webhook(
    client: &Client,
    configuration: &MutatingWebhookConfiguration,
    webhook: &MutatingWebhook,
    secrets: &mut BTreeMap<(String, String), Option<Vec<u8>>>,
) -> Option<String> {
    let failing = match webhook.failure_policy.as_deref() {
        Some("Ignore") => "every call fails and what it matches is let through unpatched",
        _ => "every call fails and the API server refuses what it matches",
    };
    let about = format!(
        "webhook {} of MutatingWebhookConfiguration {}",
        webhook.name,
        configuration.name_any()
    );
    let fix = match configuration.annotations().get(INJECT_CA_FROM) {
        Some(certificate) => format!(
            "it has {INJECT_CA_FROM}: {certificate}, so cert-manager's CA injector should write it: check that \
             cainjector runs and that Certificate {certificate} is Ready"
        ),
        None => format!(
            "fix: `make deploy` injects the CA into every webhook, or let cert-manager inject it with the annotation \
             {INJECT_CA_FROM}: <namespace>/<Certificate>"
        ),
    };
    let bundle = webhook
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.as_slice())
        .filter(|b| !b.is_empty());
    let Some(bundle) = bundle else {
        return Some(format!("{about} has no caBundle: {failing}; {fix}"));
    };
    // The serving certificate is known only for a Service: `<service>-tls` in its namespace, as
    // the manifests and the chart name it.
    let service = webhook.client_config.service.as_ref()?;
    let secret = (service.namespace.clone(), format!("{}-tls", service.name));
    if !secrets.contains_key(&secret) {
        let read = serving_chain(client, &secret.0, &secret.1).await;
        secrets.insert(secret.clone(), read);
    }
    let chain = secrets.get(&secret)?.as_ref()?;
    let host = format!("{}.{}.svc", service.name, service.namespace);
    match tls::verify_served(bundle, chain, &host) {
        Ok(()) => None,
        Err(reason) => Some(format!(
            "{about}: its caBundle does not verify the serving certificate in Secret {}/{} for {host} ({reason}): \
             {failing}; {fix}",
            secret.0, secret.1
        )),
    }
}

/// `tls.crt` of a Secret, or None when it cannot be read (absent, forbidden, or without it).
async fn serving_chain(client: &Client, namespace: &str, name: &str) -> Option<Vec<u8>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??;
    secret.data?.remove("tls.crt").map(|bytes| bytes.0)
}
