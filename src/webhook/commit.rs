//! The commit loop, written once for every record (`core::record`): decide against a reading of
//! what is committed; unless it is a dry run, commit the claim change the decision makes against
//! that same reading; on a conflict (another replica or admission wrote first) decide again, until
//! the budget runs out, and then deny: never allowed unrecorded. The model is Kubernetes'
//! ResourceQuota admission, which charges quota usage the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::claim::ClaimChange;
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::record::{decide_on, CommitError, Record};
use crate::core::verdict::{Denial, Rule, Verdict};
use crate::core::workload::WorkloadKey;

/// How long an admission may spend recording its commitment: well inside the webhook's
/// `timeoutSeconds: 5`, so a denial that says why reaches the user instead of a timeout.
pub const COMMIT_BUDGET: Duration = Duration::from_secs(3);

/// Decides and commits against one record, this replica's commits one at a time: only another
/// replica's write can make a commit conflict.
pub struct Committer<R: ?Sized> {
    pub record: Arc<R>,
    lock: tokio::sync::Mutex<()>,
    budget: Duration,
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

impl<R: Record + ?Sized> Committer<R> {
    pub fn new(record: Arc<R>) -> Committer<R> {
        Committer::with_budget(record, COMMIT_BUDGET)
    }

    pub fn with_budget(record: Arc<R>, budget: Duration) -> Committer<R> {
        Committer {
            record,
            lock: tokio::sync::Mutex::new(()),
            budget,
        }
    }

    /// Holds this replica's commits back (the record's own housekeeping writes take it too).
    pub async fn serialized(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
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
        let (verdict, _) = decide_on(&*self.record, |policy, inventory| decide(policy, inventory));
        if dry_run {
            return verdict;
        }
        // Unmanaged, denied, or nothing new: no write, no wait (the common case).
        match change_of(&verdict, key) {
            Some(change) if !self.record.counts(&change) => {}
            _ => return verdict,
        }
        let Ok(_guard) = tokio::time::timeout(self.budget, self.lock.lock()).await else {
            return unrecorded(self.budget, "too many admissions waiting to record theirs");
        };
        let mut conflicts = 0u32;
        loop {
            let (verdict, version) =
                decide_on(&*self.record, |policy, inventory| decide(policy, inventory));
            let change = match change_of(&verdict, key) {
                Some(change) if !self.record.counts(&change) => change,
                _ => return verdict,
            };
            let last_error = match self.record.commit(&change, version).await {
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
}
