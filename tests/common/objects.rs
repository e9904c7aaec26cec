//! The workload objects of the tests: fixtures as their users write them, every kind gpushare
//! examines, and reading back what a patch wrote (env, annotations, the assignment).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ASSIGNED_GPU, ASSIGNED_MODE, ASSIGNED_MPS_PERCENTAGE};

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_text(name: &str) -> String {
    let path = fixture_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ---- Deployments ------------------------------------------------------------------------------

/// `tests/fixtures/deployment-web.json` (as `kubectl create deployment web --image=nginx
/// --dry-run=client -o json` writes it) with these annotations on its metadata.
pub fn web(annotations: &[(&str, &str)]) -> Value {
    with_annotations(fixture_json("deployment-web.json"), annotations)
}

pub fn with_annotations(mut object: Value, annotations: &[(&str, &str)]) -> Value {
    if !annotations.is_empty() {
        let map: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        object["metadata"]["annotations"] = Value::Object(map);
    }
    object
}

// ---- every kind ------------------------------------------------------------------------------

/// One object of each kind gpushare examines, as its users write it (`kubectl create ... -o json`
/// where kubectl can), with these annotations on its metadata.
pub fn every_kind(annotations: &[(&str, &str)]) -> Vec<Value> {
    [
        "deployment-web.json",
        "replicaset-cam.json",
        "statefulset-triton.json",
        "daemonset-agent.json",
        "job-nbody.json",
        "cronjob-nightly.json",
        "pod-infer.json",
    ]
    .iter()
    .map(|name| with_annotations(fixture_json(name), annotations))
    .collect()
}

/// Where an object keeps its pod template: `/spec/template`, a CronJob's, or `""` for a Pod.
pub fn template_of(object: &Value) -> &'static str {
    match object["kind"].as_str() {
        Some("CronJob") => "/spec/jobTemplate/spec/template",
        Some("Pod") => "",
        _ => "/spec/template",
    }
}

/// The metadata that carry the assigned annotations: the object's and its pod template's.
pub fn metadata_of(object: &Value) -> Vec<String> {
    match template_of(object) {
        "" => vec!["/metadata".to_string()],
        template => vec!["/metadata".to_string(), format!("{template}/metadata")],
    }
}

/// The env of container `index`, as (name, value) pairs; `valueFrom` entries have value `None`.
pub fn env(object: &Value, index: usize) -> Vec<(String, Option<String>)> {
    object
        .pointer(&format!(
            "{}/spec/containers/{index}/env",
            template_of(object)
        ))
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().expect("env name").to_string(),
                        e.get("value").and_then(Value::as_str).map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn env_value(object: &Value, index: usize, name: &str) -> Option<String> {
    let env = env(object, index);
    let matching: Vec<_> = env.iter().filter(|(n, _)| n == name).collect();
    assert!(
        matching.len() <= 1,
        "{name} appears more than once: {env:?}"
    );
    matching.first().and_then(|(_, v)| v.clone())
}

/// The `gpushare.io/` annotations at a metadata pointer (`/metadata` or `/spec/template/metadata`).
pub fn gpushare_annotations(object: &Value, metadata: &str) -> Vec<(String, String)> {
    object
        .pointer(&format!("{metadata}/annotations"))
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter(|(k, _)| k.starts_with("gpushare.io/"))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .expect("annotation values are strings")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn annotation(object: &Value, metadata: &str, key: &str) -> Option<String> {
    object
        .pointer(&format!("{metadata}/annotations"))
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Asserts the assigned annotations on both the object's metadata and its pod template's.
pub fn assert_assigned(object: &Value, gpu: &str, mode: &str, percentage: Option<&str>) {
    for metadata in metadata_of(object) {
        let metadata = metadata.as_str();
        assert_eq!(
            annotation(object, metadata, ASSIGNED_GPU).as_deref(),
            Some(gpu),
            "{metadata} {ASSIGNED_GPU} in {object:#}"
        );
        assert_eq!(
            annotation(object, metadata, ASSIGNED_MODE).as_deref(),
            Some(mode),
            "{metadata} {ASSIGNED_MODE} in {object:#}"
        );
        assert_eq!(
            annotation(object, metadata, ASSIGNED_MPS_PERCENTAGE).as_deref(),
            percentage,
            "{metadata} {ASSIGNED_MPS_PERCENTAGE} in {object:#}"
        );
    }
}
