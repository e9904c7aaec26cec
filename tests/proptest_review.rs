//! Property tests of the webhook's whole path, raw body -> `AdmissionService::review` -> answer,
//! of `gpushare check`'s core, and of the text parsers admins and CI feed. Random bytes and
//! byte-mutated reviews never panic; every AdmissionReview the API server could send gets a
//! well-formed answer for its uid, and a patch that applies to the object and is idempotent
//! (CONTRACT sections 3 and 6). `PROPTEST_CASES=N` runs more cases than the default 256.
//!
//! Bugs found here or by the fuzzers (`fuzz/`) are kept as inputs under
//! `tests/fixtures/fuzz-regressions/` and replayed by the regression tests at the end (ignored
//! while the bug is open; the generators and checks then step around it, marked "Known bug").

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use gpushare::cli::check::{check, parse_documents, Document, Mark};
use gpushare::core::inventory::Inventory;
use gpushare::core::policy::Policy;
use gpushare::core::workload::Kind;
use gpushare::webhook::admission::{Response, ReviewResponse, API_VERSION, KIND};
use gpushare::webhook::metrics::Metrics;
use gpushare::webhook::service::{AdmissionService, StandaloneBackend};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Value};

// ---- set-up --------------------------------------------------------------------------------

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // Failures become fixture files and named regression tests, not seed files in tests/.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// GPU 1 in mps, and every optional mutation switched on.
const MPS_POLICY: &str = r#"
gpuModes: { "1": mps }
hideGpuFromOtherContainers: true
mps: { hostIPC: true, pipeDirectory: /run/nvidia/mps }
namespaces: { exclude: [kube-system, gpushare-system, legacy] }
"#;

/// Every GPU in mps, tight limits, capacity only warned about, GPU 0 kept for a VM.
const WARN_POLICY: &str = r#"
defaultMode: mps
defaultMpsPercentage: 30
maxClientsPerGpu: 4
strategy: pack
enforcement: warn
reservedForVms: [0]
"#;

/// The standalone webhook on a 2-GPU node under one policy.
struct Service {
    name: &'static str,
    policy: Policy,
    service: AdmissionService,
}

/// Built once and shared by every case: a standalone backend keeps no state between requests.
fn services() -> &'static [Service] {
    static SERVICES: OnceLock<Vec<Service>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let service = |name, policy: Policy| Service {
            name,
            service: AdmissionService {
                backend: Arc::new(StandaloneBackend::new(
                    policy.clone(),
                    Inventory::standalone(Some(2)),
                )),
                metrics: Arc::new(Metrics::new()),
            },
            policy,
        };
        vec![
            service("default", Policy::default()),
            service("mps", Policy::from_yaml(MPS_POLICY).expect("valid")),
            service("warn", Policy::from_yaml(WARN_POLICY).expect("valid")),
        ]
    })
}

// ---- what every answer must look like -------------------------------------------------------

/// Checks a serialized answer: an AdmissionReview whose denials carry a 4xx status and a
/// message, and whose patch is base64 JSON Patch. Returns the response and the decoded patch.
fn well_formed(answer: &[u8]) -> Result<(Response<'static>, Option<Value>), String> {
    let review: ReviewResponse<'static> = serde_json::from_slice(answer)
        .map_err(|e| format!("the answer is not an AdmissionReview: {e}"))?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(format!(
            "the answer is {}/{}",
            review.api_version, review.kind
        ));
    }
    let response = review.response;
    if !response.allowed {
        let status = response.status.as_ref().ok_or("a denial without status")?;
        if !(400..=499).contains(&status.code) || status.message.trim().is_empty() {
            return Err(format!(
                "a denial needs a 4xx code and a message: {status:?}"
            ));
        }
        if response.patch.is_some() {
            return Err("a denial carries a patch".into());
        }
        return Ok((response, None));
    }
    let Some(encoded) = response.patch.as_deref() else {
        if response.patch_type.is_some() {
            return Err("patchType without patch".into());
        }
        return Ok((response, None));
    };
    if response.patch_type.as_deref() != Some("JSONPatch") {
        return Err(format!("patchType is {:?}", response.patch_type));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("the patch is not JSON: {e}"))?;
    Ok((response, Some(patch)))
}

/// Applies a decoded JSON Patch to a copy of `object`.
fn apply(object: &Value, patch: &Value) -> Result<Value, String> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| format!("the patch is not a JSON Patch: {e}: {patch}"))?;
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &operations.0)
        .map_err(|e| format!("the patch does not apply: {e}\npatch: {patch}\nobject: {object}"))?;
    Ok(patched)
}

