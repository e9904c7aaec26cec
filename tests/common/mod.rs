//! Helpers shared by the integration tests that run the real `gpushare` binary: fixtures,
//! development certificates, a `serve` child process that is killed on drop, complete
//! AdmissionReviews as the API server sends them, and JSON Patch application.
//!
//! Include it with `mod common;`; each test crate uses a different subset.
#![allow(dead_code)]

use std::time::Duration;

mod answer;
mod binary;
mod certs;
mod objects;
mod review;
mod server;

// Each test crate uses a different subset.
#[allow(unused_imports)]
pub use self::{
    answer::{apply_patch, Answer},
    binary::{bin, gpushare, run_with_deadline, strip_ansi},
    certs::Certs,
    objects::{
        annotation, assert_assigned, env, env_value, every_kind, fixture_json, fixture_path,
        fixture_text, gpushare_annotations, metadata_of, template_of, web, with_annotations,
    },
    review::{new_uid, Review},
    server::{client_trusting, Server},
};

/// How long anything that involves starting a process may take on a busy CI machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub const GPU: &str = "gpushare.io/gpu";
pub const MODE: &str = "gpushare.io/mode";
pub const MPS_PERCENTAGE: &str = "gpushare.io/mps-percentage";
pub const MPS_MEMORY_LIMIT: &str = "gpushare.io/mps-memory-limit";
pub const CONTAINERS: &str = "gpushare.io/containers";
pub const ASSIGNED_GPU: &str = "gpushare.io/assigned-gpu";
pub const ASSIGNED_MODE: &str = "gpushare.io/assigned-mode";
pub const ASSIGNED_MPS_PERCENTAGE: &str = "gpushare.io/assigned-mps-percentage";
pub const VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
pub const MPS_THREAD_PERCENTAGE: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";
pub const MPS_MEM_LIMIT: &str = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT";
