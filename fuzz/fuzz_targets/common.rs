//! What both fuzz targets' checks share: the policies the webhook is fuzzed under. Compiled into
//! each fuzz target and into `tests/fuzz_seeds.rs`.

use std::sync::{Arc, OnceLock};

use gpushare::core::inventory::Inventory;
use gpushare::core::policy::Policy;
use gpushare::webhook::metrics::Metrics;
use gpushare::webhook::service::{AdmissionService, StandaloneBackend};

/// GPU 1 in mps, and every optional mutation switched on.
pub const MPS_POLICY: &str = r#"
gpuModes: { "1": mps }
hideGpuFromOtherContainers: true
mps: { hostIPC: true, pipeDirectory: /run/nvidia/mps }
namespaces: { exclude: [kube-system, gpushare-system, legacy] }
"#;

/// Every GPU in mps, tight limits, capacity only warned about, GPU 0 kept for a VM.
pub const WARN_POLICY: &str = r#"
defaultMode: mps
defaultMpsPercentage: 30
maxClientsPerGpu: 4
strategy: pack
enforcement: warn
reservedForVms: [0]
"#;

pub fn policies() -> &'static [Policy] {
    static POLICIES: OnceLock<Vec<Policy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        vec![
            Policy::default(),
            Policy::from_yaml(MPS_POLICY).expect("MPS_POLICY is valid"),
            Policy::from_yaml(WARN_POLICY).expect("WARN_POLICY is valid"),
        ]
    })
}

/// The standalone webhook on a 2-GPU node, once per policy. Built once and shared by every input:
/// a standalone backend keeps no state between requests.
// The `parsers` fuzz target, which has this module but not `review_check`, never reviews.
#[allow(dead_code)]
pub fn services() -> &'static [AdmissionService] {
    static SERVICES: OnceLock<Vec<AdmissionService>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        policies()
            .iter()
            .map(|policy| AdmissionService {
                backend: Arc::new(StandaloneBackend::new(
                    policy.clone(),
                    Inventory::standalone(Some(2)),
                )),
                metrics: Arc::new(Metrics::new()),
            })
            .collect()
    })
}
