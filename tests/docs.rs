//! The documentation cannot drift from the code. docs/reference.md names every policy key, every
//! annotation, every command and long flag, every metric, endpoint and webhook the code has;
//! README.md stays a front door (at most 300 lines); relative links in the docs resolve; no
//! user-facing file points to a contract the repository does not ship; and every example's
//! `# Expected:` lines are what `gpushare check` prints for it. No network, no cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use gpushare::cli::args::Cli;
use serde_yaml::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn reference() -> String {
    read("docs/reference.md")
}

/// Whether `doc` names `item` as code: `` `item` ``, or the start of a code span such as
/// `` `item{label}` `` or `` `--flag VALUE` ``.
fn names(doc: &str, item: &str) -> bool {
    doc.match_indices(&format!("`{item}")).any(|(at, m)| {
        let next = doc[at + m.len()..].chars().next();
        matches!(next, Some('`' | '{' | ' ' | '\\' | ','))
    })
}

fn missing_from_reference(items: impl IntoIterator<Item = String>, what: &str) {
    let doc = reference();
    let missing: Vec<String> = items.into_iter().filter(|i| !names(&doc, i)).collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md does not name these {what} (as `code`): {missing:?}"
    );
}

// ---- policy keys -----------------------------------------------------------------------------

fn keys(prefix: &str, value: &Value, out: &mut Vec<String>) {
    let Value::Mapping(map) = value else { return };
    for (key, child) in map {
        let key = key.as_str().expect("policy keys are strings");
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        out.push(path.clone());
        keys(&path, child, out);
    }
}

#[test]
fn every_policy_key_is_in_the_reference() {
    let policy: Value =
        serde_yaml::from_str(&read("src/core/default-policy.yaml")).expect("the default policy");
    let mut all = Vec::new();
    keys("", &policy, &mut all);
    assert!(all.len() >= 19, "read the default policy's keys: {all:?}");
    missing_from_reference(all, "policy keys");
}

// ---- annotations and labels ------------------------------------------------------------------

/// The `"gpushare.io/..."` string constants of a source file (not the bare prefix).
fn gpushare_constants(path: &str) -> BTreeSet<String> {
    read(path)
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const") || l.trim_start().starts_with("const"))
        .filter_map(|l| {
            let start = l.find("\"gpushare.io/")? + 1;
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_string())
        })
        .filter(|k| !k.ends_with('/'))
        .collect()
}

#[test]
fn every_annotation_and_label_is_in_the_reference() {
    let annotations = gpushare_constants("src/core/keys.rs");
    assert!(
        annotations.len() >= 8,
        "read the annotation constants: {annotations:?}"
    );
    missing_from_reference(annotations, "annotations");
    missing_from_reference(
        [gpushare::cluster::registration::MANAGED_NAMESPACE_LABEL.to_string()],
        "labels",
    );
}

// ---- commands and flags ----------------------------------------------------------------------