/// Sends a review through one service: the well-formed answer, or why it is not.
fn answer(s: &Service, review: &Value) -> Result<(Response<'static>, Option<Value>), String> {
    let body = serde_json::to_vec(review).expect("a Value serializes");
    let answer = futures::executor::block_on(s.service.review(&body))
        .map_err(|e| format!("a well-formed review was rejected: {e}"))?;
    well_formed(&answer)
}

/// The namespace the service decides for, resolved as it does.
fn effective_namespace(review: &Value) -> &str {
    let non_empty = |p| {
        review
            .pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    non_empty("/request/namespace")
        .or_else(|| non_empty("/request/object/metadata/namespace"))
        .unwrap_or("default")
}

/// The kind gpushare decides this request for, if any (CREATE or UPDATE of a workload kind).
fn handled(review: &Value) -> Option<Kind> {
    let at = |p| review.pointer(p).and_then(Value::as_str);
    if !matches!(at("/request/operation"), Some("CREATE" | "UPDATE")) {
        return None;
    }
    Kind::from_group_kind(
        at("/request/kind/group").unwrap_or_default(),
        at("/request/kind/kind").unwrap_or_default(),
    )
}

/// Property (b) for one review and one service: an answer for the same uid; unhandled requests
/// and excluded namespaces unchanged; a patch that applies, writes only the Deployment's
/// metadata and pod template, and gets no further patch when the patched object comes back.
fn check_review(s: &Service, review: &Value) -> Result<(), String> {
    let (response, patch) = answer(s, review)?;
    let uid = review.pointer("/request/uid").and_then(Value::as_str);
    if Some(&*response.uid) != uid {
        return Err(format!("uid {uid:?} answered as {:?}", response.uid));
    }
    let kind = handled(review);
    let untouched = kind.is_none() || s.policy.is_excluded(effective_namespace(review));
    if untouched && !(response.allowed && patch.is_none()) {
        return Err("an unhandled request or excluded namespace was not allowed unchanged".into());
    }
    let Some(patch) = patch else { return Ok(()) };
    // A Pod is its own pod template; every other kind keeps one under its spec.
    let template = match kind {
        Some(Kind::Pod) => "/spec/",
        Some(Kind::CronJob) => "/spec/jobTemplate/spec/template/",
        _ => "/spec/template/",
    };
    for op in patch.as_array().ok_or("the patch is not an array")? {
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        // `/metadata` itself is added whole when the object has none.
        if !(path == "/metadata" || path.starts_with("/metadata/") || path.starts_with(template)) {
            return Err(format!(
                "the patch writes outside metadata and the pod template: {op}"
            ));
        }
    }
    let object = review
        .pointer("/request/object")
        .ok_or("a patch without object")?;
    let mut again = review.clone();
    again["request"]["object"] = apply(object, &patch)?;
    let (second, second_patch) =
        answer(s, &again).map_err(|e| format!("the patched object: {e}"))?;
    if !second.allowed {
        let message = second.status.as_ref().map_or("", |s| &*s.message);
        return Err(format!(
            "the patched object is denied: {message}\nfirst patch: {patch}"
        ));
    }
    match second_patch {
        Some(Value::Array(ops)) if !ops.is_empty() => Err(format!(
            "not idempotent: the patched object gets another patch\nfirst: {patch}\nsecond: {}",
            Value::Array(ops)
        )),
        _ => Ok(()),
    }
}

// ---- generators: AdmissionReviews as the API server could send them --------------------------

const GPU: &str = "gpushare.io/gpu";
const MODE: &str = "gpushare.io/mode";
const PCT: &str = "gpushare.io/mps-percentage";
const MEM: &str = "gpushare.io/mps-memory-limit";
const CONTAINERS: &str = "gpushare.io/containers";
const A_GPU: &str = "gpushare.io/assigned-gpu";
const A_MODE: &str = "gpushare.io/assigned-mode";
const A_PCT: &str = "gpushare.io/assigned-mps-percentage";
const PIPE_VOLUME: &str = "gpushare-mps-pipe";

/// Well-formed and malformed values of one key.
type Values = (&'static [&'static str], &'static [&'static str]);

