//! Generators of AdmissionReviews as the API server could send them: Deployments with random
//! gpushare annotations, containers, env, resources and replicas, other kinds and operations, and
//! UPDATEs whose old object the service admitted before.

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

use crate::service::{answer, apply, Service};

pub const GPU: &str = "gpushare.io/gpu";
const MODE: &str = "gpushare.io/mode";
const PCT: &str = "gpushare.io/mps-percentage";
pub const MEM: &str = "gpushare.io/mps-memory-limit";
const CONTAINERS: &str = "gpushare.io/containers";
const A_GPU: &str = "gpushare.io/assigned-gpu";
const A_MODE: &str = "gpushare.io/assigned-mode";
const A_PCT: &str = "gpushare.io/assigned-mps-percentage";
const PIPE_VOLUME: &str = "gpushare-mps-pipe";

/// Well-formed and malformed values of one key.
pub type Values = (&'static [&'static str], &'static [&'static str]);

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
pub const ANY_TEXT: &str = "\\PC{0,12}";

/// One of `choices`, each as often as its weight.
fn weighted<T: Clone + Debug + 'static>(choices: &[(usize, T)]) -> impl Strategy<Value = T> {
    let expanded: Vec<T> = choices
        .iter()
        .flat_map(|(weight, t)| std::iter::repeat_n(t.clone(), *weight))
        .collect();
    select(expanded)
}

/// Values for one key: mostly well formed, often malformed, now and then any text matching `text`.
pub fn values((valid, invalid): Values, text: &'static str) -> BoxedStrategy<String> {
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
pub fn deployment() -> impl Strategy<Value = Value> {
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
pub enum Old {
    /// Any generated Deployment.
    Generated,
    /// The stored object: a generated Deployment as the service admitted it on CREATE.
    Admitted,
    Null,
    Absent,
}

/// A review, and how its UPDATE old object is to be made.
pub fn review() -> impl Strategy<Value = (Value, Old)> {
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
pub fn with_admitted_old(s: &Service, review: &Value, old: Old) -> Value {
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
