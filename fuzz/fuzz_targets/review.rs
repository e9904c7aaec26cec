//! The `review` fuzz target: any body through the webhook; `review_check.rs` has the checks, which
//! `tests/fuzz_seeds.rs` also runs over `fuzz/seeds/review/` in `cargo test`.
#![no_main]

mod common;
mod review_check;

libfuzzer_sys::fuzz_target!(|body: &[u8]| review_check::run(body));
