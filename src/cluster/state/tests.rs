//! The cluster cache: what each stored object counts as, owners, ghosts, gauges, readiness.
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
    state.read(&[], &mut |policy, view| {
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
    state.read(&[], &mut |policy, view| {
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
    let object: crate::cluster::stored::StoredWorkload = serde_json::from_value(object).unwrap();
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
    state.set_policy(Policy::from_yaml("gpuModes: {0: mps}\nhandWrittenGpuEnv: allow").unwrap());
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
