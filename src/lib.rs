//! gpushare: a Kubernetes mutating admission webhook that lets many workloads share the one or two
//! NVIDIA T4 GPUs of an edge device safely.
//!
//! The core is pure: `annotations`, `policy` and `inventory` go into `decision`, which chooses a GPU
//! with `placement` and writes it with `mutation` and `patch`. The shells (`server` and `service`,
//! `check`, `cluster`) feed it and render its answers.

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod decision;
pub mod domain;
pub mod inventory;
pub mod log_format;
pub mod metrics;
pub mod mutation;
pub mod patch;
pub mod placement;
pub mod policy;
pub mod policy_file;
pub mod server;
pub mod service;
pub mod status;
pub mod status_page;
pub mod tls;
pub mod verdict;
pub mod workload;
