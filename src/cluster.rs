//! Cluster mode: watch-driven caches of nodes, the policy ConfigMap and managed Deployments feed
//! the decision core; admission reads them without calling the API server.

use std::path::Path;
use std::sync::Arc;

use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::service::Backend;

pub async fn start(
    _configmap: &str,
    _fixed_policy: Option<Policy>,
    _metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<dyn Backend>> {
    anyhow::bail!("cluster mode is not available in this build; run with --standalone")
}

pub async fn snapshot(
    _configmap: &str,
    _policy: Option<&Path>,
) -> anyhow::Result<(Policy, Inventory)> {
    anyhow::bail!("reading the cluster is not available in this build; use --from FILE")
}
