//! The one-shot reads and writes of `gpushare apply` (`kubectl gpushare apply`), for users who may
//! have rights in one namespace only: it reads what it may (workloads of every namespace, else of
//! its own; the nodes; the policy ConfigMap), says what stands in for what it may not read, and
//! applies objects with server-side apply.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{self, Scope};
use kube::{Api, Client};
use serde_json::Value;

use super::state::ClusterState;
use super::stored::StoredWorkload;
use super::{convert, policy_configmap, watch, WATCHED};
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::workload::{Kind, Workload, WorkloadKey};
use crate::webhook::metrics::Metrics;

/// The field manager of `gpushare apply`'s server-side apply.
pub const FIELD_MANAGER: &str = "gpushare";

/// What `apply` decides against.
#[derive(Debug)]
pub struct LiveView {
    pub policy: Policy,
    /// The nodes (or the implicit one) and the claims of every stored workload it could read.
    pub inventory: Inventory,
    /// The stored workloads of the namespace: a document naming one is its UPDATE.
    pub stored: HashMap<WorkloadKey, Workload>,
    /// What could not be read and what stands in for it, one sentence each.
    pub notes: Vec<String>,
}

/// What `apply` uses for what it may not read.
#[derive(Debug, Default)]
pub struct Fallbacks {
    /// `--policy`: when given, the ConfigMap is not read at all (as in `serve` and `status`).
    pub policy: Option<Policy>,
    /// `--gpus`: the GPU count of one implicit node when the nodes are not readable.
    pub gpus: Option<u32>,
}

fn forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

/// Reads the live cluster for deciding documents of `namespace`.
pub async fn read(
    client: &Client,
    namespace: &str,
    policy_configmap: Option<&str>,
    fallbacks: Fallbacks,
) -> anyhow::Result<LiveView> {
    let mut notes = Vec::new();
    let policy = match fallbacks.policy {
        Some(policy) => policy,
        None => policy_configmap::read(client, policy_configmap, &mut notes).await?,
    };
    let nodes = match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(nodes) => {
            if fallbacks.gpus.is_some() {
                notes.push("the nodes are readable, so --gpus is not used".into());
            }
            nodes.items.iter().map(convert::node).collect()
        }
        Err(error) if forbidden(&error) => {
            notes.push(match fallbacks.gpus {
                Some(gpus) => format!(
                    "you may not list nodes: deciding for one implicit node with {gpus} GPUs (--gpus)"
                ),
                None => "you may not list nodes: deciding for one implicit node with the policy's GPU count, \
                         else 1; pass --gpus N with the count of your node"
                    .into(),
            });
            Inventory::standalone(fallbacks.gpus).nodes().to_vec()
        }
        Err(error) => return Err(error).context("cannot list nodes"),
    };
    // The same cache `serve` keeps, filled once: owners are checked as the webhook checks them.
    let view = ClusterState::new(policy.clone(), &WATCHED, Arc::new(Metrics::new()));
    view.replace_nodes(nodes);
    let mut stored = HashMap::new();
    let mut own_namespace_only = Vec::new();
    for kind in WATCHED {
        let mut params = ListParams::default();
        if let Some(fields) = watch::workload_config(kind).field_selector {
            params = params.fields(&fields);
        }
        let everywhere: Api<StoredWorkload> = Api::all_with(client.clone(), &kind);
        let objects = match everywhere.list(&params).await {
            Ok(objects) => objects,
            Err(error) if forbidden(&error) => {
                own_namespace_only.push(kind.plural());
                Api::<StoredWorkload>::namespaced_with(client.clone(), namespace, &kind)
                    .list(&params)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot list {} in namespace {namespace}: apply needs list rights on every workload kind",
                            kind.plural()
                        )
                    })?
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot list {}", kind.plural()))
            }
        };
        let mut cached = Vec::with_capacity(objects.items.len());
        for object in objects.items {
            let key = convert::key(kind, &object);
            if *key.namespace == *namespace {
                stored.insert(key, convert::workload(kind, object.clone()));
            }
            cached.push(convert::stored(kind, object));
        }
        view.replace_stored(kind, cached);
    }
    let (_, inventory) = view.snapshot();
    if !own_namespace_only.is_empty() {
        notes.push(format!(
            "you may not list {} in every namespace: only namespace {namespace}'s count against capacity; \
             workloads of other namespaces on the same GPUs are not seen",
            own_namespace_only.join(", ")
        ));
    }
    Ok(LiveView {
        policy,
        inventory,
        stored,
        notes,
    })
}

/// Applies `object` with server-side apply (field manager `gpushare`, conflicts forced, as
/// `kubectl apply --server-side --force-conflicts`), in `namespace` when its kind is namespaced.
/// Returns kubectl's name for it, e.g. `deployment.apps/nbody`.
pub async fn server_side_apply(
    client: &Client,
    namespace: &str,
    object: &Value,
) -> anyhow::Result<String> {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (api_version, kind, name) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let (resource, scope) = match Kind::from_api_version(api_version, kind) {
        Some(kind) => (convert::api_resource(kind), Scope::Namespaced),
        None => {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
                .await
                .with_context(|| {
                    format!("{api_version} {kind} {name}: unknown to the API server")
                })?;
            (resource, capabilities.scope)
        }
    };
    let api: Api<DynamicObject> = match scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let shown = match group {
        "" => format!("{}/{name}", kind.to_lowercase()),
        group => format!("{}.{group}/{name}", kind.to_lowercase()),
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("{shown}: the API server did not apply it"))?;
    Ok(shown)
}
