//! The one seam between deciding and committing (CONTRACT section 6a). A record is what is
//! committed, read as a snapshot by each decision, and the one way to change it: commit claim
//! changes in one write against the reading they were decided on, which fails when the record
//! moved on in between (another replica, another admission). Standalone `serve` (nothing is kept), `check` and
//! `kubectl gpushare apply` (in memory) and the cluster's ledger implement it, so the commit loop
//! around a decision is written once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use futures::future::BoxFuture;

use crate::core::claim::{Claim, ClaimChange};
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;

/// The reading of a record a decision was made on: the precondition of the commit that follows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Version(pub Option<String>);

/// Why a commit did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// The record moved on since the reading: decide again.
    Conflict,
    /// The record cannot be written now (the API server is away): say why.
    Unavailable(String),
}

/// What is committed, and the one way to change it.
pub trait Record: Send + Sync {
    /// Runs `read` on the policy and what is committed now, with `pending` (changes decided but
    /// not written yet) counted as if they were; returns the reading of the record it saw.
    fn read(&self, pending: &[ClaimChange], read: &mut dyn FnMut(&Policy, &Inventory)) -> Version;
    /// Whether `change` is already what is counted: then nothing is written (the common case).
    fn counts(&self, change: &ClaimChange) -> bool;
    /// Records `changes` in one write, decided on the reading `against`; returns the reading the
    /// write led to.
    fn commit<'a>(
        &'a self,
        changes: &'a [ClaimChange],
        against: Version,
    ) -> BoxFuture<'a, Result<Version, CommitError>>;
}

/// Decides with `decide` against a record's current reading, `pending` counted.
pub fn decide_on<R: Record + ?Sized, T>(
    record: &R,
    pending: &[ClaimChange],
    decide: impl FnOnce(&Policy, &Inventory) -> T,
) -> (T, Version) {
    let mut decide = Some(decide);
    let mut out = None;
    let version = record.read(pending, &mut |policy, inventory| {
        if let Some(decide) = decide.take() {
            out = Some(decide(policy, inventory));
        }
    });
    (out.expect("a record reads once"), version)
}

/// Runs `read` on `inventory` with `pending` applied, then puts every claim back: the view a
/// decision needs while other changes are on their way to the record, without copying it.
pub fn with_pending<T>(
    inventory: &mut Inventory,
    pending: &[ClaimChange],
    read: impl FnOnce(&Inventory) -> T,
) -> T {
    let before: Vec<Option<Claim>> = pending
        .iter()
        .map(|change| match change {
            ClaimChange::Hold(claim) => {
                let before = inventory.claim(&claim.key).cloned();
                inventory.hold(claim.clone());
                before
            }
            ClaimChange::Free(key) => inventory.free(key),
        })
        .collect();
    let out = read(inventory);
    // Backwards: a key changed twice gets back what it held before the first change.
    for (change, before) in pending.iter().zip(before).rev() {
        match before {
            Some(claim) => inventory.hold(claim),
            None => {
                inventory.free(change.key());
            }
        }
    }
    out
}

/// A record in memory: what `check` and `kubectl gpushare apply` count across the documents of
/// one run, each admitted claim against the next.
pub struct Memory {
    policy: Policy,
    inventory: Mutex<Inventory>,
    version: AtomicU64,
}

impl Memory {
    pub fn new(policy: Policy, inventory: Inventory) -> Memory {
        Memory {
            policy,
            inventory: Mutex::new(inventory),
            version: AtomicU64::new(0),
        }
    }

    fn inventory(&self) -> MutexGuard<'_, Inventory> {
        self.inventory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What was committed in the end (`status --from`).
    pub fn into_inventory(self) -> Inventory {
        self.inventory
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn version(&self) -> Version {
        Version(Some(self.version.load(Ordering::SeqCst).to_string()))
    }

    /// Commits at once: nothing here waits.
    pub fn commit_now(&self, change: &ClaimChange) {
        let committed = futures::FutureExt::now_or_never(
            self.commit(std::slice::from_ref(change), self.version()),
        );
        debug_assert!(matches!(committed, Some(Ok(_))));
    }
}

impl Record for Memory {
    fn read(&self, pending: &[ClaimChange], read: &mut dyn FnMut(&Policy, &Inventory)) -> Version {
        let mut inventory = self.inventory();
        with_pending(&mut inventory, pending, |inventory| {
            read(&self.policy, inventory)
        });
        self.version()
    }

    fn counts(&self, change: &ClaimChange) -> bool {
        let inventory = self.inventory();
        match change {
            ClaimChange::Hold(claim) => inventory.claim(&claim.key) == Some(claim),
            ClaimChange::Free(key) => inventory.claim(key).is_none(),
        }
    }

