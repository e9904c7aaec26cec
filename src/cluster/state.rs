//! The cluster's live view, fed by the watchers and read by admissions: nodes, the policy, the
//! allocations of cached Deployments, and short-lived reservations for admissions the cache does
//! not show yet, so two admissions racing in this process cannot double-book a GPU.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::decision::{self, Request};
use crate::inventory::{Inventory, Module, ModuleKey, Node, Placement};
use crate::metrics::{CacheLabels, GpuLabels, Metrics};
use crate::policy::Policy;
use crate::service::Backend;
use crate::verdict::{Outcome, Verdict};

/// How long an admitted module is counted before the cache shows it. An object the API server
/// finally rejected (another webhook, validation) stops counting after this.
pub const RESERVATION_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cache {
    Nodes,
    Policy,
    Deployments,
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Nodes => "nodes",
            Cache::Policy => "policy",
            Cache::Deployments => "deployments",
        }
    }
}

struct Reservation {
    module: Option<Module>,
    expires: Instant,
}

struct Inner {
    policy: Arc<Policy>,
    nodes: BTreeMap<String, Node>,
    cached: HashMap<ModuleKey, Module>,
    reservations: HashMap<ModuleKey, Reservation>,
    /// Nodes and cached modules with reservations laid over them: what decisions read.
    view: Inventory,
    synced: Vec<Cache>,
}

pub struct ClusterState {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

/// Whether the cache shows the reserved allocation (memory limits are not recorded in annotations).
fn same_allocation(a: &Module, b: &Module) -> bool {
    let (x, y) = (&a.assignment, &b.assignment);
    a.placement == b.placement
        && x.gpu == y.gpu
        && x.mode == y.mode
        && x.percentage == y.percentage
        && x.replicas == y.replicas
        && x.clients == y.clients
}

impl Inner {
    fn refresh_module(&mut self, key: &ModuleKey) {
        let reserved = self.reservations.get(key).map(|r| r.module.clone());
        match reserved.unwrap_or_else(|| self.cached.get(key).cloned()) {
            Some(module) => self.view.modules.insert(key.clone(), module),
            None => self.view.modules.remove(key),
        };
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<ModuleKey> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.reservations.remove(&key);
            self.refresh_module(&key);
        }
    }

    fn rebuild_nodes(&mut self) {
        self.view.nodes = self.nodes.values().cloned().collect();
    }
}

impl ClusterState {
    pub fn new(policy: Policy, metrics: Arc<Metrics>) -> ClusterState {
        ClusterState {
            inner: Mutex::new(Inner {
                policy: Arc::new(policy),
                nodes: BTreeMap::new(),
                cached: HashMap::new(),
                reservations: HashMap::new(),
                view: Inventory::default(),
                synced: Vec::new(),
            }),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // more than refusing every later admission would.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.lock().policy.clone()
    }

    pub fn set_policy(&self, policy: Policy) {
        self.lock().policy = Arc::new(policy);
        self.publish_usage();
    }

    pub fn mark_synced(&self, cache: Cache) {
        let mut inner = self.lock();
        if !inner.synced.contains(&cache) {
            inner.synced.push(cache);
            tracing::info!(cache = cache.name(), "cache synced");
        }
        self.metrics
            .cache_synced
            .get_or_create(&CacheLabels {
                cache: cache.name(),
            })
            .set(1);
    }

    pub fn is_synced(&self) -> bool {
        self.lock().synced.len() == 3
    }

    /// Replaces every node (after a full list).
    pub fn replace_nodes(&self, nodes: Vec<Node>) {
        {
            let mut inner = self.lock();
            inner.nodes = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
            inner.rebuild_nodes();
        }
        self.publish_usage();
    }

    pub fn apply_node(&self, node: Node) {
        {
            let mut inner = self.lock();
            inner.nodes.insert(node.name.clone(), node);
            inner.rebuild_nodes();
        }
        self.publish_usage();
    }

    pub fn delete_node(&self, name: &str) {
        {
            let mut inner = self.lock();
            inner.nodes.remove(name);
            inner.rebuild_nodes();
        }
        self.publish_usage();
    }

    /// Replaces every cached allocation (after a full list).
    pub fn replace_modules(&self, modules: HashMap<ModuleKey, Module>) {
        {
            let mut inner = self.lock();
            let keys: Vec<ModuleKey> = inner.cached.keys().chain(modules.keys()).cloned().collect();
            inner.cached = modules;
            for key in keys {
                Self::settle(&mut inner, &key);
            }
        }
        self.publish_usage();
    }

    /// Records what the cache now shows for one Deployment (`None`: deleted or not managed).
    pub fn apply_module(&self, key: ModuleKey, module: Option<Module>) {
        {
            let mut inner = self.lock();
            match module {
                Some(module) => inner.cached.insert(key.clone(), module),
                None => inner.cached.remove(&key),
            };
            Self::settle(&mut inner, &key);
        }
        self.publish_usage();
    }

    /// Drops a reservation once the cache shows what it reserved.
    fn settle(inner: &mut Inner, key: &ModuleKey) {
        let shown = match (inner.reservations.get(key), inner.cached.get(key)) {
            (
                Some(Reservation {
                    module: Some(reserved),
                    ..
                }),
                Some(cached),
            ) => same_allocation(reserved, cached),
            (Some(Reservation { module: None, .. }), None) => true,
            _ => false,
        };
        if shown {
            inner.reservations.remove(key);
        }
        inner.refresh_module(key);
    }

    /// A snapshot of the policy and the view, for `status` and tests.
    pub fn snapshot(&self) -> (Arc<Policy>, Inventory) {
        let inner = self.lock();
        (inner.policy.clone(), inner.view.clone())
    }

    /// Refreshes the per-GPU gauges.
    fn publish_usage(&self) {
        let (policy, inventory) = self.snapshot();
        self.metrics.gpu_committed_percentage.clear();
        self.metrics.gpu_clients.clear();
        for row in inventory.table(&policy) {
            let labels = GpuLabels {
                node: row.node,
                gpu: row.gpu.to_string(),
                mode: row.mode.as_str(),
            };
            self.metrics
                .gpu_committed_percentage
                .get_or_create(&labels)
                .set(i64::from(row.usage.percentage));
            self.metrics
                .gpu_clients
                .get_or_create(&labels)
                .set(i64::from(row.usage.clients));
        }
    }
}

impl Backend for ClusterState {
    fn admit(&self, request: &Request<'_>, dry_run: bool) -> Verdict {
        let mut inner = self.lock();
        inner.expire(Instant::now());
        let verdict = decision::decide(request, &inner.policy, &inner.view);
        if dry_run {
            return verdict;
        }
        let reserved = match &verdict {
            Verdict::Allowed(m) => match &m.outcome {
                Outcome::Assigned(assignment) => Some(Some(Module {
                    placement: Placement {
                        node_selector: request.object.spec.template.spec.node_selector.clone(),
                        node_name: request.object.spec.template.spec.node_name.clone(),
                    },
                    assignment: assignment.clone(),
                })),
                Outcome::Released => Some(None),
                Outcome::Excluded | Outcome::Unmanaged => None,
            },
            Verdict::Denied(_) => None,
        };
        if let Some(module) = reserved {
            let key = request.key();
            inner.reservations.insert(
                key.clone(),
                Reservation {
                    module,
                    expires: Instant::now() + RESERVATION_TTL,
                },
            );
            inner.refresh_module(&key);
            drop(inner);
            self.publish_usage();
        }
        verdict
    }

    fn ready(&self) -> bool {
        self.is_synced()
    }
}