#[rustfmt::skip]
const GPU_VALUES: Values = (
    &["0", "1", "auto", "AUTO", " 1 ", "01"],
    &["2", "0,1", "0, 1", "all", "-1", "0-1", "99999999999", "4294967296", "GPU-8c7a1f", "MIG-1",
      "none", "", "+1"],
);
const MODE_VALUES: Values = (
    &["mps", "time-slicing", " mps"],
    &["MPS", "timeslicing", "", "auto"],
);
#[rustfmt::skip]
const PCT_VALUES: Values = (
    &["1", "20", "50", "100", " 30 "],
    &["101", "0", "-5", "1.5", "", "99999999999999999999", "+5"],
);
#[rustfmt::skip]
const MEM_VALUES: Values = (
    &["512M", "2G", "1G"],
    &["0G", "2Gi", "2g", "G", "M", "", "1.5G", "18446744073709551615M", "99999999999999999999G"],
);
#[rustfmt::skip]
const CONTAINER_VALUES: Values = (
    &["nginx", "sidecar", "nginx,sidecar", " nginx , sidecar ", "nginx,nginx"],
    &["missing", ",", ""],
);
const ASSIGNED_VALUES: Values = (&["0", "1", "mps", "time-slicing", "50"], &["7", "x", ""]);
#[rustfmt::skip]
const TYPO_KEYS: &[&str] = &["gpushare.io/gpus", "gpushare.io/GPU", "gpushare.io/mps-percent",
    "gpushare.io/", "gpushare.io/assigned-gpus", "gpushare.io/containers "];
#[rustfmt::skip]
const OTHER_KEYS: &[&str] = &["deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration", "gpushare.iox/gpu", "example.com/gpu"];
#[rustfmt::skip]
const ENV_NAMES: &[&str] = &["NVIDIA_VISIBLE_DEVICES", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
    "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "CUDA_MPS_PIPE_DIRECTORY", "PATH",
    "NVIDIA_DRIVER_CAPABILITIES"];
#[rustfmt::skip]
const ENV_VALUES: Values = (
    &["0", "1", "none", "void", "", "GPU-8c7a1f", "50", "0=2G", "/run/nvidia/mps"],
    &["0,1", "all", "MIG-1,MIG-2", " 1 "],
);
const ANY_TEXT: &str = "\\PC{0,12}";

/// One of `choices`, each as often as its weight.
fn weighted<T: Clone + Debug + 'static>(choices: &[(usize, T)]) -> impl Strategy<Value = T> {
    let expanded: Vec<T> = choices
        .iter()
        .flat_map(|(weight, t)| std::iter::repeat_n(t.clone(), *weight))
        .collect();
    select(expanded)
}

/// Values for one key: mostly well formed, often malformed, now and then any text matching `text`.
fn values((valid, invalid): Values, text: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(valid).prop_map(str::to_string),
        3 => select(invalid).prop_map(str::to_string),
        1 => text,
    ]
    .boxed()
}

/// `None` leaves the field out; `Some(Null)` writes `null`, as Go writes nil maps and slices.
fn field(present: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(Value::Null)), 6 => present.prop_map(Some)]
}

fn put(object: &mut Value, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        object[key] = value;
    }
}

fn map_of(pairs: Vec<(String, String)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

fn keyed(key: &'static str, pool: Values, text: &'static str) -> BoxedStrategy<(String, String)> {
    values(pool, text)
        .prop_map(move |v| (key.to_string(), v))
        .boxed()
}

/// One annotation a user might write on a managed Deployment.
fn user_annotation() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        6 => keyed(GPU, GPU_VALUES, ANY_TEXT),
        3 => keyed(MODE, MODE_VALUES, ANY_TEXT),
        3 => keyed(PCT, PCT_VALUES, ANY_TEXT),
        2 => keyed(MEM, MEM_VALUES, ANY_TEXT),
        2 => keyed(CONTAINERS, CONTAINER_VALUES, ANY_TEXT),
        1 => (select(TYPO_KEYS), ANY_TEXT).prop_map(|(k, v)| (k.to_string(), v)),
        3 => other_annotation(),
    ]
}

/// Annotations that do not make a Deployment managed: gpushare's own and other tools'.
fn other_annotation() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        select(&[A_GPU, A_MODE, A_PCT][..]).prop_flat_map(|k| keyed(k, ASSIGNED_VALUES, ANY_TEXT)),
        (select(OTHER_KEYS), ANY_TEXT).prop_map(|(k, v)| (k.to_string(), v)),
    ]
}

fn env_entry() -> impl Strategy<Value = Value> {
    let value_from = weighted(&[
        (4, None),
        (1, Some(Value::Null)),
        (
            1,
            Some(json!({ "fieldRef": { "fieldPath": "metadata.name" } })),
        ),
        (
            1,
            Some(json!({ "configMapKeyRef": { "name": "gpu", "key": "index" } })),
        ),
    ]);
    let value = field(values(ENV_VALUES, ANY_TEXT).prop_map(Value::String));
    (select(ENV_NAMES), value, value_from).prop_map(|(name, value, value_from)| {
        let mut entry = json!({ "name": name });
        put(&mut entry, "value", value);
        put(&mut entry, "valueFrom", value_from);
        entry
    })
}

