//! `gpushare check`: offline validation of manifests for CI. Reads YAML or JSON documents
//! (multi-document, `kind: List`), applies the same decision as the webhook with capacity counted
//! across all documents together, and reports one verdict per workload of a kind it examines (and
//! a `SKIPPED` line for an object with gpushare annotations that it does not examine).

use std::io::Read;

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::core::annotations;
use crate::core::claim::Assigned;
use crate::core::claim::ClaimChange;
use crate::core::decision::{self, Operation, Request};
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::record::{decide_on, Memory};
use crate::core::verdict::{Outcome, Verdict};
use crate::core::workload::{Kind, RawObject, Workload, WorkloadKey};

/// Input that cannot be checked at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{source_name}: cannot read: {error}")]
    Read {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}: {error}")]
    Parse { source_name: String, error: String },
}

/// One object from the input, where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub source: String,
    pub value: Value,
}

/// Reads every file (`-` is standard input) into a flat list of objects; `kind: List` is
/// unpacked, empty documents are dropped, and a later object with the same kind, namespace and
/// name replaces the earlier one, as `kubectl apply` would.
pub fn load(sources: &[String]) -> Result<Vec<Document>, InputError> {
    let mut documents: Vec<Document> = Vec::new();
    for source in sources {
        let text = read_source(source)?;
        for value in parse_documents(source, &text)? {
            for value in unpack_lists(value) {
                let key = identity(&value);
                match documents
                    .iter()
                    .position(|d| key.is_some() && identity(&d.value) == key)
                {
                    Some(i) => {
                        documents[i] = Document {
                            source: source.clone(),
                            value,
                        }
                    }
                    None => documents.push(Document {
                        source: source.clone(),
                        value,
                    }),
                }
            }
        }
    }
    Ok(documents)
}

fn read_source(source: &str) -> Result<String, InputError> {
    let err = |error| InputError::Read {
        source_name: source.to_string(),
        error,
    };
    if source == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(err)?;
        Ok(text)
    } else {
        std::fs::read_to_string(source).map_err(err)
    }
}

/// Parses a multi-document YAML (or JSON) text; the error names the line.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Value>, InputError> {
    let mut values = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| InputError::Parse {
            source_name: source.to_string(),
            error: e.to_string(),
        })?;
        match value {
            Value::Null => {}
            Value::Object(_) => values.push(value),
            other => {
                return Err(InputError::Parse {
                    source_name: source.to_string(),
                    error: format!(
                        "document {} is not a Kubernetes object but {}",
                        index + 1,
                        kind_of(&other)
                    ),
                })
            }
        }
    }
    Ok(values)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "something else",
    }
}

fn unpack_lists(value: Value) -> Vec<Value> {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    match (is_list, value.get("items").and_then(Value::as_array)) {
        (true, Some(items)) => items
            .iter()
            .flat_map(|item| unpack_lists(item.clone()))
            .collect(),
        _ => vec![value],
    }
}

fn identity(value: &Value) -> Option<(String, String, String)> {
    let kind = value.get("kind")?.as_str()?.to_string();
    let metadata = value.get("metadata")?;
    let name = metadata.get("name")?.as_str()?.to_string();
    Some((kind, namespace_of(value).to_string(), name))
}

fn namespace_of(value: &Value) -> &str {
    value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

/// What a verdict line says about its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Allowed,
    Denied,
    /// Has `gpushare.io/` annotations, but gpushare does not examine it.
    Skipped,
}

impl Mark {
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Allowed => "ALLOWED",
            Mark::Denied => "DENIED",
            Mark::Skipped => "SKIPPED",
        }
    }
}

/// Which object a verdict is about, as the line names it (`<namespace>/<Kind>/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// What a verdict says beyond its mark.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// Allowed, holding this GPU.
    Assigned(Assigned),
    /// Allowed without a GPU: unmanaged, excluded namespace, finished.
    Allowed(String),
    /// Why it is denied or skipped.
    Reason(String),
}

