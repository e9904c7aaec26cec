//! The policy ConfigMap: labelled as the policy, holding the contract's default policy, accepted
//! by the server's strict parser.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::objects::*;

/// The policy's top-level keys and default values, as contract section 5 writes them.
pub fn default_policy() -> Value {
    json!({
        "defaultMode": "time-slicing",
        "defaultGpu": "auto",
        "defaultMpsPercentage": 50,
        "maxMpsPercentagePerGpu": 100,
        "maxClientsPerGpu": 48,
        "strategy": "least-loaded",
        "hideGpuFromOtherContainers": false,
        "mps": { "hostIPC": false, "pipeDirectory": "" },
        "gpusPerNode": null,
        "gpuModes": {},
        "reservedForVms": [],
        "nodes": {},
        "namespaces": { "exclude": ["kube-system", "gpushare-system"] },
        "enforcement": "deny",
        "handWrittenGpuEnv": "count",
        "hideGpuFromUnmanaged": false,
    })
}

/// `gpushare status` and `apply` find the policy of an install of any name by this label (the
/// kustomization adds app.kubernetes.io/part-of, checked against the CLI's selector in chart.rs).
#[test]
fn policy_config_map_is_labelled_as_the_policy() {
    let config_map = the("ConfigMap", "gpushare-policy");
    assert!(
        gpushare::cluster::policy_configmap::LABELS.contains("app.kubernetes.io/component=policy")
    );
    assert_eq!(
        config_map["metadata"]["labels"]["app.kubernetes.io/component"], "policy",
        "{config_map}"
    );
}

#[test]
fn policy_config_map_holds_the_default_policy() {
    let config_map = the("ConfigMap", "gpushare-policy");
    let text = config_map["data"]["policy.yaml"]
        .as_str()
        .expect("ConfigMap gpushare-policy must have the key policy.yaml");
    let documents = parse_documents(text, "ConfigMap gpushare-policy key policy.yaml");
    assert_eq!(documents.len(), 1, "policy.yaml must be one YAML document");
    let policy = documents[0]
        .as_object()
        .expect("policy.yaml must be a YAML mapping");

    let expected = default_policy();
    let expected = expected
        .as_object()
        .expect("the default policy is a mapping");
    let keys: BTreeSet<_> = policy.keys().collect();
    let expected_keys: BTreeSet<_> = expected.keys().collect();
    assert_eq!(
        keys, expected_keys,
        "policy.yaml must spell out every top-level key of the contract, and no other"
    );
    for (key, value) in expected {
        assert_eq!(
            &policy[key], value,
            "policy.yaml key {key} must have the contract's default"
        );
    }
}

/// The same strict parser the server uses (unknown keys are errors at any depth) must accept
/// the shipped policy and find it equal to the embedded default, and accept the example policy.
#[test]
fn shipped_policies_pass_the_strict_policy_parser() {
    use gpushare::core::policy::Policy;

    let config_map = the("ConfigMap", "gpushare-policy");
    let text = config_map["data"]["policy.yaml"]
        .as_str()
        .expect("ConfigMap gpushare-policy must have the key policy.yaml");
    let shipped = Policy::from_yaml(text)
        .unwrap_or_else(|e| panic!("ConfigMap gpushare-policy holds an invalid policy: {e}"));
    assert_eq!(
        shipped,
        Policy::default(),
        "the ConfigMap's policy must be the embedded default policy"
    );

    let example = read(&repo_path("examples/policy-mps-gpu1.yaml"));
    Policy::from_yaml(&example)
        .unwrap_or_else(|e| panic!("examples/policy-mps-gpu1.yaml is an invalid policy: {e}"));
}
