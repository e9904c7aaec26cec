//! The ceiling: a bare axum + rustls endpoint on the same accept loop, TLS configuration and
//! runtime shape as `gpushare serve`, answering a fixed review; this same bench binary, started
//! again with `GPUSHARE_BENCH_CEILING=1`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::post;
use hyper::body::Bytes;
use serde_json::json;

/// A fixed, realistic answer: an allowed AdmissionReview with a JSON Patch of the size
/// gpushare writes for an mps module.
fn fixed_answer() -> Bytes {
    use base64::Engine as _;
    let patch = json!([
        { "op": "add", "path": "/metadata/annotations/gpushare.io~1assigned-gpu", "value": "1" },
        { "op": "add", "path": "/metadata/annotations/gpushare.io~1assigned-mode", "value": "mps" },
        { "op": "add", "path": "/metadata/annotations/gpushare.io~1assigned-mps-percentage", "value": "20" },
        { "op": "add", "path": "/spec/template/metadata/annotations", "value": {
            "gpushare.io/assigned-gpu": "1", "gpushare.io/assigned-mode": "mps", "gpushare.io/assigned-mps-percentage": "20" } },
        { "op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": { "name": "NVIDIA_VISIBLE_DEVICES", "value": "1" } },
        { "op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": { "name": "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "value": "20" } }
    ]);
    let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "b3c4d5e6-0000-4000-8000-000000000000",
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": patch
        }
    });
    Bytes::from(review.to_string())
}

/// Serves only the ceiling, on the same accept loop, TLS configuration and runtime shape as
/// `gpushare serve`, until killed.
pub fn run() {
    let cert = PathBuf::from(std::env::var_os("GPUSHARE_BENCH_CERT").expect("GPUSHARE_BENCH_CERT"));
    let key = PathBuf::from(std::env::var_os("GPUSHARE_BENCH_KEY").expect("GPUSHARE_BENCH_KEY"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(async move {
        gpushare::webhook::tls::install_default_provider();
        let cert = gpushare::webhook::tls::ReloadingCert::load(&cert, &key)
            .expect("the certificate loads");
        let tls =
            gpushare::webhook::tls::server_config(Arc::new(cert), None).expect("TLS configuration");
        let answer = fixed_answer();
        let app = axum::Router::new().route(
            "/mutate",
            post(move |body: axum::body::Bytes| {
                let answer = answer.clone();
                async move {
                    std::hint::black_box(body.len());
                    ([(hyper::header::CONTENT_TYPE, "application/json")], answer)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("a local address");
        eprintln!("listening on https://{addr}");
        gpushare::webhook::server::serve_app(
            listener,
            tls,
            app,
            Arc::new(gpushare::webhook::metrics::Metrics::new()),
            gpushare::webhook::server::Limits::default(),
            std::future::pending::<()>(),
        )
        .await;
    });
}
