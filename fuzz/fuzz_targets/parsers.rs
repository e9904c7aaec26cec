//! The `parsers` fuzz target: the policy, annotation and manifest parsers; `parsers_check.rs` has
//! the input format and the checks, which `tests/fuzz_seeds.rs` also runs over `fuzz/seeds/parsers/`
//! in `cargo test`.
#![no_main]

mod common;
mod parsers_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| parsers_check::run(data));