    fn commit<'a>(
        &'a self,
        changes: &'a [ClaimChange],
        against: Version,
    ) -> BoxFuture<'a, Result<Version, CommitError>> {
        let mut inventory = self.inventory();
        let now = self.version.load(Ordering::SeqCst);
        let result = if against != Version(Some(now.to_string())) {
            Err(CommitError::Conflict)
        } else {
            for change in changes {
                match change {
                    ClaimChange::Hold(claim) => inventory.hold(claim.clone()),
                    ClaimChange::Free(key) => {
                        inventory.free(key);
                    }
                }
            }
            self.version.store(now + 1, Ordering::SeqCst);
            Ok(Version(Some((now + 1).to_string())))
        };
        Box::pin(std::future::ready(result))
    }
}

/// Standalone `serve`: one fixed node, and nothing is kept between requests (capacity is checked
/// per request), so every change is already "counted", nothing is ever written and nothing is
/// ever pending. The policy may be swapped when its file changes.
pub struct Fixed {
    policy: std::sync::RwLock<Policy>,
    inventory: Inventory,
}

impl Fixed {
    pub fn new(policy: Policy, inventory: Inventory) -> Fixed {
        Fixed {
            policy: std::sync::RwLock::new(policy),
            inventory,
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// The policy and inventory in force, for the status page.
    pub fn snapshot(&self) -> (Policy, Inventory) {
        let policy = self.policy.read().unwrap_or_else(|e| e.into_inner());
        (policy.clone(), self.inventory.clone())
    }
}

impl Record for Fixed {
    fn read(&self, pending: &[ClaimChange], read: &mut dyn FnMut(&Policy, &Inventory)) -> Version {
        let policy = self.policy.read().unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() {
            read(&policy, &self.inventory);
        } else {
            let mut inventory = self.inventory.clone();
            with_pending(&mut inventory, pending, |inventory| {
                read(&policy, inventory)
            });
        }
        Version::default()
    }

    fn counts(&self, _change: &ClaimChange) -> bool {
        true
    }

    fn commit<'a>(
        &'a self,
        _changes: &'a [ClaimChange],
        _against: Version,
    ) -> BoxFuture<'a, Result<Version, CommitError>> {
        Box::pin(std::future::ready(Ok(Version::default())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::claim::{Assigned, Claim, PerPod, Share};
    use crate::core::domain::GpuIndex;
    use crate::core::inventory::Placement;
    use crate::core::pods::PodCount;
    use crate::core::workload::{Kind, WorkloadKey};

    fn claim(name: &str) -> Claim {
        Claim::new(
            WorkloadKey::new(Kind::Job, "ns", name),
            Placement::default(),
            Assigned {
                gpu: GpuIndex(0),
                share: Share::TimeSlicing,
            },
            PodCount::fixed(1),
            PerPod {
                selected: 1,
                ..PerPod::default()
            },
        )
    }

    #[test]
    fn a_commit_on_a_reading_the_record_moved_past_conflicts() {
        let record = Memory::new(Policy::default(), Inventory::standalone(Some(1)));
        let ((), first) = decide_on(&record, &[], |_, _| ());
        let ((), second) = decide_on(&record, &[], |_, _| ());
        let hold = ClaimChange::Hold(claim("a"));
        let written =
            futures::FutureExt::now_or_never(record.commit(std::slice::from_ref(&hold), first));
        assert!(matches!(written, Some(Ok(Version(Some(_))))), "{written:?}");
        assert!(record.counts(&hold));
        let other = ClaimChange::Hold(claim("b"));
        assert_eq!(
            futures::FutureExt::now_or_never(record.commit(std::slice::from_ref(&other), second)),
            Some(Err(CommitError::Conflict)),
            "decided before the first commit"
        );
        record.commit_now(&other);
        assert_eq!(record.into_inventory().claims().count(), 2);
    }

    #[test]
    fn a_reading_counts_what_is_pending_and_leaves_the_record_as_it_was() {
        let record = Memory::new(Policy::default(), Inventory::standalone(Some(1)));
        record.commit_now(&ClaimChange::Hold(claim("a")));
        let mut moved = claim("a");
        moved.assigned.gpu = GpuIndex(1);
        // A key changed twice, one freed, one new: the reading sees the last of each.
        let pending = [
            ClaimChange::Hold(moved.clone()),
            ClaimChange::Free(claim("a").key),
            ClaimChange::Hold(claim("b")),
            ClaimChange::Hold(moved.clone()),
        ];
        let (seen, _) = decide_on(&record, &pending, |_, inventory| {
            let mut seen: Vec<_> = inventory
                .claims()
                .map(|c| (c.key.name.to_string(), c.assigned.gpu))
                .collect();
            seen.sort();
            seen
        });
        assert_eq!(
            seen,
            [
                ("a".to_string(), GpuIndex(1)),
                ("b".to_string(), GpuIndex(0))
            ]
        );
        let inventory = record.into_inventory();
        let left: Vec<_> = inventory.claims().collect();
        assert_eq!(left, [&claim("a")], "the pending changes stayed");
    }
}