/// `nvidia.com/gpu` as users write it: strings, integers and floats, sensible or not.
fn gpu_quantity() -> impl Strategy<Value = Option<Value>> {
    #[rustfmt::skip]
    let odd = [json!("2"), json!("500m"), json!("1Gi"), json!(" 1"), json!("01"), json!("+1"),
        json!("1e0"), json!(""), json!(2), json!(-1), json!(4_294_967_297_i64), json!(i64::MAX),
        json!(i64::MIN), json!(1.0), json!(1.5), json!(-0.0)];
    prop_oneof![
        3 => Just(None),
        2 => select(vec![json!(0), json!(1), json!("0"), json!("1")]).prop_map(Some),
        1 => select(odd.to_vec()).prop_map(Some),
    ]
}

fn resources() -> impl Strategy<Value = Value> {
    let list = || {
        (gpu_quantity(), any::<bool>()).prop_map(|(gpu, cpu)| {
            let mut list = json!({});
            put(&mut list, "nvidia.com/gpu", gpu);
            put(&mut list, "cpu", cpu.then(|| json!("100m")));
            list
        })
    };
    (field(list()), field(list())).prop_map(|(limits, requests)| {
        let mut r = json!({});
        put(&mut r, "limits", limits);
        put(&mut r, "requests", requests);
        r
    })
}

fn container() -> impl Strategy<Value = Value> {
    let mount = select(vec![
        json!({ "name": PIPE_VOLUME, "mountPath": "/run/nvidia/mps" }),
        json!({ "name": PIPE_VOLUME, "mountPath": "/elsewhere" }),
        json!({ "name": "data", "mountPath": "/data" }),
    ]);
    (
        select(&["nginx", "nginx", "sidecar", "app", ""][..]),
        field(prop::collection::vec(env_entry(), 0..5).prop_map(Value::Array)),
        field(resources()),
        prop::option::of(prop::collection::vec(mount, 0..2).prop_map(Value::Array)),
    )
        .prop_map(|(name, env, resources, mounts)| {
            let mut c = json!({ "name": name, "image": "nginx" });
            put(&mut c, "env", env);
            put(&mut c, "resources", resources);
            put(&mut c, "volumeMounts", mounts);
            c
        })
}

fn pod_spec() -> impl Strategy<Value = Value> {
    let volume = select(vec![
        json!({ "name": PIPE_VOLUME, "hostPath": { "path": "/run/nvidia/mps" } }),
        json!({ "name": PIPE_VOLUME, "hostPath": { "path": "/elsewhere" } }),
        json!({ "name": PIPE_VOLUME, "emptyDir": {} }),
        json!({ "name": "data", "emptyDir": {} }),
    ]);
    (
        field(prop::collection::vec(container(), 0..4).prop_map(Value::Array)),
        prop::option::of(prop::collection::vec(container(), 0..2).prop_map(Value::Array)),
        // Placement mostly unconstrained: the standalone node has no labels.
        weighted(&[
            (6, None),
            (1, Some(Value::Null)),
            (1, Some(json!({}))),
            (1, Some(json!({ "gpu": "t4" }))),
        ]),
        weighted(&[
            (6, None),
            (1, Some(json!(""))),
            (1, Some(json!("standalone"))),
            (1, Some(json!("edge-2"))),
        ]),
        prop::option::of(select(vec![json!(true), json!(false), Value::Null])),
        prop::option::of(prop::collection::vec(volume, 0..2).prop_map(Value::Array)),
    )
        .prop_map(
            |(containers, init, selector, node_name, host_ipc, volumes)| {
                let mut spec = json!({});
                put(&mut spec, "containers", containers);
                put(&mut spec, "initContainers", init);
                put(&mut spec, "nodeSelector", selector);
                put(&mut spec, "nodeName", node_name);
                put(&mut spec, "hostIPC", host_ipc);
                put(&mut spec, "volumes", volumes);
                spec
            },
        )
}

fn replicas() -> impl Strategy<Value = Option<Value>> {
    #[rustfmt::skip]
    let huge = [48, 49, 2_147_483_647, 4_294_967_295, 4_294_967_296, i64::MAX, i64::MIN];
    field(prop_oneof![
        4 => (0i64..5).prop_map(|r| json!(r)),
        1 => (-5i64..0).prop_map(|r| json!(r)),
        1 => select(huge.to_vec()).prop_map(|r| json!(r)),
    ])
}

/// Where the user wrote the gpushare keys.
#[derive(Debug, Clone, Copy)]
enum Written {
    Metadata,
    Template,
    /// The same keys in both places.
    Both,
    /// Different keys, or values, in each place.
    Each,
    /// Nowhere: an unmanaged Deployment, perhaps with gpushare's own keys left over.
    Nowhere,
}

