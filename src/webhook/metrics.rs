//! Prometheus metrics, with conventional names, rendered in the text exposition format at `/metrics`.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::domain::Mode;
use crate::core::policy::Policy;
use crate::core::status::StatusRow;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Decision {
    allowed,
    patched,
    denied,
    skipped,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: &'static str,
    /// The workload kind (`Deployment`, `Job`, ...), or `other`.
    pub kind: &'static str,
    pub decision: Decision,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    pub node: String,
    pub gpu: String,
    pub mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

/// One module's share of one GPU of one node: a series a dashboard can join with the device's
/// own GPU metrics (which cannot tell which pod uses a shared GPU).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub node: String,
    pub gpu: String,
    pub mode: String,
}

/// Where the policy in force is read at each scrape.
type PolicySource = Box<dyn Fn() -> Arc<Policy> + Send + Sync>;

/// Where the per-module shares are read at each scrape.
type ShareSource = Box<dyn Fn() -> Vec<StatusRow> + Send + Sync>;

/// Upper bounds of the admission latency buckets: 50 µs doubling to ~3.3 s (admission is
/// expected well under a millisecond), then the webhook's 5 s timeout and 10 s, so that a slow
/// answer the API server gave up on still lands in a bucket of its own.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 17).chain([5.0, 10.0])
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Histogram,
    pub bad_requests: Counter,
    pub tls_handshake_failures: Counter,
    pub certificate_expiry: Gauge,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub cache_synced: Family<CacheLabels, Gauge>,
    pub gpu_committed_percentage: Family<GpuLabels, Gauge>,
    pub gpu_clients: Family<GpuLabels, Gauge>,
    pub modules: Family<KindLabels, Gauge>,
    policy_max_mps_percentage: Gauge,
    policy_max_clients: Family<ModeLabels, Gauge>,
    policy_source: OnceLock<PolicySource>,
    module_percentage: Family<ModuleLabels, Gauge>,
    module_clients: Family<ModuleLabels, Gauge>,
    module_running: Family<ModuleLabels, Gauge>,
    share_source: OnceLock<ShareSource>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gpushare");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by operation, kind, decision and reason",
            requests.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: crate::VERSION,
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the label is the version of the running gpushare",
            build_info,
        );
        let latency = Histogram::new(latency_buckets());
        registry.register(
            "admission_duration_seconds",
            "Time to answer one admission review",
            latency.clone(),
        );
        let bad_requests = Counter::default();
        registry.register(
            "admission_bad_requests",
            "Bodies rejected with HTTP 400 as not a valid AdmissionReview",
            bad_requests.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "serving_certificate_expiry_timestamp_seconds",
            "Expiry (Unix time) of the serving certificate in use",
            certificate_expiry.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy loads from the ConfigMap, by result (success, failure)",
            policy_reloads.clone(),
        );
        let cache_synced = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_synced",
            "1 once a cluster cache (nodes, policy, or one workload kind: deployments, jobs, ...) has synced",
            cache_synced.clone(),
        );
        let gpu_committed_percentage = Family::<GpuLabels, Gauge>::default();
        registry.register(
            "gpu_committed_mps_percentage",
            "Committed MPS percentage per node and GPU",
            gpu_committed_percentage.clone(),
        );
        let gpu_clients = Family::<GpuLabels, Gauge>::default();
        registry.register(
            "gpu_client_processes",
            "Client processes assigned per node and GPU",
            gpu_clients.clone(),
        );
        let modules = Family::<KindLabels, Gauge>::default();
        registry.register(
            "modules",
            "Modules holding a GPU, by workload kind",
            modules.clone(),
        );
        let policy_max_mps_percentage = Gauge::default();
        registry.register(
            "policy_max_mps_percentage_per_gpu",
            "The policy's maxMpsPercentagePerGpu: the cap on the committed MPS percentage of one GPU (0 = no cap)",
            policy_max_mps_percentage.clone(),
        );
        let policy_max_clients = Family::<ModeLabels, Gauge>::default();
        registry.register(
            "policy_max_clients_per_gpu",
            "Client processes one GPU may take, by mode: the policy's maxClientsPerGpu (never above 48 for mps)",
            policy_max_clients.clone(),
        );
        let module_percentage = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "module_committed_mps_percentage",
            "Committed MPS percentage of one module on one GPU of one node (pods x its percentage)",
            module_percentage.clone(),
        );
        let module_clients = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "module_client_processes",
            "Client processes one module counts on one GPU of one node",
            module_clients.clone(),
        );
        let module_running = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "module_running_pods",
            "Pods of one module running on a node now (cluster mode): 0 beside a committed share means it holds a GPU no pod uses",
            module_running.clone(),
        );
        let metrics = Metrics {
            registry,
            module_percentage,
            module_clients,
            module_running,
            share_source: OnceLock::new(),
            policy_max_mps_percentage,
            policy_max_clients,
            policy_source: OnceLock::new(),
            modules,
            requests,
            latency,
            bad_requests,
            tls_handshake_failures,
            certificate_expiry,
            policy_reloads,
            cache_synced,
            gpu_committed_percentage,
            gpu_clients,
        };
        // Until a source is set, the embedded default is the policy in force.
        metrics.publish_policy(&Policy::default());
        metrics
    }

    /// Exports the limits of the policy `source` returns, read at each scrape so that they are
    /// those in force whichever way the policy changed (ConfigMap, file). Set once; later calls
    /// are ignored.
    pub fn follow_policy(&self, source: impl Fn() -> Arc<Policy> + Send + Sync + 'static) {
        let _ = self.policy_source.set(Box::new(source));
    }

    /// Exports each module's share of each GPU from the rows `source` returns, read at each scrape
    /// (the series of modules that went away go with them). Set once.
    pub fn follow_shares(&self, source: impl Fn() -> Vec<StatusRow> + Send + Sync + 'static) {
        let _ = self.share_source.set(Box::new(source));
    }

    fn publish_shares(&self, rows: &[StatusRow]) {
        self.module_percentage.clear();
        self.module_clients.clear();
        self.module_running.clear();
        for row in rows {
            for share in &row.shares {
                let labels = ModuleLabels {
                    namespace: share.namespace.clone(),
                    kind: share.kind.clone(),
                    name: share.name.clone(),
                    node: row.node.clone(),
                    gpu: row.gpu.to_string(),
                    mode: row.mode.clone(),
                };
                self.module_percentage
                    .get_or_create(&labels)
                    .set(i64::from(share.committed_mps_percentage));
                self.module_clients
                    .get_or_create(&labels)
                    .set(i64::from(share.client_processes));
                if let Some(running) = share.running_pods {
                    self.module_running
                        .get_or_create(&labels)
                        .set(i64::from(running));
                }
            }
        }
    }

    fn publish_policy(&self, policy: &Policy) {
        self.policy_max_mps_percentage
            .set(policy.max_mps_percentage_per_gpu.map_or(0, i64::from));
        for mode in [Mode::TimeSlicing, Mode::Mps] {
            self.policy_max_clients
                .get_or_create(&ModeLabels {
                    mode: mode.as_str(),
                })
                .set(i64::from(policy.max_clients(mode)));
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        if let Some(source) = self.policy_source.get() {
            self.publish_policy(&source());
        }
        if let Some(source) = self.share_source.get() {
            self.publish_shares(&source());
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
