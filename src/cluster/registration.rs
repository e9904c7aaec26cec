//! The registration follows the cluster, so that an outage refuses only what could break a GPU
//! promise (CONTRACT section 7): the webhooks leave out the namespaces the policy excludes (the
//! policy is live, so their namespaceSelector must follow it), and the scale webhook sees only the
//! namespaces gpushare labelled as holding a module (a Scale carries no annotations to match on).
//! gpushare's own PodDisruptionBudget follows the nodes, so that a drain completes (below).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::{json, Value};

use super::state::ClusterState;

/// The label gpushare sets on every namespace that holds a module; the scale webhook's
/// namespaceSelector requires it.
pub const MANAGED_NAMESPACE_LABEL: &str = "gpushare.io/managed-workloads";

/// Every namespace has it (Kubernetes 1.22 and later): the webhooks exclude namespaces by it.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// How long a namespace keeps its label after its last module went: a module another replica
/// just admitted may not show in this replica's caches yet.
const UNLABEL_AFTER: Duration = Duration::from_secs(60);

/// How often the registration is compared with the policy and the modules.
const PERIOD: Duration = Duration::from_secs(2);

/// Writes what the registration reads: the label of a namespace.
pub trait Registration: Send + Sync {
    /// Sets (`true`) or removes the label that sends a namespace's scale requests to gpushare.
    fn label_namespace<'a>(
        &'a self,
        namespace: &'a str,
        managed: bool,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The namespaces in the API server.
pub struct ApiRegistration {
    pub namespaces: Api<Namespace>,
}

impl Registration for ApiRegistration {
    fn label_namespace<'a>(
        &'a self,
        namespace: &'a str,
        managed: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let value = if managed { json!("true") } else { Value::Null };
            let patch = json!({"metadata": {"labels": {MANAGED_NAMESPACE_LABEL: value}}});
            self.namespaces
                .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| format!("cannot label namespace {namespace}: {e}"))
        })
    }
}

/// The namespaces no webhook may send: kube-system, gpushare's own, and the policy's excluded.
fn excluded(state: &ClusterState, own_namespace: &str) -> Vec<String> {
    let policy = state.policy();
    let mut names: BTreeSet<String> = policy.excluded_namespaces.iter().cloned().collect();
    names.insert("kube-system".to_string());
    names.insert(own_namespace.to_string());
    names.into_iter().collect()
}

/// The JSON Patch that brings every webhook's `kubernetes.io/metadata.name NotIn` list to `wanted`
/// (empty when it already is). Each replace is guarded by a test of the webhook's name, so a
/// configuration changed in between is refused rather than patched in the wrong place.
pub fn exclusion_patch(configuration: &Value, wanted: &[String]) -> Vec<Value> {
    let mut ops = Vec::new();
    let webhooks = configuration["webhooks"].as_array().into_iter().flatten();
    for (i, webhook) in webhooks.enumerate() {
        let expressions = webhook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten();
        for (j, expression) in expressions.enumerate() {
            if expression["key"] != NAME_LABEL || expression["operator"] != "NotIn" {
                continue;
            }
            let values: BTreeSet<&str> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if values.iter().copied().eq(wanted.iter().map(String::as_str)) {
                continue;
            }
            ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook["name"]}));
            ops.push(json!({
                "op": "replace",
                "path": format!("/webhooks/{i}/namespaceSelector/matchExpressions/{j}/values"),
                "value": wanted,
            }));
        }
    }
    ops
}

/// gpushare's PodDisruptionBudget for the nodes there are: while a node can take an evicted
/// replica, one replica at a time may go, so one keeps serving through a drain; when none can
/// (the one node of an edge device is being drained), none is held back, or the drain would
/// wait forever for a replacement that cannot be scheduled.
pub fn drain_budget(schedulable_nodes: usize) -> Value {
    if schedulable_nodes >= 1 {
        json!(1)
    } else {
        json!("100%")
    }
}

/// Where gpushare's own objects are: its namespace, webhook configuration and disruption budget.
pub struct Own {
    pub namespace: String,
    pub webhook_configuration: String,
    pub disruption_budget: String,
}

/// Writes the budget `drain_budget` asks for, when it changed (and once a minute, to repair a
/// re-applied manifest).
async fn follow_nodes(
    api: &Api<PodDisruptionBudget>,
    name: &str,
    state: &ClusterState,
    written: &mut Option<(Value, Instant)>,
) {
    let wanted = drain_budget(state.schedulable_nodes());
    if written
        .as_ref()
        .is_some_and(|(value, at)| *value == wanted && at.elapsed() < Duration::from_secs(60))
    {
        return;
    }
    let patch = json!({"spec": {"maxUnavailable": wanted, "minAvailable": null}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            if written.as_ref().is_none_or(|(value, _)| *value != wanted) {
                tracing::info!(budget = %name, max_unavailable = %wanted, "disruption budget follows the schedulable nodes");
            }
            *written = Some((wanted, Instant::now()));
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            // No budget installed (the chart's podDisruptionBudget.enabled: false).
            *written = Some((wanted, Instant::now()));
        }
        Err(error) => tracing::warn!(%error, budget = %name, "cannot update the disruption budget"),
    }
}