/// How the pod template's metadata is written: Go always writes it; other clients may not.
#[derive(Debug, Clone, Copy)]
enum TemplateMeta {
    Present,
    Null,
    Absent,
}

/// A Deployment as `kubectl create deployment` writes it, with random gpushare annotations,
/// containers, env, resources, replicas and placement.
fn deployment() -> impl Strategy<Value = Value> {
    let user = || prop::collection::vec(user_annotation(), 1..4).prop_map(map_of);
    let other = || field(prop::collection::vec(other_annotation(), 0..3).prop_map(map_of));
    (
        weighted(&[
            (3, Written::Metadata),
            (1, Written::Template),
            (1, Written::Both),
            (1, Written::Each),
            (1, Written::Nowhere),
        ]),
        (user(), user(), other(), other()),
        weighted(&[
            (4, TemplateMeta::Present),
            (1, TemplateMeta::Null),
            (1, TemplateMeta::Absent),
        ]),
        weighted(&[
            (3, None),
            (1, Some("default")),
            (1, Some("team-a")),
            (1, Some("")),
            (1, Some("kube-system")),
            (1, Some("legacy")),
        ]),
        replicas(),
        pod_spec(),
    )
        .prop_map(
            |(
                written,
                (user, own, other, other_in_template),
                template_meta,
                namespace,
                replicas,
                spec,
            )| {
                let (annotations, template_annotations) = match written {
                    Written::Metadata => (Some(user), other_in_template),
                    Written::Template => (other, Some(user)),
                    Written::Both => (Some(user.clone()), Some(user)),
                    Written::Each => (Some(user), Some(own)),
                    Written::Nowhere => (other, other_in_template),
                };
                let mut metadata =
                    json!({ "name": "web", "creationTimestamp": null, "labels": { "app": "web" } });
                put(&mut metadata, "namespace", namespace.map(|n| json!(n)));
                put(&mut metadata, "annotations", annotations);
                let mut template = json!({ "spec": spec });
                match template_meta {
                    TemplateMeta::Present => {
                        let mut m =
                            json!({ "creationTimestamp": null, "labels": { "app": "web" } });
                        put(&mut m, "annotations", template_annotations);
                        template["metadata"] = m;
                    }
                    TemplateMeta::Null => template["metadata"] = Value::Null,
                    TemplateMeta::Absent => {}
                }
                let mut spec = json!({
                    "selector": { "matchLabels": { "app": "web" } },
                    "template": template,
                    "strategy": {},
                });
                put(&mut spec, "replicas", replicas);
                json!({
                    "kind": "Deployment",
                    "apiVersion": "apps/v1",
                    "metadata": metadata,
                    "spec": spec,
                    "status": {},
                })
            },
        )
}

/// How the old object of an UPDATE is made.
#[derive(Debug, Clone, Copy)]
enum Old {
    /// Any generated Deployment.
    Generated,
    /// The stored object: a generated Deployment as the service admitted it on CREATE.
    Admitted,
    Null,
    Absent,
}

/// A review, and how its UPDATE old object is to be made.
fn review() -> impl Strategy<Value = (Value, Old)> {
    let operation = weighted(&[
        (4, "CREATE"),
        (3, "UPDATE"),
        (1, "DELETE"),
        (1, "CONNECT"),
        (1, "create"),
        (1, ""),
    ]);
    let deployment_kind = json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    let kind = weighted(&[
        (20, deployment_kind),
        (1, json!({ "group": "", "version": "v1", "kind": "Pod" })),
        (
            1,
            json!({ "group": "apps", "version": "v1", "kind": "StatefulSet" }),
        ),
        (
            1,
            json!({ "group": "batch", "version": "v1", "kind": "Job" }),
        ),
        (
            1,
            json!({ "group": "apps", "version": "v1", "kind": "DaemonSet" }),
        ),
        (
            1,
            json!({ "group": "extensions", "version": "v1beta1", "kind": "Deployment" }),
        ),
    ]);
    #[rustfmt::skip]
    let namespace = weighted(&[(2, None), (3, Some(json!("default"))), (3, Some(json!("team-a"))),
        (2, Some(json!(""))), (1, Some(json!("kube-system"))), (1, Some(json!("gpushare-system"))),
        (1, Some(json!("legacy"))), (1, Some(Value::Null))]);
    (
        (operation, kind, "[a-z0-9-]{1,36}", namespace),
        field(select(vec![json!("web"), json!("")])),
        field(any::<bool>().prop_map(Value::Bool)),
        (deployment(), deployment()),
        weighted(&[
            (1, Old::Generated),
            (2, Old::Admitted),
            (1, Old::Null),
            (1, Old::Absent),
        ]),
    )
        .prop_map(
            |((operation, kind, uid, namespace), name, dry_run, (object, previous), old)| {
                let mut request = json!({
                    "uid": uid,
                    "kind": kind,
                    "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
                    "operation": operation,
                    "userInfo": { "username": "kubernetes-admin", "groups": ["system:masters"] },
                    "options": { "kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1" },
                });
                put(&mut request, "namespace", namespace);
                put(&mut request, "name", name);
                put(&mut request, "dryRun", dry_run);
                let (object, old_object, old) = match (operation, old) {
                    ("DELETE", _) => (Value::Null, Some(previous), Old::Generated),
                    ("UPDATE", Old::Generated | Old::Admitted) => (object, Some(previous), old),
                    ("UPDATE", Old::Null) => (object, Some(Value::Null), old),
                    ("UPDATE", Old::Absent) => (object, None, old),
                    _ => (object, Some(Value::Null), Old::Null),
                };
                request["object"] = object;
                put(&mut request, "oldObject", old_object);
                let review = json!({
                    "kind": "AdmissionReview",
                    "apiVersion": "admission.k8s.io/v1",
                    "request": request,
                });
                (review, old)
            },
        )
}

