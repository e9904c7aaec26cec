//! The cluster's live view, fed by the watchers and read by admissions: nodes, the policy, the
//! allocations of cached Deployments, and short-lived reservations for admissions the cache does
//! not show yet, so two admissions racing in this process cannot double-book a GPU.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::core::decision::{self, Request};
use crate::core::inventory::{Inventory, Module, ModuleKey, Node, Placement};
use crate::core::policy::Policy;
use crate::core::verdict::{Outcome, Verdict};
use crate::webhook::metrics::{CacheLabels, GpuLabels, Metrics};
use crate::webhook::service::Backend;

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
            // The per-GPU gauges follow the cache, which shows the object a moment later: keeping
            // them off the admission path.
            inner.refresh_module(&key);
        }
        verdict
    }

    fn ready(&self) -> bool {
        self.is_synced()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::Operation;
    use crate::core::domain::{GpuIndex, Mode, Percentage};
    use crate::core::verdict::Assignment;
    use crate::core::workload::Deployment;

    fn state(gpus: u32) -> ClusterState {
        let state = ClusterState::new(
            Policy::from_yaml("gpuModes: {0: mps, 1: mps}").unwrap(),
            Arc::new(Metrics::new()),
        );
        state.replace_nodes(vec![Node {
            name: "edge".into(),
            reported_gpus: Some(gpus),
            ..Node::default()
        }]);
        state
    }

    fn deployment(name: &str, replicas: u32, percentage: u32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns",
                "annotations": {"gpushare.io/gpu": "auto", "gpushare.io/mps-percentage": percentage.to_string()}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c"}]}}}
        }))
        .unwrap()
    }

    fn admit(state: &ClusterState, object: &Deployment, dry_run: bool) -> Verdict {
        let request = Request {
            operation: Operation::Create,
            namespace: "ns",
            name: &object.metadata.name,
            object,
            old_object: None,
        };
        state.admit(&request, dry_run)
    }

    fn assigned(verdict: &Verdict) -> Option<GpuIndex> {
        match verdict {
            Verdict::Allowed(m) => match &m.outcome {
                Outcome::Assigned(a) => Some(a.gpu),
                _ => None,
            },
            Verdict::Denied(_) => None,
        }
    }

    fn module(gpu: u32, replicas: u32, percentage: u64) -> Module {
        Module {
            placement: Placement::default(),
            assignment: Assignment {
                gpu: GpuIndex(gpu),
                mode: Mode::Mps,
                percentage: Percentage::new(percentage),
                memory_limit: None,
                replicas,
                clients: replicas,
            },
        }
    }

    #[test]
    fn racing_admissions_do_not_double_book_a_gpu() {
        let state = state(1);
        assert_eq!(
            assigned(&admit(&state, &deployment("a", 1, 60), false)),
            Some(GpuIndex(0))
        );
        // The cache does not show `a` yet; its reservation still counts.
        assert!(matches!(
            admit(&state, &deployment("b", 1, 60), false),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn dry_run_reserves_nothing() {
        let state = state(1);
        assert!(assigned(&admit(&state, &deployment("a", 1, 60), true)).is_some());
        assert!(assigned(&admit(&state, &deployment("b", 1, 60), true)).is_some());
    }

    #[test]
    fn auto_spreads_over_reservations_and_the_cache_takes_over() {
        let state = state(2);
        assert_eq!(
            assigned(&admit(&state, &deployment("a", 1, 40), false)),
            Some(GpuIndex(0))
        );
        assert_eq!(
            assigned(&admit(&state, &deployment("b", 1, 40), false)),
            Some(GpuIndex(1))
        );
        let key = ModuleKey {
            namespace: "ns".into(),
            name: "a".into(),
        };
        state.apply_module(key.clone(), Some(module(0, 1, 40)));
        assert!(
            !state.lock().reservations.contains_key(&key),
            "a shown by the cache: reservation dropped"
        );
        state.apply_module(key, None);
        let (_, view) = state.snapshot();
        assert_eq!(
            view.modules.len(),
            1,
            "deleting a frees its share; b is still reserved"
        );
    }

    #[test]
    fn a_cached_module_counts_until_deleted() {
        let state = state(1);
        let key = ModuleKey {
            namespace: "ns".into(),
            name: "old".into(),
        };
        state.apply_module(key.clone(), Some(module(0, 2, 50)));
        assert!(matches!(
            admit(&state, &deployment("new", 1, 10), false),
            Verdict::Denied(_)
        ));
        state.apply_module(key, None);
        assert_eq!(
            assigned(&admit(&state, &deployment("new", 1, 10), false)),
            Some(GpuIndex(0))
        );
    }

    #[test]
    fn readiness_needs_every_cache() {
        let state = state(1);
        assert!(!state.ready());
        state.mark_synced(Cache::Nodes);
        state.mark_synced(Cache::Policy);
        assert!(!state.ready());
        state.mark_synced(Cache::Deployments);
        assert!(state.ready());
    }
}
