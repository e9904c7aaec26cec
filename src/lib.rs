//! gpushare: a Kubernetes mutating admission webhook that lets many workloads share the one or two
//! NVIDIA T4 GPUs of an edge device safely.
//!
//! The core (`annotations`, `policy`, `inventory` -> `decision` -> `patch`) is pure; the shells
//! (`server`, `check`, `cluster`) feed it and render its answers.

pub mod annotations;
pub mod decision;
pub mod domain;
pub mod inventory;
pub mod patch;
pub mod policy;
pub mod verdict;
pub mod workload;
