//! Checks the deployment in `manifests/` against the safety properties of the contract
//! (sections 5 and 7): what `kubectl apply -k manifests/` sends is rendered with
//! `kubectl kustomize` when kubectl is installed, else read from the files the
//! kustomization lists, and every assertion says which property failed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Value};

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

/// The policy's top-level keys and default values, as contract section 5 writes them.
fn default_policy() -> Value {
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

// ---------------------------------------------------------------------------------------
// Loading the manifests
// ---------------------------------------------------------------------------------------

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every non-empty YAML document of `text`, as JSON values.
fn parse_documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin} is not valid YAML: {e}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The file names under `resources:` in manifests/kustomization.yaml.
fn kustomization_resources() -> Vec<String> {
    let path = repo_path("manifests/kustomization.yaml");
    let docs = parse_documents(&read(&path), "manifests/kustomization.yaml");
    let resources = docs[0]["resources"]
        .as_array()
        .expect("manifests/kustomization.yaml has a resources list");
    resources
        .iter()
        .map(|r| r.as_str().expect("resources are file names").to_owned())
        .collect()
}

/// The objects of the files the kustomization lists, without kustomize's transformations.
fn raw_objects() -> Vec<Value> {
    kustomization_resources()
        .iter()
        .flat_map(|file| {
            let path = repo_path("manifests").join(file);
            parse_documents(&read(&path), &format!("manifests/{file}"))
        })
        .collect()
}

/// What `kubectl apply -k manifests/` would send, rendered once for all tests.
fn objects() -> &'static [Value] {
    static OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        match Command::new("kubectl")
            .arg("kustomize")
            .arg(repo_path("manifests"))
            .output()
        {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "`kubectl kustomize manifests/` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8(out.stdout).expect("kustomize prints UTF-8");
                parse_documents(&text, "`kubectl kustomize manifests/` output")
            }
            // No kubectl: the files themselves still have to satisfy every property.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => raw_objects(),
            Err(e) => panic!("cannot run kubectl: {e}"),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Finding things
// ---------------------------------------------------------------------------------------

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn all_of_kind(kind_name: &str) -> Vec<&'static Value> {
    objects().iter().filter(|o| kind(o) == kind_name).collect()
}

/// The one object of this kind and name; fails naming what is missing.
fn the(kind_name: &str, object_name: &str) -> &'static Value {
    let found: Vec<_> = all_of_kind(kind_name)
        .into_iter()
        .filter(|o| name(o) == object_name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "manifests must contain exactly one {kind_name} named {object_name}"
    );
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

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

/// Whether a `matchLabels` selector selects pods with these labels.
fn selects(selector: &Value, pod_labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|wanted| !wanted.is_empty() && wanted.iter().all(|(k, v)| &pod_labels[k] == v))
}

fn pod_template() -> &'static Value {
    &the("Deployment", NAME)["spec"]["template"]
}

// ---------------------------------------------------------------------------------------
// The kustomization
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// The MutatingWebhookConfiguration
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// The Deployment, its PodDisruptionBudget and Service
// ---------------------------------------------------------------------------------------

#[test]
fn deployment_runs_two_hardened_replicas_with_probes() {
    let deployment = the("Deployment", NAME);
    assert_eq!(
        deployment["spec"]["replicas"], 2,
        "Deployment gpushare must have 2 replicas"
    );

    let pod = &pod_template()["spec"];
    assert_eq!(
        pod["serviceAccountName"], NAME,
        "the pods must run as ServiceAccount gpushare"
    );
    assert!(
        pod["hostNetwork"].is_null() || pod["hostNetwork"] == false,
        "the pods must not use hostNetwork"
    );
    let pod_security = &pod["securityContext"];
    let containers = pod["containers"]
        .as_array()
        .expect("the pod has containers");
    assert!(!containers.is_empty(), "the pod must have a container");

    for container in containers {
        let cname = &container["name"];
        let security = &container["securityContext"];
        let non_root = if security["runAsNonRoot"].is_null() {
            &pod_security["runAsNonRoot"]
        } else {
            &security["runAsNonRoot"]
        };
        assert_eq!(
            non_root, true,
            "container {cname} must run with runAsNonRoot: true"
        );
        assert_eq!(
            security["readOnlyRootFilesystem"], true,
            "container {cname} must have readOnlyRootFilesystem: true"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"], false,
            "container {cname} must have allowPrivilegeEscalation: false"
        );
        assert_eq!(
            strings(&security["capabilities"]["drop"]),
            ["ALL"],
            "container {cname} must drop ALL capabilities"
        );
        assert!(
            security["privileged"].is_null() || security["privileged"] == false,
            "container {cname} must not be privileged"
        );
        // Plain HTTP on the health port: the kubelet presents no client certificate, which the
        // webhook port requires with --client-ca.
        let health_port = container["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == "health"))
            .unwrap_or_else(|| panic!("container {cname} must declare a port named health"));
        let args = strings(&container["args"]);
        let listen = format!("0.0.0.0:{}", health_port["containerPort"]);
        assert!(
            args.windows(2)
                .any(|w| w == ["--health-listen", listen.as_str()]),
            "container {cname} must serve health on its health port: {args:?}"
        );
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let get = &container[probe]["httpGet"];
            assert!(
                get.is_object(),
                "container {cname} must have an HTTP {probe}"
            );
            assert_eq!(
                (&get["scheme"], &get["port"]),
                (&Value::from("HTTP"), &Value::from("health")),
                "container {cname}'s {probe} must use the plain-HTTP health port"
            );
        }
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "the readinessProbe must call /readyz (503 until the caches synced)"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "the livenessProbe must call /healthz"
        );
    }
}