/// For `Old::Admitted`: replaces the old object by what this service made of it on CREATE.
fn with_admitted_old(s: &Service, review: &Value, old: Old) -> Value {
    let mut review = review.clone();
    let Some(stored) = review.pointer("/request/oldObject").cloned() else {
        return review;
    };
    if !matches!(old, Old::Admitted) {
        return review;
    }
    let mut create = review.clone();
    create["request"]["operation"] = json!("CREATE");
    create["request"]["object"] = stored.clone();
    create["request"]["oldObject"] = Value::Null;
    if let Ok((_, Some(patch))) = answer(s, &create) {
        if let Ok(admitted) = apply(&stored, &patch) {
            review["request"]["oldObject"] = admitted;
        }
    }
    review
}

// ---- generators: bytes and text --------------------------------------------------------------

/// Flips, deletes, inserts or cuts off bytes.
fn mutate(mut body: Vec<u8>, edits: &[(u8, Index, u8)]) -> Vec<u8> {
    for (what, at, byte) in edits {
        let len = body.len();
        match what % 4 {
            0 if len > 0 => body[at.index(len)] ^= byte | 1,
            1 if len > 0 => {
                body.remove(at.index(len));
            }
            2 => body.insert(at.index(len + 1), *byte),
            3 if len > 0 => body.truncate(at.index(len)),
            _ => {}
        }
    }
    body
}

#[rustfmt::skip]
const POLICY_KEYS: &[&str] = &["defaultMode", "defaultGpu", "defaultMpsPercentage",
    "maxMpsPercentagePerGpu", "maxClientsPerGpu", "strategy", "hideGpuFromOtherContainers", "mps",
    "hostIPC", "pipeDirectory", "gpusPerNode", "gpuModes", "reservedForVms", "nodes", "edge-1",
    "gpus", "namespaces", "exclude", "enforcement", "\"1\"", "0", "typo"];
#[rustfmt::skip]
const POLICY_VALUES: &[&str] = &["", "mps", "time-slicing", "auto", "\"1\"", "0", "1", "-1", "50",
    "101", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "4294967296",
    "1e3", "0x10", "0o7", ".inf", "-.inf", ".nan", "null", "~", "true", "yes", "pack", "warn",
    "{ \"1\": mps }", "{ 1: mps, 1: time-slicing }", "{ 4294967296: mps }", "{ -1: mps }",
    "[1, 1]", "[-1]", "[99999999999]", "[ \" 1 \" ]",
    "{ edge-1: { gpus: 2, gpuModes: { 0: mps }, reservedForVms: [1] } }", "{ a: { gpus: -1 } }",
    "{ a: ~ }", "{ hostIPC: true, pipeDirectory: /run/nvidia/mps }", "/run/nvidia/mps",
    "relative/dir", "&a 1", "*a", "!!str 1", "!!binary aGk=", "!custom x", "[kube-system]",
    "{ exclude: ~ }", "|\n  block", "'quoted'"];
#[rustfmt::skip]
const MANIFEST_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "name", "namespace",
    "annotations", "gpushare.io/gpu", "items", "spec", "template", "containers", "replicas"];
#[rustfmt::skip]
const MANIFEST_VALUES: &[&str] = &["apps/v1", "Deployment", "List", "DeploymentList", "v1", "web",
    "\"0\"", "[]", "~", "{}", "[ { kind: List, items: [ { kind: List } ] } ]",
    "{ name: web, annotations: { gpushare.io/gpu: \"0,1\" } }", "&x { a: [*x] }", "*x",
    "!!binary aGk=", "!tag v", "3", "1.5", ".nan", "{ 1: a }", "{ [a]: b }", "{ ? a }"];
