//! The watchers: kube-runtime streams of Nodes, of every workload kind and of the policy ConfigMap,
//! each feeding `ClusterState`. They relist after a `410 Gone`, retry with backoff while the API server is away,
//! and never block admissions, which keep answering from the last view.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, ObjectReference};
use kube::runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};

use super::convert;
use super::ledger::Ledger;
use super::registration::MANAGED_NAMESPACE_LABEL;
use super::state::{Cache, ClusterState, NamespaceLabels};
use super::stored::StoredWorkload;
use crate::core::inventory::PodSecurity;
use crate::core::policy::Policy;
use crate::core::workload::Kind;
use crate::webhook::metrics::{Metrics, ResultLabels};

/// The ConfigMap key that holds the policy.
pub const POLICY_KEY: &str = "policy.yaml";

/// The events of a watch stream, with errors logged (once per outage) instead of returned: the
/// watcher retries by itself with backoff.
fn logged<K, S>(cache: Cache, stream: S) -> impl Stream<Item = Event<K>>
where
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut failing = false;
    stream.filter_map(move |item| {
        let event = match item {
            Ok(event) => {
                if failing {
                    tracing::info!(cache = cache.name(), "watch resumed; resynchronising");
                    failing = false;
                }
                Some(event)
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(cache = cache.name(), %error, "API server unreachable; answering from caches that may be stale");
                None
            }
            Err(error) => {
                tracing::debug!(cache = cache.name(), %error, "watch still failing");
                None
            }
        };
        std::future::ready(event)
    })
}

pub async fn nodes(client: Client, state: Arc<ClusterState>) {
    let api: Api<Node> = Api::all(client);
    let mut listing = Vec::new();
    let mut schedulable = std::collections::HashSet::new();
    let events = logged(
        Cache::Nodes,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Event::Init => {
                listing.clear();
                schedulable.clear();
            }
            Event::InitApply(node) => {
                if convert::schedulable(&node) {
                    schedulable.insert(node.metadata.name.clone().unwrap_or_default());
                }
                listing.push(convert::node(&node));
            }
            Event::InitDone => {
                state.replace_nodes(std::mem::take(&mut listing));
                state.replace_schedulable(std::mem::take(&mut schedulable));
                state.mark_synced(Cache::Nodes);
            }
            Event::Apply(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                state.set_schedulable(&name, convert::schedulable(&node));
                state.apply_node(convert::node(&node));
            }
            Event::Delete(node) => {
                let name = node.metadata.name.unwrap_or_default();
                state.set_schedulable(&name, false);
                state.delete_node(&name);
            }
        }
    }
}

/// What a namespace's labels say: its Pod Security level (rule 8) and gpushare's own label.
fn namespace_labels(namespace: &Namespace) -> (String, NamespaceLabels) {
    let labels = namespace.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|labels| labels.get(key));
    let pod_security =
        label(PodSecurity::LABEL).and_then(|level| PodSecurity::refusing_host_access(level));
    let managed = label(MANAGED_NAMESPACE_LABEL).is_some_and(|value| value == "true");
    (
        namespace.metadata.name.clone().unwrap_or_default(),
        NamespaceLabels {
            pod_security,
            managed,
        },
    )
}

/// Keeps the Pod Security level of every namespace (rule 8).
pub async fn namespaces(client: Client, state: Arc<ClusterState>) {
    let api: Api<Namespace> = Api::all(client);
    let mut listing = Vec::new();
    let events = logged(
        Cache::Namespaces,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Event::Init => listing.clear(),
            Event::InitApply(namespace) => listing.push(namespace_labels(&namespace)),
            Event::InitDone => {
                state.replace_namespaces(std::mem::take(&mut listing));
                state.mark_synced(Cache::Namespaces);
            }
            Event::Apply(namespace) => {
                let (name, labels) = namespace_labels(&namespace);
                state.apply_namespace(&name, Some(labels));
            }
            Event::Delete(namespace) => {
                state.apply_namespace(&namespace_labels(&namespace).0, None)
            }
        }
    }
}

/// The watch of one workload kind. Pods that have succeeded or failed hold no GPU: the API server
/// leaves them out (and sends a deletion when a Pod finishes), so they are neither sent nor kept.
pub fn workload_config(kind: Kind) -> watcher::Config {
    match kind {
        Kind::Pod => watcher::Config::default().fields(FINISHED_PODS_EXCLUDED),
        _ => watcher::Config::default(),
    }
}

pub const FINISHED_PODS_EXCLUDED: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Keeps the claims of one workload kind: every object is read back into its claim as it comes.
pub async fn workloads(client: Client, state: Arc<ClusterState>, kind: Kind) {
    let api: Api<StoredWorkload> = Api::all_with(client, &kind);
    let cache = Cache::Workloads(kind);
    let mut listing = Vec::new();
    let events = logged(
        cache,
        watcher::watcher(api, workload_config(kind)).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Event::Init => listing.clear(),
            Event::InitApply(object) => {
                let object = convert::stored(kind, object);
                // Most objects use no GPU and own nothing: nothing of them is kept.
                if object.owner.is_some() || object.held.is_some() {
                    listing.push(object);
                }
            }
            Event::InitDone => {
                state.replace_stored(kind, std::mem::take(&mut listing));
                state.mark_synced(cache);
            }
            Event::Apply(object) => {
                let object = convert::stored(kind, object);
                state.apply_stored(object.key.clone(), Some(object))
            }
            Event::Delete(object) => state.apply_stored(convert::key(kind, &object), None),
        }
    }
}

