//! Where decisions are made and what they commit is recorded: behind the one commit seam
//! (`core::record`), a fixed policy and node (standalone: nothing is stored) or the cluster's
//! caches and ledger (`cluster`).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::core::decision::{self, Request};
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::record::Fixed;
use crate::core::verdict::{Mutation, Outcome, Verdict};
use crate::core::workload::WorkloadKey;
use crate::webhook::commit::Committer;

/// Where decisions are made: a fixed policy and node (standalone) or the cluster's live caches.
pub trait Backend: Send + Sync {
    /// Decides one request; unless `dry_run`, what an allowed request commits is recorded first
    /// (in a cluster: in the API server), so that no two admissions can double-book a GPU.
    fn admit<'a>(&'a self, request: &'a Request<'a>, dry_run: bool) -> BoxFuture<'a, Verdict>;
    /// Decides a change of replicas through the scale subresource of `key`. Standalone mode
    /// stores no workloads: allowed unchanged.
    fn scale<'a>(
        &'a self,
        key: &'a WorkloadKey,
        replicas: u32,
        dry_run: bool,
    ) -> BoxFuture<'a, Verdict> {
        let _ = (key, replicas, dry_run);
        Box::pin(std::future::ready(Verdict::Allowed(Mutation::unchanged(
            Outcome::Unmanaged,
        ))))
    }
    /// Whether every cache this backend reads has synced once.
    fn ready(&self) -> bool;
}

/// Standalone `serve`: one policy (swapped when its file changes), one implicit node, capacity
/// checked per request.
pub struct StandaloneBackend {
    committer: Committer<Fixed>,
}

impl StandaloneBackend {
    pub fn new(policy: Policy, inventory: Inventory) -> StandaloneBackend {
        StandaloneBackend {
            committer: Committer::new(Arc::new(Fixed::new(policy, inventory))),
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        self.committer.record.set_policy(policy);
    }

    /// The policy and inventory in force, for the status page.
    pub fn snapshot(&self) -> (Policy, Inventory) {
        self.committer.record.snapshot()
    }
}

impl Backend for StandaloneBackend {
    fn admit<'a>(&'a self, request: &'a Request<'a>, dry_run: bool) -> BoxFuture<'a, Verdict> {
        Box::pin(
            self.committer
                .decide_and_commit(request.key(), dry_run, |policy, inventory| {
                    decision::decide(request, policy, inventory)
                }),
        )
    }

    fn ready(&self) -> bool {
        true
    }
}
