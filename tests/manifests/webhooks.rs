//! The MutatingWebhookConfiguration: its webhooks, what each is registered for, its match
//! conditions and namespace selectors, and how each fails.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::objects::*;
use crate::{NAME, NAMESPACE};

fn the_webhook_configuration() -> &'static Value {
    let configs = all_of_kind("MutatingWebhookConfiguration");
    assert_eq!(
        configs.len(),
        1,
        "manifests must contain exactly one MutatingWebhookConfiguration"
    );
    configs[0]
}

fn webhooks() -> &'static [Value] {
    the_webhook_configuration()["webhooks"]
        .as_array()
        .expect("the MutatingWebhookConfiguration has a webhooks list")
}

/// Every webhook of the configuration, by name (CONTRACT section 7).
const WEBHOOKS: [&str; 5] = [
    MANAGED_WEBHOOK,
    UNMANAGED_WEBHOOK,
    CONTROLLER_PODS_WEBHOOK,
    EPHEMERAL_WEBHOOK,
    SCALE_WEBHOOK,
];
const MANAGED_WEBHOOK: &str = "managed.gpushare.io";
const UNMANAGED_WEBHOOK: &str = "unmanaged.gpushare.io";
const CONTROLLER_PODS_WEBHOOK: &str = "controller-pods.gpushare.io";
const EPHEMERAL_WEBHOOK: &str = "ephemeral.gpushare.io";
const SCALE_WEBHOOK: &str = "scale.gpushare.io";

fn webhook(name: &str) -> &'static Value {
    webhooks()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("a webhook named {name}"))
}

fn scale_webhook() -> &'static Value {
    webhook(SCALE_WEBHOOK)
}