/// The text of the reference's section `### \`gpushare <command>\``, up to the next heading.
fn command_section(doc: &str, command: &str) -> Option<String> {
    let heading = format!("### `gpushare {command}`");
    let start = doc.find(&heading)?;
    let rest = &doc[start + heading.len()..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

#[test]
fn every_command_and_flag_is_in_the_reference() {
    let doc = reference();
    let cli = Cli::command();
    let mut missing = Vec::new();
    let mut seen = 0;
    for command in cli.get_subcommands() {
        let name = command.get_name();
        let Some(section) = command_section(&doc, name) else {
            missing.push(format!("section ### `gpushare {name}`"));
            continue;
        };
        seen += 1;
        for arg in command.get_arguments() {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            if let Some(long) = arg.get_long() {
                if !names(&section, &format!("--{long}")) {
                    missing.push(format!("gpushare {name} --{long}"));
                }
            }
            if let Some(short) = arg.get_short() {
                if !names(&section, &format!("-{short}")) {
                    missing.push(format!("gpushare {name} -{short}"));
                }
            }
        }
    }
    assert!(seen >= 7, "walked the subcommands of the CLI");
    assert!(
        names(&doc, "gpushare --version"),
        "the reference names gpushare --version"
    );
    assert!(
        missing.is_empty(),
        "docs/reference.md is missing these commands or flags (each in its command's section): {missing:?}"
    );
}

#[test]
fn every_exit_code_is_in_the_reference() {
    let doc = reference();
    let section = &doc[doc.find("## Exit codes").expect("an Exit codes section")..];
    for code in [
        0,
        gpushare::cli::commands::EXIT_DENIED,
        gpushare::cli::commands::EXIT_ERROR,
    ] {
        assert!(
            section.contains(&format!("| `{code}` |")),
            "the exit code table has a column for {code}"
        );
    }
}

// ---- metrics, endpoints, webhooks ------------------------------------------------------------

/// The names `src/webhook/metrics.rs` registers (`registry.register("name", ...)`), with the
/// registry's `gpushare_` prefix: every metric, whether or not it has a series yet.
fn registered_metrics() -> Vec<String> {
    let source = read("src/webhook/metrics.rs");
    source
        .match_indices("registry.register(")
        .filter_map(|(at, call)| {
            let rest = &source[at + call.len()..];
            let start = rest.find('"')? + 1;
            let end = start + rest[start..].find('"')?;
            Some(format!("gpushare_{}", &rest[start..end]))
        })
        .collect()
}

#[test]
fn every_metric_is_in_the_reference() {
    let doc = reference();
    let registered = registered_metrics();
    assert!(
        registered.len() >= 16,
        "read the registered metrics: {registered:?}"
    );
    // Counters are exported (and queried) with the suffix `_total`.
    let missing: Vec<&String> = registered
        .iter()
        .filter(|m| !names(&doc, m) && !names(&doc, &format!("{m}_total")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md does not name these metrics: {missing:?}"
    );
    // What a scrape shows (families with a series) is named exactly as exported.
    let exposition = gpushare::webhook::metrics::Metrics::new().render();
    let mut exported = Vec::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
            exported.push(match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                _ => name.to_string(),
            });
        }
    }
    assert!(!exported.is_empty(), "the exposition has metrics");
    missing_from_reference(exported, "exported metrics");
}

#[test]
fn every_endpoint_is_in_the_reference() {
    let mut paths = BTreeSet::new();
    for file in ["src/webhook/server.rs", "src/webhook/status_page.rs"] {
        for line in read(file).lines() {
            if !(line.contains(".route(\"") || line.contains("const PATH")) {
                continue;
            }
            if let Some(start) = line.find("\"/") {
                let path = &line[start + 1..];
                let end = path.find('"').expect("a closed string");
                paths.insert(path[..end].to_string());
            }
        }
    }
    assert!(paths.len() >= 5, "read the routes: {paths:?}");
    let doc = reference();
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !doc.contains(&format!("`GET {p}`")) && !doc.contains(&format!("`POST {p}`")))
        .collect();
    assert!(missing.is_empty(), "endpoints missing: {missing:?}");
}

#[test]
fn every_webhook_is_in_the_reference() {
    let configuration: Value = serde_yaml::from_str(&read("manifests/webhook.yaml"))
        .expect("manifests/webhook.yaml is YAML");
    let webhooks: Vec<String> = configuration["webhooks"]
        .as_sequence()
        .expect("webhooks")
        .iter()
        .map(|w| w["name"].as_str().expect("a name").to_string())
        .collect();
    assert!(!webhooks.is_empty());
    missing_from_reference(webhooks, "webhooks");
}

// ---- the front door and the links ------------------------------------------------------------

#[test]
fn the_readme_is_a_front_door() {
    let lines = read("README.md").lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; keep it at most 300 and move the rest under docs/"
    );
}