/// The verdict on one object: `ALLOWED <namespace>/<Kind>/<name> ...`, `DENIED ...: <reason>`
/// or `SKIPPED ...: <why>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub mark: Mark,
    pub object: ObjectName,
    pub detail: Detail,
    /// The line as printed.
    pub text: String,
    pub warnings: Vec<String>,
}

impl Line {
    fn new(mark: Mark, object: &ObjectName, detail: Detail) -> Line {
        let text = match &detail {
            Detail::Assigned(assigned) => format!("{} {object} {assigned}", mark.as_str()),
            Detail::Allowed(summary) => format!("{} {object} {summary}", mark.as_str()),
            Detail::Reason(reason) => format!("{} {object}: {reason}", mark.as_str()),
        };
        Line {
            mark,
            object: object.clone(),
            detail,
            text,
            warnings: Vec::new(),
        }
    }
}

/// Every object after checking (mutated where allowed), and the verdict lines.
#[derive(Debug, Default)]
pub struct Report {
    pub objects: Vec<Value>,
    pub lines: Vec<Line>,
    /// Nodes and the claims admitted, for `status --from`.
    pub inventory: Inventory,
}

impl Report {
    pub fn all_allowed(&self) -> bool {
        self.lines.iter().all(|l| l.mark != Mark::Denied)
    }
}

/// The kinds gpushare examines, as messages list them.
const EXAMINED: &str =
    "apps/v1 Deployment, ReplicaSet, StatefulSet, DaemonSet; batch/v1 Job, CronJob; v1 Pod";

/// The workloads already stored in a cluster, by key: a document with the same key is decided as
/// an UPDATE of the stored object (it keeps its GPU, and its old claim is replaced, not added to).
pub type Stored = HashMap<WorkloadKey, Workload>;

/// Decides every workload in order, each admitted claim counting against the next.
pub fn check(documents: Vec<Document>, policy: &Policy, inventory: Inventory) -> Report {
    check_against(documents, policy, inventory, &Stored::new())
}

/// `check` against a live cluster (`apply`): `inventory` holds the stored claims, and a document
/// that names a `stored` workload is decided as its UPDATE, as the webhook would decide it.
pub fn check_against(
    documents: Vec<Document>,
    policy: &Policy,
    inventory: Inventory,
    stored: &Stored,
) -> Report {
    let mut report = Report::default();
    let record = Memory::new(policy.clone(), inventory);
    for Document { value, .. } in documents {
        let (value, line) = check_one(value, &record, stored);
        report.objects.push(value);
        report.lines.extend(line);
    }
    report.inventory = record.into_inventory();
    report
}

fn text_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Whether a manifest of any kind carries `gpushare.io/` annotations where a workload would.
fn has_gpushare_annotations(value: &Value) -> bool {
    [
        "/metadata/annotations",
        "/spec/template/metadata/annotations",
        "/spec/jobTemplate/spec/template/metadata/annotations",
    ]
    .iter()
    .filter_map(|p| value.pointer(p).and_then(Value::as_object))
    .any(|a| a.keys().any(|k| k.starts_with(annotations::PREFIX)))
}

