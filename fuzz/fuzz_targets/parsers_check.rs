//! The parsers that read what admins and users write. The first byte picks one (its low two
//! bits) and its options (the rest); the remaining bytes are the text:
//!
//! - 0: a policy, `Policy::from_yaml`;
//! - 1: annotations, `UserAnnotations::merge` + `parse`: one `key=value` per line, metadata
//!   first, then a line `---` and the pod template's; option bits drop either map and pick the
//!   policy's `defaultGpu`;
//! - 2: manifests, `check::parse_documents`;
//! - 3: manifests through the whole `gpushare check` core, under the policy the option picks.
//!
//! Errors are fine; panics are failures (libFuzzer's crashes, `tests/fuzz_seeds.rs`'s failed seeds),
//! and so are verdict lines that do not start with their mark (`ALLOWED `, `DENIED `, `SKIPPED `),
//! or report an internal error (a patch that does not apply).

use std::collections::BTreeMap;

use gpushare::cli::check::{self, Document};
use gpushare::core::annotations::UserAnnotations;
use gpushare::core::domain::GpuIndex;
use gpushare::core::inventory::Inventory;
use gpushare::core::policy::{GpuChoice, Policy};

use crate::common;

/// Runs one input (selector byte, then text) through the parser it selects; panics on any
/// violation.
pub fn run(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let options = selector >> 2;
    match selector & 3 {
        0 => policy(&text),
        1 => annotations(&text, options),
        2 => {
            let _ = check::parse_documents("fuzz.yaml", &text);
        }
        _ => check_core(&text, options),
    }
}

fn policy(text: &str) {
    if let Ok(policy) = Policy::from_yaml(text) {
        assert!(policy.max_clients_per_gpu >= 1);
        assert!((1..=100).contains(&policy.default_mps_percentage.get()));
    }
}

type Annotations = BTreeMap<String, String>;

fn annotations(text: &str, options: u8) {
    let mut maps: [Annotations; 2] = Default::default();
    let mut place = 0;
    for line in text.lines() {
        if line == "---" {
            place = 1;
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        maps[place].insert(key.to_string(), value.to_string());
    }
    let metadata = (options & 1 == 0).then_some(&maps[0]);
    let template = (options & 2 == 0).then_some(&maps[1]);
    let default_gpu = match (options >> 2) & 3 {
        0 => GpuChoice::Auto,
        1 => GpuChoice::Index(GpuIndex(0)),
        2 => GpuChoice::Index(GpuIndex(1)),
        _ => GpuChoice::Index(GpuIndex(u32::MAX)),
    };
    let Ok(user) =
        UserAnnotations::merge([("metadata", metadata), ("spec.template.metadata", template)])
    else {
        return;
    };
    match user.parse(default_gpu) {
        Ok(request) => {
            if let Some(p) = request.percentage {
                assert!((1..=100).contains(&p.get()));
            }
            if let Some(containers) = &request.containers {
                assert!(!containers.is_empty() && containers.iter().all(|c| !c.is_empty()));
            }
        }
        Err(denial) => assert!(!denial.message.is_empty()),
    }
}

fn check_core(text: &str, options: u8) {
    let Ok(values) = check::parse_documents("fuzz.yaml", text) else {
        return;
    };
    let policies = common::policies();
    let policy = &policies[usize::from(options) % policies.len()];
    let documents = values
        .into_iter()
        .map(|value| Document {
            source: "fuzz.yaml".into(),
            value,
        })
        .collect();
    let report = check::check(documents, policy, Inventory::standalone(Some(2)));
    let _ = check::to_yaml(&report.objects);
    for line in &report.lines {
        let prefix = format!("{} ", line.mark.as_str());
        assert!(
            line.text.starts_with(&prefix),
            "verdict line {:?}",
            line.text
        );
        assert!(!line.text.contains("internal error"), "{}", line.text);
    }
    let _ = report.inventory.table(policy);
}
