//! `gpushare check`: offline validation of manifests for CI. Reads YAML or JSON documents
//! (multi-document, `kind: List`), applies the same decision as the webhook with capacity counted
//! across all documents together, and reports one verdict per Deployment.

use std::io::Read;

use serde::Deserialize;
use serde_json::Value;

use crate::core::decision::{self, Operation, Request};
use crate::core::inventory::{Inventory, Module, ModuleKey, Placement};
use crate::core::policy::Policy;
use crate::core::verdict::{Outcome, Verdict};
use crate::core::workload::Deployment;

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

fn is_deployment(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some("Deployment")
        && value
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("apps/"))
}

/// The verdict on one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub allowed: bool,
    pub text: String,
    pub warnings: Vec<String>,
}

/// Every object after checking (mutated where allowed), and the verdict lines.
#[derive(Debug, Default)]
pub struct Report {
    pub objects: Vec<Value>,
    pub lines: Vec<Line>,
    /// Nodes and the modules admitted, for `status --from`.
    pub inventory: Inventory,
}

impl Report {
    pub fn all_allowed(&self) -> bool {
        self.lines.iter().all(|l| l.allowed)
    }
}

/// Decides every Deployment in order, each admitted module counting against the next.
pub fn check(documents: Vec<Document>, policy: &Policy, mut inventory: Inventory) -> Report {
    let mut report = Report::default();
    for Document { value, .. } in documents {
        if !is_deployment(&value) {
            report.objects.push(value);
            continue;
        }
        let (value, line) = check_one(value, policy, &mut inventory);
        report.objects.push(value);
        report.lines.push(line);
    }
    report.inventory = inventory;
    report
}

fn check_one(mut value: Value, policy: &Policy, inventory: &mut Inventory) -> (Value, Line) {
    let namespace = namespace_of(&value).to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let object = format!("{namespace}/{name}");
    let denied = |message: String| Line {
        allowed: false,
        text: format!("DENIED {object}: {message}"),
        warnings: Vec::new(),
    };
    if name.is_empty() {
        return (
            value,
            denied("metadata.name is missing; give the Deployment a name".into()),
        );
    }
    let deployment: Deployment = match Deployment::deserialize(&value) {
        Ok(d) => d,
        Err(error) => return (value, denied(format!("not a valid Deployment: {error}"))),
    };
    let request = Request {
        operation: Operation::Create,
        namespace: &namespace,
        name: &name,
        object: &deployment,
        old_object: None,
    };
    match decision::decide(&request, policy, inventory) {
        Verdict::Denied(denial) => (value, denied(denial.message)),
        Verdict::Allowed(mutation) => {
            if let Err(error) = json_patch::patch(&mut value, &mutation.patch) {
                return (
                    value,
                    denied(format!("internal error applying the patch: {error}")),
                );
            }
            let summary = match &mutation.outcome {
                Outcome::Assigned(assignment) => {
                    let placement = Placement {
                        node_selector: deployment.spec.template.spec.node_selector.clone(),
                        node_name: deployment.spec.template.spec.node_name.clone(),
                    };
                    let key = ModuleKey {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    };
                    inventory.modules.insert(
                        key,
                        Module {
                            placement,
                            assignment: assignment.clone(),
                        },
                    );
                    assignment.summary()
                }
                Outcome::Excluded => "namespace excluded by policy".into(),
                Outcome::Unmanaged | Outcome::Released => "unmanaged".into(),
            };
            (
                value,
                Line {
                    allowed: true,
                    text: format!("ALLOWED {object} {summary}"),
                    warnings: mutation.warnings,
                },
            )
        }
    }
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
