//! Prometheus metrics, with conventional names, rendered in the text exposition format at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
        // Buckets from 50 µs to ~1.6 s: admission is expected well under a millisecond.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.00005, 2.0, 16,
        ));
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
        Metrics {
            registry,
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
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
