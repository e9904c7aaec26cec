//! The cluster's live view, fed by the watchers and read by admissions: nodes, the policy, the
//! claims of the stored workloads of every watched kind, and the ledger of commitments recorded in
//! the API server (`ledger`). Decisions count the ledger's entry for a workload, or what the stored
//! workload holds when the ledger has none (objects admitted before the ledger existed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::convert::{Held, StoredObject};
use super::ledger::{self, Entry, Ledger};
use crate::core::claim::{Claim, ClaimChange};
use crate::core::inventory::{GpuRow, Inventory, Node, PodSecurity};
use crate::core::policy::Policy;
use crate::core::record::Version;
use crate::core::status::RunningPods;
use crate::core::workload::{Kind, WorkloadKey};
use crate::webhook::metrics::{CacheLabels, GpuLabels, KindLabels, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cache {
    Nodes,
    Policy,
    /// The ledger ConfigMap of commitments.
    Ledger,
    /// Namespaces, for their Pod Security labels.
    Namespaces,
    /// The workloads of one kind.
    Workloads(Kind),
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Nodes => "nodes",
            Cache::Policy => "policy",
            Cache::Ledger => "ledger",
            Cache::Namespaces => "namespaces",
            Cache::Workloads(kind) => kind.plural(),
        }
    }
}

struct Inner {
    policy: Arc<Policy>,
    nodes: BTreeMap<String, Node>,
    /// What each stored workload may hold, from the watch caches (only those that may hold anything).
    stored: HashMap<WorkloadKey, Held>,
    /// What each stored workload holds now: its owner checked, the policy applied.
    held: HashMap<WorkloadKey, Claim>,
    /// Namespaces that carry gpushare's label for the scale webhook.
    labelled: HashSet<String>,
    /// Nodes new pods may land on (not cordoned, not tainted against them).
    schedulable: HashSet<String>,
    /// The uid of each stored workload that may own others, to forget it when it goes.
    owner_uids: HashMap<WorkloadKey, String>,
    /// The stored workloads that name each owner uid: checked again when that owner changes.
    dependents: HashMap<String, HashSet<WorkloadKey>>,
    ledger: Ledger,
    /// Entries that left the ledger before this replica's caches showed their stored workload
    /// (another replica's caches were faster): still counted, until the caches show it or the
    /// entry would have expired anyway. Without them a lagging replica would count neither.
    ghosts: HashMap<WorkloadKey, Entry>,
    /// Nodes, and for each workload its ledger entry or else its stored claim: what decisions read.
    view: Inventory,
    synced: Vec<Cache>,
    /// The per-GPU series the gauges show, so a full refresh removes only those that went away.
    published: HashSet<GpuLabels>,
}

/// What gpushare reads of a namespace's labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceLabels {
    /// The Pod Security level it enforces, when that level refuses host access (rule 8).
    pub pod_security: Option<PodSecurity>,
    /// Whether it carries gpushare's label for the scale webhook.
    pub managed: bool,
}

/// How long an admission of an object made by a built-in controller waits for the cache to show
/// that controller: its watch event usually trails the controller's own by milliseconds.
pub const OWNER_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// More changes than this at once (a relist, a new ledger) refresh every gauge in one pass.
const BULK_CHANGES: usize = 32;

/// What one workload counted as before and after the caches changed: not a commit (those are
/// `ClaimChange`s, through the record), only what the gauges must follow.
type Recount = (Option<Claim>, Option<Claim>);

pub struct ClusterState {
    inner: Mutex<Inner>,
    /// Woken whenever the owners the cache knows change.
    owners_changed: tokio::sync::Notify,
    /// The caches readiness waits for.
    required: Vec<Cache>,
    metrics: Arc<Metrics>,
}

