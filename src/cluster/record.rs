//! The cluster's record (`core::record::Record`): what is committed is what the caches show of the
//! stored workloads plus the ledger of commitments in flight, and a commit is one entry written to
//! the ledger ConfigMap with a resourceVersion precondition (the reading the decision was made
//! on), after the namespace is labelled for the scale webhook. Its housekeeping removes the
//! entries the stored workloads now show.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter};
use kube::{Api, Resource};
use serde_json::{json, Map, Value};

use super::ledger::{self, Ledger};
use super::registration::Registration;
use super::state::ClusterState;
use crate::core::claim::ClaimChange;
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::record::{CommitError, Record, Version};
use crate::webhook::commit::Committer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The resourceVersion precondition failed: someone else wrote first.
    Conflict,
    NotFound,
    AlreadyExists,
    Other(String),
}

/// Where the ledger ConfigMap lives: the API server, or an in-memory stand-in in tests.
pub trait LedgerStore: Send + Sync {
    fn get(&self) -> BoxFuture<'_, Result<Option<ConfigMap>, StoreError>>;
    /// A JSON merge patch of `data`, only if the ConfigMap is still at `resource_version`.
    fn patch(
        &self,
        resource_version: String,
        data: Map<String, Value>,
    ) -> BoxFuture<'_, Result<ConfigMap, StoreError>>;
    fn create(&self, data: Map<String, Value>) -> BoxFuture<'_, Result<ConfigMap, StoreError>>;
    /// Tells the operator what gpushare found wrong in the ledger (an Event on the ConfigMap).
    fn report<'a>(&'a self, reason: &'a str, note: &'a str) -> BoxFuture<'a, ()>;
}

/// The ledger ConfigMap in the API server.
pub struct ApiStore {
    pub api: Api<ConfigMap>,
    pub name: String,
}

fn store_error(error: kube::Error) -> StoreError {
    match &error {
        kube::Error::Api(status) if status.code == 409 && status.reason == "AlreadyExists" => {
            StoreError::AlreadyExists
        }
        kube::Error::Api(status) if status.code == 409 => StoreError::Conflict,
        kube::Error::Api(status) if status.code == 404 => StoreError::NotFound,
        _ => StoreError::Other(error.to_string()),
    }
}

/// The ledger write: `data` merged only if the ConfigMap is still at `resource_version` (a
/// resourceVersion in a merge patch is a precondition: 409 if the object moved on).
/// `managedFields: [{}]` resets the field ownership first, so the object lists only the keys of
/// the last write instead of every entry's key a second time (a third of its size, and work for
/// the API server on every write); nothing else manages it.
fn merge_patch(resource_version: String, data: Map<String, Value>) -> Value {
    json!({
        "metadata": {"resourceVersion": resource_version, "managedFields": [{}]},
        "data": data
    })
}

impl LedgerStore for ApiStore {
    fn get(&self) -> BoxFuture<'_, Result<Option<ConfigMap>, StoreError>> {
        Box::pin(async move { self.api.get_opt(&self.name).await.map_err(store_error) })
    }

    fn report<'a>(&'a self, reason: &'a str, note: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(Some(cm)) = self.api.get_opt(&self.name).await else {
                return;
            };
            let reporter = Reporter {
                controller: "gpushare".into(),
                instance: std::env::var("POD_NAME").ok(),
            };
            let recorder = Recorder::new(self.api.clone().into_client(), reporter);
            let event = K8sEvent {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(note.chars().take(1000).collect()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &cm.object_ref(&())).await {
                tracing::warn!(%error, "could not record an Event on the ledger");
            }
        })
    }

    fn patch(
        &self,
        resource_version: String,
        data: Map<String, Value>,
    ) -> BoxFuture<'_, Result<ConfigMap, StoreError>> {
        Box::pin(async move {
            let patch = merge_patch(resource_version, data);
            self.api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(store_error)
        })
    }

    fn create(&self, data: Map<String, Value>) -> BoxFuture<'_, Result<ConfigMap, StoreError>> {
        Box::pin(async move {
            let data = data
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                .collect();
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.name.clone()),
                    labels: Some(
                        [
                            ("app.kubernetes.io/name".to_string(), "gpushare".to_string()),
                            (
                                "app.kubernetes.io/component".to_string(),
                                "ledger".to_string(),
                            ),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            self.api
                .create(&PostParams::default(), &cm)
                .await
                .map_err(store_error)
        })
    }
}