/// Keeps the webhook configuration `name` and the namespace labels in step with the policy and
/// the modules, for as long as the server runs.
pub async fn follow(
    client: Client,
    state: Arc<ClusterState>,
    registration: Arc<dyn Registration>,
    own: Own,
) {
    let Own {
        namespace: own_namespace,
        webhook_configuration: name,
        disruption_budget,
    } = own;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &own_namespace);
    let mut budget_written = None;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(api.clone(), config).default_backoff());
    let mut latest: Option<Value> = None;
    let mut unmanaged_since: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(object) | Event::InitApply(object))) => {
                    latest = serde_json::to_value(object).ok();
                }
                Some(Ok(Event::Delete(_))) => latest = None,
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    if !warned {
                        tracing::warn!(%error, configuration = %name, "cannot watch the webhook configuration; its namespaceSelector is not kept in step with the policy");
                        warned = true;
                    }
                    continue;
                }
                None => return,
            },
            _ = tick.tick() => {}
        }
        if !state.is_synced() {
            continue;
        }
        if let Some(configuration) = &latest {
            let wanted = excluded(&state, &own_namespace);
            let ops = exclusion_patch(configuration, &wanted);
            if !ops.is_empty() {
                match json_patch(&client, &name, &Value::Array(ops)).await {
                    Ok(_) => {
                        tracing::info!(configuration = %name, excluded = ?wanted, "webhook namespaceSelector follows the policy's namespaces.exclude")
                    }
                    Err(error) => {
                        tracing::warn!(%error, configuration = %name, "cannot update the webhook namespaceSelector")
                    }
                }
            }
        }
        relabel(&state, registration.as_ref(), &mut unmanaged_since).await;
        follow_nodes(&budgets, &disruption_budget, &state, &mut budget_written).await;
    }
}

/// A JSON Patch of the webhook configuration `name` (kube's typed `Patch::Json` needs a second
/// json-patch release in the build).
async fn json_patch(client: &Client, name: &str, ops: &Value) -> Result<(), kube::Error> {
    let request = http::Request::patch(format!(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
    ))
    .header(http::header::CONTENT_TYPE, "application/json-patch+json")
    .body(serde_json::to_vec(ops).unwrap_or_default())
    .map_err(kube::Error::HttpError)?;
    client.request_text(request).await.map(|_| ())
}

/// Labels the namespaces that hold a module and are not labelled yet (workloads admitted before
/// gpushare labelled namespaces), and unlabels those that held none for a while.
async fn relabel(
    state: &ClusterState,
    registration: &dyn Registration,
    unmanaged_since: &mut HashMap<String, Instant>,
) {
    let (with_modules, labelled) = state.namespace_labels();
    for namespace in with_modules.difference(&labelled) {
        match registration.label_namespace(namespace, true).await {
            Ok(()) => state.set_namespace_labelled(namespace, true),
            Err(error) => tracing::warn!(%error, "cannot label a namespace that holds modules"),
        }
    }
    let now = Instant::now();
    unmanaged_since
        .retain(|namespace, _| labelled.contains(namespace) && !with_modules.contains(namespace));
    for namespace in labelled.difference(&with_modules) {
        let since = *unmanaged_since.entry(namespace.clone()).or_insert(now);
        if now.duration_since(since) >= UNLABEL_AFTER {
            if let Err(error) = registration.label_namespace(namespace, false).await {
                tracing::warn!(%error, "cannot unlabel a namespace without modules");
                continue;
            }
            state.set_namespace_labelled(namespace, false);
            unmanaged_since.remove(namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_of_the_last_schedulable_node_holds_no_replica_back() {
        assert_eq!(drain_budget(0), json!("100%"));
        assert_eq!(drain_budget(1), json!(1));
        assert_eq!(drain_budget(5), json!(1));
    }

    #[test]
    fn every_webhook_excluding_by_name_follows_the_wanted_list() {
        let configuration = json!({"webhooks": [
            {"name": "managed.gpushare.io", "namespaceSelector": {"matchExpressions": [
                {"key": NAME_LABEL, "operator": "NotIn", "values": ["kube-system", "gpushare-system"]}]}},
            {"name": "scale.gpushare.io", "namespaceSelector": {"matchExpressions": [
                {"key": MANAGED_NAMESPACE_LABEL, "operator": "In", "values": ["true"]},
                {"key": NAME_LABEL, "operator": "NotIn", "values": ["gpushare-system", "kube-system", "lab"]}]}},
        ]});
        let wanted = vec![
            "gpushare-system".to_string(),
            "kube-system".to_string(),
            "lab".to_string(),
        ];
        let ops = exclusion_patch(&configuration, &wanted);
        assert_eq!(
            ops,
            vec![
                json!({"op": "test", "path": "/webhooks/0/name", "value": "managed.gpushare.io"}),
                json!({"op": "replace", "path": "/webhooks/0/namespaceSelector/matchExpressions/0/values",
                    "value": wanted}),
            ],
            "only the webhook whose list differs is patched"
        );
        let mut patched = configuration.clone();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert!(exclusion_patch(&patched, &wanted).is_empty());
    }
}