#[test]
fn deployment_mounts_its_tls_secret_read_only() {
    let pod = &pod_template()["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    let arg_after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("the container must pass {flag} to gpushare serve"))
    };
    let volumes = pod["volumes"].as_array().expect("the pod has volumes");
    for flag in ["--tls-cert", "--tls-key"] {
        let file = arg_after(flag);
        let mount = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| file.starts_with(&format!("{p}/")))
            })
            .unwrap_or_else(|| panic!("{flag} {file} must be inside a volume mount"));
        assert_eq!(
            mount["readOnly"], true,
            "the TLS volume must be mounted read-only"
        );
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume is declared");
        assert_eq!(
            volume["secret"]["secretName"], "gpushare-tls",
            "{flag} must come from Secret gpushare-tls"
        );
    }
}

#[test]
fn pod_disruption_budget_keeps_one_replica_serving() {
    let pdbs = all_of_kind("PodDisruptionBudget");
    assert_eq!(
        pdbs.len(),
        1,
        "manifests must contain one PodDisruptionBudget"
    );
    let pdb = pdbs[0];
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "the PodDisruptionBudget takes one replica at a time (gpushare raises it while no node can \
         take an evicted replica)"
    );
    assert!(
        selects(
            &pdb["spec"]["selector"],
            &pod_template()["metadata"]["labels"]
        ),
        "the PodDisruptionBudget must select the gpushare pods"
    );
}

#[test]
fn service_routes_443_to_the_https_container_port() {
    let service = the("Service", NAME);
    let spec = &service["spec"];
    let selector = json!({ "matchLabels": spec["selector"] });
    assert!(
        selects(&selector, &pod_template()["metadata"]["labels"]),
        "Service gpushare must select the gpushare pods"
    );
    let port = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"] == 443)
        .expect("Service gpushare must expose port 443");
    let container_ports = pod_template()["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("the container declares its ports");
    assert!(
        container_ports
            .iter()
            .any(|p| p["name"] == port["targetPort"] || p["containerPort"] == port["targetPort"]),
        "Service port 443 must target a port the container declares (https)"
    );
}

// ---------------------------------------------------------------------------------------
// Identity and RBAC
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// The policy ConfigMap
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------------------

#[test]
fn examples_are_single_workloads_listed_in_the_readme() {
    let readme = read(&repo_path("examples/README.md"));
    let policy_keys: BTreeSet<String> = default_policy()
        .as_object()
        .expect("the default policy is a mapping")
        .keys()
        .cloned()
        .collect();
    let mut files: Vec<_> = std::fs::read_dir(repo_path("examples"))
        .expect("examples/ exists")
        .map(|entry| {
            entry
                .expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "examples/ must contain examples");

    for file in files {
        let path = repo_path("examples").join(&file);
        let text = read(&path);
        let documents = parse_documents(&text, &format!("examples/{file}"));
        if file.starts_with("policy-") {
            let keys = documents[0]
                .as_object()
                .expect("a policy is a mapping")
                .keys();
            for key in keys {
                assert!(
                    policy_keys.contains(key),
                    "examples/{file}: unknown policy key {key}"
                );
            }
            continue;
        }
        assert!(
            file.starts_with("allowed-") || file.starts_with("denied-"),
            "examples/{file}: an example's name must start with allowed- or denied- (its verdict)"
        );
        assert!(
            readme.contains(&format!("]({file})")),
            "examples/README.md must have a row for {file}"
        );
        // One workload, or one sample as its publisher wrote it (the device's two Jobs).
        assert!(
            documents.len() == 1 || file.contains("sharing"),
            "examples/{file} must hold one object"
        );
        for document in &documents {
            assert!(
                [
                    "Deployment",
                    "StatefulSet",
                    "DaemonSet",
                    "Job",
                    "CronJob",
                    "Pod"
                ]
                .contains(&kind(document)),
                "examples/{file} must hold workloads gpushare examines"
            );
        }

        let first_comment = text
            .lines()
            .find(|l| l.starts_with('#'))
            .unwrap_or_default();
        if let Some(args) = first_comment.strip_prefix("# gpushare-check-args:") {
            for policy in args
                .split_whitespace()
                .skip_while(|a| *a != "--policy")
                .skip(1)
                .take(1)
            {
                assert!(
                    repo_path(policy).is_file(),
                    "examples/{file} names --policy {policy}, which does not exist"
                );
            }
        }
    }
}