/// Keeps the ledger of commitments: every replica's writes, as the API server stores them.
pub async fn ledger(client: Client, state: Arc<ClusterState>, namespace: String, name: String) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut listed = false;
    let events = logged(
        Cache::Ledger,
        watcher::watcher(api, config).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        on_ledger_event(&state, event, &mut listed);
    }
}

/// One event of the ledger's watch. A reading that did not come through the watch (its list, or
/// the ConfigMap gone) may have skipped entries, so commits wait for the caches
/// (`ClusterState::hold_commits`).
fn on_ledger_event(state: &ClusterState, event: Event<ConfigMap>, listed: &mut bool) {
    match event {
        Event::Init => *listed = false,
        Event::InitApply(cm) => {
            *listed = true;
            state.set_ledger(Ledger::from_configmap(&cm));
        }
        Event::InitDone => {
            if !*listed {
                state.clear_ledger();
            }
            state.hold_commits();
            state.mark_synced(Cache::Ledger);
        }
        Event::Apply(cm) => state.set_ledger(Ledger::from_configmap(&cm)),
        Event::Delete(_) => {
            tracing::warn!(
                "the ledger ConfigMap was deleted; the next commitment creates it again"
            );
            state.clear_ledger();
            state.hold_commits();
        }
    }
}

pub async fn policy(
    client: Client,
    state: Arc<ClusterState>,
    metrics: Arc<Metrics>,
    namespace: String,
    name: String,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let reporter = Reporter {
        controller: "gpushare".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client, reporter);
    let configmap = format!("{namespace}/{name}");
    // Whether the current listing showed the ConfigMap, and whether the policy in force came from it.
    let mut listed = false;
    let mut from_configmap = false;
    let events = logged(
        Cache::Policy,
        watcher::watcher(api, config).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let cm = match event {
            Event::Init => {
                listed = false;
                continue;
            }
            Event::InitDone => {
                if !listed && (from_configmap || !state.is_synced()) {
                    tracing::info!(%configmap, "policy ConfigMap not found; the embedded default policy is in force");
                    state.set_policy(Policy::default());
                    from_configmap = false;
                }
                state.mark_synced(Cache::Policy);
                continue;
            }
            Event::Delete(_) => {
                tracing::info!(%configmap, "policy ConfigMap deleted; the embedded default policy is in force");
                state.set_policy(Policy::default());
                from_configmap = false;
                continue;
            }
            Event::InitApply(cm) => {
                listed = true;
                cm
            }
            Event::Apply(cm) => cm,
        };
        match parse_policy(&cm) {
            Ok(policy) => {
                if *state.policy() != policy {
                    tracing::info!(%configmap, "policy updated from the ConfigMap");
                }
                state.set_policy(policy);
                from_configmap = true;
                metrics
                    .policy_reloads
                    .get_or_create(&ResultLabels { result: "success" })
                    .inc();
            }
            Err(reason) => {
                metrics
                    .policy_reloads
                    .get_or_create(&ResultLabels { result: "failure" })
                    .inc();
                tracing::error!(%configmap, %reason, "invalid policy rejected; the last valid policy stays in force");
                publish_rejection(&recorder, &cm, &reason).await;
            }
        }
    }
}

/// The policy a ConfigMap holds; one without the `policy.yaml` key is invalid (CONTRACT section 5).
pub fn parse_policy(cm: &ConfigMap) -> Result<Policy, String> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(POLICY_KEY))
        .ok_or_else(|| format!("the ConfigMap has no {POLICY_KEY} key"))?;
    Policy::from_yaml(text).map_err(|e| e.to_string())
}

async fn publish_rejection(recorder: &Recorder, cm: &ConfigMap, reason: &str) {
    let reference: ObjectReference = cm.object_ref(&());
    let event = K8sEvent {
        type_: EventType::Warning,
        reason: "InvalidPolicy".into(),
        note: Some(truncate(
            &format!("policy rejected, the last valid policy stays in force: {reason}"),
            1000,
        )),
        action: "LoadPolicy".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &reference).await {
        tracing::warn!(%error, "could not record the invalid-policy Event");
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::tests::state;

    fn ledger_at(version: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.resource_version = Some(version.into());
        cm
    }

    #[test]
    fn commits_wait_after_a_list_or_a_deleted_ledger_but_not_after_a_watch_event() {
        let mut listed = false;
        let watched = state(1);
        on_ledger_event(&watched, Event::Apply(ledger_at("5")), &mut listed);
        assert!(watched.commits_held_for().is_none(), "every version seen");

        let relisted = state(1);
        for event in [
            Event::Init,
            Event::InitApply(ledger_at("9")),
            Event::InitDone,
        ] {
            on_ledger_event(&relisted, event, &mut listed);
        }
        assert!(
            relisted.commits_held_for().is_some(),
            "a list may skip entries"
        );

        let deleted = state(1);
        on_ledger_event(&deleted, Event::Delete(ledger_at("9")), &mut listed);
        assert!(deleted.commits_held_for().is_some(), "its entries are gone");
    }
}
