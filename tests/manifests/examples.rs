//! The examples: single workloads, each listed in `examples/README.md`, and policies with known
//! keys only.

use std::collections::BTreeSet;

use crate::objects::*;
use crate::policy::default_policy;

#[test]
fn examples_are_single_workloads_listed_in_the_readme() {
    let readme = read(&repo_path("examples/README.md"));
    let policy_keys: BTreeSet<String> = default_policy()
        .as_object()
        .expect("the default policy is a mapping")
        .keys()
        .cloned()
        .collect();
    let mut files: Vec<_> = std::fs::read_dir(repo_path("examples"))
        .expect("examples/ exists")
        .map(|entry| {
            entry
                .expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "examples/ must contain examples");

    for file in files {
        let path = repo_path("examples").join(&file);
        let text = read(&path);
        let documents = parse_documents(&text, &format!("examples/{file}"));
        if file.starts_with("policy-") {
            let keys = documents[0]
                .as_object()
                .expect("a policy is a mapping")
                .keys();
            for key in keys {
                assert!(
                    policy_keys.contains(key),
                    "examples/{file}: unknown policy key {key}"
                );
            }
            continue;
        }
        assert!(
            file.starts_with("allowed-") || file.starts_with("denied-"),
            "examples/{file}: an example's name must start with allowed- or denied- (its verdict)"
        );
        assert!(
            readme.contains(&format!("]({file})")),
            "examples/README.md must have a row for {file}"
        );
        // One workload, or one sample as its publisher wrote it (the device's two Jobs).
        assert!(
            documents.len() == 1 || file.contains("sharing"),
            "examples/{file} must hold one object"
        );
        for document in &documents {
            assert!(
                [
                    "Deployment",
                    "StatefulSet",
                    "DaemonSet",
                    "Job",
                    "CronJob",
                    "Pod"
                ]
                .contains(&kind(document)),
                "examples/{file} must hold workloads gpushare examines"
            );
        }

        let first_comment = text
            .lines()
            .find(|l| l.starts_with('#'))
            .unwrap_or_default();
        if let Some(args) = first_comment.strip_prefix("# gpushare-check-args:") {
            for policy in args
                .split_whitespace()
                .skip_while(|a| *a != "--policy")
                .skip(1)
                .take(1)
            {
                assert!(
                    repo_path(policy).is_file(),
                    "examples/{file} names --policy {policy}, which does not exist"
                );
            }
        }
    }
}
