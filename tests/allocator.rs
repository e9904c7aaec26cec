//! The binary runs on jemalloc with the options compiled into it (`src/lib.rs`): freed pages go
//! back to the system at once. jemalloc prints its options on exit when
//! `stats_print` is asked for in the environment, which adds to the compiled-in ones.

mod common;

use common::{gpushare, run_with_deadline};

#[test]
fn the_compiled_in_allocator_options_are_in_force() {
    let output = run_with_deadline(
        gpushare()
            .arg("version")
            .env("_RJEM_MALLOC_CONF", "stats_print:true"),
        None,
    );
    assert!(output.status.success());
    let stats = String::from_utf8_lossy(&output.stderr);
    for option in ["opt.dirty_decay_ms: 0", "opt.muzzy_decay_ms: 0"] {
        assert!(
            stats.contains(option),
            "{option} not in jemalloc's statistics:\n{}",
            stats.lines().take(60).collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn the_environment_still_overrides_them() {
    let output = run_with_deadline(
        gpushare()
            .arg("version")
            .env("_RJEM_MALLOC_CONF", "stats_print:true,dirty_decay_ms:1000"),
        None,
    );
    assert!(output.status.success());
    let stats = String::from_utf8_lossy(&output.stderr);
    assert!(
        stats.contains("opt.dirty_decay_ms: 1000"),
        "{}",
        stats.lines().take(60).collect::<Vec<_>>().join("\n")
    );
}
