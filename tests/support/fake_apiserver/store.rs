//! The served resource types and the in-memory store: objects, revision history, watchers, recorded
//! requests and events.

use super::*;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::Query, response::Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// One served resource type.
#[derive(Debug)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub(crate) fn is_event(&self) -> bool {
        self.plural == "events"
    }
}

pub const RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
    },
    ResourceDef {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
    },
    ResourceDef {
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        singular: "cronjob",
        kind: "CronJob",
        namespaced: true,
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
    },
    ResourceDef {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "mutatingwebhookconfigurations",
        singular: "mutatingwebhookconfiguration",
        kind: "MutatingWebhookConfiguration",
        namespaced: false,
    },
];

pub(crate) fn find_resource(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Resolve a test-facing kind name: `Kind`, `plural`, or `group/plural`. Ambiguous names (Event) resolve
/// to the core group.
pub(crate) fn resolve_kind(kind: &str) -> usize {
    if let Some((group, plural)) = kind.rsplit_once('/') {
        if let Some(i) = RESOURCES
            .iter()
            .position(|r| r.group == group && r.plural == plural)
        {
            return i;
        }
    }
    RESOURCES
        .iter()
        .position(|r| r.kind == kind || r.plural == kind || r.singular == kind)
        .unwrap_or_else(|| panic!("fake apiserver: unknown kind {kind:?}"))
}

/// Resolve a resource from an object's apiVersion + kind.
pub(crate) fn resolve_object(obj: &Value) -> usize {
    let kind = obj["kind"]
        .as_str()
        .expect("fake apiserver: object without kind");
    match obj["apiVersion"].as_str() {
        Some(av) => {
            let (group, version) = av.split_once('/').unwrap_or(("", av));
            RESOURCES
                .iter()
                .position(|r| r.group == group && r.version == version && r.kind == kind)
                .unwrap_or_else(|| panic!("fake apiserver: unknown apiVersion/kind {av}/{kind}"))
        }
        None => resolve_kind(kind),
    }
}

/// One HTTP request seen by the fake.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
}

impl RecordedRequest {
    pub fn is_watch(&self) -> bool {
        self.query_param("watch")
            .is_some_and(|w| w == "true" || w == "1")
    }

    pub fn query_param(&self, key: &str) -> Option<String> {
        let uri: axum::http::Uri = format!("/?{}", self.query).parse().ok()?;
        let q: Query<HashMap<String, String>> = Query::try_from_uri(&uri).ok()?;
        q.0.get(key).cloned()
    }
}

/// (resource index, namespace or "", name)
pub(crate) type Key = (usize, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) res: usize,
    pub(crate) typ: ChangeType,
    /// The previous state for MODIFIED (to turn selector transitions into ADDED/DELETED).
    pub(crate) old: Option<Value>,
    /// The new state (for DELETED: the last state, with the deletion's resourceVersion).
    pub(crate) obj: Value,
}

pub(crate) struct Store {
    pub(crate) rv: u64,
    /// History at or below this revision is forgotten; watching from an older revision is 410.
    pub(crate) compacted: u64,
    pub(crate) objects: BTreeMap<Key, Value>,
    pub(crate) history: Vec<Arc<Change>>,
    pub(crate) watchers: Vec<(usize, mpsc::UnboundedSender<Arc<Change>>)>,
    pub(crate) events: Vec<Value>,
    pub(crate) requests: Vec<RecordedRequest>,
    /// (path prefix, status code, remaining count; None = until cleared)
    pub(crate) failures: Vec<(String, u16, Option<usize>)>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) uid_seed: u64,
    pub(crate) uid_counter: u64,
}

pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn not_found(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", qualified_plural(res), name),
            details: Some(json!({"name": name, "group": res.group, "kind": res.plural})),
        }
    }

    pub(crate) fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    pub(crate) fn response(&self) -> Response {
        json_response(self.code, &self.status())
    }
}

pub(crate) fn qualified_plural(res: &ResourceDef) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

pub(crate) fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "2025-01-01T00:00:00Z".to_string())
}

impl Store {
    pub(crate) fn new() -> Self {
        let uid_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        Store {
            rv: 0,
            compacted: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            watchers: Vec::new(),
            events: Vec::new(),
            requests: Vec::new(),
            failures: Vec::new(),
            bookmark_interval: Duration::from_secs(2),
            uid_seed,
            uid_counter: 0,
        }
    }

