//! Where decisions are made, and where what they commit is recorded: a fixed policy and node
//! (standalone, nothing is stored) or the cluster's caches and ledger (`cluster::commit`).
//! Deciding is the core's pure function; recording is the asynchronous step after it, which may
//! conflict with another replica and then decides again.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::core::decision::{self, Request};
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::verdict::{Mutation, Outcome, Verdict};
use crate::core::workload::WorkloadKey;

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

/// Standalone mode: one policy, one implicit node, capacity checked per request.
pub struct StaticBackend {
    pub policy: Policy,
    pub inventory: Inventory,
}

impl StaticBackend {
    pub fn decide(&self, request: &Request<'_>) -> Verdict {
        decision::decide(request, &self.policy, &self.inventory)
    }
}

impl Backend for StaticBackend {
    fn admit<'a>(&'a self, request: &'a Request<'a>, _dry_run: bool) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(self.decide(request)))
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Standalone `serve`: a `StaticBackend` whose policy can be swapped when its file changes.
pub struct StandaloneBackend {
    current: std::sync::RwLock<Arc<StaticBackend>>,
}

impl StandaloneBackend {
    pub fn new(policy: Policy, inventory: Inventory) -> StandaloneBackend {
        StandaloneBackend {
            current: std::sync::RwLock::new(Arc::new(StaticBackend { policy, inventory })),
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let inventory = current.inventory.clone();
        *current = Arc::new(StaticBackend { policy, inventory });
    }

    /// The policy and inventory in force, for the status page.
    pub fn snapshot(&self) -> (Policy, Inventory) {
        let current = self.current();
        (current.policy.clone(), current.inventory.clone())
    }

    fn current(&self) -> Arc<StaticBackend> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Backend for StandaloneBackend {
    fn admit<'a>(&'a self, request: &'a Request<'a>, _dry_run: bool) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(self.current().decide(request)))
    }

    fn ready(&self) -> bool {
        true
    }
}
