//! Which policy ConfigMap the one-shot commands (`status`, `apply`) read: the one they are told
//! to, else `gpushare-system/gpushare-policy`, else the one that a Helm release of any name
//! labels as its policy. Whatever stands in for what was asked is said in a note, the embedded
//! default included.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::{configmap_ref, watch};
use crate::core::policy::Policy;

/// The ConfigMap of `kubectl apply -k manifests/` and of a Helm release named `gpushare`.
pub const DEFAULT: &str = "gpushare-system/gpushare-policy";

/// The labels the manifests and the chart put on their policy ConfigMap.
pub const LABELS: &str = "app.kubernetes.io/part-of=gpushare,app.kubernetes.io/component=policy";

fn forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

/// The policy in force in the cluster as far as the caller may read it; `named` is
/// `--policy-configmap`. Fails only when the API server fails otherwise than by a refusal.
pub async fn read(
    client: &Client,
    named: Option<&str>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Policy> {
    let (namespace, name) = configmap_ref(named.unwrap_or(DEFAULT))?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let why = match api.get_opt(&name).await {
        Ok(Some(cm)) => return Ok(parse(&cm, notes)),
        Ok(None) => format!("there is no policy ConfigMap {namespace}/{name}"),
        Err(error) if forbidden(&error) => {
            format!("you may not read the policy ConfigMap {namespace}/{name}")
        }
        Err(error) => return Err(error).context("cannot read the policy ConfigMap"),
    };
    let fallback =
        "the embedded default policy is used; pass --policy FILE with your cluster's policy";
    if named.is_some() {
        notes.push(format!("{why}: {fallback}"));
        return Ok(Policy::default());
    }
    let labelled = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default().labels(LABELS))
        .await;
    let mut found = match labelled {
        Ok(list) => list.items,
        Err(error) if forbidden(&error) => {
            notes.push(format!(
                "{why}, and you may not list ConfigMaps to find one labelled {LABELS}: {fallback}, or \
                 --policy-configmap NAMESPACE/NAME"
            ));
            return Ok(Policy::default());
        }
        Err(error) => return Err(error).context("cannot list the ConfigMaps labelled as a policy"),
    };
    found.sort_by_key(full_name);
    let Some(first) = found.first() else {
        notes.push(format!(
            "{why}, and no ConfigMap is labelled {LABELS}: {fallback}"
        ));
        return Ok(Policy::default());
    };
    let mut note = format!(
        "{why}: read {} instead (labelled {LABELS})",
        full_name(first)
    );
    if found.len() > 1 {
        let others: Vec<String> = found[1..].iter().map(full_name).collect();
        note.push_str(&format!(
            "; also labelled so: {}; choose with --policy-configmap NAMESPACE/NAME",
            others.join(", ")
        ));
    }
    notes.push(note);
    Ok(parse(first, notes))
}

fn full_name(cm: &ConfigMap) -> String {
    format!("{}/{}", cm.namespace().unwrap_or_default(), cm.name_any())
}

fn parse(cm: &ConfigMap, notes: &mut Vec<String>) -> Policy {
    watch::parse_policy(cm).unwrap_or_else(|error| {
        notes.push(format!(
            "the policy ConfigMap {} is invalid ({error}): the embedded default policy is used",
            full_name(cm)
        ));
        Policy::default()
    })
}
