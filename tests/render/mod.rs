//! Rendering what users deploy, for the packaging tests: `kubectl kustomize` of `manifests/` and of
//! overlays built in a temp dir from its components, and `helm template` of `charts/gpushare`.
//! Objects are compared as data (kind, namespace and name, then field by field), so the tests follow
//! whatever `manifests/` says instead of holding copies of it.
//!
//! Include it with `mod render;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every non-empty YAML document of `text`, as JSON values.
pub fn parse_documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin} is not valid YAML: {e}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Whether CI runs us (`.ci/run` sets CI=true): there a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns false after saying why) when `tool` is missing outside CI; fails in CI.
pub fn have(tool: &str, found: bool, install: &str) -> bool {
    if found {
        return true;
    }
    assert!(
        !in_ci(),
        "{tool} is required in CI ({install}), but it was not found"
    );
    eprintln!("SKIPPED: {tool} not found ({install})");
    false
}

pub fn have_kubectl() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    have(
        "kubectl",
        found,
        "it renders manifests/ with `kubectl kustomize`",
    )
}

/// `kubectl kustomize DIR`.
pub fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "`kubectl kustomize {}` failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize prints UTF-8");
    parse_documents(&text, &format!("`kubectl kustomize {}`", dir.display()))
}

/// `to` as a path relative to `from` (kustomize refuses absolute paths to bases and components).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

/// Renders an overlay, as a user would write it, of `manifests/` with the given components
/// (paths relative to the repository, e.g. `manifests/components/cert-manager`) and `extra` YAML
/// appended to its kustomization.yaml.
pub fn overlay(components: &[&str], extra: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = std::fs::canonicalize(repo_path("")).expect("the repository path resolves");
    let base = std::fs::canonicalize(dir.path()).expect("the temp dir resolves");
    let to = |p: &str| relative(&base, &root.join(p)).display().to_string();
    let mut text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\n",
        to("manifests")
    );
    if !components.is_empty() {
        text.push_str("components:\n");
        for component in components {
            text.push_str(&format!("  - {}\n", to(component)));
        }
    }
    text.push_str(extra);
    std::fs::write(dir.path().join("kustomization.yaml"), text).expect("write kustomization");
    kustomize(dir.path())
}

// ---- objects as data --------------------------------------------------------------------------

/// (kind, namespace, name): what identifies an object in a render.
pub type Key = (String, String, String);

pub fn key(object: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&object["kind"]),
        s(&object["metadata"]["namespace"]),
        s(&object["metadata"]["name"]),
    )
}

pub fn show(key: &Key) -> String {
    match key {
        (kind, ns, name) if ns.is_empty() => format!("{kind}/{name}"),
        (kind, ns, name) => format!("{kind} {ns}/{name}"),
    }
}

/// The objects by key; a key twice is a failure (kubectl apply would keep only one).
pub fn by_key(objects: &[Value], origin: &str) -> BTreeMap<Key, Value> {
    let mut map = BTreeMap::new();
    for object in objects {
        let k = key(object);
        assert!(
            map.insert(k.clone(), object.clone()).is_none(),
            "{origin} renders {} twice",
            show(&k)
        );
    }
    map
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind` (and `name`, when given).
pub fn the<'a>(objects: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<_> = of_kind(objects, kind)
        .into_iter()
        .filter(|o| name.is_none_or(|n| o["metadata"]["name"] == n))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}{} in the render, found {}",
        name.map(|n| format!(" named {n}")).unwrap_or_default(),
        found.len()
    );
    found[0]
}

pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Where two values differ, as `path: left != right` lines (empty when equal).
pub fn differences(left: &Value, right: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", left, right, &mut out);
    out
}

fn diff_into(path: &str, left: &Value, right: &Value, out: &mut Vec<String>) {
    match (left, right) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let here = format!("{path}/{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_into(&here, x, y, out),
                    (Some(x), None) => out.push(format!("{here}: {x} != (absent)")),
                    (None, Some(y)) => out.push(format!("{here}: (absent) != {y}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_into(&format!("{path}/{i}"), x, y, out);
            }
        }
        _ if left == right => {}
        _ => out.push(format!("{path}: {left} != {right}")),
    }
}

/// Removes the value at a JSON pointer, returning it.
pub fn take(object: &mut Value, pointer: &str) -> Option<Value> {
    let (parent, last) = pointer.rsplit_once('/')?;
    object.pointer_mut(parent)?.as_object_mut()?.remove(last)
}
