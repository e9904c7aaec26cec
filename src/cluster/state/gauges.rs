//! The gauges of the cluster cache, kept in step with it under the same lock: per-GPU committed
//! percentage and client processes, and the module count per kind.

use std::collections::{HashMap, HashSet};

use super::{ClusterState, Inner, Recount, BULK_CHANGES};
use crate::core::inventory::GpuRow;
use crate::core::workload::Kind;
use crate::webhook::metrics::{GpuLabels, KindLabels};

impl ClusterState {
    /// Updates the gauges of what `changes` touched: the module count of their kinds and the
    /// GPUs their claims count against, in place (a scrape never sees a series missing). Called
    /// under the same lock that made the changes: module counts move by deltas, and a
    /// `publish_all` in between would count them twice.
    pub(super) fn publish_changes(&self, inner: &mut Inner, changes: Vec<Recount>) {
        if changes.is_empty() {
            return;
        }
        if changes.len() > BULK_CHANGES {
            // A relist: one pass over every GPU costs less than one per claim.
            self.publish_all(inner);
            return;
        }
        let mut kinds = HashMap::<Kind, i64>::new();
        let mut touched = Vec::new();
        for claim in changes.iter().flat_map(|(old, new)| [old, new]).flatten() {
            let gpu = (&claim.placement, claim.gpu());
            if !touched.contains(&gpu) {
                touched.push(gpu);
                for row in inner.view.rows_of(claim, &inner.policy) {
                    self.publish_row(&mut inner.published, row);
                }
            }
        }
        for (old, new) in &changes {
            let kind = old.as_ref().or(new.as_ref()).map(|c| c.key.kind);
            if let Some(kind) = kind {
                *kinds.entry(kind).or_default() +=
                    i64::from(new.is_some()) - i64::from(old.is_some());
            }
        }
        for (kind, delta) in kinds {
            self.metrics
                .modules
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .inc_by(delta);
        }
    }

    /// Sets every gauge from the whole view (after a change of nodes or policy), removing the
    /// series of GPUs that are gone.
    pub(super) fn publish_all(&self, inner: &mut Inner) {
        for kind in Kind::ALL {
            let count = inner.view.claims().filter(|c| c.key.kind == kind).count();
            self.metrics
                .modules
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .set(count as i64);
        }
        let before = std::mem::take(&mut inner.published);
        for row in inner.view.table(&inner.policy) {
            self.publish_row(&mut inner.published, row);
        }
        for gone in before.difference(&inner.published) {
            self.metrics.gpu_committed_percentage.remove(gone);
            self.metrics.gpu_clients.remove(gone);
        }
    }

    fn publish_row(&self, published: &mut HashSet<GpuLabels>, row: GpuRow) {
        let labels = GpuLabels {
            node: row.node,
            gpu: row.gpu.to_string(),
            mode: row.mode.as_str(),
        };
        self.metrics
            .gpu_committed_percentage
            .get_or_create(&labels)
            .set(i64::from(row.usage.percentage));
        self.metrics
            .gpu_clients
            .get_or_create(&labels)
            .set(i64::from(row.usage.clients));
        published.insert(labels);
    }
}