use super::ledger::now_ms;

/// How long a replica whose write conflicted waits for its ledger watch to show what moved on
/// before it reads the ledger from the API server instead.
const CATCH_UP: Duration = Duration::from_secs(1);

/// The ledger in the API server, with the caches of one replica.
pub struct LedgerRecord {
    pub state: Arc<ClusterState>,
    pub store: Arc<dyn LedgerStore>,
    /// Labels a namespace before its first module is recorded (the scale webhook's selector).
    registration: Option<Arc<dyn Registration>>,
}

impl LedgerRecord {
    pub fn new(state: Arc<ClusterState>, store: Arc<dyn LedgerStore>) -> LedgerRecord {
        LedgerRecord {
            state,
            store,
            registration: None,
        }
    }

    /// Also labels the namespace of each newly held claim before recording it.
    pub fn with_registration(mut self, registration: Arc<dyn Registration>) -> LedgerRecord {
        self.registration = Some(registration);
        self
    }

    /// The scale webhook sees only labelled namespaces: the label is written before the first
    /// module of a namespace is, so its scale requests are checked from then on.
    async fn label_namespace(&self, change: &ClaimChange) -> Result<(), String> {
        let (Some(registration), ClaimChange::Hold(claim)) = (&self.registration, change) else {
            return Ok(());
        };
        let namespace = &claim.key.namespace;
        let state = &self.state;
        if state.namespace_labelled(namespace) || state.policy().is_excluded(namespace) {
            return Ok(());
        }
        registration.label_namespace(namespace, true).await?;
        state.set_namespace_labelled(namespace, true);
        Ok(())
    }

    /// After a conflict on `version`: the reading that moved on, from the watch (it delivers
    /// every version, so no entry goes by unseen and one can leave the ledger as soon as its stored
    /// workload shows it); when the watch is slower than `CATCH_UP`, from the API server, and then
    /// commits wait for the caches (`ClusterState::hold_commits`).
    async fn catch_up(&self, version: &Option<String>) {
        if !self.state.ledger_moved_from(version, CATCH_UP).await {
            tracing::debug!("the ledger watch is behind; reading the ledger");
            self.state.hold_commits();
            self.refresh().await;
        }
    }

    /// Reads the ledger from the API server.
    async fn refresh(&self) {
        match self.store.get().await {
            Ok(Some(cm)) => self.state.set_ledger(Ledger::from_configmap(&cm)),
            Ok(None) => self.state.set_ledger(Ledger::default()),
            Err(error) => tracing::debug!(?error, "could not read the ledger"),
        }
    }

    /// One round of housekeeping: removes the entries the stored workloads now show (or that
    /// expired). A conflict is left to the next round. Hold `Committer::serialized` around it.
    pub async fn reconcile(&self) {
        let state = &self.state;
        if !state.is_synced() {
            return;
        }
        let now = now_ms();
        state.expire_ghosts(now);
        // Entries younger than a round are left to the next commit, which carries their removal
        // at no cost: under load the housekeeping then writes nothing, and races no admission.
        let freed = state.reconcile_edits(now, ledger::RECONCILE_PERIOD);
        let unreadable = state.unreadable_ledger_entries();
        if freed.is_empty() && unreadable.is_empty() {
            return;
        }
        let mut data = ledger::patch_data(&freed, now);
        data.extend(ledger::removal_data(&unreadable));
        let version = state.ledger_version();
        let result = match version.clone() {
            Some(version) => self.store.patch(version, data).await,
            None => self.store.create(data).await,
        };
        match result {
            Ok(cm) => {
                tracing::debug!(
                    removed = freed.len(),
                    "ledger entries the stored workloads now show removed"
                );
                state.set_ledger(Ledger::from_configmap(&cm));
                if !unreadable.is_empty() {
                    let note = format!(
                        "removed {} ledger entries gpushare cannot read (edited by hand?): {}; what the stored \
                         workloads hold still counts",
                        unreadable.len(),
                        unreadable.join(", ")
                    );
                    tracing::warn!(entries = ?unreadable, "unreadable ledger entries removed");
                    self.store.report("UnreadableLedgerEntries", &note).await;
                }
            }
            Err(StoreError::Other(error)) => {
                tracing::warn!(%error, "could not reconcile the ledger")
            }
            Err(_) => self.catch_up(&version).await,
        }
    }
}

