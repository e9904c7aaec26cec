//! Loading the manifests (rendered by kustomize, or read from the files the kustomization lists)
//! and finding objects in them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::NAME;

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

/// The file names under `resources:` in manifests/kustomization.yaml.
pub fn kustomization_resources() -> Vec<String> {
    let path = repo_path("manifests/kustomization.yaml");
    let docs = parse_documents(&read(&path), "manifests/kustomization.yaml");
    let resources = docs[0]["resources"]
        .as_array()
        .expect("manifests/kustomization.yaml has a resources list");
    resources
        .iter()
        .map(|r| r.as_str().expect("resources are file names").to_owned())
        .collect()
}

/// The objects of the files the kustomization lists, without kustomize's transformations.
pub fn raw_objects() -> Vec<Value> {
    kustomization_resources()
        .iter()
        .flat_map(|file| {
            let path = repo_path("manifests").join(file);
            parse_documents(&read(&path), &format!("manifests/{file}"))
        })
        .collect()
}

/// What `kubectl apply -k manifests/` would send, rendered once for all tests.
pub fn objects() -> &'static [Value] {
    static OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        match Command::new("kubectl")
            .arg("kustomize")
            .arg(repo_path("manifests"))
            .output()
        {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "`kubectl kustomize manifests/` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8(out.stdout).expect("kustomize prints UTF-8");
                parse_documents(&text, "`kubectl kustomize manifests/` output")
            }
            // No kubectl: the files themselves still have to satisfy every property.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => raw_objects(),
            Err(e) => panic!("cannot run kubectl: {e}"),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Finding things
// ---------------------------------------------------------------------------------------

pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn all_of_kind(kind_name: &str) -> Vec<&'static Value> {
    objects().iter().filter(|o| kind(o) == kind_name).collect()
}

/// The one object of this kind and name; fails naming what is missing.
pub fn the(kind_name: &str, object_name: &str) -> &'static Value {
    let found: Vec<_> = all_of_kind(kind_name)
        .into_iter()
        .filter(|o| name(o) == object_name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "manifests must contain exactly one {kind_name} named {object_name}"
    );
    found[0]
}

pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether a `matchLabels` selector selects pods with these labels.
pub fn selects(selector: &Value, pod_labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|wanted| !wanted.is_empty() && wanted.iter().all(|(k, v)| &pod_labels[k] == v))
}

pub fn pod_template() -> &'static Value {
    &the("Deployment", NAME)["spec"]["template"]
}
