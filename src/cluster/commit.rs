//! Committing: the step after deciding. An allowed, non-dry-run admission that changes what a
//! workload holds is recorded in the ledger before it is answered, with a resourceVersion
//! precondition; on conflict the ledger is read again and the request decided again, until the
//! budget runs out (then the admission is denied: never allowed unrecorded). The model is
//! Kubernetes' ResourceQuota admission, which charges quota usage the same way.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Map, Value};

use super::ledger::{self, Edit, Ledger};
use super::registration::Registration;
use super::state::{ClusterState, Decided, OWNER_WAIT};
use crate::core::claim::ClaimChange;
use crate::core::decision::Operation;
use crate::core::decision::Request;
use crate::core::handwritten;
use crate::core::verdict::{Denial, Rule, Verdict};
use crate::core::workload::WorkloadKey;
use crate::webhook::backend::Backend;

/// How long an admission may spend recording its commitment: well inside the webhook's
/// `timeoutSeconds: 5`, so a denial that says why reaches the user instead of a timeout.
pub const COMMIT_BUDGET: Duration = Duration::from_secs(3);

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

impl LedgerStore for ApiStore {
    fn get(&self) -> BoxFuture<'_, Result<Option<ConfigMap>, StoreError>> {
        Box::pin(async move { self.api.get_opt(&self.name).await.map_err(store_error) })
    }

    fn patch(
        &self,
        resource_version: String,
        data: Map<String, Value>,
    ) -> BoxFuture<'_, Result<ConfigMap, StoreError>> {
        Box::pin(async move {
            // A resourceVersion in a merge patch is a precondition: 409 if the object moved on.
            let patch = json!({"metadata": {"resourceVersion": resource_version}, "data": data});
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

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serializes this replica's writes, so that its own admissions never conflict with each other:
/// only another replica's write can make a precondition fail.
pub struct Committer {
    pub store: Arc<dyn LedgerStore>,
    /// Labels a namespace before its first module is recorded (the scale webhook's selector).
    registration: Option<Arc<dyn Registration>>,
    lock: tokio::sync::Mutex<()>,
    budget: Duration,
}

fn edit_of(change: ClaimChange) -> Edit {
    match change {
        ClaimChange::Hold(claim) => Edit {
            key: claim.key.clone(),
            claim: Some(claim),
        },
        ClaimChange::Free(key) => Edit { key, claim: None },
    }
}

fn unrecorded(reason: &str) -> Verdict {
    Verdict::Denied(Denial::new(
        Rule::Unrecorded,
        format!(
            "gpushare could not record this GPU commitment in the API server within {}s ({reason}); nothing was \
             committed and the object was not admitted: retry the request",
            COMMIT_BUDGET.as_secs()
        ),
    ))
}

impl Committer {
    pub fn new(store: Arc<dyn LedgerStore>) -> Committer {
        Committer::with_budget(store, COMMIT_BUDGET)
    }

    pub fn with_budget(store: Arc<dyn LedgerStore>, budget: Duration) -> Committer {
        Committer {
            store,
            registration: None,
            lock: tokio::sync::Mutex::new(()),
            budget,
        }
    }

    /// Also labels the namespace of each newly held claim before recording it.
    pub fn with_registration(mut self, registration: Arc<dyn Registration>) -> Committer {
        self.registration = Some(registration);
        self
    }

    /// The scale webhook sees only labelled namespaces: the label is written before the first
    /// module of a namespace is, so its scale requests are checked from then on.
    async fn label_namespace(&self, state: &ClusterState, edit: &Edit) -> Result<(), String> {
        let (Some(registration), Some(claim)) = (&self.registration, &edit.claim) else {
            return Ok(());
        };
        let namespace = &claim.key.namespace;
        if state.namespace_labelled(namespace) || state.policy().is_excluded(namespace) {
            return Ok(());
        }
        registration.label_namespace(namespace, true).await?;
        state.set_namespace_labelled(namespace, true);
        Ok(())
    }

    /// Decides `request` against the ledger and, unless `dry_run`, records what it commits.
    pub async fn admit(
        &self,
        state: &ClusterState,
        request: &Request<'_>,
        dry_run: bool,
    ) -> Verdict {
        self.decide_and_record(state, dry_run, || state.decide(request))
            .await
    }

    /// The commit loop around any decision (a workload's, or a scale's): the decision runs again
    /// after every conflict, against the ledger as it then is.
    pub async fn decide_and_record(
        &self,
        state: &ClusterState,
        dry_run: bool,
        decide: impl Fn() -> Decided,
    ) -> Verdict {
        let started = Instant::now();
        let Decided {
            verdict, change, ..
        } = decide();
        if dry_run {
            return verdict;
        }
        // Unmanaged, denied, or nothing new: no write, no wait (the common case).
        match change.map(edit_of) {
            Some(edit) if !state.counts(&edit) => {}
            _ => return verdict,
        }
        let Ok(_guard) = tokio::time::timeout(self.budget, self.lock.lock()).await else {
            return unrecorded("too many admissions waiting to record theirs");
        };
        let mut last_error: String;
        let mut conflicts = 0u32;
        loop {
            let Decided {
                verdict,
                change,
                ledger_version,
            } = decide();
            let edit = match change.map(edit_of) {
                Some(edit) if !state.counts(&edit) => edit,
                _ => return verdict,
            };
            if let Err(error) = self.label_namespace(state, &edit).await {
                tracing::warn!(%error, "could not label the namespace of a commitment; retrying");
                last_error = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
                if started.elapsed() >= self.budget {
                    return unrecorded(&last_error);
                }
                continue;
            }
            let written = now_ms();
            let data = ledger::patch_data(std::slice::from_ref(&edit), written);
            // The reading the decision was made against, not the one now: a ledger that moved on
            // in between (another replica's write seen by the watch) must refuse this write.
            let result = match ledger_version {
                Some(version) => self.store.patch(version, data).await,
                None => self.store.create(data).await,
            };
            match result {
                Ok(cm) => {
                    let size = cm
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>();
                    state.set_ledger(Ledger::from_configmap(&cm));
                    // What `make bench-cluster` reads: the commit's cost as gpushare sees it.
                    tracing::debug!(
                        object = %edit.key,
                        commit_us = started.elapsed().as_micros() as u64,
                        conflicts,
                        ledger_bytes = size,
                        "commit"
                    );
                    return verdict;
                }
                Err(StoreError::Conflict | StoreError::NotFound | StoreError::AlreadyExists) => {
                    conflicts += 1;
                    last_error = "the ledger changed; read again".into();
                    self.refresh(state).await;
                }
                Err(StoreError::Other(error)) => {
                    tracing::warn!(%error, "could not record a commitment; retrying");
                    last_error = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.refresh(state).await;
                }
            }
            if started.elapsed() >= self.budget {
                return unrecorded(&last_error);
            }
        }
    }

    /// Reads the ledger from the API server (after a conflict, or at start).
    pub async fn refresh(&self, state: &ClusterState) {
        match self.store.get().await {
            Ok(Some(cm)) => state.set_ledger(Ledger::from_configmap(&cm)),
            Ok(None) => state.set_ledger(Ledger::default()),
            Err(error) => tracing::debug!(?error, "could not read the ledger"),
        }
    }

    /// One reconciliation: frees and corrects what the stored workloads do not show. A conflict
    /// is left to the next round.
    pub async fn reconcile(&self, state: &ClusterState) {
        if !state.is_synced() {
            return;
        }
        let _guard = self.lock.lock().await;
        let now = now_ms();
        state.expire_ghosts(now);
        let edits = state.reconcile_edits(now);
        if edits.is_empty() {
            return;
        }
        let data = ledger::patch_data(&edits, now);
        let result = match state.ledger_version() {
            Some(version) => self.store.patch(version, data).await,
            None => self.store.create(data).await,
        };
        match result {
            Ok(cm) => {
                tracing::debug!(
                    removed = edits.len(),
                    "ledger entries the stored workloads now show removed"
                );
                state.set_ledger(Ledger::from_configmap(&cm));
            }
            Err(StoreError::Other(error)) => {
                tracing::warn!(%error, "could not reconcile the ledger")
            }
            Err(_) => self.refresh(state).await,
        }
    }
}

/// Reconciles every `RECONCILE_PERIOD`, for as long as the server runs.
pub async fn reconcile_forever(committer: Arc<Committer>, state: Arc<ClusterState>) {
    let mut tick = tokio::time::interval(ledger::RECONCILE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        committer.reconcile(&state).await;
    }
}

/// Cluster mode's backend: decisions from the caches, commitments recorded in the ledger.
pub struct ClusterBackend {
    pub state: Arc<ClusterState>,
    pub committer: Arc<Committer>,
}

impl ClusterBackend {
    /// An object a built-in controller just made may reach gpushare before the watch event of
    /// that controller (or of its latest template): give the cache a moment to show it, so that
    /// the object is recognised as the controller's and not counted a second time.
    async fn await_owner(&self, request: &Request<'_>) {
        let object = request.object;
        let Some(controller) = object.builtin_controller() else {
            return;
        };
        if !object.has_gpushare_annotations() && !handwritten::any(object) {
            return;
        }
        let fingerprint = object.gpu_fingerprint();
        // A new object carries its controller's current template; an older one may rightly differ.
        let new = request.operation == Operation::Create;
        self.state
            .wait_for_owner(OWNER_WAIT, |view| {
                if new {
                    view.trusts_owner(controller, fingerprint)
                } else {
                    view.knows_owner(&controller.uid)
                }
            })
            .await;
    }
}

impl Backend for ClusterBackend {
    fn admit<'a>(&'a self, request: &'a Request<'a>, dry_run: bool) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            self.await_owner(request).await;
            self.committer.admit(&self.state, request, dry_run).await
        })
    }

    fn scale<'a>(
        &'a self,
        key: &'a WorkloadKey,
        replicas: u32,
        dry_run: bool,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(
            self.committer
                .decide_and_record(&self.state, dry_run, move || {
                    self.state.decide_scale(key, replicas)
                }),
        )
    }

    fn ready(&self) -> bool {
        self.state.ready()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::cluster::state::tests::{deployment, state};
    use crate::cluster::state::Cache;
    use crate::core::workload::{Kind, Workload};

    /// The ledger ConfigMap with the API server's optimistic concurrency, in memory.
    #[derive(Default)]
    struct MemoryStore {
        object: Mutex<Option<ConfigMap>>,
        revision: Mutex<u64>,
        /// Every write fails with this, when set: an API server that is away.
        failing: Option<String>,
    }

    impl MemoryStore {
        fn bump(&self, cm: &mut ConfigMap) {
            let mut revision = self.revision.lock().unwrap();
            *revision += 1;
            cm.metadata.resource_version = Some(revision.to_string());
        }
    }

    impl LedgerStore for MemoryStore {
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
            })
        }

        fn create(&self, data: Map<String, Value>) -> BoxFuture<'_, Result<ConfigMap, StoreError>> {
            Box::pin(async move {
                if let Some(error) = &self.failing {
                    return Err(StoreError::Other(error.clone()));
                }
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
            })
        }
    }

    async fn admit(
        state: &ClusterState,
        committer: &Committer,
        object: &Workload,
        dry_run: bool,
    ) -> Verdict {
        let request = Request {
            operation: Operation::Create,
            object,
            old_object: None,
        };
        committer.admit(state, &request, dry_run).await
    }

    fn allowed(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Allowed(_))
    }

    #[tokio::test]
    async fn two_replicas_that_each_see_room_cannot_both_commit_it() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        // Two replicas with their own caches, which show neither's commitment.
        let (one, two) = (state(1), state(1));
        let (c1, c2) = (Committer::new(store.clone()), Committer::new(store.clone()));
        assert!(allowed(
            &admit(&one, &c1, &deployment("a", 1, 60), false).await
        ));
        // Replica two decides on a stale (empty) ledger, conflicts, reads again and denies.
        let verdict = admit(&two, &c2, &deployment("b", 1, 60), false).await;
        assert!(
            matches!(&verdict, Verdict::Denied(d) if d.rule == Rule::Capacity),
            "{verdict:?}"
        );
        let stored = store.object.lock().unwrap().clone().unwrap();
        assert_eq!(Ledger::from_configmap(&stored).entries.len(), 1);
    }

    #[tokio::test]
    async fn many_concurrent_admissions_never_exceed_capacity() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let replicas: Vec<(Arc<ClusterState>, Arc<Committer>)> = (0..3)
            .map(|_| (Arc::new(state(1)), Arc::new(Committer::new(store.clone()))))
            .collect();
        let mut tasks = Vec::new();
        for i in 0..30 {
            let (state, committer) = replicas[i % 3].clone();
            tasks.push(tokio::spawn(async move {
                let object = deployment(&format!("m{i}"), 1, 10);
                allowed(&admit(&state, &committer, &object, false).await)
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
        let (state, committer) = (state(1), Committer::new(store.clone()));
        assert!(allowed(
            &admit(&state, &committer, &deployment("a", 1, 60), true).await
        ));
        assert!(
            store.object.lock().unwrap().is_none(),
            "a dry run recorded something"
        );
        assert!(allowed(
            &admit(&state, &committer, &deployment("a", 1, 60), false).await
        ));
        let version = state.ledger_version();
        assert!(allowed(
            &admit(&state, &committer, &deployment("a", 1, 60), false).await
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
        let (state, committer) = (
            state(1),
            Committer::with_budget(store, Duration::from_millis(300)),
        );
        let verdict = admit(&state, &committer, &deployment("a", 1, 60), false).await;
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
        let (state, committer) = (state(1), Committer::new(store.clone()));
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
        // Two commitments written long ago; only `kept` was stored.
        let old = now_ms() - 60_000;
        let (kept, lost) = (deployment("kept", 1, 30), deployment("lost", 1, 30));
        for object in [&kept, &lost] {
            let Decided {
                verdict, change, ..
            } = state.decide(&Request {
                operation: Operation::Create,
                object,
                old_object: None,
            });
            assert!(allowed(&verdict));
            let edit = edit_of(change.unwrap());
            let data = ledger::patch_data(&[edit], old);
            let cm = match state.ledger_version() {
                Some(v) => store.patch(v, data).await.unwrap(),
                None => store.create(data).await.unwrap(),
            };
            state.set_ledger(Ledger::from_configmap(&cm));
        }
        let (_, view) = state.snapshot();
        let kept_claim = view.claim(&kept.key).unwrap().clone();
        state.apply_claim(kept.key.clone(), Some(kept_claim));
        committer.reconcile(&state).await;
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

    #[tokio::test]
    async fn an_entry_another_replica_removed_before_this_ones_caches_showed_it_still_counts() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
        let (one, two) = (state(1), state(1));
        let (c1, c2) = (Committer::new(store.clone()), Committer::new(store.clone()));
        let module = deployment("a", 1, 60);
        assert!(allowed(&admit(&one, &c1, &module, false).await));
        // Replica two reads the ledger with the entry (its watch), its caches still empty.
        c2.refresh(&two).await;
        // Replica one's caches show the stored workload; a while later its reconcile removes the entry.
        let claim = one.snapshot().1.claim(&module.key).unwrap().clone();
        one.apply_claim(module.key.clone(), Some(claim.clone()));
        let entry = Ledger::from_configmap(&store.object.lock().unwrap().clone().unwrap());
        let written = entry.entries[&module.key].written_ms;
        let edits = ledger::reconcile(
            &entry,
            &[(module.key.clone(), claim)].into(),
            written + 2_500,
        );
        assert_eq!(edits.len(), 1);
        let cm = store
            .patch(one.ledger_version().unwrap(), ledger::patch_data(&edits, 0))
            .await
            .unwrap();
        one.set_ledger(Ledger::from_configmap(&cm));
        // Replica two's watch delivers the removal before its workload cache shows the object.
        two.set_ledger(Ledger::from_configmap(&cm));
        assert_eq!(two.in_flight(), (0, 1), "kept as a ghost");
        let verdict = admit(&two, &c2, &deployment("b", 1, 60), false).await;
        assert!(
            matches!(&verdict, Verdict::Denied(d) if d.rule == Rule::Capacity),
            "60% + 60%: {verdict:?}"
        );
    }
}
