//! The cluster's live view, fed by the watchers and read by admissions: nodes, the policy, the
//! claims of the stored workloads of every watched kind, and the ledger of commitments recorded in
//! the API server (`ledger`). Decisions count the ledger's entry for a workload, or what the stored
//! workload holds when the ledger has none (objects admitted before the ledger existed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::convert::{Held, StoredObject};
use super::ledger::{self, Entry, Ledger};
use crate::core::claim::{Claim, ClaimChange};
use crate::core::inventory::{Inventory, Node, PodSecurity};
use crate::core::policy::Policy;
use crate::core::record::{with_pending, Version};
use crate::core::status::RunningPods;
use crate::core::workload::{Kind, WorkloadKey};
use crate::webhook::metrics::{CacheLabels, GpuLabels, Metrics};

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
    /// What each stored workload may hold, from the watch caches (only those that may hold anything).
    stored: HashMap<WorkloadKey, Held>,
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
pub const OWNER_WAIT: Duration = Duration::from_millis(1500);

/// More changes than this at once (a relist, a new ledger) refresh every gauge in one pass.
const BULK_CHANGES: usize = 32;

/// What one workload counted as before and after the caches changed: not a commit (those are
/// `ClaimChange`s, through the record), only what the gauges must follow.
type Recount = (Option<Claim>, Option<Claim>);

pub struct ClusterState {
    inner: Mutex<Inner>,
    /// Woken whenever the owners the cache knows change.
    owners_changed: tokio::sync::Notify,
    /// Woken whenever the ledger reading changes.
    ledger_changed: tokio::sync::Notify,
    /// Until when (ms since the epoch) commits wait: the ledger was read other than through its
    /// watch, so entries may have left unseen (`ledger::RELIST_HOLD`).
    commits_held_until_ms: AtomicU64,
    /// The caches readiness waits for.
    required: Vec<Cache>,
    metrics: Arc<Metrics>,
}

impl Inner {
    /// What the stored workload `key` holds now: its owner checked, the policy applied. Computed
    /// when asked rather than kept: a copy of every claim would cost a map entry per workload.
    fn held(&self, key: &WorkloadKey) -> Option<&Claim> {
        self.stored
            .get(key)
            .and_then(|held| held.counted(&self.view, &self.policy))
    }

    /// What `key` counts as: its ledger entry, else what the stored object holds; the change, if any.
    fn refresh_claim(&mut self, key: &WorkloadKey) -> Option<Recount> {
        if self
            .ghosts
            .get(key)
            .is_some_and(|ghost| self.held(key) == Some(&ghost.claim))
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
            .or_else(|| self.held(key));
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
            ledger_changed: tokio::sync::Notify::new(),
            commits_held_until_ms: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                policy: Arc::new(policy),
                stored: HashMap::new(),
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
            .map(|claim| &*claim.key.namespace)
            .filter(|namespace| !inner.policy.is_excluded(namespace))
            .map(str::to_string)
            .collect();
        (with_modules, inner.labelled.clone())
    }

    /// Whether the cache knows the owner with `uid` (and would check an object against it).
    pub fn knows_owner(&self, uid: &str) -> bool {
        self.lock().view.knows_owner(uid)
    }

    /// Waits up to `wait` until `ready` holds of the view, re-checking whenever the owners change:
    /// an object a controller just made may reach gpushare before the watch event of its controller.
    pub async fn wait_for_owner(&self, wait: Duration, ready: impl Fn(&Inventory) -> bool) {
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
        // In name order, the last of a name winning, as a watch's events would leave them.
        let by_name: BTreeMap<String, Node> =
            nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        inner.view.set_nodes(by_name.into_values().collect());
        self.publish_all(&mut inner);
    }

    pub fn apply_node(&self, node: Node) {
        let mut inner = self.lock();
        // Node status churn changes nothing gpushare reads.
        if inner.view.upsert_node(node) {
            self.publish_all(&mut inner);
        }
    }

    pub fn delete_node(&self, name: &str) {
        let mut inner = self.lock();
        if inner.view.remove_node(name) {
            self.publish_all(&mut inner);
        }
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
        let now = ledger::now_ms();
        let left: Vec<(WorkloadKey, Entry)> = inner
            .ledger
            .entries
            .iter()
            .filter(|(key, entry)| {
                !ledger.entries.contains_key(*key)
                    && inner.held(key) != Some(&entry.claim)
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
        drop(inner);
        self.ledger_changed.notify_waiters();
    }

    /// Waits up to `wait` for a ledger reading other than `version` (the one a write conflicted
    /// on): the watch delivers every version, so no entry goes by unseen. False if none came.
    pub async fn ledger_moved_from(&self, version: &Option<String>, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.ledger_changed.notified();
            if self.lock().ledger.resource_version != *version {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// The ledger was read other than through its watch (a relist, or a read after the watch
    /// fell behind): commits wait `ledger::RELIST_HOLD`, while the caches catch up with the stored
    /// workloads of entries that may have left unseen.
    pub fn hold_commits(&self) {
        let until = ledger::now_ms() + ledger::RELIST_HOLD.as_millis() as u64;
        self.commits_held_until_ms
            .fetch_max(until, Ordering::Relaxed);
    }

    /// How much longer commits wait, if they do.
    pub fn commits_held_for(&self) -> Option<Duration> {
        let until = self.commits_held_until_ms.load(Ordering::Relaxed);
        let left = until.saturating_sub(ledger::now_ms());
        (left > 0).then(|| Duration::from_millis(left))
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
        drop(inner);
        self.ledger_changed.notify_waiters();
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

    /// What the ledger must change to match the stored workloads (entries shown stored leave
    /// once `min_age` old).
    pub fn reconcile_edits(&self, now_ms: u64, min_age: Duration) -> Vec<ClaimChange> {
        let inner = self.lock();
        ledger::reconcile(&inner.ledger, |key| inner.held(key), now_ms, min_age)
    }

    /// Runs `read` on the policy and the view with `pending` applied, and returns the ledger
    /// reading it saw: the precondition of the commit a decision makes.
    pub fn read(
        &self,
        pending: &[ClaimChange],
        read: &mut dyn FnMut(&Policy, &Inventory),
    ) -> Version {
        let mut inner = self.lock();
        let Inner {
            policy,
            view,
            ledger,
            ..
        } = &mut *inner;
        with_pending(view, pending, |view| read(policy, view));
        Version(ledger.resource_version.clone())
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
}

mod gauges;
#[cfg(test)]
pub(crate) mod tests;
