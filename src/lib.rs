//! gpushare: a Kubernetes mutating admission webhook that lets many workloads share the one or two
//! NVIDIA T4 GPUs of an edge device safely.
//!
//! Layers, each depending only on the ones before it:
//! - `core`: the pure decision (annotations, policy, workloads, inventory -> patch or denial);
//! - `webhook`: the AdmissionReview wire format, the admission service and the HTTPS server;
//! - `cluster`: watch-driven caches of the cluster that feed the core in `serve`;
//! - `cli`: the command line and its commands (`serve`, `check`, `certs`, `status`).

pub mod cli;
pub mod cluster;
pub mod core;
pub mod webhook;

/// The version `gpushare version`, `serve`'s first log line and `gpushare_build_info` report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Admission allocates and frees many small buffers per request (the parsed view, the patch, HTTP
/// and TLS buffers); with jemalloc the server spends about a quarter less CPU per admission than
/// with glibc's malloc, and the cluster caches stay as compact (mimalloc was as fast but held
/// twice the memory after a large list). Set in the library so that the tests and the in-process
/// benchmark run on the allocator `serve` runs on. Figures: BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start (`_RJEM_MALLOC_CONF` in the environment overrides
/// them): pages freed are returned to the system at once instead of kept for reuse. A burst of
/// TLS handshakes, a relist or a large ledger reading then leaves the resident set as it ends;
/// kept for a second (with a background thread returning them), the pages of 64 handshakes
/// raised a server's peak by about 0.8 MiB, at no measurable CPU saving (BENCHMARKS.md).
#[export_name = "_rjem_malloc_conf"]
#[used]
static MALLOC_CONF: &[u8; 34] = b"dirty_decay_ms:0,muzzy_decay_ms:0\0";
