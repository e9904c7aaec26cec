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