impl Record for LedgerRecord {
    fn read(&self, pending: &[ClaimChange], read: &mut dyn FnMut(&Policy, &Inventory)) -> Version {
        self.state.read(pending, read)
    }

    fn counts(&self, change: &ClaimChange) -> bool {
        self.state.counts(change)
    }

    fn commit<'a>(
        &'a self,
        changes: &'a [ClaimChange],
        against: Version,
    ) -> BoxFuture<'a, Result<Version, CommitError>> {
        Box::pin(async move {
            if let Some(wait) = self.state.commits_held_for() {
                // Decided before the caches caught up: wait, then decide again.
                tokio::time::sleep(wait).await;
                return Err(CommitError::Conflict);
            }
            for change in changes {
                self.label_namespace(change)
                    .await
                    .map_err(CommitError::Unavailable)?;
            }
            let now = now_ms();
            // The housekeeping rides along: entries the stored workloads now show leave with this
            // write rather than a write of their own (a batch's own changes win over it).
            let mut data = match self.state.is_synced() {
                true => ledger::patch_data(&self.state.reconcile_edits(now, Duration::ZERO), now),
                false => Map::new(),
            };
            data.extend(ledger::patch_data(changes, now));
            // The reading the decisions were made against, not the one now: a ledger that moved
            // on in between (another replica's write seen by the watch) must refuse this write.
            let result = match &against.0 {
                Some(version) => self.store.patch(version.clone(), data).await,
                None => self.store.create(data).await,
            };
            match result {
                Ok(cm) => {
                    let written = Version(cm.metadata.resource_version.clone());
                    self.state.set_ledger(Ledger::from_configmap(&cm));
                    Ok(written)
                }
                Err(StoreError::Conflict | StoreError::NotFound | StoreError::AlreadyExists) => {
                    self.catch_up(&against.0).await;
                    Err(CommitError::Conflict)
                }
                // The write may have landed or not: the watch tells.
                Err(StoreError::Other(error)) => Err(CommitError::Unavailable(error)),
            }
        })
    }
}

