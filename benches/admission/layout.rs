//! How much of the code layout (`tests/tools/layout/gpushare.order`, handed to the linker by
//! build.rs) the measured binary matches. The file names symbols exactly, and a toolchain or
//! dependency update renames them: the packing then fades and the peak RSS rises with no change
//! to gpushare, which this line makes visible.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// (functions of the order file found in `binary`, functions the file names), if both can be read.
pub fn coverage(binary: &Path) -> Option<(usize, usize)> {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/layout/gpushare.order");
    let order = std::fs::read_to_string(order).ok()?;
    let out = Command::new("nm").arg(binary).output().ok()?;
    let symbols = String::from_utf8_lossy(&out.stdout);
    let symbols: HashSet<&str> = symbols
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    let named: Vec<&str> = order.lines().collect();
    let found = named.iter().filter(|name| symbols.contains(*name)).count();
    Some((found, named.len()))
}

/// The report's line on it.
pub fn note(coverage: Option<(usize, usize)>) -> String {
    match coverage {
        Some((found, named)) => format!(
            "Code layout: {found} of the {named} functions tests/tools/layout/gpushare.order names \
             are in this build. A current file matches about half in a release build (it names the \
             image build's too); far fewer means it is stale (`make layout`), or that this is \
             `cargo bench`'s own build (`make bench` measures the release build)."
        ),
        None => "Code layout: not read (no order file or no `nm`).".into(),
    }
}
