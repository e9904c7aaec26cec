//! Identity and RBAC: the ServiceAccount, and roles that grant exactly what gpushare uses.

use serde_json::json;

use crate::objects::*;
use crate::{NAME, NAMESPACE};

#[test]
fn service_account_exists() {
    let account = the("ServiceAccount", NAME);
    assert_eq!(
        account["metadata"]["namespace"], NAMESPACE,
        "ServiceAccount gpushare must be in {NAMESPACE}"
    );
}

#[test]
fn rbac_is_least_privilege() {
    // Exactly what the server uses: kube-runtime watchers list and watch; the event recorder
    // creates events.k8s.io Events and patches them to count repeats.
    let allowed: &[(&str, &str, &[&str])] = &[
        ("", "nodes", &["list", "watch"]),
        ("", "namespaces", &["list", "watch", "patch"]),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            &["list", "watch", "patch"],
        ),
        ("apps", "deployments", &["list", "watch"]),
        ("apps", "replicasets", &["list", "watch"]),
        ("apps", "statefulsets", &["list", "watch"]),
        ("apps", "daemonsets", &["list", "watch"]),
        ("batch", "jobs", &["list", "watch"]),
        ("batch", "cronjobs", &["list", "watch"]),
        ("", "pods", &["list", "watch"]),
        // The policy (list/watch) and the ledger (get/list/watch/patch, create when missing).
        (
            "",
            "configmaps",
            &["get", "list", "watch", "patch", "create"],
        ),
        ("events.k8s.io", "events", &["create", "patch"]),
        ("policy", "poddisruptionbudgets", &["patch"]),
    ];
    let granted = |group: &str, resource: &str, verb: &str| {
        all_of_kind("ClusterRole")
            .into_iter()
            .chain(all_of_kind("Role"))
            .any(|role| {
                role["rules"].as_array().into_iter().flatten().any(|rule| {
                    strings(&rule["apiGroups"]).contains(&group)
                        && strings(&rule["resources"]).contains(&resource)
                        && strings(&rule["verbs"]).contains(&verb)
                })
            })
    };
    for (group, resource, verbs) in allowed {
        for verb in *verbs {
            assert!(
                granted(group, resource, verb),
                "gpushare needs {verb} on {resource} (group {group:?})"
            );
        }
    }
    // Its own webhook configuration only, never another's.
    for role in all_of_kind("ClusterRole") {
        for rule in role["rules"].as_array().into_iter().flatten() {
            if strings(&rule["resources"]).contains(&"mutatingwebhookconfigurations") {
                assert_eq!(strings(&rule["resourceNames"]), [NAME], "{rule}");
            }
        }
    }
    let roles: Vec<_> = all_of_kind("ClusterRole")
        .into_iter()
        .chain(all_of_kind("Role"))
        .collect();
    assert!(
        !roles.is_empty(),
        "manifests must contain the gpushare roles"
    );
    for role in roles {
        let role_id = format!("{} {}", kind(role), name(role));
        for rule in role["rules"].as_array().expect("a role has rules") {
            let groups = strings(&rule["apiGroups"]);
            let resources = strings(&rule["resources"]);
            let verbs = strings(&rule["verbs"]);
            for field in [&groups, &resources, &verbs] {
                assert!(
                    !field.contains(&"*"),
                    "{role_id} must not grant wildcards: {rule}"
                );
            }
            assert!(
                rule["nonResourceURLs"].is_null(),
                "{role_id} must not grant nonResourceURLs"
            );
            assert!(
                !resources.contains(&"secrets"),
                "{role_id} must not grant access to secrets"
            );
            for group in &groups {
                for resource in &resources {
                    let permitted = allowed
                        .iter()
                        .find(|(g, r, _)| g == group && r == resource)
                        .unwrap_or_else(|| {
                            panic!("{role_id} grants {resource} in group {group:?}, which gpushare does not use")
                        });
                    for verb in &verbs {
                        assert!(
                            permitted.2.contains(verb),
                            "{role_id} grants {verb} on {resource}, which gpushare does not need"
                        );
                    }
                    if *resource == "configmaps" {
                        assert_eq!(
                            kind(role),
                            "Role",
                            "configmaps must be granted by a namespaced Role"
                        );
                        let names = strings(&rule["resourceNames"]);
                        let expected: &[&str] = match names.as_slice() {
                            ["gpushare-policy"] => &["list", "watch"],
                            ["gpushare-ledger"] => &["get", "list", "watch", "patch"],
                            // create cannot be limited by name (the API server has none yet).
                            [] => &["create"],
                            other => panic!("configmaps access limited to {other:?}: only gpushare-policy and gpushare-ledger"),
                        };
                        assert_eq!(verbs, expected, "configmaps {names:?}");
                    }
                    if *resource == "events" {
                        assert_eq!(
                            kind(role),
                            "Role",
                            "events must be granted in {NAMESPACE} only"
                        );
                    }
                }
            }
        }
    }

    for binding in all_of_kind("ClusterRoleBinding")
        .into_iter()
        .chain(all_of_kind("RoleBinding"))
    {
        let binding_id = format!("{} {}", kind(binding), name(binding));
        let subjects = binding["subjects"]
            .as_array()
            .expect("a binding has subjects");
        assert_eq!(
            subjects.as_slice(),
            [json!({ "kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE })],
            "{binding_id} must bind only ServiceAccount {NAMESPACE}/{NAME}"
        );
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        the(role_kind, role_name);
    }
}
