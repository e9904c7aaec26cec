//! The functional core: parsed once at the edge into typed values, then decided by one pure
//! function. No I/O, no clock, no shared state; the webhook, `check` and the cluster shells all
//! call it, so they can never disagree.

pub mod annotations;
pub mod claim;
mod containers;
pub mod decision;
pub mod denial;
pub mod domain;
pub mod handwritten;
pub mod inventory;
pub mod keys;
mod mutation;
mod patch;
mod placement;
pub mod pods;
pub mod policy;
pub mod record;
pub mod scale;
pub mod status;
pub mod verdict;
pub mod workload;