#[rustfmt::skip]
const YAML_LINES: &[&str] = &["---", "...", "- 1", "-", "? [a]", ": b", "{", "[", "]",
    "%YAML 1.2", "&a", "*a", "#", "\t"];

/// YAML-ish text: `key: value` lines at random depths, YAML syntax, any text, deep nesting.
fn yaml_text(
    keys: &'static [&'static str],
    vals: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let line = prop_oneof![
        6 => (0usize..3, select(keys), values((vals, vals), ANY_TEXT))
            .prop_map(|(depth, k, v)| format!("{}{k}: {v}", "  ".repeat(depth))),
        2 => select(YAML_LINES).prop_map(str::to_string),
        1 => "\\PC{0,30}",
    ];
    prop_oneof![
        8 => prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n")),
        1 => "\\PC{0,200}",
        1 => (select(&["[", "{", "- ", "a: "][..]), 1usize..300).prop_map(|(s, n)| s.repeat(n)),
    ]
}

// ---- properties -----------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// (a) Any body gets an answer or a 400, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        for s in services() {
            if let Ok(answer) = futures::executor::block_on(s.service.review(&body)) {
                well_formed(&answer).map_err(TestCaseError::fail)?;
            }
        }
    }

    /// (b) Every review the API server could send gets a well-formed answer for its uid, and a
    /// patch that applies to the object and is idempotent.
    #[test]
    fn structured_reviews_get_valid_idempotent_answers((review, old) in review()) {
        for s in services() {
            let review = with_admitted_old(s, &review, old);
            check_review(s, &review).map_err(|e| {
                TestCaseError::fail(format!("policy {}: {e}\nreview: {review}", s.name))
            })?;
        }
    }

    /// (c) Reviews with bytes flipped, deleted, inserted or cut off never panic.
    #[test]
    fn mutated_reviews_never_panic(
        (review, _) in review(),
        edits in prop::collection::vec((any::<u8>(), any::<Index>(), any::<u8>()), 1..8),
    ) {
        let body = mutate(serde_json::to_vec(&review).expect("serializes"), &edits);
        for s in services() {
            if let Ok(answer) = futures::executor::block_on(s.service.review(&body)) {
                well_formed(&answer)
                    .map_err(|e| TestCaseError::fail(format!("policy {}: {e}", s.name)))?;
            }
        }
    }

    /// `gpushare check`'s core on several Deployments, capacity counted across them: one
    /// verdict per Deployment, every allowed patch applied, never a panic.
    #[test]
    fn check_core_never_panics(objects in prop::collection::vec(deployment(), 1..6)) {
        for s in services() {
            let documents = objects
                .iter()
                .map(|value| Document { source: "input.yaml".into(), value: value.clone() })
                .collect();
            let report = check(documents, &s.policy, Inventory::standalone(Some(2)));
            prop_assert_eq!(report.lines.len(), objects.len());
            for line in &report.lines {
                prop_assert!(!line.text.contains("internal error"), "{}: {}", s.name, line.text);
            }
        }
    }

    /// Policy text an admin might write or mistype: a valid policy or an error, never a panic.
    #[test]
    fn policy_yaml_never_panics(text in yaml_text(POLICY_KEYS, POLICY_VALUES)) {
        if let Ok(policy) = Policy::from_yaml(&text) {
            prop_assert!(policy.max_clients_per_gpu >= 1);
            prop_assert!((1..=100).contains(&policy.default_mps_percentage.get()));
        }
    }

    /// Manifests `gpushare check` reads: objects or an error, never a panic.
    #[test]
    fn manifest_documents_never_panic(text in yaml_text(MANIFEST_KEYS, MANIFEST_VALUES)) {
        if let Ok(documents) = parse_documents("input.yaml", &text) {
            prop_assert!(documents.iter().all(Value::is_object));
        }
    }
}

// ---- regressions ----------------------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A saved AdmissionReview from `tests/fixtures/fuzz-regressions/`.
fn regression_review(name: &str) -> Value {
    let path = fixture(&format!("fuzz-regressions/{name}"));
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every service's answer to a review that passes the checks of property (b).
fn replay(review: &Value) -> Vec<Response<'static>> {
    services()
        .iter()
        .map(|s| {
            check_review(s, review).unwrap_or_else(|e| panic!("policy {}: {e}", s.name));
            answer(s, review).expect("checked").0
        })
        .collect()
}

