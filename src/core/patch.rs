//! Builds minimal JSON Patch operations against the typed view of an object: only what differs is
//! written, so sending an already-mutated object again yields an empty patch.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{json, Map, Value};

use crate::core::workload::wire::{Container, EnvVar, Volume, VolumeMount};

/// A desired environment variable: `Some(value)` to set, `None` to remove.
pub type EnvChange<'a> = (&'static str, Option<&'a str>);

/// Collects operations and the warnings that go with them.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    pub ops: Vec<PatchOperation>,
    pub warnings: Vec<String>,
}

/// `base` with `tokens` appended, each escaped (RFC 6901: `~` as `~0`, `/` as `~1`), built in
/// one allocation: a patch has a pointer per operation, on every managed admission.
fn pointer(base: &str, tokens: &[&str]) -> PointerBuf {
    let escapes = |t: &str| t.bytes().filter(|b| matches!(b, b'~' | b'/')).count();
    let len = tokens
        .iter()
        .map(|t| 1 + t.len() + escapes(t))
        .sum::<usize>();
    let mut path = String::with_capacity(base.len() + len);
    path.push_str(base);
    for token in tokens {
        path.push('/');
        let mut rest = *token;
        while let Some(i) = rest.find(['~', '/']) {
            path.push_str(&rest[..i]);
            path.push_str(if rest.as_bytes()[i] == b'~' {
                "~0"
            } else {
                "~1"
            });
            rest = &rest[i + 1..];
        }
        path.push_str(rest);
    }
    PointerBuf::parse(path).expect("base paths are built from constants")
}