impl Inner {
    /// What `key` counts as: its ledger entry, else what the stored object holds; the change, if any.
    fn refresh_claim(&mut self, key: &WorkloadKey) -> Option<Recount> {
        match self
            .stored
            .get(key)
            .and_then(|held| held.counted(&self.view, &self.policy))
        {
            Some(claim) => self.held.insert(key.clone(), claim),
            None => self.held.remove(key),
        };
        if self
            .ghosts
            .get(key)
            .is_some_and(|ghost| self.held.get(key) == Some(&ghost.claim))
        {
            // The caches caught up.
            self.ghosts.remove(key);
        }
        let counted = self
            .ledger
            .entries
            .get(key)
            .or_else(|| self.ghosts.get(key))
            .map(|entry| &entry.claim)
            .or_else(|| self.held.get(key));
        if self.view.claim(key) == counted {
            // Status churn of a workload that holds the same claim changes nothing decisions read.
            return None;
        }
        let counted = counted.cloned();
        let old = match counted.clone() {
            Some(claim) => {
                let old = self.view.claim(key).cloned();
                self.view.hold(claim);
                old
            }
            None => self.view.free(key),
        };
        Some((old, counted))
    }

    fn refresh_claims(&mut self, keys: impl IntoIterator<Item = WorkloadKey>) -> Vec<Recount> {
        keys.into_iter()
            .filter_map(|key| self.refresh_claim(&key))
            .collect()
    }

    fn rebuild_nodes(&mut self) {
        self.view.set_nodes(self.nodes.values().cloned().collect());
    }

    /// Records one stored object (`None`: deleted); returns the keys whose count may change.
    fn store(&mut self, key: &WorkloadKey, object: Option<StoredObject>) -> Vec<WorkloadKey> {
        let mut touched = vec![key.clone()];
        let (owner, held) = match object {
            Some(object) => (object.owner, object.held),
            None => (None, None),
        };
        // As an owner: its record, and the objects that name it.
        let old_uid = self.owner_uids.remove(key);
        if let Some(uid) = &old_uid {
            if owner.as_ref().map(|(u, _)| u) != Some(uid) {
                self.view.set_owner(uid, None);
                touched.extend(self.dependents.get(uid).into_iter().flatten().cloned());
            }
        }
        if let Some((uid, record)) = owner {
            if !self.view.has_owner(&uid, &record) {
                self.view.set_owner(&uid, Some(record));
                touched.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
            }
            self.owner_uids.insert(key.clone(), uid);
        }
        // As a dependent: what it holds, indexed by the owner it names.
        if let Some(uid) = self.stored.get(key).and_then(Held::owner_uid) {
            if let Some(keys) = self.dependents.get_mut(uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.dependents.remove(uid);
                }
            }
        }
        match held {
            Some(held) => {
                if let Some(uid) = held.owner_uid() {
                    self.dependents
                        .entry(uid.to_string())
                        .or_default()
                        .insert(key.clone());
                }
                self.stored.insert(key.clone(), held);
            }
            None => {
                self.stored.remove(key);
            }
        }
        touched
    }
}