/// The ledger's housekeeping every `RECONCILE_PERIOD`, between this replica's commits.
pub async fn reconcile_forever(committer: Arc<Committer<LedgerRecord>>) {
    let mut tick = tokio::time::interval(ledger::RECONCILE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _guard = committer.serialized().await;
        committer.record.reconcile().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    use crate::cluster::state::tests::{deployment, state};
    use crate::cluster::state::Cache;
    use crate::core::decision::{self, Operation, Request};
    use crate::core::record::decide_on;
    use crate::core::verdict::{Rule, Verdict};
    use crate::core::workload::{Kind, Workload};

    /// One replica: its caches (`state`) and its committer on the shared ledger `store`, whose
    /// writes its watch shows at once.
    fn replica(
        state: ClusterState,
        store: Arc<MemoryStore>,
        budget: Duration,
    ) -> (Arc<ClusterState>, Committer<LedgerRecord>) {
        let state = Arc::new(state);
        store.watch(&state, false);
        let record = Arc::new(LedgerRecord::new(state.clone(), store));
        (state, Committer::with_budget(record, budget))
    }

    /// A replica whose ledger watch is behind (`Some(lagging)`) or gone (`None`).
    fn behind(
        store: Arc<MemoryStore>,
        lagging: Option<bool>,
    ) -> (Arc<ClusterState>, Committer<LedgerRecord>) {
        let state = Arc::new(state(1));
        if let Some(lagging) = lagging {
            store.watch(&state, lagging);
        }
        let record = Arc::new(LedgerRecord::new(state.clone(), store));
        (state, Committer::with_budget(record, BUDGET))
    }

    /// Every cache the replica waits for has synced: its housekeeping runs.
    fn all_synced(state: &ClusterState) {
        for cache in [
            Cache::Nodes,
            Cache::Policy,
            Cache::Ledger,
            Cache::Namespaces,
            Cache::Workloads(Kind::Deployment),
            Cache::Workloads(Kind::Job),
        ] {
            state.mark_synced(cache);
        }
    }

    const BUDGET: Duration = crate::webhook::commit::COMMIT_BUDGET;

    /// The ledger ConfigMap with the API server's optimistic concurrency, in memory, and the
    /// replicas' watches of it.
    #[derive(Default)]
    struct MemoryStore {
        object: Mutex<Option<ConfigMap>>,
        revision: Mutex<u64>,
        /// What `report` was told.
        reports: Mutex<Vec<String>>,
        /// Every write fails with this, when set: an API server that is away.
        failing: Option<String>,
        watches: Mutex<Vec<Watch>>,
    }

    /// A replica's watch: every written version, in order; a lagging one holds them back until
    /// a write conflicts (by then a real watch has caught up too).
    struct Watch {
        state: Arc<ClusterState>,
        lagging: bool,
        held: Vec<ConfigMap>,
    }

    impl MemoryStore {
        fn bump(&self, cm: &mut ConfigMap) {
            let mut revision = self.revision.lock().unwrap();
            *revision += 1;
            cm.metadata.resource_version = Some(revision.to_string());
        }

        fn watch(&self, state: &Arc<ClusterState>, lagging: bool) {
            self.watches.lock().unwrap().push(Watch {
                state: state.clone(),
                lagging,
                held: Vec::new(),
            });
        }

        fn deliver(&self, cm: &ConfigMap) {
            for watch in self.watches.lock().unwrap().iter_mut() {
                match watch.lagging {
                    true => watch.held.push(cm.clone()),
                    false => watch.state.set_ledger(Ledger::from_configmap(cm)),
                }
            }
        }

        fn catch_up_watches(&self) {
            for watch in self.watches.lock().unwrap().iter_mut() {
                for cm in watch.held.drain(..) {
                    watch.state.set_ledger(Ledger::from_configmap(&cm));
                }
            }
        }

        /// A write's answer, as the watches see it too.
        fn answer(&self, result: Result<ConfigMap, StoreError>) -> Result<ConfigMap, StoreError> {
            match &result {
                Ok(cm) => self.deliver(cm),
                Err(StoreError::Conflict | StoreError::AlreadyExists | StoreError::NotFound) => {
                    self.catch_up_watches()
                }
                Err(StoreError::Other(_)) => {}
            }
            result
        }
    }

    impl LedgerStore for MemoryStore {
        fn report<'a>(&'a self, reason: &'a str, note: &'a str) -> BoxFuture<'a, ()> {
            self.reports
                .lock()
                .unwrap()
                .push(format!("{reason}: {note}"));
            Box::pin(std::future::ready(()))
        }

        fn get(&self) -> BoxFuture<'_, Result<Option<ConfigMap>, StoreError>> {
            Box::pin(async move { Ok(self.object.lock().unwrap().clone()) })
        }

        fn patch(
            &self,
            version: String,
            data: Map<String, Value>,
        ) -> BoxFuture<'_, Result<ConfigMap, StoreError>> {
            Box::pin(async move {
                if let Some(error) = &self.failing {
                    return Err(StoreError::Other(error.clone()));
                }
                let result = (|| {
                    let mut object = self.object.lock().unwrap();
                    let Some(cm) = object.as_mut() else {
                        return Err(StoreError::NotFound);
                    };
                    if cm.metadata.resource_version.as_deref() != Some(&version) {
                        return Err(StoreError::Conflict);
                    }
                    let entries = cm.data.get_or_insert_with(Default::default);
                    for (key, value) in data {
                        match value.as_str() {
                            Some(text) => entries.insert(key, text.to_string()),
                            None => entries.remove(&key),
                        };
                    }
                    self.bump(cm);
                    Ok(cm.clone())
                })();
                self.answer(result)
            })
        }

        fn create(&self, data: Map<String, Value>) -> BoxFuture<'_, Result<ConfigMap, StoreError>> {
            Box::pin(async move {
                if let Some(error) = &self.failing {
                    return Err(StoreError::Other(error.clone()));
                }
                let result = (|| {
                    let mut object = self.object.lock().unwrap();
                    if object.is_some() {
                        return Err(StoreError::AlreadyExists);
                    }
                    let mut cm = ConfigMap {
                        data: Some(
                            data.into_iter()
                                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                                .collect(),
                        ),
                        ..ConfigMap::default()
                    };
                    self.bump(&mut cm);
                    *object = Some(cm.clone());
                    Ok(cm)
                })();
                self.answer(result)
            })
        }
    }

    async fn admit(
        committer: &Committer<LedgerRecord>,
        object: &Workload,
        dry_run: bool,
    ) -> Verdict {
        let request = Request {
            operation: Operation::Create,
            object,
            old_object: None,
        };
        committer
            .decide_and_commit(&object.key, dry_run, |policy, inventory| {
                decision::decide(&request, policy, inventory)
            })
            .await
    }

    fn allowed(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Allowed(_))
    }

    #[tokio::test]
    async fn two_replicas_that_each_see_room_cannot_both_commit_it() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        // Two replicas with their own caches, which show neither's commitment.
        let (_one, c1) = replica(state(1), store.clone(), BUDGET);
        let (two, c2) = behind(store.clone(), Some(true));
        assert!(allowed(&admit(&c1, &deployment("a", 1, 60), false).await));
        // Replica two's watch lags: it decides on an empty ledger, conflicts, sees the write
        // through its watch and denies, with no read of its own and no hold.
        let verdict = admit(&c2, &deployment("b", 1, 60), false).await;
        assert!(two.commits_held_for().is_none());
        assert!(
            matches!(&verdict, Verdict::Denied(d) if d.rule == Rule::Capacity),
            "{verdict:?}"
        );
        let stored = store.object.lock().unwrap().clone().unwrap();
        assert_eq!(Ledger::from_configmap(&stored).entries.len(), 1);
    }

    #[tokio::test]
    async fn a_replica_whose_watch_is_stuck_reads_the_ledger_and_holds_its_commits() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let (_one, c1) = replica(state(1), store.clone(), BUDGET);
        let (two, c2) = behind(store.clone(), None);
        assert!(allowed(&admit(&c1, &deployment("a", 1, 60), false).await));
        // No watch event comes: after `CATCH_UP` replica two reads the ledger itself, and since
        // entries may have gone by unseen, its commits wait until its caches could catch up.
        let verdict = admit(&c2, &deployment("b", 1, 60), false).await;
        assert!(
            matches!(&verdict, Verdict::Denied(d) if d.rule == Rule::Capacity),
            "{verdict:?}"
        );
        assert!(two.commits_held_for().is_some(), "read around the watch");
        // What still fits is admitted once the hold is over, within the budget.
        let c2 = Committer::with_budget(c2.record.clone(), Duration::from_secs(30));
        assert!(allowed(&admit(&c2, &deployment("c", 1, 40), false).await));
        assert!(two.commits_held_for().is_none());
        let stored = store.object.lock().unwrap().clone().unwrap();
        assert_eq!(Ledger::from_configmap(&stored).entries.len(), 2);
    }

    #[tokio::test]
    async fn many_concurrent_admissions_never_exceed_capacity() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let replicas: Vec<Arc<Committer<LedgerRecord>>> = (0..3)
            .map(|_| Arc::new(replica(state(1), store.clone(), BUDGET).1))
            .collect();
        let mut tasks = Vec::new();
        for i in 0..30 {
            let committer = replicas[i % 3].clone();
            tasks.push(tokio::spawn(async move {
                let object = deployment(&format!("m{i}"), 1, 10);
                allowed(&admit(&committer, &object, false).await)
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += u32::from(task.await.unwrap());
        }
        assert_eq!(admitted, 10, "30 modules of 10% on one GPU");
    }

    #[tokio::test]
    async fn dry_runs_and_unchanged_admissions_write_nothing() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let (state, committer) = replica(state(1), store.clone(), BUDGET);
        assert!(allowed(
            &admit(&committer, &deployment("a", 1, 60), true).await
        ));
        assert!(
            store.object.lock().unwrap().is_none(),
            "a dry run recorded something"
        );
        assert!(allowed(
            &admit(&committer, &deployment("a", 1, 60), false).await
        ));
        let version = state.ledger_version();
        assert!(allowed(
            &admit(&committer, &deployment("a", 1, 60), false).await
        ));
        assert_eq!(
            state.ledger_version(),
            version,
            "the same allocation again wrote the ledger"
        );
    }

    #[tokio::test]
    async fn an_unreachable_ledger_denies_and_says_so() {
        let store = Arc::new(MemoryStore {
            failing: Some("connection refused".into()),
            ..MemoryStore::default()
        });
        let (_state, committer) = replica(state(1), store, Duration::from_millis(300));
        let verdict = admit(&committer, &deployment("a", 1, 60), false).await;
        match verdict {
            Verdict::Denied(d) => {
                assert_eq!((d.rule, d.code()), (Rule::Unrecorded, 503));
                assert!(
                    d.message.contains("could not record")
                        && d.message.contains("connection refused"),
                    "{}",
                    d.message
                );
            }
            other => panic!("allowed unrecorded: {other:?}"),
        }
    }

    #[tokio::test]
    async fn reconciliation_empties_the_ledger_and_only_what_was_stored_still_counts() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let (state, committer) = replica(state(1), store.clone(), BUDGET);
        all_synced(&state);
        // Two commitments written long ago; only `kept` was stored.
        let old = now_ms() - 60_000;
        let (kept, lost) = (deployment("kept", 1, 30), deployment("lost", 1, 30));
        for object in [&kept, &lost] {
            let request = Request {
                operation: Operation::Create,
                object,
                old_object: None,
            };
            let (verdict, _) = decide_on(&*committer.record, &[], |p, i| {
                decision::decide(&request, p, i)
            });
            let Verdict::Allowed(mutation) = verdict else {
                panic!("denied")
            };
            let change = mutation.outcome.claim_change(&object.key).unwrap();
            let data = ledger::patch_data(&[change], old);
            let cm = match state.ledger_version() {
                Some(v) => store.patch(v, data).await.unwrap(),
                None => store.create(data).await.unwrap(),
            };
            state.set_ledger(Ledger::from_configmap(&cm));
        }
        let (_, view) = state.snapshot();
        let kept_claim = view.claim(&kept.key).unwrap().clone();
        state.apply_claim(kept.key.clone(), Some(kept_claim));
        committer.record.reconcile().await;
        let stored = Ledger::from_configmap(&store.object.lock().unwrap().clone().unwrap());
        assert!(
            stored.entries.is_empty(),
            "the ledger holds what is in flight only: {:?}",
            stored.entries.keys()
        );
        let (_, view) = state.snapshot();
        assert!(
            view.claim(&kept.key).is_some(),
            "the stored workload still counts"
        );
        assert!(
            view.claim(&lost.key).is_none(),
            "a never-stored commitment was kept"
        );
    }

    #[test]
    fn a_ledger_write_is_conditional_and_resets_field_ownership() {
        let mut data = Map::new();
        data.insert("Deployment.ns.a".into(), Value::Null);
        let patch = merge_patch("42".into(), data);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(
            patch["metadata"]["managedFields"],
            json!([{}]),
            "without the reset the ledger lists every entry's key twice"
        );
        assert_eq!(patch["data"], json!({"Deployment.ns.a": null}));
    }

    #[tokio::test]
    async fn a_commit_also_removes_the_entries_the_stored_workloads_now_show() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let (state, committer) = replica(state(1), store.clone(), BUDGET);
        all_synced(&state);
        let stored = deployment("stored", 1, 30);
        assert!(allowed(&admit(&committer, &stored, false).await));
        // Its object is stored and shown by the caches, just now.
        let claim = state.snapshot().1.claim(&stored.key).unwrap().clone();
        state.apply_claim(stored.key.clone(), Some(claim));
        // The next commit carries the removal at once: no housekeeping round ran, and no
        // settling time (every replica's watch saw the entry: one whose caches lag keeps it).
        let next = deployment("next", 1, 30);
        assert!(allowed(&admit(&committer, &next, false).await));
        let ledger = Ledger::from_configmap(&store.object.lock().unwrap().clone().unwrap());
        let keys: Vec<_> = ledger.entries.keys().cloned().collect();
        assert_eq!(keys, std::slice::from_ref(&next.key));
        let (_, view) = state.snapshot();
        assert!(view.claim(&stored.key).is_some(), "still counted, stored");
    }

    #[tokio::test]
    async fn an_entry_another_replica_removed_before_this_ones_caches_showed_it_still_counts() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let (one, c1) = replica(state(1), store.clone(), BUDGET);
        let (two, c2) = replica(state(1), store.clone(), BUDGET);
        all_synced(&one);
        let module = deployment("a", 1, 60);
        assert!(allowed(&admit(&c1, &module, false).await));
        // Replica one's caches show the stored workload and its next commit removes the entry;
        // replica two's watch shows both writes, its workload cache not the object yet.
        let claim = one.snapshot().1.claim(&module.key).unwrap().clone();
        one.apply_claim(module.key.clone(), Some(claim));
        assert!(allowed(&admit(&c1, &deployment("b", 1, 10), false).await));
        assert_eq!(one.in_flight(), (1, 0));
        assert_eq!(two.in_flight(), (1, 1), "kept as a ghost");
        let verdict = admit(&c2, &deployment("b", 1, 60), false).await;
        assert!(
            matches!(&verdict, Verdict::Denied(d) if d.rule == Rule::Capacity),
            "60% + 10% + 60%: {verdict:?}"
        );
    }

    #[tokio::test]
    async fn entries_edited_into_nonsense_are_removed_with_an_event_and_never_counted() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let (state, committer) = replica(state(1), store.clone(), BUDGET);
        all_synced(&state);
        let mut data = Map::new();
        data.insert(
            "Deployment.ns.x".into(),
            Value::String("{\"gpu\": 0, \"pods\": -3}".into()),
        );
        let cm = store.create(data).await.unwrap();
        state.set_ledger(Ledger::from_configmap(&cm));
        assert!(allowed(
            &admit(&committer, &deployment("a", 1, 100), false).await
        ));
        committer.record.reconcile().await;
        let stored = store.object.lock().unwrap().clone().unwrap();
        assert!(
            !stored
                .data
                .unwrap_or_default()
                .contains_key("Deployment.ns.x"),
            "removed"
        );
        let reports = store.reports.lock().unwrap().clone();
        assert!(
            reports
                .iter()
                .any(|r| r.starts_with("UnreadableLedgerEntries") && r.contains("Deployment.ns.x")),
            "{reports:?}"
        );
    }
}