impl PatchBuilder {
    fn add(&mut self, path: PointerBuf, value: Value) {
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    fn replace(&mut self, path: PointerBuf, value: Value) {
        self.ops
            .push(PatchOperation::Replace(ReplaceOperation { path, value }));
    }

    fn remove(&mut self, path: PointerBuf) {
        self.ops
            .push(PatchOperation::Remove(RemoveOperation { path }));
    }

    /// Sets and removes annotations on the metadata at `meta_path` (e.g. `/metadata`);
    /// `meta_exists` is false when that metadata object itself is absent.
    pub fn annotations(
        &mut self,
        meta_path: &str,
        meta_exists: bool,
        current: Option<&BTreeMap<String, String>>,
        set: &[(&str, String)],
        remove: &[&str],
    ) {
        let Some(current) = current else {
            if set.is_empty() {
                return;
            }
            let map: Map<String, Value> = set
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                .collect();
            if meta_exists {
                self.add(pointer(meta_path, &["annotations"]), Value::Object(map));
            } else {
                self.add(pointer(meta_path, &[]), json!({ "annotations": map }));
            }
            return;
        };
        for (key, value) in set {
            match current.get(*key) {
                Some(existing) if existing == value => {}
                Some(_) => self.replace(pointer(meta_path, &["annotations", key]), json!(value)),
                None => self.add(pointer(meta_path, &["annotations", key]), json!(value)),
            }
        }
        for key in remove {
            if current.contains_key(*key) {
                self.remove(pointer(meta_path, &["annotations", key]));
            }
        }
    }

    /// Brings a container's env to the desired state: replaced entries keep their place, removed
    /// ones go, new ones are appended, everything else is untouched. A first entry with a
    /// different literal value gets a warning; later duplicates of an owned name are removed.
    pub fn env(&mut self, container_path: &str, container: &Container, changes: &[EnvChange<'_>]) {
        let Some(env) = container.env.as_ref() else {
            let added: Vec<Value> = changes
                .iter()
                .filter_map(|(name, value)| value.map(|v| json!({ "name": name, "value": v })))
                .collect();
            if !added.is_empty() {
                self.add(pointer(container_path, &["env"]), Value::Array(added));
            }
            return;
        };
        let mut removals = Vec::new();
        let mut appends = Vec::new();
        for (name, desired) in changes {
            let mut positions = env
                .iter()
                .enumerate()
                .filter(|(_, e)| e.name == *name)
                .map(|(i, _)| i);
            let first = positions.next();
            removals.extend(positions);
            match (first, desired) {
                (Some(i), Some(value)) => {
                    self.set_existing(container_path, container, i, &env[i], value)
                }
                (Some(i), None) => removals.push(i),
                (None, Some(value)) => appends.push(json!({ "name": name, "value": value })),
                (None, None) => {}
            }
        }
        removals.sort_unstable();
        removals.dedup();
        for i in removals.into_iter().rev() {
            self.remove(pointer(container_path, &["env", &i.to_string()]));
        }
        for entry in appends {
            self.add(pointer(container_path, &["env", "-"]), entry);
        }
    }

    fn set_existing(
        &mut self,
        container_path: &str,
        container: &Container,
        i: usize,
        entry: &EnvVar,
        value: &str,
    ) {
        if entry.value.as_deref() == Some(value) && entry.value_from.is_none() {
            return;
        }
        if !entry.literal().is_empty() {
            self.warnings.push(format!(
                "container {:?}: {} was {:?}, gpushare set it to {:?} (gpushare owns this variable)",
                container.name,
                entry.name,
                entry.literal(),
                value
            ));
        }
        self.replace(
            pointer(container_path, &["env", &i.to_string()]),
            json!({ "name": entry.name, "value": value }),
        );
    }

    /// Ensures a hostPath volume `name` at `host_path` exists in the pod spec at `spec_path`.
    pub fn ensure_host_path_volume(
        &mut self,
        spec_path: &str,
        volumes: Option<&Vec<Volume>>,
        name: &str,
        host_path: &str,
    ) {
        let volume =
            json!({ "name": name, "hostPath": { "path": host_path, "type": "Directory" } });
        match volumes {
            None => self.add(pointer(spec_path, &["volumes"]), json!([volume])),
            Some(list) => match list.iter().position(|v| v.name == name) {
                Some(i)
                    if list[i]
                        .host_path
                        .as_ref()
                        .is_some_and(|h| h.path == host_path) => {}
                Some(i) => self.replace(pointer(spec_path, &["volumes", &i.to_string()]), volume),
                None => self.add(pointer(spec_path, &["volumes", "-"]), volume),
            },
        }
    }

    /// Removes the volume `name` from the pod spec at `spec_path`, if present.
    pub fn remove_volume(&mut self, spec_path: &str, volumes: Option<&Vec<Volume>>, name: &str) {
        if let Some(i) = volumes.and_then(|list| list.iter().position(|v| v.name == name)) {
            self.remove(pointer(spec_path, &["volumes", &i.to_string()]));
        }
    }

    /// Ensures a container mounts volume `name` at `path`.
    pub fn ensure_mount(
        &mut self,
        container_path: &str,
        mounts: Option<&Vec<VolumeMount>>,
        name: &str,
        path: &str,
    ) {
        let mount = json!({ "name": name, "mountPath": path });
        match mounts {
            None => self.add(pointer(container_path, &["volumeMounts"]), json!([mount])),
            Some(list) => match list.iter().position(|m| m.name == name) {
                Some(i) if list[i].mount_path == path => {}
                Some(i) => self.replace(
                    pointer(container_path, &["volumeMounts", &i.to_string()]),
                    mount,
                ),
                None => self.add(pointer(container_path, &["volumeMounts", "-"]), mount),
            },
        }
    }

    /// Removes every mount of volume `name` from a container.
    pub fn remove_mounts(
        &mut self,
        container_path: &str,
        mounts: Option<&Vec<VolumeMount>>,
        name: &str,
    ) {
        let Some(list) = mounts else { return };
        for i in (0..list.len()).rev().filter(|&i| list[i].name == name) {
            self.remove(pointer(container_path, &["volumeMounts", &i.to_string()]));
        }
    }

    /// Sets a boolean field (e.g. `hostIPC`) on the pod spec at `spec_path` unless already set.
    pub fn ensure_true(&mut self, spec_path: &str, field: &str, current: Option<bool>) {
        if current != Some(true) {
            self.add(pointer(spec_path, &[field]), Value::Bool(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_escape_their_tokens_as_jsonptr_does() {
        let tokens = [
            "annotations",
            "gpushare.io/assigned-gpu",
            "a~b/c~/",
            "",
            "-",
            "~1",
        ];
        let mut expected = PointerBuf::parse("/spec/template/metadata").unwrap();
        for t in tokens {
            expected.push_back(t);
        }
        let built = pointer("/spec/template/metadata", &tokens);
        assert_eq!(built, expected);
        assert_eq!(
            built.as_str(),
            "/spec/template/metadata/annotations/gpushare.io~1assigned-gpu/a~0b~1c~0~1//-/~01"
        );
        assert_eq!(pointer("", &[]).as_str(), "");
    }

    fn container(env: Value) -> Container {
        serde_json::from_value(json!({ "name": "app", "env": env })).unwrap()
    }

    fn apply(env: Value, changes: &[EnvChange<'_>]) -> (Value, Vec<String>) {
        let mut doc = json!({ "c": { "name": "app", "env": env.clone() } });
        let mut b = PatchBuilder::default();
        b.env("/c", &container(env), changes);
        json_patch::patch(&mut doc, &b.ops).unwrap();
        (doc["c"]["env"].clone(), b.warnings)
    }

    #[test]
    fn env_replaces_in_place_removes_and_appends() {
        let (env, warnings) = apply(
            json!([{"name": "A", "value": "1"}, {"name": "X", "value": "5"}, {"name": "B", "value": "2"},
                   {"name": "X", "value": "6"}, {"name": "C", "value": "3"}]),
            &[("X", Some("0")), ("B", None), ("N", Some("new"))],
        );
        assert_eq!(
            env,
            json!([{"name": "A", "value": "1"}, {"name": "X", "value": "0"},
                   {"name": "C", "value": "3"}, {"name": "N", "value": "new"}])
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn env_without_changes_yields_no_operation() {
        let mut b = PatchBuilder::default();
        b.env(
            "/c",
            &container(json!([{"name": "X", "value": "0"}])),
            &[("X", Some("0")), ("Y", None)],
        );
        assert!(b.ops.is_empty() && b.warnings.is_empty());
    }

    #[test]
    fn annotation_keys_with_slashes_are_escaped() {
        let mut doc = json!({ "metadata": { "annotations": { "a": "b" } } });
        let current: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
        let mut b = PatchBuilder::default();
        b.annotations(
            "/metadata",
            true,
            Some(&current),
            &[("gpushare.io/assigned-gpu", "1".into())],
            &["a"],
        );
        json_patch::patch(&mut doc, &b.ops).unwrap();
        assert_eq!(
            doc,
            json!({ "metadata": { "annotations": { "gpushare.io/assigned-gpu": "1" } } })
        );
    }
}
