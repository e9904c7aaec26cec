//! Release builds of the `gpushare` binary link the functions a server runs next to each other
//! (`tests/tools/layout/gpushare.order`, written by `make layout`). The kernel maps a binary's code
//! in 64 KiB runs around each page touched, so a few thousand functions spread over 12 MB of code
//! kept most of it resident; packed together they take a few MB (BENCHMARKS.md, issue 26).
//!
//! The order names symbols exactly, so only a linker that reads `--symbol-ordering-file` may get it:
//! rust-lld, the default for x86_64-unknown-linux-gnu since Rust 1.90, unless a linker is
//! configured. Anywhere else, and for any name the file no longer matches (another toolchain or
//! dependency version), the build links as before.

use std::path::Path;
use std::process::Command;

const ORDER: &str = "tests/tools/layout/gpushare.order";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=build.rs");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER);
    let links_with_rust_lld = env("TARGET") == "x86_64-unknown-linux-gnu"
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !env("CARGO_ENCODED_RUSTFLAGS").contains("link")
        && rustc_minor(&env("RUSTC")).is_some_and(|minor| minor >= 90);
    if env("PROFILE") == "release" && links_with_rust_lld && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The `y` of rustc `1.y.z`.
fn rustc_minor(rustc: &str) -> Option<u32> {
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}
