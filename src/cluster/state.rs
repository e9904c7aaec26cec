//! The cluster's live view, fed by the watchers and read by admissions: nodes, the policy, the
//! claims of the stored workloads of every watched kind, and the ledger of commitments recorded in
//! the API server (`ledger`). Decisions count the ledger's entry for a workload, or what the stored
//! workload holds when the ledger has none (objects admitted before the ledger existed).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ledger::{self, Edit, Ledger};
use crate::core::claim::{Claim, ClaimChange};
use crate::core::decision::{self, Request};
use crate::core::inventory::{Inventory, Node};
use crate::core::policy::Policy;
use crate::core::scale;
use crate::core::verdict::Verdict;
use crate::core::workload::{Kind, WorkloadKey};
use crate::webhook::metrics::{CacheLabels, GpuLabels, KindLabels, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cache {
    Nodes,
    Policy,
    /// The ledger ConfigMap of commitments.
    Ledger,
    /// The workloads of one kind.
    Workloads(Kind),
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Nodes => "nodes",
            Cache::Policy => "policy",
            Cache::Ledger => "ledger",
            Cache::Workloads(kind) => kind.plural(),
        }
    }
}

struct Inner {
    policy: Arc<Policy>,
    nodes: BTreeMap<String, Node>,
    /// What each stored workload holds, from the watch caches.
    stored: HashMap<WorkloadKey, Claim>,
    ledger: Ledger,
    /// Nodes, and for each workload its ledger entry or else its stored claim: what decisions read.
    view: Inventory,
    synced: Vec<Cache>,
}

pub struct ClusterState {
    inner: Mutex<Inner>,
    /// The caches readiness waits for.
    required: Vec<Cache>,
    metrics: Arc<Metrics>,
}

impl Inner {
    /// What `key` counts as: its ledger entry, else its stored claim.
    fn refresh_claim(&mut self, key: &WorkloadKey) {
        let counted = self
            .ledger
            .entries
            .get(key)
            .map(|entry| entry.claim.clone())
            .or_else(|| self.stored.get(key).cloned());
        if self.view.claim(key) == counted.as_ref() {
            // Status churn of a workload that holds the same claim changes nothing decisions read.
            return;
        }
        match counted {
            Some(claim) => self.view.hold(claim),
            None => {
                self.view.free(key);
            }
        };
    }

    fn rebuild_nodes(&mut self) {
        self.view.set_nodes(self.nodes.values().cloned().collect());
    }
}