#[test]
fn a_managed_deployment_passes_the_review_checks() {
    // Keeps the checks honest: kubectl's Deployment with gpushare.io/gpu is patched under every
    // policy, and the patch applies and is idempotent.
    let mut object: Value = serde_json::from_str(&read(&fixture("deployment-web.json"))).unwrap();
    object["metadata"]["annotations"] = json!({ GPU: "1" });
    let review = json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "u-1",
            "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "operation": "CREATE",
            "namespace": "default",
            "object": object,
            "oldObject": null,
        },
    });
    for response in replay(&review) {
        assert!(response.allowed && response.patch.is_some(), "{response:?}");
    }
}

/// Found by `structured_reviews_get_valid_idempotent_answers`: `MemoryLimit::parse` split the
/// value one byte before its end, which panicked ("byte index is not a char boundary") when the
/// last character was multi-byte, here a full-width `Ｇ` as an IME types it.
#[test]
fn memory_limit_ending_in_a_multibyte_character() {
    for response in replay(&regression_review("memory-limit-multibyte.json")) {
        let status = response.status.expect("denied");
        assert_eq!(status.code, 400);
        assert!(status.message.contains(MEM), "{}", status.message);
    }
}

/// Found by `structured_reviews_get_valid_idempotent_answers`: an UPDATE removing every user key
/// from an assigned Deployment took the release path, which skipped rule 1 for init containers:
/// one naming two GPUs was let through, yet the same object was denied on its next UPDATE (once
/// `gpushare.io/assigned-gpu` was gone), so the verdict depended on history.
#[test]
fn release_still_checks_init_containers_for_several_gpus() {
    for response in replay(&regression_review("release-init-container-two-gpus.json")) {
        let status = response.status.expect("denied");
        assert_eq!(status.code, 403);
        assert!(
            status.message.contains("NVIDIA_VISIBLE_DEVICES"),
            "{}",
            status.message
        );
    }
}

/// Found by the `review` fuzz target: a managed Deployment without `spec` was read as an empty
/// Deployment and got a patch adding `/spec/template/metadata`, a path that does not exist;
/// `gpushare check` showed it as "internal error applying the patch". Now a 400 denial.
#[test]
fn deployment_without_spec_is_denied() {
    for response in replay(&regression_review("deployment-without-spec.json")) {
        assert_eq!(response.status.expect("denied").code, 400);
    }
}

/// Found by the `review` fuzz target once `deployment_without_spec_is_denied` passed: a managed
/// Deployment whose top-level `metadata` is missing (or null) and whose pod template carries the
/// annotations got a patch adding `/metadata/annotations` under a `/metadata` that did not exist
/// (now the patch adds `/metadata` whole); one whose `spec` is a JSON array (serde read a sequence
/// as a struct) got a patch under `/spec/template` (now it is a malformed request: HTTP 400).
#[test]
fn a_deployment_without_metadata_gets_a_patch_that_applies() {
    replay(&regression_review("deployment-without-metadata.json"));
}

#[test]
fn a_deployment_whose_spec_is_an_array_is_a_bad_request() {
    let body = serde_json::to_vec(&regression_review("deployment-spec-as-array.json"))
        .expect("serializes");
    for s in services() {
        let error = futures::executor::block_on(s.service.review(&body)).expect_err("HTTP 400");
        assert!(error.to_string().contains("expected an object"), "{error}");
    }
}

/// Found by `check_core_never_panics`: the capacity check added a GPU's committed MPS percentage
/// and clients to the module's demand in u32, unchecked. With a module already on the GPU, a
/// Deployment of 2147483647 replicas (the int32 maximum Kubernetes accepts) panicked "attempt to
/// add with overflow" in debug builds; in release builds both sums wrapped and the module was
/// allowed far over capacity (`gpushare check` and the cluster backend).
#[test]
fn capacity_with_huge_replicas_does_not_overflow() {
    let text = read(&fixture("fuzz-regressions/check-huge-replicas.yaml"));
    let documents = parse_documents("check-huge-replicas.yaml", &text)
        .expect("parses")
        .into_iter()
        .map(|value| Document {
            source: "check-huge-replicas.yaml".into(),
            value,
        })
        .collect();
    let policy = Policy::from_yaml(&read(&fixture("policy-gpu1-mps.yaml"))).expect("valid");
    let report = check(documents, &policy, Inventory::standalone(Some(2)));
    assert_eq!(report.lines.len(), 2);
    assert_eq!(report.lines[0].mark, Mark::Allowed, "{:?}", report.lines[0]);
    assert_eq!(
        report.lines[1].mark,
        Mark::Denied,
        "over capacity: {:?}",
        report.lines[1]
    );
}