/// README.md, BENCHMARKS.md, examples/README.md and docs/*.md.
fn documents() -> Vec<String> {
    let mut docs = vec![
        "README.md".to_string(),
        "BENCHMARKS.md".to_string(),
        "examples/README.md".to_string(),
    ];
    let mut under: Vec<String> = std::fs::read_dir(repo("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".md"))
        .map(|f| format!("docs/{f}"))
        .collect();
    under.sort();
    docs.extend(under);
    docs
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces turned into `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let base = anchor(line.trim_start_matches('#'));
        let mut candidate = base.clone();
        let mut n = 0;
        while seen.contains(&candidate) {
            n += 1;
            candidate = format!("{base}-{n}");
        }
        seen.insert(candidate);
    }
    seen
}

/// The relative link targets of a Markdown text: `](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            if let Some(end) = rest.find(')') {
                let target = &rest[..end];
                if !target.contains("://") && !target.starts_with("mailto:") {
                    out.push(target.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        let dir = Path::new(&doc).parent().unwrap_or(Path::new(""));
        for target in links(&text) {
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                PathBuf::from(&doc)
            } else {
                dir.join(path)
            };
            let full = repo(&file.to_string_lossy());
            if !full.exists() {
                broken.push(format!("{doc}: {target} (no such file)"));
                continue;
            }
            if let Some(fragment) = fragment {
                if full.extension().is_some_and(|e| e == "md") {
                    let headings = anchors(&std::fs::read_to_string(&full).unwrap_or_default());
                    if !headings.contains(fragment) {
                        broken.push(format!("{doc}: {target} (no such heading)"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn user_facing_docs_point_to_nothing_users_do_not_have() {
    let mut found = Vec::new();
    let mut files = documents();
    files.extend(
        std::fs::read_dir(repo("examples"))
            .expect("examples/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".yaml"))
            .map(|f| format!("examples/{f}")),
    );
    for file in files {
        for (n, line) in read(&file).lines().enumerate() {
            let lower = line.to_lowercase();
            if lower.contains("contract section") || line.contains("CONTRACT") {
                found.push(format!("{file}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the repository ships no contract; say it instead: {found:#?}"
    );
}

// ---- examples --------------------------------------------------------------------------------

/// The arguments `make check-examples` gives an example: its first line
/// `# gpushare-check-args: ...`, else `--gpus 2`.
fn check_examples_args(text: &str) -> Vec<String> {
    let first = text.lines().next().unwrap_or_default();
    let args = first
        .strip_prefix("# gpushare-check-args:")
        .unwrap_or("--gpus 2");
    args.split_whitespace().map(str::to_string).collect()
}

#[test]
fn every_example_prints_its_expected_lines() {
    let mut files: Vec<String> = std::fs::read_dir(repo("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && (f.starts_with("allowed-") || f.starts_with("denied-")))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut problems = Vec::new();
    for file in files {
        let path = format!("examples/{file}");
        let text = read(&path);
        let comments: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        let Some(check) = comments
            .iter()
            .find_map(|l| l.strip_prefix("# Check: gpushare check "))
        else {
            problems.push(format!("{path}: no `# Check: gpushare check ...` line"));
            continue;
        };
        let mut args: Vec<String> = check.split_whitespace().map(str::to_string).collect();
        if args.pop().as_deref() != Some(path.as_str()) {
            problems.push(format!("{path}: the # Check: line must end with {path}"));
            continue;
        }
        if args != check_examples_args(&text) {
            problems.push(format!(
                "{path}: # Check: uses {args:?} but make check-examples uses {:?}",
                check_examples_args(&text)
            ));
        }
        let expected: Vec<&str> = comments
            .iter()
            .filter_map(|l| l.strip_prefix("# Expected: "))
            .collect();
        if expected.is_empty() {
            problems.push(format!("{path}: no `# Expected:` line"));
            continue;
        }
        let output = Command::new(env!("CARGO_BIN_EXE_gpushare"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("check")
            .args(&args)
            .arg(&path)
            .output()
            .expect("gpushare check runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let printed: Vec<&str> = stdout.lines().collect();
        let want = if file.starts_with("allowed-") { 0 } else { 1 };
        if output.status.code() != Some(want) {
            problems.push(format!(
                "{path}: exit {:?}, want {want}",
                output.status.code()
            ));
        }
        let matches = printed.len() == expected.len()
            && printed
                .iter()
                .zip(&expected)
                .all(|(line, want)| match want.strip_suffix("...") {
                    Some(prefix) => line.starts_with(prefix),
                    None => line == want,
                });
        if !matches {
            problems.push(format!(
                "{path}: # Expected:\n  {}\nbut gpushare check printed:\n  {}",
                expected.join("\n  "),
                printed.join("\n  ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
