//! The group commit against an in-memory record whose writes wait for the test to let them
//! through: what is decided while a write is in flight, and what happens when that write fails
//! or is abandoned.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use super::*;
use crate::core::decision::{self, Operation, Request};
use crate::core::record::Memory;
use crate::core::workload::{Kind, RawObject, Workload};

/// A record whose writes wait for a permit; it counts the changes each write carries.
struct Gated {
    memory: Memory,
    gate: Semaphore,
    /// Writes that reached the gate.
    entered: AtomicUsize,
    writes: Mutex<Vec<usize>>,
}

impl Gated {
    fn new() -> Arc<Gated> {
        let policy = Policy::from_yaml("gpuModes: {0: mps}").unwrap();
        Arc::new(Gated {
            memory: Memory::new(policy, Inventory::standalone(Some(1))),
            gate: Semaphore::new(0),
            entered: AtomicUsize::new(0),
            writes: Mutex::new(Vec::new()),
        })
    }

    fn held(&self) -> Vec<String> {
        let (mut held, _) = decide_on(&self.memory, &[], |_, inventory| {
            inventory
                .claims()
                .map(|c| c.key.name.to_string())
                .collect::<Vec<_>>()
        });
        held.sort();
        held
    }
}

impl Record for Gated {
    fn read(&self, pending: &[ClaimChange], read: &mut dyn FnMut(&Policy, &Inventory)) -> Version {
        self.memory.read(pending, read)
    }

    fn counts(&self, change: &ClaimChange) -> bool {
        self.memory.counts(change)
    }

    fn commit<'a>(
        &'a self,
        changes: &'a [ClaimChange],
        against: Version,
    ) -> BoxFuture<'a, Result<Version, CommitError>> {
        Box::pin(async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.expect("open").forget();
            self.writes.lock().unwrap().push(changes.len());
            self.memory.commit(changes, against).await
        })
    }
}

fn module(name: &str, percentage: u32) -> Workload {
    let raw: RawObject = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "ns",
            "annotations": {"gpushare.io/gpu": "0", "gpushare.io/mps-percentage": percentage.to_string()}},
        "spec": {"replicas": 1, "strategy": {"rollingUpdate": {"maxSurge": 0}},
            "template": {"spec": {"containers": [{"name": "c"}]}}}
    }))
    .unwrap();
    Workload::from_raw(Kind::Deployment, raw)
}

/// Admits `object` through `committer` in a task of its own.
fn admit(committer: &Arc<Committer<Gated>>, object: Workload) -> tokio::task::JoinHandle<Verdict> {
    let committer = committer.clone();
    tokio::spawn(async move {
        let request = Request {
            operation: Operation::Create,
            object: &object,
            old_object: None,
        };
        committer
            .decide_and_commit(&object.key, false, |policy, inventory| {
                decision::decide(&request, policy, inventory)
            })
            .await
    })
}

/// Polls `condition`, letting the other tasks run, for at most a generous while.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What admitting `object` on an empty GPU holds.
fn change_on_an_empty_gpu(object: &Workload) -> ClaimChange {
    let request = Request {
        operation: Operation::Create,
        object,
        old_object: None,
    };
    let policy = Policy::from_yaml("gpuModes: {0: mps}").unwrap();
    let verdict = decision::decide(&request, &policy, &Inventory::standalone(Some(1)));
    change_of(&verdict, &object.key).expect("fits")
}

/// A committer whose first admission, `first`, is in the middle of its write.
async fn writing(
    first: Workload,
) -> (
    Arc<Gated>,
    Arc<Committer<Gated>>,
    tokio::task::JoinHandle<Verdict>,
) {
    let record = Gated::new();
    let committer = Arc::new(Committer::new(record.clone()));
    let first = admit(&committer, first);
    until("the first write starts", || {
        record.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    (record, committer, first)
}

fn pending(committer: &Committer<Gated>) -> usize {
    lock(&committer.queue).pending.len()
}

fn denied_for_capacity(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Denied(d) if d.rule == Rule::Capacity)
}

#[tokio::test]
async fn admissions_behind_a_write_count_it_and_are_written_together() {
    let (record, committer, first) = writing(module("a", 30)).await;
    // 30% is written; 30% + 30% more fit beside it, the two after that do not.
    let queued: Vec<_> = ["b", "c", "d", "e"]
        .iter()
        .map(|name| admit(&committer, module(name, 30)))
        .collect();
    until("b and c wait behind a's write", || pending(&committer) == 3).await;
    let mut queued = queued.into_iter();
    let (b, c) = (queued.next().unwrap(), queued.next().unwrap());
    for late in queued {
        let verdict = late.await.unwrap();
        assert!(denied_for_capacity(&verdict), "120%: {verdict:?}");
    }
    record.gate.add_permits(10);
    for task in [first, b, c] {
        let verdict = task.await.unwrap();
        assert!(matches!(verdict, Verdict::Allowed(_)), "{verdict:?}");
    }
    assert_eq!(
        *record.writes.lock().unwrap(),
        [1, 2],
        "one write for b and c"
    );
    assert_eq!(record.held(), ["a", "b", "c"]);
    assert_eq!(pending(&committer), 0);
}

#[tokio::test]
async fn a_batch_decided_on_a_write_that_failed_is_decided_again() {
    let (record, committer, first) = writing(module("a", 30)).await;
    let second = admit(&committer, module("b", 30));
    until("b waits behind a's write", || pending(&committer) == 2).await;
    // Another replica records 50% first: a's write conflicts, and b was decided counting a.
    record
        .memory
        .commit_now(&change_on_an_empty_gpu(&module("x", 50)));
    record.gate.add_permits(10);
    let verdicts = [first.await.unwrap(), second.await.unwrap()];
    let allowed = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Allowed(_)))
        .count();
    assert_eq!(allowed, 1, "50% + 30% + 30% on one GPU: {verdicts:?}");
    assert!(verdicts.iter().any(denied_for_capacity), "{verdicts:?}");
    assert_eq!(record.held().len(), 2, "x and one of a, b");
    assert_eq!(pending(&committer), 0);
}

#[tokio::test]
async fn a_writer_abandoned_mid_write_leaves_nothing_counted_and_the_others_go_on() {
    let (record, committer, first) = writing(module("a", 60)).await;
    // b does not fit beside a's 60% while a's write is in flight...
    let verdict = admit(&committer, module("b", 60)).await.unwrap();
    assert!(denied_for_capacity(&verdict), "{verdict:?}");
    let third = admit(&committer, module("c", 30));
    until("c waits behind a's write", || pending(&committer) == 2).await;
    // ...and the API server gives up on a (its admission is cancelled mid-write).
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    until("a is no longer counted", || pending(&committer) == 1).await;
    record.gate.add_permits(10);
    let verdict = third.await.unwrap();
    assert!(matches!(verdict, Verdict::Allowed(_)), "{verdict:?}");
    assert_eq!(record.held(), ["c"]);
    assert_eq!(pending(&committer), 0);
    // With a gone, b fits now.
    let verdict = admit(&committer, module("b", 60)).await.unwrap();
    assert!(matches!(verdict, Verdict::Allowed(_)), "{verdict:?}");
}
