//! Checks the deployment in `manifests/` against the safety properties of the contract
//! (sections 5 and 7): what `kubectl apply -k manifests/` sends is rendered with
//! `kubectl kustomize` when kubectl is installed, else read from the files the
//! kustomization lists, and every assertion says which property failed.
//!
//! This file checks the kustomization itself; `manifests/` here holds one file per object checked:
//! `webhooks.rs` (the MutatingWebhookConfiguration), `deployment.rs` (the Deployment, its
//! PodDisruptionBudget and Service), `rbac.rs`, `policy.rs` (the policy ConfigMap) and
//! `examples.rs`; `objects.rs` loads the manifests and finds things.

#[path = "manifests/deployment.rs"]
mod deployment;
#[path = "manifests/examples.rs"]
mod examples;
#[path = "manifests/objects.rs"]
mod objects;
#[path = "manifests/policy.rs"]
mod policy;
#[path = "manifests/rbac.rs"]
mod rbac;
#[path = "manifests/webhooks.rs"]
mod webhooks;

use std::collections::BTreeSet;

use objects::*;
use serde_json::Value;

const NAMESPACE: &str = "gpushare-system";
const NAME: &str = "gpushare";

/// Kinds that have no namespace: kustomize must leave them without one.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

#[test]
fn kustomization_lists_every_manifest_file() {
    let listed: BTreeSet<String> = kustomization_resources().into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo_path("manifests"))
        .expect("manifests/ exists")
        .map(|entry| {
            entry
                .expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| (f.ends_with(".yaml") || f.ends_with(".yml")) && f != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml must list every manifest file in manifests/ (and only those)"
    );

    // The fallback used without kubectl must see the same objects kustomize renders.
    let ids = |objs: &[Value]| -> BTreeSet<(String, String)> {
        objs.iter()
            .map(|o| (kind(o).to_owned(), name(o).to_owned()))
            .collect()
    };
    assert_eq!(
        ids(&raw_objects()),
        ids(objects()),
        "the listed files and the kustomize output must contain the same objects"
    );
}

#[test]
fn namespaces_are_set_only_on_namespaced_objects() {
    the("Namespace", NAMESPACE);
    for object in objects() {
        let namespace = &object["metadata"]["namespace"];
        if CLUSTER_SCOPED.contains(&kind(object)) {
            assert!(
                namespace.is_null(),
                "cluster-scoped {} {} must have no namespace, has {namespace}",
                kind(object),
                name(object)
            );
        } else {
            assert_eq!(
                namespace,
                NAMESPACE,
                "namespaced {} {} must be in {NAMESPACE}",
                kind(object),
                name(object)
            );
        }
    }
}
