//! The real `gpushare serve --standalone` over HTTPS, driven like the API server drives it:
//! complete `admission.k8s.io/v1` AdmissionReviews, the returned JSON Patch applied to the object,
//! and the patched object sent back to prove the mutation is idempotent (CONTRACT sections 3, 4, 6);
//! `webhook_https/kinds.rs` does the same for every other workload kind (section 2a).
//!
//! One file per topic under `webhook_https/`: `deployments.rs` (a Deployment's patch, applied and
//! sent back), `kinds.rs`, `rules.rs` (what is examined, and CONTRACT section 4 over the wire),
//! `serving.rs` (bodies, limits, health and metrics), `tls.rs`, and `configuration.rs` (the policy
//! file, certificates and GPU count `serve` reads).

mod common;
#[path = "webhook_https/configuration.rs"]
mod configuration;
#[path = "webhook_https/deployments.rs"]
mod deployments;
#[path = "webhook_https/kinds.rs"]
mod kinds;
#[path = "webhook_https/rules.rs"]
mod rules;
#[path = "webhook_https/serving.rs"]
mod serving;
#[path = "webhook_https/tls.rs"]
mod tls;

use common::*;
use serde_json::Value;

/// Sends the patched object back as a CREATE and as an UPDATE of itself: neither may change it.
async fn assert_idempotent(server: &Server, patched: &Value) {
    let again = server
        .review(&Review::create(patched.clone()).to_json())
        .await;
    again.assert_allowed_unchanged();
    let update = server
        .review(&Review::update(patched.clone(), patched.clone()).to_json())
        .await;
    update.assert_allowed_unchanged();
}
