//! Cluster mode: watch-driven caches of nodes, the policy ConfigMap, the ledger of commitments and
//! the claims of workloads of every kind feed the decision core. Admission reads them; the only
//! API call on its path is the one ledger write an allocation change needs (`commit`).

mod backend;
mod convert;
pub mod ledger;
pub mod live;
pub mod policy_configmap;
pub mod record;
pub mod registration;
mod state;
mod stored;
mod watch;
pub mod webhook_trust;

use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client};

pub use backend::ClusterBackend;
pub use state::{Cache, ClusterState};
use stored::StoredWorkload;

/// The ConfigMap of commitments, in the namespace of the policy ConfigMap.
pub const LEDGER_CONFIGMAP: &str = "gpushare-ledger";

use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::status::RunningPods;
use crate::core::workload::Kind;
use crate::webhook::commit::Committer;
use crate::webhook::metrics::Metrics;

/// The workload kinds whose claims are cached: every kind, so capacity counts every kind.
pub const WATCHED: [Kind; 7] = Kind::ALL;

/// Splits `NAMESPACE/NAME`.
pub fn configmap_ref(value: &str) -> anyhow::Result<(String, String)> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => anyhow::bail!("--policy-configmap must be NAMESPACE/NAME, got {value:?}"),
    }
}

/// Starts the watchers and the reconciler and returns the backend admissions use. Does not wait
/// for the API server: readiness turns on once every cache has synced.
pub async fn start(
    client: Client,
    configmap: &str,
    own: registration::Own,
    fixed_policy: Option<Policy>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<ClusterBackend>> {
    let (namespace, name) = configmap_ref(configmap)?;
    let state = Arc::new(ClusterState::new(
        fixed_policy.clone().unwrap_or_default(),
        &WATCHED,
        metrics.clone(),
    ));
    tokio::spawn(watch::nodes(client.clone(), state.clone()));
    tokio::spawn(watch::namespaces(client.clone(), state.clone()));
    tokio::spawn(watch::ledger(
        client.clone(),
        state.clone(),
        namespace.clone(),
        LEDGER_CONFIGMAP.to_string(),
    ));
    let registration: Arc<dyn registration::Registration> =
        Arc::new(registration::ApiRegistration {
            namespaces: Api::all(client.clone()),
        });
    let store = Arc::new(record::ApiStore {
        api: Api::namespaced(client.clone(), &namespace),
        name: LEDGER_CONFIGMAP.to_string(),
    });
    let ledger =
        record::LedgerRecord::new(state.clone(), store).with_registration(registration.clone());
    let committer = Arc::new(Committer::new(Arc::new(ledger)));
    tokio::spawn(record::reconcile_forever(committer.clone()));
    tokio::spawn(registration::follow(
        client.clone(),
        state.clone(),
        registration,
        registration::Own {
            namespace: namespace.clone(),
            ..own
        },
    ));
    for kind in WATCHED {
        tokio::spawn(watch::workloads(client.clone(), state.clone(), kind));
    }
    match fixed_policy {
        Some(_) => {
            tracing::info!("policy from --policy; the ConfigMap is not read");
            state.mark_synced(Cache::Policy);
        }
        None => {
            tracing::info!(configmap = %format!("{namespace}/{name}"), "watching the policy ConfigMap");
            tokio::spawn(watch::policy(
                client,
                state.clone(),
                metrics,
                namespace,
                name,
            ));
        }
    }
    Ok(Arc::new(ClusterBackend { state, committer }))
}

/// Reads the cluster once, for `gpushare status`; `configmap` is `--policy-configmap`, and what
/// stands in for what could not be read is said in `notes`.
pub async fn snapshot(
    client: &Client,
    configmap: Option<&str>,
    fixed_policy: Option<Policy>,
    notes: &mut Vec<String>,
) -> anyhow::Result<(Policy, Inventory, RunningPods)> {
    let policy = match fixed_policy {
        Some(policy) => policy,
        None => policy_configmap::read(client, configmap, notes).await?,
    };
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("cannot list nodes")?;
    // The same cache the server keeps, filled once: owners are checked as the server checks them.
    let view = ClusterState::new(policy.clone(), &WATCHED, Arc::new(Metrics::new()));
    view.replace_nodes(nodes.items.iter().map(convert::node).collect());
    for kind in WATCHED {
        let api: Api<StoredWorkload> = Api::all_with(client.clone(), &kind);
        let mut params = ListParams::default();
        if let Some(fields) = watch::workload_config(kind).field_selector {
            params = params.fields(&fields);
        }
        let objects = api
            .list(&params)
            .await
            .with_context(|| format!("cannot list {}", kind.plural()))?;
        let objects: Vec<_> = objects
            .items
            .into_iter()
            .map(|object| convert::stored(kind, object))
            .collect();
        view.replace_stored(kind, objects);
    }
    let (_, inventory) = view.snapshot();
    Ok((policy, inventory, view.running_pods()))
}
