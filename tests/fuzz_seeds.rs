//! The fuzz targets' checks over their committed seeds (`fuzz/seeds/<target>/`), run as plain
//! functions: every seed is a regression test, and because `make test` compiles the checks, a change
//! of the library's API that breaks a fuzz target breaks this test too. The modules are the fuzz
//! crate's own files (`fuzz/fuzz_targets/`), not copies; libFuzzer's bins only wrap them.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;
#[path = "../fuzz/fuzz_targets/parsers_check.rs"]
mod parsers_check;
#[path = "../fuzz/fuzz_targets/review_check.rs"]
mod review_check;

use std::any::Any;
use std::panic;
use std::path::PathBuf;

#[test]
fn review_seeds_pass_the_review_target_checks() {
    run_seeds("review", review_check::run);
}

#[test]
fn parsers_seeds_pass_the_parsers_target_checks() {
    run_seeds("parsers", parsers_check::run);
}

/// Runs every file of `fuzz/seeds/<target>/` through `check`, then fails naming each seed that
/// panicked (all of them, not just the first) with its panic message.
fn run_seeds(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    seeds.sort();
    // An emptied or moved seed directory must not pass as "nothing failed".
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    let mut failures = Vec::new();
    for seed in &seeds {
        let bytes =
            std::fs::read(seed).unwrap_or_else(|e| panic!("reading {}: {e}", seed.display()));
        // The checks share nothing mutable between inputs (the services are stateless), so a panic
        // in one seed leaves nothing broken for the next.
        if let Err(payload) = panic::catch_unwind(|| check(&bytes)) {
            let name = seed
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap_or(seed);
            failures.push(format!("{}: {}", name.display(), message(&*payload)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds fail the {target} target's checks:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)")
}
