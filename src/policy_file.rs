//! `--policy FILE`: the file is the policy, re-read when it changes (a mounted ConfigMap is
//! updated in place by the kubelet). An invalid edit is logged and counted; the last valid
//! policy stays in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::metrics::{Metrics, ResultLabels};
use crate::policy::Policy;

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Polls `path` every `interval` and hands each new valid policy to `apply`.
pub fn watch(
    path: PathBuf,
    interval: Duration,
    metrics: Arc<Metrics>,
    apply: impl Fn(Policy) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut last = modified(&path);
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            let now = modified(&path);
            if now == last {
                continue;
            }
            last = now;
            match crate::commands::read_policy(&path) {
                Ok(policy) => {
                    tracing::info!(file = %path.display(), "policy reloaded");
                    metrics
                        .policy_reloads
                        .get_or_create(&ResultLabels { result: "success" })
                        .inc();
                    apply(policy);
                }
                Err(error) => {
                    tracing::error!(file = %path.display(), error = %format!("{error:#}"), "invalid policy rejected; the last valid policy stays in force");
                    metrics
                        .policy_reloads
                        .get_or_create(&ResultLabels { result: "failure" })
                        .inc();
                }
            }
        }
    });
}
