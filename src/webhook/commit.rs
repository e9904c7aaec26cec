//! The commit loop, written once for every record (`core::record`): decide against a reading of
//! what is committed; unless it is a dry run, commit the claim change the decision makes against
//! that same reading; on a conflict (another replica or admission wrote first) decide again, until
//! the budget runs out, and then deny: never allowed unrecorded. The model is Kubernetes'
//! ResourceQuota admission, which charges quota usage the same way and, like this, writes the
//! charges of the admissions waiting on one object together.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

use crate::core::claim::ClaimChange;
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::record::{decide_on, CommitError, Record, Version};
use crate::core::verdict::{Denial, Rule, Verdict};
use crate::core::workload::WorkloadKey;

/// How long an admission may spend recording its commitment: well inside the webhook's
/// `timeoutSeconds: 5`, so a denial that says why reaches the user instead of a timeout.
pub const COMMIT_BUDGET: Duration = Duration::from_secs(3);

/// Decides and commits against one record, one write at a time per replica (a group commit):
/// while a write is in flight, the admissions that need one are decided one after another
/// against the record with every change still on its way there counted, and the next write
/// carries all of them. A replica's admissions no longer queue one write each; only another
/// replica's write (or this one's housekeeping) can make a batch conflict.
pub struct Committer<R: ?Sized> {
    pub record: Arc<R>,
    /// One write at a time: a batch's, or the record's own housekeeping.
    write: tokio::sync::Mutex<()>,
    queue: Mutex<Queue>,
    budget: Duration,
}

/// How a batch's write ended, for every admission in it.
type Outcome = Result<(), CommitError>;
type Awaited = Shared<oneshot::Receiver<Outcome>>;

/// The changes decided but not recorded yet.
#[derive(Default)]
struct Queue {
    /// Being written (the first `writing`), then those of the next batch: counted by every
    /// decision until the record shows them, so two admissions never take the same room.
    pending: Vec<ClaimChange>,
    writing: usize,
    /// The reading the last write led to, for a batch decided while that write was in flight.
    written: Option<Version>,
    next: Option<Batch>,
    batches: u64,
}

struct Batch {
    id: u64,
    /// The reading its decisions were made on; `None`: the one the write in flight leads to.
    against: Option<Version>,
    done: oneshot::Sender<Outcome>,
    outcome: Awaited,
}

/// An admission's place in a batch.
struct Ticket {
    batch: u64,
    outcome: Awaited,
}

fn unrecorded(budget: Duration, reason: &str) -> Verdict {
    Verdict::Denied(Denial::new(
        Rule::Unrecorded,
        format!(
            "gpushare could not record this GPU commitment in the API server within {}s ({reason}); nothing was \
             committed and the object was not admitted: retry the request",
            budget.as_secs()
        ),
    ))
}

/// What an allowed decision changes in what `key` holds.
fn change_of(verdict: &Verdict, key: &WorkloadKey) -> Option<ClaimChange> {
    match verdict {
        Verdict::Allowed(mutation) => mutation.outcome.claim_change(key),
        Verdict::Denied(_) => None,
    }
}

/// Takes a write's changes off the queue when it ends, however it ends: a writer whose
/// admission is cancelled mid-write (the API server gave up on it) must not leave them counted.
struct Writing<'a> {
    queue: &'a Mutex<Queue>,
    written: Option<Version>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut queue = lock(self.queue);
        let writing = queue.writing;
        queue.pending.drain(..writing);
        queue.writing = 0;
        queue.written = self.written.take();
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

impl<R: Record + ?Sized> Committer<R> {
    pub fn new(record: Arc<R>) -> Committer<R> {
        Committer::with_budget(record, COMMIT_BUDGET)
    }

    pub fn with_budget(record: Arc<R>, budget: Duration) -> Committer<R> {
        Committer {
            record,
            write: tokio::sync::Mutex::new(()),
            queue: Mutex::default(),
            budget,
        }
    }

    /// Holds this replica's writes back (the record's own housekeeping writes take it too).
    pub async fn serialized(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write.lock().await
    }

