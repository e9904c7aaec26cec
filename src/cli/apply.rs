//! `gpushare apply -f` (`kubectl gpushare apply -f`): `check` against the live cluster, then
//! server-side apply of the mutated objects only when no verdict is DENIED. For users who may not
//! register the webhook: the decision is the webhook's, made on what the user may read.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::cli::args::ApplyArgs;
use crate::cli::check::{self, Document, Report};
use crate::cli::kubeconfig;
use crate::cli::policy_file::read_policy;
use crate::cluster::live::{self, Fallbacks};
use crate::core::workload::Kind;

/// How long reading the cluster may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `apply` stopped before deciding (exit 2), or while applying (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Input(#[from] check::InputError),
    #[error("{0}")]
    Usage(String),
    #[error("{0:#}")]
    Cluster(anyhow::Error),
    /// Some objects may already be applied: the API server refused one.
    #[error("{error:#}; applied before it: {}", if applied.is_empty() { "nothing".to_string() } else { applied.join(", ") })]
    Apply {
        error: anyhow::Error,
        applied: Vec<String>,
    },
}

/// What happened: the verdicts, and what was applied (nothing unless every verdict allows).
#[derive(Debug)]
pub struct Applied {
    pub report: Report,
    /// Notes on what could not be read and what stood in for it.
    pub notes: Vec<String>,
    /// kubectl's names of the applied objects, e.g. `deployment.apps/nbody`.
    pub applied: Vec<String>,
}

pub async fn apply(args: ApplyArgs) -> Result<Applied, ApplyError> {
    let fixed_policy = args
        .policy
        .as_deref()
        .map(read_policy)
        .transpose()
        .map_err(ApplyError::Cluster)?;
    let documents = check::load(&args.files)?;
    let client = kubeconfig::client(&args.cluster, "`gpushare check FILE...` decides offline")
        .await
        .map_err(ApplyError::Cluster)?;
    let namespace = target_namespace(
        &documents,
        args.namespace.as_deref(),
        client.default_namespace(),
    )?;
    let documents = in_namespace(documents, &namespace);
    let fallbacks = Fallbacks {
        policy: fixed_policy,
        gpus: args.gpus,
    };
    let read = live::read(
        &client,
        &namespace,
        args.policy_configmap.as_deref(),
        fallbacks,
    );
    let view = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(view) => view.map_err(ApplyError::Cluster)?,
        Err(_) => {
            return Err(ApplyError::Cluster(anyhow::anyhow!(
                "cannot read the cluster within {READ_TIMEOUT:?}"
            )))
        }
    };
    let report = check::check_against(documents, &view.policy, view.inventory, &view.stored);
    let mut applied = Vec::new();
    if report.all_allowed() {
        for object in &report.objects {
            match live::server_side_apply(&client, &namespace, object).await {
                Ok(name) => applied.push(name),
                Err(error) => return Err(ApplyError::Apply { error, applied }),
            }
        }
    }
    Ok(Applied {
        report,
        notes: view.notes,
        applied,
    })
}

fn explicit_namespace(value: &Value) -> Option<&str> {
    value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// The one namespace of an apply: `-n`, else the one the documents name, else the kubeconfig
/// context's. As kubectl, a document in another namespace than `-n` is an error; the live view is
/// one namespace's, so documents of several namespaces are applied one namespace at a time.
pub fn target_namespace(
    documents: &[Document],
    flag: Option<&str>,
    context: &str,
) -> Result<String, ApplyError> {
    let named: BTreeSet<&str> = documents
        .iter()
        .filter_map(|d| explicit_namespace(&d.value))
        .collect();
    let target = match (flag, named.len()) {
        (Some(flag), _) => flag,
        (None, 0) => context,
        (None, 1) => named.first().copied().unwrap_or(context),
        (None, _) => {
            return Err(ApplyError::Usage(format!(
                "the documents name several namespaces ({}): apply one namespace at a time, with -n NAMESPACE",
                named.into_iter().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    if let Some(other) = named.iter().find(|n| **n != target) {
        return Err(ApplyError::Usage(format!(
            "a document names namespace {other:?}, not {target:?}: pass -n {other} to apply it"
        )));
    }
    Ok(target.to_string())
}

/// Workloads that name no namespace get the apply's, so their verdict lines and the policy's
/// namespace exclusions see the namespace they will be stored in. Other kinds are left as they are:
/// the API server puts a namespaced object in the request's namespace.
pub fn in_namespace(documents: Vec<Document>, namespace: &str) -> Vec<Document> {
    documents
        .into_iter()
        .map(|mut document| {
            let value = &mut document.value;
            let examined = Kind::from_api_version(
                value["apiVersion"].as_str().unwrap_or(""),
                value["kind"].as_str().unwrap_or(""),
            )
            .is_some();
            if examined && explicit_namespace(value).is_none() {
                if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.insert("namespace".into(), Value::String(namespace.into()));
                }
            }
            document
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document(namespace: Option<&str>) -> Document {
        let mut value =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m"}});
        if let Some(namespace) = namespace {
            value["metadata"]["namespace"] = json!(namespace);
        }
        Document {
            source: "test".into(),
            value,
        }
    }

    #[test]
    fn the_namespace_comes_from_the_flag_then_the_documents_then_the_context() {
        let target = |docs: &[Document], flag| {
            target_namespace(docs, flag, "ctx").map_err(|e| e.to_string())
        };
        assert_eq!(target(&[document(None)], Some("team")), Ok("team".into()));
        assert_eq!(target(&[document(None)], None), Ok("ctx".into()));
        assert_eq!(
            target(&[document(Some("a")), document(None)], None),
            Ok("a".into())
        );
        assert!(target(&[document(Some("a"))], Some("b")).is_err_and(|e| e.contains("pass -n a")));
        assert!(target(&[document(Some("a")), document(Some("b"))], None)
            .is_err_and(|e| e.contains("one namespace at a time")));
    }

    #[test]
    fn workloads_without_a_namespace_get_the_applys() {
        let config = Document {
            source: "test".into(),
            value: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        };
        let documents = in_namespace(vec![document(None), document(Some("team")), config], "team");
        assert_eq!(documents[0].value["metadata"]["namespace"], "team");
        assert_eq!(documents[1].value["metadata"]["namespace"], "team");
        assert_eq!(documents[2].value["metadata"].get("namespace"), None);
    }
}
