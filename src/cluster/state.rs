//! The cluster's live view, fed by the watchers and read by admissions: nodes, the policy, the
//! claims of cached workloads of every watched kind, and short-lived reservations for admissions
//! the cache does not show yet, so two admissions racing in this process cannot double-book a GPU.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::core::claim::{Claim, ClaimChange};
use crate::core::decision::{self, Request};
use crate::core::inventory::{Inventory, Node};
use crate::core::policy::Policy;
use crate::core::verdict::Verdict;
use crate::core::workload::{Kind, WorkloadKey};
use crate::webhook::backend::{Backend, Conflict, Version};
use crate::webhook::metrics::{CacheLabels, GpuLabels, KindLabels, Metrics};

/// How long an admitted module is counted before the cache shows it. An object the API server
/// finally rejected (another webhook, validation) stops counting after this.
pub const RESERVATION_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cache {
    Nodes,
    Policy,
    /// The workloads of one kind.
    Workloads(Kind),
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Nodes => "nodes",
            Cache::Policy => "policy",
            Cache::Workloads(kind) => kind.plural(),
        }
    }
}

/// A claim (or its release: `None`) admitted here and not yet shown by the cache.
struct Reservation {
    claim: Option<Claim>,
    expires: Instant,
}

struct Inner {
    policy: Arc<Policy>,
    nodes: BTreeMap<String, Node>,
    cached: HashMap<WorkloadKey, Claim>,
    reservations: HashMap<WorkloadKey, Reservation>,
    /// Nodes and cached claims with reservations laid over them: what decisions read.
    view: Inventory,
    /// Moves whenever the view or the policy changes: a commit decided on an older one conflicts.
    version: Version,
    synced: Vec<Cache>,
}

pub struct ClusterState {
    inner: Mutex<Inner>,
    /// The caches readiness waits for.
    required: Vec<Cache>,
    metrics: Arc<Metrics>,
}

impl Inner {
    fn refresh_claim(&mut self, key: &WorkloadKey) {
        let reserved = self.reservations.get(key).map(|r| r.claim.clone());
        let shown = reserved.unwrap_or_else(|| self.cached.get(key).cloned());
        if self.view.claim(key) == shown.as_ref() {
            // Status churn of a workload that holds the same claim changes nothing decisions read.
            return;
        }
        match shown {
            Some(claim) => self.view.hold(claim),
            None => {
                self.view.free(key);
            }
        };
        self.version += 1;
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<WorkloadKey> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.reservations.remove(&key);
            self.refresh_claim(&key);
        }
    }

    fn rebuild_nodes(&mut self) {
        self.view.set_nodes(self.nodes.values().cloned().collect());
        self.version += 1;
    }
}

