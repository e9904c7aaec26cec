//! The HTTPS admission webhook: the AdmissionReview wire format, the service that answers one
//! review with the core's decision, the server with its TLS and the Prometheus metrics.

pub mod admission;
pub mod backend;
pub mod commit;
pub mod metrics;
pub mod server;
pub mod service;
pub mod status_page;
pub mod tls;