#[test]
fn scale_subresources_fail_closed_without_match_conditions() {
    let webhook = scale_webhook();
    assert_eq!(
        webhook["failurePolicy"], "Fail",
        "capacity is never over-committed through a subresource"
    );
    assert!(
        webhook["matchConditions"].is_null(),
        "a Scale carries no annotations to match on"
    );
    let rules = webhook["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["apiGroups"], json!(["apps"]));
    assert_eq!(rules[0]["operations"], json!(["UPDATE"]));
    assert_eq!(
        rules[0]["resources"],
        json!([
            "deployments/scale",
            "replicasets/scale",
            "statefulsets/scale"
        ])
    );
    assert_eq!(webhook["sideEffects"], "NoneOnDryRun");
    let excluded = strings(&webhook["namespaceSelector"]["matchExpressions"][0]["values"]);
    assert!(excluded.contains(&"kube-system") && excluded.contains(&"gpushare-system"));
    // A small blast radius: only namespaces gpushare labelled as holding a module are sent, so
    // an outage refuses scaling there and nowhere else.
    let selector = &webhook["namespaceSelector"];
    assert!(!selector_matches_namespace(selector, "default", &[]));
    assert!(selector_matches_namespace(
        selector,
        "default",
        &[("gpushare.io/managed-workloads", "true")]
    ));
}

/// The single matchConditions expression of a webhook, whitespace collapsed.
fn match_expression(webhook: &Value) -> String {
    let conditions = webhook["matchConditions"]
        .as_array()
        .unwrap_or_else(|| panic!("webhook {} must have matchConditions", webhook["name"]));
    assert_eq!(
        conditions.len(),
        1,
        "webhook {} must have exactly one matchCondition (so the two webhooks are exact complements)",
        webhook["name"]
    );
    let expression = conditions[0]["expression"]
        .as_str()
        .expect("a matchCondition has an expression");
    expression.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a label selector matches a namespace that carries its automatic
/// `kubernetes.io/metadata.name` label (every namespace has it since Kubernetes 1.22) and `labels`.
fn selector_matches_namespace(selector: &Value, namespace: &str, labels: &[(&str, &str)]) -> bool {
    let label = |key: &str| {
        if key == "kubernetes.io/metadata.name" {
            return Some(namespace);
        }
        labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    };
    let labels_match = selector["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .all(|(key, value)| label(key) == value.as_str())
        })
        .unwrap_or(true);
    let expressions_match = selector["matchExpressions"]
        .as_array()
        .map(|exprs| {
            exprs.iter().all(|expr| {
                let value = label(expr["key"].as_str().unwrap_or_default());
                let values = strings(&expr["values"]);
                match expr["operator"].as_str().unwrap_or_default() {
                    "In" => value.is_some_and(|v| values.contains(&v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    other => panic!("unknown label selector operator {other}"),
                }
            })
        })
        .unwrap_or(true);
    labels_match && expressions_match
}

#[test]
fn every_webhook_calls_the_same_service_path() {
    let names: Vec<&str> = webhooks()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, WEBHOOKS, "the webhooks of the configuration");
    let service = the("Service", NAME);
    let service_ports: Vec<_> = service["spec"]["ports"]
        .as_array()
        .expect("the Service has ports")
        .iter()
        .map(|p| p["port"].clone())
        .collect();
    for webhook in webhooks() {
        let client = &webhook["clientConfig"];
        assert!(
            client["url"].is_null(),
            "webhook {} must call the in-cluster Service, not a URL",
            webhook["name"]
        );
        let target = &client["service"];
        assert_eq!(
            target["name"], NAME,
            "webhook {} must call Service gpushare",
            webhook["name"]
        );
        assert_eq!(
            target["namespace"], NAMESPACE,
            "webhook {} must call the Service in {NAMESPACE}",
            webhook["name"]
        );
        assert_eq!(
            target["path"], "/mutate",
            "webhook {} must call path /mutate",
            webhook["name"]
        );
        // An absent port means 443.
        let port = if target["port"].is_null() {
            json!(443)
        } else {
            target["port"].clone()
        };
        assert!(
            service_ports.contains(&port),
            "webhook {} calls port {port}, which Service gpushare does not expose",
            webhook["name"]
        );
        assert!(
            client["caBundle"].is_null(),
            "caBundle is injected at deploy time, not committed (webhook {})",
            webhook["name"]
        );
    }
}

/// The place in the managed expression where "made by a built-in controller" starts.
const NOT_BUILTIN: &str = " && !(has(object.metadata) && has(object.metadata.ownerReferences)";

#[test]
fn managed_webhook_fails_closed_and_the_rest_split_exactly() {
    let managed = webhook(MANAGED_WEBHOOK);
    let unmanaged = webhook(UNMANAGED_WEBHOOK);
    let controller_pods = webhook(CONTROLLER_PODS_WEBHOOK);
    assert_eq!(managed["failurePolicy"], "Fail");
    assert_eq!(unmanaged["failurePolicy"], "Ignore");
    assert_eq!(
        controller_pods["failurePolicy"], "Ignore",
        "the pods of admitted workloads keep starting while gpushare is down"
    );
    assert_eq!(webhook(EPHEMERAL_WEBHOOK)["failurePolicy"], "Fail");

    let managed_expr = match_expression(managed);
    // Every place a kind of CONTRACT section 2a keeps its annotations: the object's metadata
    // (a Pod's only one), the pod template's, and a CronJob's job template's pod template's.
    for path in [
        "object.metadata.annotations",
        "object.spec.template.metadata.annotations",
        "object.spec.jobTemplate.spec.template.metadata.annotations",
    ] {
        assert!(
            managed_expr.contains(&format!("has({path})"))
                && managed_expr.contains(&format!("{path}.exists(k, k.startsWith('gpushare.io/'))")),
            "the managed webhook's expression must test (guarded by has()) {path} for gpushare.io/ keys"
        );
    }
    // Every pod spec whose containers may write the GPU variables themselves (CONTRACT 2b).
    for spec in [
        "object.spec",
        "object.spec.template.spec",
        "object.spec.jobTemplate.spec.template.spec",
    ] {
        for list in ["containers", "initContainers"] {
            assert!(
                managed_expr.contains(&format!(
                    "has({spec}.{list}) && {spec}.{list}.exists(c, has(c.env)"
                )),
                "the managed webhook's expression must read the env of {spec}.{list}"
            );
        }
    }
    for variable in [
        "NVIDIA_VISIBLE_DEVICES",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
    ] {
        assert!(
            managed_expr.contains(&format!("e.name == '{variable}'")),
            "{variable}"
        );
    }
    // Only built-in controllers exempt an object: a ConfigMap or a custom resource as
    // controller makes a module of its own.
    let (uses, builtin) = managed_expr
        .split_once(NOT_BUILTIN)
        .expect("the managed expression is: uses a GPU && !made by a built-in controller");
    let builtin = format!("(has(object.metadata) && has(object.metadata.ownerReferences){builtin}");
    for kind in [
        "'Deployment'",
        "'ReplicaSet'",
        "'StatefulSet'",
        "'DaemonSet'",
        "'Job'",
        "'CronJob'",
    ] {
        assert!(
            builtin.contains(kind),
            "{kind} is a built-in controller: {builtin}"
        );
    }
    assert!(
        builtin.contains("r.apiVersion == 'apps/v1'")
            && builtin.contains("r.apiVersion == 'batch/v1'")
    );
    let depth = managed_expr.chars().try_fold(0i32, |depth, c| {
        let depth = depth + i32::from(c == '(') - i32::from(c == ')');
        (depth >= 0).then_some(depth)
    });
    assert_eq!(depth, Some(0), "unbalanced parentheses: {managed_expr}");
    assert!(
        !managed_expr.contains(".?") && !managed_expr.contains("?."),
        "the matchConditions expression must not rely on CEL optional syntax"
    );
    assert_eq!(
        match_expression(unmanaged),
        format!("!({managed_expr})"),
        "the unmanaged webhook's expression must be exactly the negation of the managed one, so every \
         object goes to exactly one of them"
    );
    assert_eq!(
        match_expression(controller_pods),
        format!("{uses} && {builtin}"),
        "controller-pods takes exactly the Pods that use a GPU and the managed webhook leaves out"
    );
    let ephemeral = match_expression(webhook(EPHEMERAL_WEBHOOK));
    assert!(ephemeral.contains("object.spec.ephemeralContainers.exists(c, has(c.env)"));
}

#[test]
fn webhooks_use_admission_v1_without_side_effects_and_a_short_timeout() {
    for webhook in webhooks() {
        let name = &webhook["name"];
        assert_eq!(
            strings(&webhook["admissionReviewVersions"]),
            ["v1"],
            "webhook {name} must accept admissionReviewVersions [v1] only"
        );
        let side_effects = webhook["sideEffects"].as_str().unwrap_or_default();
        assert!(
            ["None", "NoneOnDryRun"].contains(&side_effects),
            "webhook {name} must declare sideEffects None or NoneOnDryRun, has {side_effects:?}"
        );
        // Absent means the API server's default of 10 seconds.
        let timeout = webhook["timeoutSeconds"].as_u64();
        assert!(
            timeout.is_some_and(|t| (1..=5).contains(&t)),
            "webhook {name} must set timeoutSeconds <= 5, has {timeout:?}"
        );
        assert!(
            webhook["objectSelector"]
                .as_object()
                .is_none_or(|s| s.is_empty()),
            "webhook {name} must not have an objectSelector (labels would let managed Deployments skip it)"
        );
    }
}

#[test]
fn webhooks_never_match_kube_system_or_gpushare_system() {
    for webhook in webhooks() {
        let name = &webhook["name"];
        let selector = &webhook["namespaceSelector"];
        assert!(
            selector.is_object(),
            "webhook {name} must have a namespaceSelector"
        );
        let managed = [("gpushare.io/managed-workloads", "true")];
        for excluded in ["kube-system", NAMESPACE] {
            assert!(
                !selector_matches_namespace(selector, excluded, &managed),
                "webhook {name}'s namespaceSelector must exclude {excluded}"
            );
        }
        assert!(
            selector_matches_namespace(selector, "default", &managed),
            "webhook {name}'s namespaceSelector must still match ordinary namespaces such as default"
        );
    }
}

/// The (group, resources) each webhook is registered for: every kind of CONTRACT section 2a on
/// the managed webhook, the same but Pods on the unmanaged one.
fn registered(webhook: &Value) -> BTreeSet<(String, String)> {
    let name = &webhook["name"];
    let rules = webhook["rules"].as_array().expect("a webhook has rules");
    assert!(!rules.is_empty(), "webhook {name} must have rules");
    let mut registered = BTreeSet::new();
    for rule in rules {
        assert_eq!(
            strings(&rule["apiVersions"]),
            ["v1"],
            "webhook {name}: apiVersions must be [v1]"
        );
        let operations: BTreeSet<_> = strings(&rule["operations"]).into_iter().collect();
        let subresources = strings(&rule["resources"]).iter().any(|r| r.contains('/'));
        let expected = if subresources {
            BTreeSet::from(["UPDATE"])
        } else {
            BTreeSet::from(["CREATE", "UPDATE"])
        };
        assert_eq!(
            operations, expected,
            "webhook {name}: operations must be exactly CREATE and UPDATE (UPDATE for subresources)"
        );
        assert_eq!(
            rule["scope"], "Namespaced",
            "webhook {name}: scope must be Namespaced"
        );
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                assert!(
                    !resource.contains('*') && group != "*",
                    "webhook {name}: no wildcards ({group}/{resource})"
                );
                registered.insert((group.to_string(), resource.to_string()));
            }
        }
    }
    registered
}

#[test]
fn webhooks_see_create_and_update_of_every_workload_kind_and_pods_only_when_managed() {
    let kinds: BTreeSet<(String, String)> = [
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ]
    .iter()
    .map(|(g, r)| (g.to_string(), r.to_string()))
    .collect();
    let mut with_pods = kinds.clone();
    with_pods.insert((String::new(), "pods".to_string()));
    assert_eq!(
        registered(webhook(MANAGED_WEBHOOK)),
        with_pods,
        "the managed webhook covers every kind gpushare examines, Pods included"
    );
    assert_eq!(
        registered(webhook(UNMANAGED_WEBHOOK)),
        kinds,
        "the unmanaged webhook covers the same kinds but never Pods"
    );
    let pods = |resource: &str| BTreeSet::from([(String::new(), resource.to_string())]);
    assert_eq!(registered(webhook(CONTROLLER_PODS_WEBHOOK)), pods("pods"));
    assert_eq!(
        registered(webhook(EPHEMERAL_WEBHOOK)),
        pods("pods/ephemeralcontainers")
    );
}