impl ClusterState {
    /// A state that is ready once nodes, the policy, the ledger and the workloads of every kind in
    /// `kinds` have synced.
    pub fn new(policy: Policy, kinds: &[Kind], metrics: Arc<Metrics>) -> ClusterState {
        let mut required = vec![
            Cache::Nodes,
            Cache::Policy,
            Cache::Ledger,
            Cache::Namespaces,
        ];
        required.extend(kinds.iter().map(|&kind| Cache::Workloads(kind)));
        ClusterState {
            required,
            owners_changed: tokio::sync::Notify::new(),
            inner: Mutex::new(Inner {
                policy: Arc::new(policy),
                nodes: BTreeMap::new(),
                stored: HashMap::new(),
                held: HashMap::new(),
                labelled: HashSet::new(),
                schedulable: HashSet::new(),
                owner_uids: HashMap::new(),
                dependents: HashMap::new(),
                ledger: Ledger::default(),
                ghosts: HashMap::new(),
                view: {
                    let mut view = Inventory::default();
                    view.verify_owners();
                    view
                },
                synced: Vec::new(),
                published: HashSet::new(),
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
        let mut inner = self.lock();
        inner.policy = Arc::new(policy);
        // Whether workloads stored with hand-written variables count depends on the policy.
        let by_hand: Vec<WorkloadKey> = inner
            .stored
            .iter()
            .filter(|(_, held)| held.by_hand)
            .map(|(key, _)| key.clone())
            .collect();
        inner.refresh_claims(by_hand);
        self.publish_all(&mut inner);
    }

    /// Sets what one namespace's labels say (`None`: it was deleted).
    pub fn apply_namespace(&self, name: &str, labels: Option<NamespaceLabels>) {
        let mut inner = self.lock();
        let labels = labels.unwrap_or_default();
        inner.view.set_pod_security(name, labels.pod_security);
        if labels.managed {
            inner.labelled.insert(name.to_string());
        } else {
            inner.labelled.remove(name);
        }
    }

    /// Replaces every namespace (after a full list).
    pub fn replace_namespaces(&self, namespaces: Vec<(String, NamespaceLabels)>) {
        let mut inner = self.lock();
        inner.view.clear_pod_security();
        inner.labelled.clear();
        for (name, labels) in namespaces {
            inner.view.set_pod_security(&name, labels.pod_security);
            if labels.managed {
                inner.labelled.insert(name);
            }
        }
    }

    /// Replaces the nodes new pods may land on (after a full list).
    pub fn replace_schedulable(&self, names: HashSet<String>) {
        self.lock().schedulable = names;
    }

    pub fn set_schedulable(&self, name: &str, schedulable: bool) {
        let mut inner = self.lock();
        if schedulable {
            inner.schedulable.insert(name.to_string());
        } else {
            inner.schedulable.remove(name);
        }
    }

    /// How many nodes new pods may land on: where an evicted replica of gpushare can go.
    pub fn schedulable_nodes(&self) -> usize {
        self.lock().schedulable.len()
    }

    /// Whether `namespace` carries gpushare's label for the scale webhook.
    pub fn namespace_labelled(&self, namespace: &str) -> bool {
        self.lock().labelled.contains(namespace)
    }

    /// Records a label gpushare just wrote (its watch event may come later).
    pub fn set_namespace_labelled(&self, namespace: &str, labelled: bool) {
        let mut inner = self.lock();
        if labelled {
            inner.labelled.insert(namespace.to_string());
        } else {
            inner.labelled.remove(namespace);
        }
    }

    /// The namespaces that hold a module (not excluded by the policy), and those labelled.
    pub fn namespace_labels(&self) -> (HashSet<String>, HashSet<String>) {
        let inner = self.lock();
        let with_modules = inner
            .view
            .claims()
            .map(|claim| &claim.key.namespace)
            .filter(|namespace| !inner.policy.is_excluded(namespace))
            .cloned()
            .collect();
        (with_modules, inner.labelled.clone())
    }

    /// Whether the cache knows the owner with `uid` (and would check an object against it).
    pub fn knows_owner(&self, uid: &str) -> bool {
        self.lock().view.knows_owner(uid)
    }

    /// Waits up to `wait` until `ready` holds of the view, re-checking whenever the owners change:
    /// an object a controller just made may reach gpushare before the watch event of its controller.
    pub async fn wait_for_owner(
        &self,
        wait: std::time::Duration,
        ready: impl Fn(&Inventory) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.owners_changed.notified();
            if ready(&self.lock().view) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
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
        let mut inner = self.lock();
        inner.nodes = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        inner.rebuild_nodes();
        self.publish_all(&mut inner);
    }

    pub fn apply_node(&self, node: Node) {
        let mut inner = self.lock();
        if inner.nodes.get(&node.name) == Some(&node) {
            // Node status churn changes nothing gpushare reads.
            return;
        }
        inner.nodes.insert(node.name.clone(), node);
        inner.rebuild_nodes();
        self.publish_all(&mut inner);
    }

    pub fn delete_node(&self, name: &str) {
        let mut inner = self.lock();
        inner.nodes.remove(name);
        inner.rebuild_nodes();
        self.publish_all(&mut inner);
    }

    /// Replaces every stored object of one kind (after a full list of that kind).
    pub fn replace_stored(&self, kind: Kind, objects: Vec<StoredObject>) {
        let mut inner = self.lock();
        let gone: Vec<WorkloadKey> = inner
            .stored
            .keys()
            .chain(inner.owner_uids.keys())
            .filter(|key| key.kind == kind)
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for key in gone {
            touched.extend(inner.store(&key, None));
        }
        for object in objects {
            let key = object.key.clone();
            touched.extend(inner.store(&key, Some(object)));
        }
        touched.sort();
        touched.dedup();
        let changes = inner.refresh_claims(touched);
        self.publish_changes(&mut inner, changes);
        drop(inner);
        self.owners_changed.notify_waiters();
    }

    /// Records what the cache now shows for one workload (`None`: deleted).
    pub fn apply_stored(&self, key: WorkloadKey, object: Option<StoredObject>) {
        let mut inner = self.lock();
        let unchanged = match &object {
            Some(object) => {
                inner.stored.get(&key) == object.held.as_ref()
                    && object.owner.as_ref().is_none_or(|(uid, owner)| {
                        inner.owner_uids.get(&key) == Some(uid) && inner.view.has_owner(uid, owner)
                    })
            }
            None => !inner.stored.contains_key(&key) && !inner.owner_uids.contains_key(&key),
        };
        if unchanged {
            // Status churn: the workload holds what it held.
            return;
        }
        let is_owner = object.as_ref().is_some_and(|o| o.owner.is_some())
            || inner.owner_uids.contains_key(&key);
        let touched = inner.store(&key, object);
        let changes = inner.refresh_claims(touched);
        self.publish_changes(&mut inner, changes);
        drop(inner);
        if is_owner {
            self.owners_changed.notify_waiters();
        }
    }

    /// Records that one workload holds `claim` as a module of its own (tests, and objects read
    /// without an owner).
    pub fn apply_claim(&self, key: WorkloadKey, claim: Option<Claim>) {
        let object = StoredObject {
            key: key.clone(),
            owner: None,
            held: claim.map(|own| Held {
                own: Some(own),
                running_on: None,
                by_hand: false,
                controlled: None,
            }),
        };
        self.apply_stored(key, Some(object));
    }

    /// Replaces every stored claim of one kind, each held as a module of its own (tests).
    pub fn replace_claims(&self, kind: Kind, claims: Vec<Claim>) {
        let objects = claims
            .into_iter()
            .map(|own| StoredObject {
                key: own.key.clone(),
                owner: None,
                held: Some(Held {
                    own: Some(own),
                    running_on: None,
                    by_hand: false,
                    controlled: None,
                }),
            })
            .collect();
        self.replace_stored(kind, objects);
    }

    /// Takes a reading of the ledger (from its watch, or the answer to a write), unless an
    /// even later one is already known.
    pub fn set_ledger(&self, ledger: Ledger) {
        let mut inner = self.lock();
        if inner.ledger.resource_version.is_some() && !inner.ledger.is_older_than(&ledger) {
            return;
        }
        // Only entries that differ between the readings can change what a workload counts as.
        let mut keys: Vec<WorkloadKey> = inner
            .ledger
            .entries
            .iter()
            .filter(|(key, entry)| ledger.entries.get(*key) != Some(*entry))
            .map(|(key, _)| key.clone())
            .collect();
        keys.extend(
            ledger
                .entries
                .keys()
                .filter(|key| !inner.ledger.entries.contains_key(*key))
                .cloned(),
        );
        // Entries that left while this replica's caches do not show them yet stay counted.
        let now = super::record::now_ms();
        let left: Vec<(WorkloadKey, Entry)> = inner
            .ledger
            .entries
            .iter()
            .filter(|(key, entry)| {
                !ledger.entries.contains_key(*key)
                    && inner.held.get(*key) != Some(&entry.claim)
                    && !ledger::is_expired(entry, now)
            })
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect();
        for key in ledger.entries.keys() {
            inner.ghosts.remove(key);
        }
        inner.ghosts.extend(left);
        inner.ledger = ledger;
        let changes = inner.refresh_claims(keys);
        self.publish_changes(&mut inner, changes);
    }

    /// The keys of ledger entries gpushare cannot read.
    pub fn unreadable_ledger_entries(&self) -> Vec<String> {
        self.lock().ledger.unreadable.clone()
    }

    /// Forgets the ghosts whose entry would have expired by now.
    pub fn expire_ghosts(&self, now_ms: u64) {
        let mut inner = self.lock();
        let expired: Vec<WorkloadKey> = inner
            .ghosts
            .iter()
            .filter(|(_, entry)| ledger::is_expired(entry, now_ms))
            .map(|(key, _)| key.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for key in &expired {
            inner.ghosts.remove(key);
        }
        let changes = inner.refresh_claims(expired);
        self.publish_changes(&mut inner, changes);
    }

    /// How many entries the ledger and the ghosts hold now (metrics and tests).
    pub fn in_flight(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.ledger.entries.len(), inner.ghosts.len())
    }

    /// The ledger ConfigMap was deleted: nothing is recorded any more.
    pub fn clear_ledger(&self) {
        let mut inner = self.lock();
        let keys: Vec<WorkloadKey> = inner.ledger.entries.keys().cloned().collect();
        inner.ledger = Ledger::default();
        let changes = inner.refresh_claims(keys);
        self.publish_changes(&mut inner, changes);
    }

    pub fn ledger_version(&self) -> Option<String> {
        self.lock().ledger.resource_version.clone()
    }

    /// Whether what `edit` commits is already counted (by a stored workload, the ledger or a
    /// ghost): then nothing is written. A workload that frees its share is never recorded as
    /// such: its stored object stops counting once it is stored (the safe direction).
    pub fn counts(&self, change: &ClaimChange) -> bool {
        match change {
            ClaimChange::Hold(claim) => self.lock().view.claim(&claim.key) == Some(claim),
            ClaimChange::Free(_) => true,
        }
    }

    /// What the ledger must change to match the stored workloads.
    pub fn reconcile_edits(&self, now_ms: u64) -> Vec<ClaimChange> {
        let inner = self.lock();
        ledger::reconcile(&inner.ledger, &inner.held, now_ms)
    }

    /// Runs `read` on the policy and the view, and returns the ledger reading it saw: the
    /// precondition of the commit a decision makes.
    pub fn read(&self, read: &mut dyn FnMut(&Policy, &Inventory)) -> Version {
        let inner = self.lock();
        read(&inner.policy, &inner.view);
        Version(inner.ledger.resource_version.clone())
    }

    /// The pods running now, by the module they belong to (a Pod made by a ReplicaSet of a
    /// Deployment belongs to the Deployment) and node: what `status` shows beside the shares.
    pub fn running_pods(&self) -> RunningPods {
        let inner = self.lock();
        let owner_keys: HashMap<&str, &WorkloadKey> = inner
            .owner_uids
            .iter()
            .map(|(key, uid)| (uid.as_str(), key))
            .collect();
        let mut running = RunningPods::new();
        for (key, held) in &inner.stored {
            let Some(node) = &held.running_on else {
                continue;
            };
            let (mut module, mut current) = (key, held);
            // Pod -> ReplicaSet -> Deployment, or Pod -> Job -> CronJob: two steps at most.
            for _ in 0..2 {
                let Some(controlled) = current
                    .controlled
                    .as_ref()
                    .filter(|c| inner.view.trusts_owner(&c.controller, c.fingerprint))
                else {
                    break;
                };
                let Some(owner) = owner_keys.get(controlled.controller.uid.as_str()) else {
                    break;
                };
                module = owner;
                match inner.stored.get(*owner) {
                    Some(next) => current = next,
                    None => break,
                }
            }
            *running
                .entry(module.clone())
                .or_default()
                .entry(node.clone())
                .or_default() += 1;
        }
        running
    }

    /// A snapshot of the policy and the view, for `status` and tests.
    pub fn snapshot(&self) -> (Arc<Policy>, Inventory) {
        let inner = self.lock();
        (inner.policy.clone(), inner.view.clone())
    }

    /// Updates the gauges of what `changes` touched: the module count of their kinds and the
    /// GPUs their claims count against, in place (a scrape never sees a series missing). Called
    /// under the same lock that made the changes: module counts move by deltas, and a
    /// `publish_all` in between would count them twice.
    fn publish_changes(&self, inner: &mut Inner, changes: Vec<Recount>) {
        if changes.is_empty() {
            return;
        }
        if changes.len() > BULK_CHANGES {
            // A relist: one pass over every GPU costs less than one per claim.
            self.publish_all(inner);
            return;
        }
        let mut kinds = HashMap::<Kind, i64>::new();
        let mut touched = Vec::new();
        for claim in changes.iter().flat_map(|(old, new)| [old, new]).flatten() {
            let gpu = (&claim.placement, claim.gpu());
            if !touched.contains(&gpu) {
                touched.push(gpu);
                for row in inner.view.rows_of(claim, &inner.policy) {
                    self.publish_row(&mut inner.published, row);
                }
            }
        }
        for (old, new) in &changes {
            let kind = old.as_ref().or(new.as_ref()).map(|c| c.key.kind);
            if let Some(kind) = kind {
                *kinds.entry(kind).or_default() +=
                    i64::from(new.is_some()) - i64::from(old.is_some());
            }
        }
        for (kind, delta) in kinds {
            self.metrics
                .modules
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .inc_by(delta);
        }
    }

    /// Sets every gauge from the whole view (after a change of nodes or policy), removing the
    /// series of GPUs that are gone.
    fn publish_all(&self, inner: &mut Inner) {
        for kind in Kind::ALL {
            let count = inner.view.claims().filter(|c| c.key.kind == kind).count();
            self.metrics
                .modules
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .set(count as i64);
        }
        let before = std::mem::take(&mut inner.published);
        for row in inner.view.table(&inner.policy) {
            self.publish_row(&mut inner.published, row);
        }
        for gone in before.difference(&inner.published) {
            self.metrics.gpu_committed_percentage.remove(gone);
            self.metrics.gpu_clients.remove(gone);
        }
    }

    fn publish_row(&self, published: &mut HashSet<GpuLabels>, row: GpuRow) {
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
        published.insert(labels);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::ledger::Entry;
    use crate::core::claim::{Assigned, Share};
    use crate::core::decision::{self, Operation, Request};
    use crate::core::domain::{GpuIndex, Percentage};
    use crate::core::inventory::Placement;
    use crate::core::scale;
    use crate::core::verdict::Verdict;
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
            "spec": {"replicas": replicas, "strategy": {"rollingUpdate": {"maxSurge": 0}},
                "template": {"spec": {"containers": [{"name": "c"}]}}}
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
            pods: crate::core::pods::PodCount::fixed(pods),
            containers: 1,
            extra_percentage: 0,
        }
    }

    fn ledger(version: &str, claims: &[Claim]) -> Ledger {
        Ledger {
            unreadable: Vec::new(),
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
        let mut verdict = None;
        state.read(&mut |policy, view| {
            verdict = Some(decision::decide(&request, policy, view));
        });
        verdict.expect("read once")
    }

    /// A scale decided against the view: its verdict and what it would commit.
    fn decide_scale(
        state: &ClusterState,
        key: &WorkloadKey,
        replicas: u32,
    ) -> (Verdict, Option<ClaimChange>) {
        let mut verdict = None;
        state.read(&mut |policy, view| {
            verdict = Some(scale::decide(key, view.claim(key), replicas, policy, view));
        });
        let verdict = verdict.expect("read once");
        let change = match &verdict {
            Verdict::Allowed(m) => m.outcome.claim_change(key),
            Verdict::Denied(_) => None,
        };
        (verdict, change)
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
    fn module_counts_stay_exact_while_watchers_race_each_other() {
        // One thread per watcher, as in `serve`: claims come and go while nodes are replaced
        // (which sets every gauge from the view). Claims keep changing after the last
        // replacement, so a count that went wrong in a race is never set right again.
        use std::sync::atomic::{AtomicBool, Ordering};
        let state = Arc::new(state(2));
        let nodes_done = Arc::new(AtomicBool::new(false));
        let nodes = {
            let (state, done) = (state.clone(), nodes_done.clone());
            std::thread::spawn(move || {
                for _ in 0..3_000 {
                    state.replace_nodes(vec![Node {
                        name: "edge".into(),
                        reported_gpus: Some(2),
                        ..Node::default()
                    }]);
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut round = 0u32;
        let mut after = 0;
        while after < 100 {
            let a = key(Kind::Deployment, &format!("d{}", round % 7));
            let held = (!round.is_multiple_of(3)).then(|| claim(a.clone(), round % 2, 1, 10));
            state.apply_claim(a, held);
            round += 1;
            if nodes_done.load(Ordering::SeqCst) {
                after += 1;
            }
        }
        nodes.join().unwrap();
        let (_, view) = state.snapshot();
        let held = view
            .claims()
            .filter(|c| c.key.kind == Kind::Deployment)
            .count();
        let text = state.metrics.render();
        assert!(
            text.contains(&format!("gpushare_modules{{kind=\"Deployment\"}} {held}")),
            "{held} held: {text}"
        );
    }

    #[test]
    fn gauges_follow_claims_in_place_and_lose_only_the_series_of_gpus_that_went_away() {
        let state = state(2);
        let a = key(Kind::Deployment, "a");
        let series = |gpu: u32, value: u32| {
            format!("gpushare_gpu_committed_mps_percentage{{node=\"edge\",gpu=\"{gpu}\",mode=\"mps\"}} {value}")
        };
        state.apply_claim(a.clone(), Some(claim(a.clone(), 1, 2, 30)));
        let text = state.metrics.render();
        assert!(text.contains(&series(1, 60)), "{text}");
        assert!(text.contains(&series(0, 0)), "{text}");
        assert!(
            text.contains("gpushare_modules{kind=\"Deployment\"} 1"),
            "{text}"
        );
        // The same claim again (status churn) changes nothing.
        state.apply_claim(a.clone(), Some(claim(a.clone(), 1, 2, 30)));
        assert!(state.metrics.render().contains(&series(1, 60)));
        state.apply_claim(a.clone(), None);
        let text = state.metrics.render();
        assert!(text.contains(&series(1, 0)), "{text}");
        assert!(
            text.contains("gpushare_modules{kind=\"Deployment\"} 0"),
            "{text}"
        );
        state.replace_nodes(vec![Node {
            name: "edge".into(),
            reported_gpus: Some(1),
            ..Node::default()
        }]);
        let text = state.metrics.render();
        assert!(text.contains(&series(0, 0)), "{text}");
        assert!(!text.contains("gpu=\"1\""), "{text}");
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
            matches!(decide_scale(&state, &a, 3).0, Verdict::Denied(_)),
            "3 x 40% > 100%"
        );
        let (verdict, change) = decide_scale(&state, &a, 2);
        assert!(matches!(verdict, Verdict::Allowed(_)));
        assert_eq!(change, Some(ClaimChange::Hold(claim(a.clone(), 0, 2, 40))));
        let (_, unmanaged) = decide_scale(&state, &key(Kind::Deployment, "plain"), 50);
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

    fn stored_object(kind: Kind, object: serde_json::Value) -> StoredObject {
        let object: crate::cluster::stored::StoredWorkload =
            serde_json::from_value(object).unwrap();
        crate::cluster::convert::stored(kind, object)
    }

    fn template(gpu: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"annotations": {"gpushare.io/assigned-gpu": gpu, "gpushare.io/assigned-mode": "mps",
                "gpushare.io/assigned-mps-percentage": "40"}},
            "spec": {"containers": [{"name": "c", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": gpu},
                {"name": "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "value": "40"}]}]}
        })
    }

    fn replica_set(uid: &str, gpu: &str) -> StoredObject {
        stored_object(
            Kind::ReplicaSet,
            serde_json::json!({"metadata": {"name": "rs", "namespace": "ns", "uid": uid},
                "spec": {"replicas": 0, "template": template(gpu)}}),
        )
    }

    fn pod(owner_uid: &str) -> StoredObject {
        let mut pod = template("0");
        pod["metadata"]["name"] = "p".into();
        pod["metadata"]["namespace"] = "ns".into();
        pod["metadata"]["ownerReferences"] = serde_json::json!([{"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": "rs", "uid": owner_uid, "controller": true}]);
        stored_object(Kind::Pod, pod)
    }

    #[test]
    fn a_pod_counts_on_its_own_until_its_controller_shows_it_carries_the_same_template() {
        let state = state(1);
        let p = key(Kind::Pod, "p");
        let counted = |state: &ClusterState| state.snapshot().1.claim(&p).cloned();
        state.apply_stored(p.clone(), Some(pod("rs-uid")));
        assert_eq!(
            counted(&state).map(|c| c.committed_percentage()),
            Some(40),
            "an owner the cache does not know: the pod is a module of its own"
        );
        state.apply_stored(
            key(Kind::ReplicaSet, "rs"),
            Some(replica_set("rs-uid", "0")),
        );
        assert_eq!(
            counted(&state),
            None,
            "made by its ReplicaSet: the template counts"
        );
        // The ReplicaSet's template moves to GPU 1: the pod on GPU 0 is no longer its copy.
        state.apply_stored(
            key(Kind::ReplicaSet, "rs"),
            Some(replica_set("rs-uid", "1")),
        );
        assert!(
            counted(&state).is_some(),
            "a pod unlike its controller's template counts"
        );
        state.apply_stored(
            key(Kind::ReplicaSet, "rs"),
            Some(replica_set("rs-uid", "0")),
        );
        assert_eq!(counted(&state), None);
        // A forged uid never matches; a deleted owner no longer vouches.
        state.apply_stored(p.clone(), Some(pod("forged")));
        assert!(counted(&state).is_some());
        state.apply_stored(p.clone(), Some(pod("rs-uid")));
        state.apply_stored(key(Kind::ReplicaSet, "rs"), None);
        assert!(counted(&state).is_some(), "its owner is gone");
    }

    #[tokio::test]
    async fn an_admission_waits_for_an_owner_the_cache_has_not_seen_yet() {
        let state = Arc::new(state(1));
        let waiter = {
            let state = state.clone();
            tokio::spawn(async move {
                state
                    .wait_for_owner(std::time::Duration::from_secs(30), |view| {
                        view.knows_owner("late")
                    })
                    .await;
                state.knows_owner("late")
            })
        };
        tokio::task::yield_now().await;
        state.apply_stored(key(Kind::ReplicaSet, "rs"), Some(replica_set("late", "0")));
        assert!(waiter.await.unwrap(), "woken when the owner arrived");
    }

    #[test]
    fn workloads_stored_with_hand_written_variables_count_unless_the_policy_allows_them() {
        let state = state(1);
        let job = key(Kind::Job, "sample");
        let object = stored_object(
            Kind::Job,
            serde_json::json!({"metadata": {"name": "sample", "namespace": "ns"},
                "spec": {"template": {"spec": {"containers": [{"name": "c",
                    "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "0"},
                        {"name": "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "value": "60"}]}]}}}}),
        );
        state.apply_stored(job.clone(), Some(object));
        let counted = |state: &ClusterState| {
            state
                .snapshot()
                .1
                .claim(&job)
                .map(Claim::committed_percentage)
        };
        assert_eq!(counted(&state), Some(60));
        state
            .set_policy(Policy::from_yaml("gpuModes: {0: mps}\nhandWrittenGpuEnv: allow").unwrap());
        assert_eq!(counted(&state), None);
        state.set_policy(Policy::from_yaml("gpuModes: {0: mps}").unwrap());
        assert_eq!(counted(&state), Some(60));
    }

    #[test]
    fn readiness_needs_every_cache_and_the_ledger() {
        let state = state(1);
        assert!(!state.ready());
        state.mark_synced(Cache::Nodes);
        state.mark_synced(Cache::Policy);
        state.mark_synced(Cache::Workloads(Kind::Deployment));
        state.mark_synced(Cache::Workloads(Kind::Job));
        state.mark_synced(Cache::Ledger);
        assert!(!state.ready(), "the namespaces have not synced");
        state.mark_synced(Cache::Namespaces);
        assert!(state.ready());
    }
}