impl ClusterState {
    /// A state that is ready once nodes, the policy and the workloads of every kind in `kinds`
    /// have synced.
    pub fn new(policy: Policy, kinds: &[Kind], metrics: Arc<Metrics>) -> ClusterState {
        let mut required = vec![Cache::Nodes, Cache::Policy];
        required.extend(kinds.iter().map(|&kind| Cache::Workloads(kind)));
        ClusterState {
            required,
            inner: Mutex::new(Inner {
                policy: Arc::new(policy),
                nodes: BTreeMap::new(),
                cached: HashMap::new(),
                reservations: HashMap::new(),
                view: Inventory::default(),
                version: 0,
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
        {
            let mut inner = self.lock();
            inner.policy = Arc::new(policy);
            inner.version += 1;
        }
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
        let inner = self.lock();
        self.required
            .iter()
            .all(|cache| inner.synced.contains(cache))
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

    /// Replaces every cached claim of one kind (after a full list of that kind).
    pub fn replace_claims(&self, kind: Kind, claims: Vec<Claim>) {
        {
            let mut inner = self.lock();
            let mut keys: Vec<WorkloadKey> = inner
                .cached
                .keys()
                .filter(|key| key.kind == kind)
                .cloned()
                .collect();
            for key in &keys {
                inner.cached.remove(key);
            }
            for claim in claims {
                keys.push(claim.key.clone());
                inner.cached.insert(claim.key.clone(), claim);
            }
            for key in keys {
                Self::settle(&mut inner, &key);
            }
        }
        self.publish_usage();
    }

    /// Records what the cache now shows for one workload (`None`: deleted, or holding nothing).
    pub fn apply_claim(&self, key: WorkloadKey, claim: Option<Claim>) {
        {
            let mut inner = self.lock();
            match claim {
                Some(claim) => inner.cached.insert(key.clone(), claim),
                None => inner.cached.remove(&key),
            };
            Self::settle(&mut inner, &key);
        }
        self.publish_usage();
    }

    /// Drops a reservation once the cache shows what it reserved.
    fn settle(inner: &mut Inner, key: &WorkloadKey) {
        let shown = match inner.reservations.get(key) {
            Some(reservation) => reservation.claim.as_ref() == inner.cached.get(key),
            None => false,
        };
        if shown {
            inner.reservations.remove(key);
        }
        inner.refresh_claim(key);
    }

    /// A snapshot of the policy and the view, for `status` and tests.
    pub fn snapshot(&self) -> (Arc<Policy>, Inventory) {
        let inner = self.lock();
        (inner.policy.clone(), inner.view.clone())
    }

    /// Refreshes the per-GPU and per-kind gauges.
    fn publish_usage(&self) {
        let (policy, inventory) = self.snapshot();
        for kind in Kind::ALL {
            let count = inventory.claims().filter(|c| c.key.kind == kind).count();
            self.metrics
                .modules
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .set(count as i64);
        }
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
    fn decide(&self, request: &Request<'_>) -> (Verdict, Version) {
        let mut inner = self.lock();
        inner.expire(Instant::now());
        let verdict = decision::decide(request, &inner.policy, &inner.view);
        (verdict, inner.version)
    }

    /// Reserves the claim until the cache shows the stored object (or the reservation expires).
    /// A change the view already shows is not written again.
    fn commit(&self, change: ClaimChange, based_on: Version) -> Result<(), Conflict> {
        let mut inner = self.lock();
        if inner.version != based_on {
            return Err(Conflict);
        }
        let (key, claim) = match change {
            ClaimChange::Hold(claim) => (claim.key.clone(), Some(claim)),
            ClaimChange::Free(key) => (key, None),
        };
        if inner.view.claim(&key) == claim.as_ref() {
            return Ok(());
        }
        inner.reservations.insert(
            key.clone(),
            Reservation {
                claim,
                expires: Instant::now() + RESERVATION_TTL,
            },
        );
        // The per-GPU gauges follow the cache, which shows the object a moment later: keeping
        // them off the admission path.
        inner.refresh_claim(&key);
        Ok(())
    }

    fn ready(&self) -> bool {
        self.is_synced()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::claim::{Assigned, Share};
    use crate::core::decision::Operation;
    use crate::core::domain::{GpuIndex, Percentage};
    use crate::core::inventory::Placement;
    use crate::core::verdict::Outcome;
    use crate::core::workload::{RawObject, Workload};

    fn state(gpus: u32) -> ClusterState {
        let state = ClusterState::new(
            Policy::from_yaml("gpuModes: {0: mps, 1: mps}").unwrap(),
            &[Kind::Deployment, Kind::Job],
            Arc::new(Metrics::new()),
        );
        state.replace_nodes(vec![Node {
            name: "edge".into(),
            reported_gpus: Some(gpus),
            ..Node::default()
        }]);
        state
    }

    fn deployment(name: &str, replicas: u32, percentage: u32) -> Workload {
        let raw: RawObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns",
                "annotations": {"gpushare.io/gpu": "auto", "gpushare.io/mps-percentage": percentage.to_string()}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c"}]}}}
        }))
        .unwrap();
        Workload::from_raw(Kind::Deployment, raw)
    }

    fn admit(state: &ClusterState, object: &Workload, dry_run: bool) -> Verdict {
        let request = Request {
            operation: Operation::Create,
            object,
            old_object: None,
        };
        crate::webhook::backend::admit(state, &request, dry_run)
    }

    fn assigned(verdict: &Verdict) -> Option<GpuIndex> {
        match verdict {
            Verdict::Allowed(m) => match &m.outcome {
                Outcome::Assigned(claim) => Some(claim.gpu()),
                _ => None,
            },
            Verdict::Denied(_) => None,
        }
    }

    fn key(kind: Kind, name: &str) -> WorkloadKey {
        WorkloadKey::new(kind, "ns", name)
    }

    fn claim(key: WorkloadKey, gpu: u32, pods: u32, percentage: u64) -> Claim {
        Claim {
            key,
            placement: Placement::default(),
            assigned: Assigned {
                gpu: GpuIndex(gpu),
                share: Share::Mps(Percentage::new(percentage).unwrap()),
            },
            pods,
            containers: 1,
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
        let a = key(Kind::Deployment, "a");
        state.apply_claim(a.clone(), Some(claim(a.clone(), 0, 1, 40)));
        assert!(
            !state.lock().reservations.contains_key(&a),
            "a shown by the cache: reservation dropped"
        );
        state.apply_claim(a, None);
        let (_, view) = state.snapshot();
        assert_eq!(
            view.claims().count(),
            1,
            "deleting a frees its share; b is still reserved"
        );
    }

    #[test]
    fn a_cached_claim_of_any_kind_counts_until_deleted() {
        let state = state(1);
        let job = key(Kind::Job, "old");
        state.apply_claim(job.clone(), Some(claim(job.clone(), 0, 2, 50)));
        assert!(matches!(
            admit(&state, &deployment("new", 1, 10), false),
            Verdict::Denied(_)
        ));
        state.apply_claim(job, None);
        assert_eq!(
            assigned(&admit(&state, &deployment("new", 1, 10), false)),
            Some(GpuIndex(0))
        );
    }

    #[test]
    fn a_relist_of_one_kind_keeps_the_claims_of_the_others() {
        let state = state(2);
        let (job, deployment) = (key(Kind::Job, "same"), key(Kind::Deployment, "same"));
        state.replace_claims(Kind::Job, vec![claim(job.clone(), 0, 1, 10)]);
        state.replace_claims(Kind::Deployment, vec![claim(deployment.clone(), 1, 1, 10)]);
        state.replace_claims(Kind::Job, Vec::new());
        let (_, view) = state.snapshot();
        assert!(view.claim(&job).is_none());
        assert!(view.claim(&deployment).is_some());
    }

    #[test]
    fn a_commit_decided_on_an_older_view_conflicts() {
        let state = state(1);
        let first = deployment("a", 1, 60);
        let request = Request {
            operation: Operation::Create,
            object: &first,
            old_object: None,
        };
        let (verdict, version) = state.decide(&request);
        let Verdict::Allowed(mutation) = verdict else {
            panic!("a fits")
        };
        // Another admission commits between this one's decision and its commit.
        assert!(!matches!(
            admit(&state, &deployment("b", 1, 60), false),
            Verdict::Denied(_)
        ));
        let change = mutation.outcome.claim_change(request.key()).unwrap();
        assert_eq!(state.commit(change, version), Err(Conflict));
        // Deciding again sees b: a no longer fits.
        assert!(matches!(admit(&state, &first, false), Verdict::Denied(_)));
    }

    #[test]
    fn a_commit_the_view_already_shows_writes_nothing() {
        let state = state(1);
        let a = key(Kind::Deployment, "a");
        state.apply_claim(a.clone(), Some(claim(a.clone(), 0, 1, 60)));
        let version = state.lock().version;
        let change = ClaimChange::Hold(claim(a.clone(), 0, 1, 60));
        assert_eq!(state.commit(change, version), Ok(()));
        assert!(!state.lock().reservations.contains_key(&a));
        assert_eq!(state.lock().version, version, "nothing moved");
    }

    #[test]
    fn readiness_needs_every_cache() {
        let state = state(1);
        assert!(!state.ready());
        state.mark_synced(Cache::Nodes);
        state.mark_synced(Cache::Policy);
        state.mark_synced(Cache::Workloads(Kind::Deployment));
        assert!(!state.ready(), "Jobs have not synced");
        state.mark_synced(Cache::Workloads(Kind::Job));
        assert!(state.ready());
    }
}