impl ClusterState {
    /// A state that is ready once nodes, the policy, the ledger and the workloads of every kind in
    /// `kinds` have synced.
    pub fn new(policy: Policy, kinds: &[Kind], metrics: Arc<Metrics>) -> ClusterState {
        let mut required = vec![Cache::Nodes, Cache::Policy, Cache::Ledger];
        required.extend(kinds.iter().map(|&kind| Cache::Workloads(kind)));
        ClusterState {
            required,
            inner: Mutex::new(Inner {
                policy: Arc::new(policy),
                nodes: BTreeMap::new(),
                stored: HashMap::new(),
                ledger: Ledger::default(),
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
        let inner = self.lock();
        self.required
            .iter()
            .all(|cache| inner.synced.contains(cache))
    }

    pub fn ready(&self) -> bool {
        self.is_synced()
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

    /// Replaces every stored claim of one kind (after a full list of that kind).
    pub fn replace_claims(&self, kind: Kind, claims: Vec<Claim>) {
        {
            let mut inner = self.lock();
            let mut keys: Vec<WorkloadKey> = inner
                .stored
                .keys()
                .filter(|key| key.kind == kind)
                .cloned()
                .collect();
            for key in &keys {
                inner.stored.remove(key);
            }
            for claim in claims {
                keys.push(claim.key.clone());
                inner.stored.insert(claim.key.clone(), claim);
            }
            for key in keys {
                inner.refresh_claim(&key);
            }
        }
        self.publish_usage();
    }

    /// Records what the cache now shows for one workload (`None`: deleted, or holding nothing).
    pub fn apply_claim(&self, key: WorkloadKey, claim: Option<Claim>) {
        {
            let mut inner = self.lock();
            match claim {
                Some(claim) => inner.stored.insert(key.clone(), claim),
                None => inner.stored.remove(&key),
            };
            inner.refresh_claim(&key);
        }
        self.publish_usage();
    }

    /// Takes a reading of the ledger (from its watch, or the answer to a write), unless an
    /// even later one is already known.
    pub fn set_ledger(&self, ledger: Ledger) {
        {
            let mut inner = self.lock();
            if inner.ledger.resource_version.is_some() && !inner.ledger.is_older_than(&ledger) {
                return;
            }
            let mut keys: Vec<WorkloadKey> = inner.ledger.entries.keys().cloned().collect();
            keys.extend(ledger.entries.keys().cloned());
            inner.ledger = ledger;
            for key in keys {
                inner.refresh_claim(&key);
            }
        }
        self.publish_usage();
    }

    /// The ledger ConfigMap was deleted: nothing is recorded any more.
    pub fn clear_ledger(&self) {
        {
            let mut inner = self.lock();
            let keys: Vec<WorkloadKey> = inner.ledger.entries.keys().cloned().collect();
            inner.ledger = Ledger::default();
            for key in keys {
                inner.refresh_claim(&key);
            }
        }
        self.publish_usage();
    }

    pub fn ledger_version(&self) -> Option<String> {
        self.lock().ledger.resource_version.clone()
    }

    pub fn ledger_records(&self, edit: &Edit) -> bool {
        self.lock().ledger.records(edit)
    }

    /// What the ledger must change to match the stored workloads.
    pub fn reconcile_edits(&self, now_ms: u64) -> Vec<Edit> {
        let inner = self.lock();
        ledger::reconcile(&inner.ledger, &inner.stored, now_ms)
    }

    /// Decides a workload's admission against the view, and what it would commit.
    pub fn decide(&self, request: &Request<'_>) -> (Verdict, Option<ClaimChange>) {
        let inner = self.lock();
        let verdict = decision::decide(request, &inner.policy, &inner.view);
        let change = match &verdict {
            Verdict::Allowed(m) => m.outcome.claim_change(request.key()),
            Verdict::Denied(_) => None,
        };
        (verdict, change)
    }

    /// Decides a scale of `key` to `replicas`, from what the workload holds now.
    pub fn decide_scale(&self, key: &WorkloadKey, replicas: u32) -> (Verdict, Option<ClaimChange>) {
        let inner = self.lock();
        let verdict = scale::decide(
            key,
            inner.view.claim(key),
            replicas,
            &inner.policy,
            &inner.view,
        );
        let change = match &verdict {
            Verdict::Allowed(m) => m.outcome.claim_change(key),
            Verdict::Denied(_) => None,
        };
        (verdict, change)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::ledger::Entry;
    use crate::core::claim::{Assigned, Share};
    use crate::core::decision::Operation;
    use crate::core::domain::{GpuIndex, Percentage};
    use crate::core::inventory::Placement;
    use crate::core::workload::{RawObject, Workload};

    pub fn state(gpus: u32) -> ClusterState {
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

    pub fn deployment(name: &str, replicas: u32, percentage: u32) -> Workload {
        let raw: RawObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns",
                "annotations": {"gpushare.io/gpu": "auto", "gpushare.io/mps-percentage": percentage.to_string()}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c"}]}}}
        }))
        .unwrap();
        Workload::from_raw(Kind::Deployment, raw)
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

    fn ledger(version: &str, claims: &[Claim]) -> Ledger {
        Ledger {
            resource_version: Some(version.into()),
            entries: claims
                .iter()
                .map(|c| {
                    (
                        c.key.clone(),
                        Entry {
                            claim: c.clone(),
                            written_ms: 0,
                        },
                    )
                })
                .collect(),
        }
    }

    fn decide(state: &ClusterState, object: &Workload) -> Verdict {
        let request = Request {
            operation: Operation::Create,
            object,
            old_object: None,
        };
        state.decide(&request).0
    }

    #[test]
    fn a_ledger_entry_counts_even_before_the_cache_shows_the_workload() {
        let state = state(1);
        let a = key(Kind::Deployment, "a");
        state.set_ledger(ledger("5", &[claim(a.clone(), 0, 1, 60)]));
        assert!(matches!(
            decide(&state, &deployment("b", 1, 60)),
            Verdict::Denied(_)
        ));
        // The ledger entry wins over a stored claim of the same workload.
        state.apply_claim(a.clone(), Some(claim(a, 0, 1, 10)));
        assert!(matches!(
            decide(&state, &deployment("b", 1, 60)),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn a_stored_claim_the_ledger_lacks_still_counts() {
        let state = state(1);
        let job = key(Kind::Job, "old");
        state.apply_claim(job.clone(), Some(claim(job.clone(), 0, 2, 50)));
        assert!(matches!(
            decide(&state, &deployment("new", 1, 10)),
            Verdict::Denied(_)
        ));
        state.apply_claim(job, None);
        assert!(matches!(
            decide(&state, &deployment("new", 1, 10)),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn an_older_reading_of_the_ledger_never_replaces_a_newer_one() {
        let state = state(1);
        let a = key(Kind::Deployment, "a");
        state.set_ledger(ledger("9", &[claim(a.clone(), 0, 1, 60)]));
        state.set_ledger(ledger("8", &[]));
        assert_eq!(state.ledger_version().as_deref(), Some("9"));
        assert!(state.snapshot().1.claim(&a).is_some());
        state.set_ledger(ledger("10", &[]));
        assert!(state.snapshot().1.claim(&a).is_none());
    }

    #[test]
    fn scaling_checks_the_new_replicas_on_the_gpu_the_workload_holds() {
        let state = state(1);
        let a = key(Kind::Deployment, "a");
        state.set_ledger(ledger("3", &[claim(a.clone(), 0, 1, 40)]));
        assert!(
            matches!(state.decide_scale(&a, 3).0, Verdict::Denied(_)),
            "3 x 40% > 100%"
        );
        let (verdict, change) = state.decide_scale(&a, 2);
        assert!(matches!(verdict, Verdict::Allowed(_)));
        assert_eq!(change, Some(ClaimChange::Hold(claim(a.clone(), 0, 2, 40))));
        let (_, unmanaged) = state.decide_scale(&key(Kind::Deployment, "plain"), 50);
        assert_eq!(
            unmanaged, None,
            "a workload that holds nothing scales freely"
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
    fn readiness_needs_every_cache_and_the_ledger() {
        let state = state(1);
        assert!(!state.ready());
        state.mark_synced(Cache::Nodes);
        state.mark_synced(Cache::Policy);
        state.mark_synced(Cache::Workloads(Kind::Deployment));
        state.mark_synced(Cache::Workloads(Kind::Job));
        assert!(!state.ready(), "the ledger has not synced");
        state.mark_synced(Cache::Ledger);
        assert!(state.ready());
    }
}
