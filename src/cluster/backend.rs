//! Cluster mode's backend: decisions from the caches, commitments recorded in the ledger through
//! the one commit loop (`webhook::commit`).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::record::LedgerRecord;
use super::state::{ClusterState, OWNER_WAIT};
use crate::core::decision::{self, Operation, Request};
use crate::core::handwritten;
use crate::core::scale;
use crate::core::verdict::Verdict;
use crate::core::workload::WorkloadKey;
use crate::webhook::backend::Backend;
use crate::webhook::commit::Committer;

pub struct ClusterBackend {
    pub state: Arc<ClusterState>,
    pub committer: Arc<Committer<LedgerRecord>>,
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
            self.committer
                .decide_and_commit(request.key(), dry_run, |policy, inventory| {
                    decision::decide(request, policy, inventory)
                })
                .await
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
                .decide_and_commit(key, dry_run, move |policy, inventory| {
                    scale::decide(key, inventory.claim(key), replicas, policy, inventory)
                }),
        )
    }

    fn ready(&self) -> bool {
        self.state.ready()
    }
}