    pub(crate) fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (self.uid_seed >> 32) as u32,
            (self.uid_seed >> 16) as u16,
            (self.uid_seed & 0xfff) as u16,
            (self.uid_counter >> 48) & 0xfff,
            self.uid_counter & 0xffff_ffff_ffff
        )
    }

    /// Assign the next revision to `obj`, store the change in history and send it to every watcher.
    pub(crate) fn commit(
        &mut self,
        res: usize,
        typ: ChangeType,
        old: Option<Value>,
        mut obj: Value,
    ) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let change = Arc::new(Change {
            rv: self.rv,
            res,
            typ,
            old,
            obj: obj.clone(),
        });
        self.history.push(change.clone());
        self.watchers
            .retain(|(_, tx)| tx.send(change.clone()).is_ok());
        obj
    }

    /// Create (`allow_create`) and/or replace (`allow_replace`) an object. `obj` must already carry
    /// kind/apiVersion/metadata.name/namespace for `res`.
    pub(crate) fn upsert(
        &mut self,
        res: usize,
        mut obj: Value,
        allow_create: bool,
        allow_replace: bool,
        check_rv: bool,
    ) -> Result<(Value, bool), ApiError> {
        let def = &RESOURCES[res];
        obj["apiVersion"] = Value::String(def.api_version());
        obj["kind"] = Value::String(def.kind.to_string());
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!("{} is invalid: metadata.name: Required value", def.kind),
            ));
        }
        let ns = if def.namespaced {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let ns = if ns.is_empty() {
                "default".to_string()
            } else {
                ns
            };
            obj["metadata"]["namespace"] = Value::String(ns.clone());
            ns
        } else {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            String::new()
        };
        let key = (res, ns, name.clone());
        match self.objects.get(&key).cloned() {
            Some(old) => {
                if !allow_replace {
                    return Err(ApiError {
                        code: 409,
                        reason: "AlreadyExists",
                        message: format!("{} \"{}\" already exists", qualified_plural(def), name),
                        details: Some(
                            json!({"name": name, "group": def.group, "kind": def.plural}),
                        ),
                    });
                }
                if check_rv {
                    if let Some(sent) = obj["metadata"]["resourceVersion"].as_str() {
                        let current = old["metadata"]["resourceVersion"].as_str().unwrap_or("");
                        if !sent.is_empty() && sent != current {
                            return Err(ApiError::new(
                                409,
                                "Conflict",
                                format!(
                                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
                                     please apply your changes to the latest version and try again",
                                    qualified_plural(def),
                                    name
                                ),
                            ));
                        }
                    }
                }
                for field in ["uid", "creationTimestamp"] {
                    if obj["metadata"][field].is_null() {
                        obj["metadata"][field] = old["metadata"][field].clone();
                    }
                }
                let old_gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let gen = if old.get("spec") != obj.get("spec") {
                    old_gen + 1
                } else {
                    old_gen
                };
                obj["metadata"]["generation"] = json!(gen);
                let stored = self.commit(res, ChangeType::Modified, Some(old), obj);
                self.objects.insert(key, stored.clone());
                if def.is_event() {
                    self.record_event(&stored);
                }
                Ok((stored, false))
            }
            None => {
                if !allow_create {
                    return Err(ApiError::not_found(def, &name));
                }
                if obj["metadata"]["uid"].as_str().is_none_or(str::is_empty) {
                    obj["metadata"]["uid"] = Value::String(self.next_uid());
                }
                if obj["metadata"]["creationTimestamp"]
                    .as_str()
                    .is_none_or(str::is_empty)
                {
                    obj["metadata"]["creationTimestamp"] = Value::String(now_rfc3339());
                }
                obj["metadata"]["generation"] = json!(1);
                let stored = self.commit(res, ChangeType::Added, None, obj);
                self.objects.insert(key, stored.clone());
                if def.is_event() {
                    self.record_event(&stored);
                }
                Ok((stored, true))
            }
        }
    }

    pub(crate) fn remove(&mut self, res: usize, ns: &str, name: &str) -> Option<Value> {
        let key = (res, ns.to_string(), name.to_string());
        let old = self.objects.remove(&key)?;
        Some(self.commit(res, ChangeType::Deleted, None, old))
    }

    /// Append an event, or replace the recorded one with the same group/namespace/name.
    pub(crate) fn record_event(&mut self, ev: &Value) {
        let same = |e: &Value| {
            e["apiVersion"] == ev["apiVersion"]
                && e["metadata"]["namespace"] == ev["metadata"]["namespace"]
                && e["metadata"]["name"] == ev["metadata"]["name"]
        };
        match self.events.iter_mut().find(|e| same(e)) {
            Some(slot) => *slot = ev.clone(),
            None => self.events.push(ev.clone()),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) addr: Mutex<Option<SocketAddr>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}
