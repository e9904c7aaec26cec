//! Where decisions are made, and how an allowed admission's claim is committed: deciding is the
//! core's pure function over the backend's current view; committing is a separate step that may
//! find the view changed since (another admission committed first) and then decides again, as
//! Kubernetes' ResourceQuota admission retries its quota update on conflict.

use std::sync::{Arc, RwLock};

use crate::core::claim::ClaimChange;
use crate::core::decision::{self, Request};
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::verdict::{Denial, Rule, Verdict};

/// Which state of a backend's view a decision read; a commit checks it is still current.
pub type Version = u64;

/// The view changed between deciding and committing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict;

/// Decisions made by one backend, and the commitments they lead to.
pub trait Backend: Send + Sync {
    /// Decides one request against the current view, and says which version it read.
    fn decide(&self, request: &Request<'_>) -> (Verdict, Version);
    /// Records what an allowed admission changes, unless the view moved past `based_on`.
    fn commit(&self, change: ClaimChange, based_on: Version) -> Result<(), Conflict>;
    /// Whether every cache this backend reads has synced once.
    fn ready(&self) -> bool;
}

/// How often an admission decides again after losing its commit to a concurrent one.
const ATTEMPTS: usize = 8;

/// Decides `request`; unless `dry_run`, commits its claim change so that concurrent admissions
/// cannot double-book a GPU, deciding again when another admission committed in between.
pub fn admit(backend: &dyn Backend, request: &Request<'_>, dry_run: bool) -> Verdict {
    for _ in 0..ATTEMPTS {
        let (verdict, version) = backend.decide(request);
        let change = match &verdict {
            Verdict::Allowed(mutation) if !dry_run => mutation.outcome.claim_change(request.key()),
            _ => None,
        };
        let Some(change) = change else {
            return verdict;
        };
        if backend.commit(change, version).is_ok() {
            return verdict;
        }
    }
    Verdict::Denied(Denial::new(
        Rule::Uncommitted,
        format!(
            "gpushare could not record the GPU commitment of {}: other admissions kept changing the GPUs' \
             usage while it was decided; retry the request",
            request.key()
        ),
    ))
}

/// Standalone mode: one policy, one implicit node, capacity checked per request; nothing is
/// stored, so there is nothing to commit.
pub struct StaticBackend {
    pub policy: Policy,
    pub inventory: Inventory,
}

impl Backend for StaticBackend {
    fn decide(&self, request: &Request<'_>) -> (Verdict, Version) {
        (decision::decide(request, &self.policy, &self.inventory), 0)
    }

    fn commit(&self, _change: ClaimChange, _based_on: Version) -> Result<(), Conflict> {
        Ok(())
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Standalone `serve`: a `StaticBackend` whose policy can be swapped when its file changes.
pub struct StandaloneBackend {
    current: RwLock<Arc<StaticBackend>>,
}

impl StandaloneBackend {
    pub fn new(policy: Policy, inventory: Inventory) -> StandaloneBackend {
        StandaloneBackend {
            current: RwLock::new(Arc::new(StaticBackend { policy, inventory })),
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let inventory = current.inventory.clone();
        *current = Arc::new(StaticBackend { policy, inventory });
    }

    fn current(&self) -> Arc<StaticBackend> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Backend for StandaloneBackend {
    fn decide(&self, request: &Request<'_>) -> (Verdict, Version) {
        self.current().decide(request)
    }

    fn commit(&self, change: ClaimChange, based_on: Version) -> Result<(), Conflict> {
        self.current().commit(change, based_on)
    }

    fn ready(&self) -> bool {
        true
    }
}
