//! Release builds of the `gpushare` binary link the functions a server runs next to each other
//! (`tests/tools/layout/gpushare.order`, written by `make layout`). The kernel maps a binary's code
//! in 64 KiB runs around each page touched, so a few thousand functions spread over 12 MB of code
//! kept most of it resident; packed together they take a few MB (BENCHMARKS.md, issue 26).
//!
//! With a glibc that reads them (2.36 and later), relocations are packed too (`-z
//! pack-relative-relocs`): the loader reads all of them at start, 800 KB unpacked, 14 KB packed.
//!
//! Both need rust-lld, the default linker for x86_64-unknown-linux-gnu since Rust 1.90, unless a
//! linker is configured. Anywhere else, and for any name the order no longer matches (another
//! toolchain or dependency version), the build links as before.

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
    // An older loader would ignore packed relocations and crash, so only where glibc reads them.
    if env("PROFILE") == "release" && links_with_rust_lld && glibc_reads_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// glibc 2.36 or later on this machine (whose libc the binary links, statically or not).
fn glibc_reads_packed_relocations() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
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
