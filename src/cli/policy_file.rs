//! `--policy FILE`: the file is the policy, re-read when it changes (a mounted ConfigMap is
//! updated in place by the kubelet). An invalid edit is logged and counted; the last valid
//! policy stays in force.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::core::policy::Policy;
use crate::webhook::metrics::{Metrics, ResultLabels};

/// Reads and validates a policy file.
pub fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy {}", path.display()))?;
    Policy::from_yaml(&text).with_context(|| format!("invalid policy {}", path.display()))
}

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
            match read_policy(&path) {
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