fn check_one(mut value: Value, record: &Memory, stored: &Stored) -> (Value, Option<Line>) {
    let (api_version, kind_name) = (text_at(&value, "/apiVersion"), text_at(&value, "/kind"));
    let name = text_at(&value, "/metadata/name").to_string();
    let object = ObjectName {
        namespace: namespace_of(&value).to_string(),
        kind: kind_name.to_string(),
        name: name.clone(),
    };
    let Some(kind) = Kind::from_api_version(api_version, kind_name) else {
        let line = has_gpushare_annotations(&value).then(|| {
            Line::new(
                Mark::Skipped,
                &object,
                Detail::Reason(format!(
                    "{api_version} {kind_name} is not a kind gpushare examines ({EXAMINED}); its gpushare.io/ \
                     annotations have no effect"
                )),
            )
        });
        return (value, line);
    };
    let denied = |message: String| Some(Line::new(Mark::Denied, &object, Detail::Reason(message)));
    if name.is_empty() {
        let line = denied(format!("metadata.name is missing; give the {kind} a name"));
        return (value, line);
    }
    let raw = match RawObject::deserialize(&value) {
        Ok(raw) => raw,
        Err(error) => {
            let line = denied(format!("not a valid {kind}: {error}"));
            return (value, line);
        }
    };
    let workload = Workload::from_raw(kind, raw);
    let old_object = stored.get(&workload.key);
    let request = Request {
        operation: match old_object {
            Some(_) => Operation::Update,
            None => Operation::Create,
        },
        object: &workload,
        old_object,
    };
    let (verdict, _) = decide_on(record, &[], |policy, inventory| {
        decision::decide(&request, policy, inventory)
    });
    let mutation = match verdict {
        Verdict::Denied(denial) => return (value, denied(denial.message)),
        Verdict::Allowed(mutation) => mutation,
    };
    if let Err(error) = json_patch::patch(&mut value, &mutation.patch) {
        let line = denied(format!("internal error applying the patch: {error}"));
        return (value, line);
    }
    if !matches!(mutation.outcome, Outcome::Assigned(_)) {
        // An UPDATE that leaves the workload holding nothing frees what the stored one held.
        record.commit_now(&ClaimChange::Free(workload.key.clone()));
    }
    let summary = match mutation.outcome {
        Outcome::Controlled(controller) => {
            let line = workload.has_gpushare_annotations().then(|| {
                Line::new(
                    Mark::Skipped,
                    &object,
                    Detail::Reason(format!(
                        "owned by its controller {controller}, whose pod template gpushare examines instead"
                    )),
                )
            });
            return (value, line);
        }
        Outcome::Assigned(claim) => {
            let assigned = claim.assigned;
            record.commit_now(&ClaimChange::Hold(claim));
            Detail::Assigned(assigned)
        }
        Outcome::Excluded => Detail::Allowed("namespace excluded by policy".into()),
        Outcome::Finished => Detail::Allowed("finished: holds no GPU".into()),
        Outcome::Unmanaged | Outcome::Released => Detail::Allowed("unmanaged".into()),
    };
    let line = Line {
        warnings: mutation.warnings,
        ..Line::new(Mark::Allowed, &object, summary)
    };
    (value, Some(line))
}

/// Renders objects as a multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(
            &serde_yaml::to_string(object).unwrap_or_else(|e| format!("# cannot render: {e}\n")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::claim::Claim;

    fn document(yaml: &str) -> Document {
        Document {
            source: "test".into(),
            value: serde_yaml::from_str(yaml).expect("yaml"),
        }
    }

    const AUTO: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: m, namespace: team, \
        annotations: {gpushare.io/gpu: auto}}\nspec: {template: {spec: {containers: [{name: c}]}}}\n";

    #[test]
    fn a_document_naming_a_stored_workload_is_its_update_and_keeps_its_gpu() {
        let stored_yaml = AUTO.replace(
            "gpushare.io/gpu: auto}",
            "gpushare.io/gpu: auto, gpushare.io/assigned-gpu: \"1\", gpushare.io/assigned-mode: time-slicing}",
        );
        let raw = RawObject::deserialize(&document(&stored_yaml).value).expect("raw");
        let stored_workload = Workload::from_raw(Kind::Deployment, raw);
        let claim = Claim::of_stored(&stored_workload, false).expect("a stored claim");
        let mut inventory = Inventory::standalone(Some(2));
        inventory.hold(claim);
        let stored = Stored::from([(stored_workload.key.clone(), stored_workload)]);
        let policy = Policy::default();

        // As a CREATE, auto picks GPU 0 (least loaded: the stored claim holds GPU 1).
        let created = check(vec![document(AUTO)], &policy, inventory.clone());
        assert_eq!(
            created.lines[0].text,
            "ALLOWED team/Deployment/m gpu=0 mode=time-slicing"
        );
        // As the UPDATE of the stored workload, it keeps GPU 1 and its claim is not counted twice.
        let updated = check_against(vec![document(AUTO)], &policy, inventory, &stored);
        assert_eq!(
            updated.lines[0].text,
            "ALLOWED team/Deployment/m gpu=1 mode=time-slicing"
        );
        assert_eq!(updated.inventory.claims().count(), 1);
    }
}