    /// Decides what `key` is asked for with `decide` and, unless `dry_run`, commits what the
    /// decision changes; the decision runs again after every conflict.
    pub async fn decide_and_commit(
        &self,
        key: &WorkloadKey,
        dry_run: bool,
        decide: impl Fn(&Policy, &Inventory) -> Verdict,
    ) -> Verdict {
        let started = Instant::now();
        let (verdict, _) = decide_on(&*self.record, &[], |policy, inventory| {
            decide(policy, inventory)
        });
        if dry_run {
            return verdict;
        }
        // Unmanaged, denied, or nothing new: no write, no wait (the common case).
        match change_of(&verdict, key) {
            Some(change) if !self.record.counts(&change) => {}
            _ => return verdict,
        }
        let mut conflicts = 0u32;
        loop {
            let (verdict, ticket) = self.join(key, &decide);
            let Some(ticket) = ticket else {
                return verdict;
            };
            let remaining = self.budget.saturating_sub(started.elapsed());
            // Past the budget the change may still be written: the ledger's housekeeping frees
            // it, like any commitment whose object was never stored.
            let Ok(outcome) = tokio::time::timeout(remaining, self.recorded(ticket)).await else {
                return unrecorded(self.budget, "too many admissions waiting to record theirs");
            };
            let last_error = match outcome {
                Ok(()) => {
                    // What `make bench-cluster` reads: a commit's cost as gpushare sees it.
                    tracing::debug!(
                        object = %key,
                        commit_us = started.elapsed().as_micros() as u64,
                        conflicts,
                        "commit"
                    );
                    return verdict;
                }
                Err(CommitError::Conflict) => {
                    conflicts += 1;
                    "the record changed; read again".to_string()
                }
                Err(CommitError::Unavailable(error)) => {
                    tracing::warn!(%error, "could not record a commitment; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    error
                }
            };
            if started.elapsed() >= self.budget {
                return unrecorded(self.budget, &last_error);
            }
        }
    }

    /// Decides again with every pending change counted and, when the decision still needs a
    /// write, adds its change to the next batch (no ticket: nothing to write).
    fn join(
        &self,
        key: &WorkloadKey,
        decide: &impl Fn(&Policy, &Inventory) -> Verdict,
    ) -> (Verdict, Option<Ticket>) {
        let mut queue = lock(&self.queue);
        let (verdict, version) = decide_on(&*self.record, &queue.pending, decide);
        let change = match change_of(&verdict, key) {
            Some(change) if !self.record.counts(&change) => change,
            _ => return (verdict, None),
        };
        if queue.next.is_none() {
            queue.batches += 1;
            let (done, outcome) = oneshot::channel();
            queue.next = Some(Batch {
                id: queue.batches,
                against: (queue.writing == 0).then_some(version),
                done,
                outcome: outcome.shared(),
            });
        }
        queue.pending.push(change);
        let batch = queue.next.as_ref().expect("just made");
        let ticket = Ticket {
            batch: batch.id,
            outcome: batch.outcome.clone(),
        };
        (verdict, Some(ticket))
    }

    /// Waits until the batch of `ticket` is written, writing it when this admission is the
    /// first in it to get the write lock.
    async fn recorded(&self, ticket: Ticket) -> Outcome {
        let Ticket { batch, outcome } = ticket;
        tokio::select! {
            biased;
            written = outcome.clone() => return written.unwrap_or(Err(CommitError::Conflict)),
            guard = self.write.lock() => {
                // Under the lock the batch is either still next (this admission writes it) or
                // written by another of its admissions, whose outcome is ready.
                self.write_next(batch).await;
                drop(guard);
            }
        }
        // A writer that was cancelled drops its sender: decide again.
        outcome.await.unwrap_or(Err(CommitError::Conflict))
    }

    /// Writes the next batch if it is `batch`. Hold the write lock.
    async fn write_next(&self, batch: u64) {
        let (changes, against, done) = {
            let mut queue = lock(&self.queue);
            if queue.next.as_ref().map(|next| next.id) != Some(batch) {
                return;
            }
            let next = queue.next.take().expect("checked");
            let against = next.against.or_else(|| queue.written.take());
            queue.writing = queue.pending.len();
            (queue.pending.clone(), against, next.done)
        };
        let mut writing = Writing {
            queue: &self.queue,
            written: None,
        };
        // Decided while a write was in flight that then failed: read again.
        let result = match against {
            Some(against) => self.record.commit(&changes, against).await,
            None => Err(CommitError::Conflict),
        };
        tracing::debug!(changes = changes.len(), ok = result.is_ok(), "ledger write");
        writing.written = result.as_ref().ok().cloned();
        drop(writing);
        let _ = done.send(result.map(|_| ()));
    }
}

#[cfg(test)]
mod tests;
