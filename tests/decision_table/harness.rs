//! The harness of the decision table: workload objects as their users write them, nodes and
//! committed claims, expectations, and running one row (decide, apply the patch, check what a
//! user would see, read the claim back from the stored object, decide again for idempotence).

use std::collections::BTreeMap;

use gpushare::core::claim::{Assigned, Claim, Share};
use gpushare::core::decision::{decide, Operation, Request};
use gpushare::core::domain::{GpuIndex, Percentage};
use gpushare::core::inventory::{Inventory, Node, Placement};
use gpushare::core::pods::PodCount;
use gpushare::core::policy::Policy;
use gpushare::core::verdict::{Mutation, Outcome, Verdict};
use gpushare::core::workload::{Kind, RawObject, Workload, WorkloadKey};
use serde_json::{json, Value};

pub const GPU: &str = "gpushare.io/gpu";
pub const MODE: &str = "gpushare.io/mode";
pub const PCT: &str = "gpushare.io/mps-percentage";
pub const MEM: &str = "gpushare.io/mps-memory-limit";
pub const CONTAINERS: &str = "gpushare.io/containers";
pub const A_GPU: &str = "gpushare.io/assigned-gpu";
pub const A_MODE: &str = "gpushare.io/assigned-mode";
pub const A_PCT: &str = "gpushare.io/assigned-mps-percentage";

pub const NVD: &str = "NVIDIA_VISIBLE_DEVICES";
pub const MPS_PCT: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";
pub const MPS_MEM: &str = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT";
pub const MPS_PIPE: &str = "CUDA_MPS_PIPE_DIRECTORY";
pub const PIPE_VOLUME: &str = "gpushare-mps-pipe";

// ---- the workload objects ------------------------------------------------------------------------

/// A workload object with builder methods for the tweaks a row needs; it starts as the Deployment
/// `web()` and becomes another kind with `into_kind`, keeping its pod template.
#[derive(Clone)]
pub struct Dep(pub Value);

/// A Deployment as `kubectl create deployment web --image=nginx --dry-run=client -o json` writes it.
pub fn web() -> Dep {
    Dep(json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": { "name": "web", "creationTimestamp": null, "labels": { "app": "web" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "creationTimestamp": null, "labels": { "app": "web" } },
                "spec": { "containers": [ { "name": "nginx", "image": "nginx", "resources": {} } ] }
            },
            "strategy": {}
        },
        "status": {}
    }))
}

/// Where an object's pod template sits: `/spec/template`, the CronJob's, or `""` for a Pod (its
/// metadata and spec are the template's).
pub fn template_base(object: &Value) -> &'static str {
    match object["kind"].as_str() {
        Some("CronJob") => "/spec/jobTemplate/spec/template",
        Some("Pod") => "",
        _ => "/spec/template",
    }
}

/// Every metadata gpushare writes its assigned annotations on.
pub fn metadata_places(object: &Value) -> Vec<String> {
    match template_base(object) {
        "" => vec!["/metadata".to_string()],
        base => vec!["/metadata".to_string(), format!("{base}/metadata")],
    }
}

impl Dep {
    /// The same pod template (and object metadata) as another kind, the way its users write it.
    pub fn into_kind(self, kind: &str) -> Dep {
        let Dep(d) = self;
        let metadata = d["metadata"].clone();
        let template = d["spec"]["template"].clone();
        let labels = json!({ "matchLabels": { "app": "web" } });
        Dep(match kind {
            "ReplicaSet" | "StatefulSet" => json!({
                "apiVersion": "apps/v1", "kind": kind, "metadata": metadata,
                "spec": { "replicas": d["spec"]["replicas"], "selector": labels, "template": template }
            }),
            "DaemonSet" => json!({
                "apiVersion": "apps/v1", "kind": kind, "metadata": metadata,
                "spec": { "selector": labels, "template": template }
            }),
            "Job" => {
                let mut template = template;
                template["spec"]["restartPolicy"] = json!("Never");
                json!({
                    "apiVersion": "batch/v1", "kind": kind, "metadata": metadata,
                    "spec": { "backoffLimit": 4, "template": template }, "status": {}
                })
            }
            "CronJob" => {
                let mut template = template;
                template["spec"]["restartPolicy"] = json!("OnFailure");
                json!({
                    "apiVersion": "batch/v1", "kind": kind, "metadata": metadata,
                    "spec": { "schedule": "*/5 * * * *", "jobTemplate": { "spec": { "template": template } } }
                })
            }
            "Pod" => {
                let mut metadata = metadata;
                if let (Some(meta), Some(annotations)) = (
                    metadata.as_object_mut(),
                    template["metadata"]["annotations"].as_object(),
                ) {
                    meta.insert("annotations".into(), Value::Object(annotations.clone()));
                }
                json!({
                    "apiVersion": "v1", "kind": kind, "metadata": metadata,
                    "spec": template["spec"], "status": {}
                })
            }
            other => panic!("no test shape for kind {other}"),
        })
    }

    /// The pods count a kind reads: replicas, parallelism (a CronJob's job template's).
    fn pods_pointer(&self) -> &'static str {
        match self.0["kind"].as_str() {
            Some("Job") => "/spec/parallelism",
            Some("CronJob") => "/spec/jobTemplate/spec/parallelism",
            _ => "/spec/replicas",
        }
    }

    fn template(&self) -> &'static str {
        template_base(&self.0)
    }

    pub fn at(&mut self, pointer: &str) -> &mut Value {
        self.0
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("test object has no {pointer}"))
    }

    pub fn annotate(mut self, meta: &str, key: &str, value: &str) -> Dep {
        let meta = self
            .at(meta)
            .as_object_mut()
            .expect("metadata is an object");
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        annotations[key] = json!(value);
        self
    }

    /// An annotation on the object's metadata.
    pub fn ann(self, key: &str, value: &str) -> Dep {
        self.annotate("/metadata", key, value)
    }

    /// An annotation on the pod template's metadata (a Pod's only metadata).
    pub fn tann(self, key: &str, value: &str) -> Dep {
        let meta = format!("{}/metadata", self.template());
        self.annotate(&meta, key, value)
    }

    /// A Deployment whose rolling update runs no surge pods (`maxSurge: 0`).
    pub fn no_surge(self) -> Dep {
        self.top_spec("strategy", json!({ "rollingUpdate": { "maxSurge": 0 } }))
    }

    /// A controller that owns the object.
    pub fn owned_by(mut self, kind: &str, name: &str) -> Dep {
        let api_version = match kind {
            "Job" | "CronJob" => "batch/v1",
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => "apps/v1",
            _ => "example.io/v1",
        };
        self.at("/metadata")["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": name,
            "uid": "6f1c7a52-5d0e-4d7e-9c1b-1a2b3c4d5e6f", "controller": true, "blockOwnerDeletion": true
        }]);
        self
    }

    /// A status condition (`Complete`, `Failed`) that is true.
    pub fn condition(mut self, condition: &str) -> Dep {
        self.0["status"] = json!({ "conditions": [{ "type": condition, "status": "True" }] });
        self
    }

    /// A Pod's `status.phase`.
    pub fn phase(mut self, phase: &str) -> Dep {
        self.0["status"] = json!({ "phase": phase });
        self
    }

    /// A field of the object's own spec (`concurrencyPolicy`).
    pub fn top_spec(mut self, field: &str, value: Value) -> Dep {
        self.at("/spec")[field] = value;
        self
    }

    /// The annotations gpushare records, on both metadata and template.
    pub fn assigned(self, gpu: &str, mode: &str, pct: Option<&str>) -> Dep {
        let mut d = self
            .ann(A_GPU, gpu)
            .tann(A_GPU, gpu)
            .ann(A_MODE, mode)
            .tann(A_MODE, mode);
        if let Some(p) = pct {
            d = d.ann(A_PCT, p).tann(A_PCT, p);
        }
        d
    }

    pub fn without_template_metadata(mut self) -> Dep {
        let template = self.template();
        self.at(template)
            .as_object_mut()
            .expect("template")
            .remove("metadata");
        self
    }

    /// Replicas, or a Job's parallelism.
    pub fn replicas(mut self, n: u32) -> Dep {
        let pointer = self.pods_pointer();
        let (parent, field) = pointer.rsplit_once('/').expect("a field");
        self.at(parent)[field] = json!(n);
        self
    }

    fn containers_pointer(&self) -> String {
        format!("{}/spec/containers", self.template())
    }

    pub fn sidecar(mut self) -> Dep {
        let pointer = self.containers_pointer();
        let containers = self.at(&pointer).as_array_mut().expect("containers");
        containers.push(json!({ "name": "sidecar", "image": "busybox", "resources": {} }));
        self
    }

    pub fn init_container(self, name: &str, env: Value) -> Dep {
        self.spec_field(
            "initContainers",
            json!([{ "name": name, "image": "busybox", "resources": {}, "env": env }]),
        )
    }

    pub fn container(&mut self, name: &str) -> &mut Value {
        let pointer = self.containers_pointer();
        let containers = self.at(&pointer).as_array_mut().expect("containers");
        containers
            .iter_mut()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    pub fn push(mut self, container: &str, field: &str, entry: Value) -> Dep {
        let c = self
            .container(container)
            .as_object_mut()
            .expect("container");
        c.entry(field)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("list")
            .push(entry);
        self
    }

    pub fn var(self, container: &str, name: &str, value: &str) -> Dep {
        self.push(container, "env", json!({ "name": name, "value": value }))
    }

    pub fn var_from(self, container: &str, name: &str) -> Dep {
        self.push(
            container,
            "env",
            json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        )
    }

    pub fn mount(self, container: &str, name: &str, path: &str) -> Dep {
        self.push(
            container,
            "volumeMounts",
            json!({ "name": name, "mountPath": path }),
        )
    }

    pub fn resource(mut self, container: &str, kind: &str, quantity: Value) -> Dep {
        let c = self.container(container);
        c["resources"][kind] = json!({ "nvidia.com/gpu": quantity });
        self
    }

    pub fn gpu_limit(self, container: &str, quantity: Value) -> Dep {
        self.resource(container, "limits", quantity)
    }

    /// A field of the pod spec.
    pub fn spec_field(mut self, field: &str, value: Value) -> Dep {
        let spec = format!("{}/spec", self.template());
        self.at(&spec)[field] = value;
        self
    }

    pub fn node_selector(self, key: &str, value: &str) -> Dep {
        self.spec_field("nodeSelector", json!({ key: value }))
    }

    pub fn volume(mut self, volume: Value) -> Dep {
        let spec = format!("{}/spec", self.template());
        let spec = self.at(&spec).as_object_mut().expect("spec");
        spec.entry("volumes")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("volumes")
            .push(volume);
        self
    }

    pub fn pipe_volume(self, path: &str) -> Dep {
        self.volume(
            json!({ "name": PIPE_VOLUME, "hostPath": { "path": path, "type": "Directory" } }),
        )
    }
}

// ---- nodes and committed modules --------------------------------------------------------------

pub enum Nodes {
    /// `Inventory::standalone(--gpus)`.
    Standalone(Option<u32>),
    Explicit(Vec<Node>),
}

/// A node whose GPU count the cluster side read from its `nvidia.com/gpu.count` label.
pub fn node(name: &str, pool: &str, gpus: Option<u32>) -> Node {
    let mut labels = BTreeMap::from([("pool".to_string(), pool.to_string())]);
    if let Some(n) = gpus {
        labels.insert("nvidia.com/gpu.count".into(), n.to_string());
    }
    Node {
        name: name.into(),
        labels,
        forced_gpus: None,
        reported_gpus: gpus,
        matches_any_placement: false,
    }
}

/// Two edge nodes: `node-a` (pool a) with 2 GPUs, `node-b` (pool b) with 1.
pub fn two_nodes() -> Nodes {
    Nodes::Explicit(vec![
        node("node-a", "a", Some(2)),
        node("node-b", "b", Some(1)),
    ])
}

/// Two edge nodes with 2 GPUs each.
pub fn two_full_nodes() -> Nodes {
    Nodes::Explicit(vec![
        node("node-a", "a", Some(2)),
        node("node-b", "b", Some(2)),
    ])
}

/// A module already admitted: `mps_pct` is per replica and makes it an mps module.
/// A module already admitted, keyed `namespace/name` (a Deployment) or `namespace/Kind/name`:
/// `mps_pct` is per pod and makes it an mps module; `clients` is pods x selected containers.
pub fn committed(key: &str, gpu: u32, mps_pct: Option<u64>, pods: u32, clients: u32) -> Claim {
    let parts: Vec<&str> = key.split('/').collect();
    let (namespace, kind, name) = match parts[..] {
        [namespace, name] => (namespace, Kind::Deployment, name),
        [namespace, kind, name] => (
            namespace,
            Kind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .expect("a workload kind"),
            name,
        ),
        _ => panic!("namespace/name or namespace/Kind/name: {key}"),
    };
    assert!(
        pods > 0 && clients.is_multiple_of(pods),
        "clients are pods x containers"
    );
    let share = match mps_pct {
        Some(p) => Share::Mps(Percentage::new(p).expect("1..=100")),
        None => Share::TimeSlicing,
    };
    Claim {
        key: WorkloadKey::new(kind, namespace, name),
        placement: Placement::default(),
        assigned: Assigned {
            gpu: GpuIndex(gpu),
            share,
        },
        pods: PodCount::fixed(pods),
        containers: clients / pods,
        extra_percentage: 0,
    }
}

pub fn pinned(mut claim: Claim, pool: &str) -> Claim {
    claim.placement.node_selector = BTreeMap::from([("pool".to_string(), pool.to_string())]);
    claim
}

// ---- expectations -----------------------------------------------------------------------------

pub enum AssignedAnnotations {
    /// No `gpushare.io/assigned-*` annotation on metadata or template.
    Absent,
    /// Not looked at (the row checks the object is unchanged instead).
    Unchecked,
    Is {
        gpu: &'static str,
        mode: &'static str,
        pct: Option<&'static str>,
    },
}

pub struct Allowed {
    unchanged: bool,
    assigned: AssignedAnnotations,
    /// The outcome's name (`Controlled`, `Finished`, ...), when the row checks it.
    outcome: Option<&'static str>,
    /// Pods and client processes of the claim, when the row checks them.
    holds: Option<(u32, u32)>,
    /// Per container: every env entry, name and value, in order (`<valueFrom>` for valueFrom).
    env: Vec<(&'static str, &'static [(&'static str, &'static str)])>,
    host_ipc: Option<Option<bool>>,
    volumes: Option<Value>,
    mounts: Vec<(&'static str, Value)>,
    warnings: usize,
    warning: Option<&'static str>,
}

pub enum Expect {
    Denied {
        code: u16,
        contains: &'static [&'static str],
    },
    Allowed(Allowed),
}

pub fn denied(code: u16, contains: &'static [&'static str]) -> Expect {
    Expect::Denied { code, contains }
}

/// Allowed with no patch at all.
pub fn unchanged() -> Allowed {
    Allowed {
        unchanged: true,
        assigned: AssignedAnnotations::Unchecked,
        outcome: None,
        holds: None,
        env: Vec::new(),
        host_ipc: None,
        volumes: None,
        mounts: Vec::new(),
        warnings: 0,
        warning: None,
    }
}

/// Allowed, with the patch checked by the builder methods below.
pub fn allowed() -> Allowed {
    Allowed {
        unchanged: false,
        assigned: AssignedAnnotations::Absent,
        ..unchanged()
    }
}

/// A managed module assigned `gpu` in `mode`.
pub fn assigned(gpu: &'static str, mode: &'static str, pct: Option<&'static str>) -> Allowed {
    Allowed {
        assigned: AssignedAnnotations::Is { gpu, mode, pct },
        ..allowed()
    }
}

impl Allowed {
    pub fn env(
        mut self,
        container: &'static str,
        vars: &'static [(&'static str, &'static str)],
    ) -> Allowed {
        self.env.push((container, vars));
        self
    }

    pub fn host_ipc(mut self, value: Option<bool>) -> Allowed {
        self.host_ipc = Some(value);
        self
    }

    pub fn volumes(mut self, volumes: Value) -> Allowed {
        self.volumes = Some(volumes);
        self
    }

    pub fn mounts(mut self, container: &'static str, mounts: Value) -> Allowed {
        self.mounts.push((container, mounts));
        self
    }

    pub fn warns(mut self, count: usize, contains: &'static str) -> Allowed {
        self.warnings = count;
        self.warning = Some(contains);
        self
    }

    /// The outcome, by name: `Excluded`, `Controlled`, `Unmanaged`, `Finished`, `Released`, `Assigned`.
    pub fn outcome(mut self, name: &'static str) -> Allowed {
        self.outcome = Some(name);
        self
    }

    /// The claim holds `pods` pods of `clients` client processes in all.
    pub fn holds(mut self, pods: u32, clients: u32) -> Allowed {
        self.holds = Some((pods, clients));
        self
    }

    pub fn done(self) -> Expect {
        Expect::Allowed(self)
    }
}

// ---- the table --------------------------------------------------------------------------------

pub struct Row {
    pub name: &'static str,
    policy: &'static str,
    nodes: Nodes,
    modules: Vec<Claim>,
    namespace: &'static str,
    object: Value,
    /// The stored object: `Some` makes the row an UPDATE.
    old: Option<Value>,
    expect: Expect,
}

pub fn row(name: &'static str, object: Dep, expect: Expect) -> Row {
    Row {
        name,
        policy: "",
        nodes: Nodes::Standalone(Some(2)),
        modules: Vec::new(),
        namespace: "default",
        object: object.0,
        old: None,
        expect,
    }
}

impl Row {
    pub fn policy(mut self, yaml: &'static str) -> Row {
        self.policy = yaml;
        self
    }

    pub fn nodes(mut self, nodes: Nodes) -> Row {
        self.nodes = nodes;
        self
    }

    pub fn gpus(self, forced: Option<u32>) -> Row {
        self.nodes(Nodes::Standalone(forced))
    }

    pub fn module(mut self, module: Claim) -> Row {
        self.modules.push(module);
        self
    }

    pub fn namespace(mut self, namespace: &'static str) -> Row {
        self.namespace = namespace;
        self
    }

    pub fn update(mut self, old: Dep) -> Row {
        self.old = Some(old.0);
        self
    }
}

pub const TS: &str = "time-slicing";
pub const MPS: &str = "mps";

// ---- running a row ----------------------------------------------------------------------------

fn inventory(nodes: &Nodes, modules: &[Claim]) -> Inventory {
    let mut inventory = match nodes {
        Nodes::Standalone(forced) => Inventory::standalone(*forced),
        Nodes::Explicit(nodes) => Inventory::new(nodes.clone()),
    };
    for claim in modules {
        inventory.hold(claim.clone());
    }
    inventory
}

/// The kind-neutral view of a test object, in `namespace`, read by its kind's adapter.
pub fn workload(namespace: &str, object: &Value) -> Result<Workload, String> {
    let (api_version, kind) = (
        object["apiVersion"].as_str().unwrap_or(""),
        object["kind"].as_str().unwrap_or(""),
    );
    let kind = Kind::from_api_version(api_version, kind)
        .ok_or_else(|| format!("{api_version} {kind} is not a workload kind"))?;
    let raw: RawObject = serde_json::from_value(object.clone())
        .map_err(|e| format!("the object does not deserialize: {e}"))?;
    let mut workload = Workload::from_raw(kind, raw);
    workload.key.namespace = namespace.to_string();
    Ok(workload)
}

pub fn decide_json(
    namespace: &str,
    object: &Value,
    old: Option<&Value>,
    policy: &Policy,
    inventory: &Inventory,
) -> Result<Verdict, String> {
    let object = workload(namespace, object)?;
    let old = old.map(|old| workload(namespace, old)).transpose()?;
    let request = Request {
        operation: if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        },
        object: &object,
        old_object: old.as_ref(),
    };
    Ok(decide(&request, policy, inventory))
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Excluded => "Excluded",
        Outcome::Controlled(_) => "Controlled",
        Outcome::Unmanaged => "Unmanaged",
        Outcome::Finished => "Finished",
        Outcome::Released => "Released",
        Outcome::Assigned(_) => "Assigned",
    }
}

/// The claim the decision returned must be the one the stored (patched) object holds: the
/// record is never lossy, whoever reads it back (the cluster cache, `status`).
fn check_claim(namespace: &str, patched: &Value, mutation: &Mutation) -> Result<(), String> {
    let Outcome::Assigned(claim) = &mutation.outcome else {
        return Ok(());
    };
    let stored = Claim::of_stored(&workload(namespace, patched)?, false);
    if stored.as_ref() != Some(claim) {
        return Err(format!(
            "the stored object holds {stored:?}, but the decision returned {claim:?}"
        ));
    }
    Ok(())
}

fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    let value = match (&e["value"], &e["valueFrom"]) {
                        (Value::String(v), _) => v.clone(),
                        (_, Value::Null) => String::new(),
                        _ => "<valueFrom>".into(),
                    };
                    (e["name"].as_str().unwrap_or("").to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn container<'a>(doc: &'a Value, name: &str) -> Result<&'a Value, String> {
    doc.pointer(&format!("{}/spec/containers", template_base(doc)))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .ok_or_else(|| format!("patched object has no container {name}"))
}

fn check_assigned(doc: &Value, expected: &AssignedAnnotations) -> Result<(), String> {
    let want: Vec<(&str, Option<&str>)> = match expected {
        AssignedAnnotations::Unchecked => return Ok(()),
        AssignedAnnotations::Absent => vec![(A_GPU, None), (A_MODE, None), (A_PCT, None)],
        AssignedAnnotations::Is { gpu, mode, pct } => {
            vec![(A_GPU, Some(*gpu)), (A_MODE, Some(*mode)), (A_PCT, *pct)]
        }
    };
    for meta in metadata_places(doc) {
        for (key, value) in &want {
            let actual = doc
                .pointer(&meta)
                .and_then(|m| m["annotations"][*key].as_str());
            if actual != *value {
                return Err(format!(
                    "{meta} annotation {key} is {actual:?}, expected {value:?}"
                ));
            }
        }
    }
    Ok(())
}

fn check_allowed(original: &Value, mutation: &Mutation, want: &Allowed) -> Result<Value, String> {
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &mutation.patch).map_err(|e| {
        format!(
            "patch does not apply: {e}; patch: {}",
            json!(mutation.patch)
        )
    })?;
    if want.unchanged && !mutation.patch.is_empty() {
        return Err(format!("expected no patch, got {}", json!(mutation.patch)));
    }
    check_assigned(&doc, &want.assigned)?;
    for (name, vars) in &want.env {
        let actual = env_of(container(&doc, name)?);
        let expected: Vec<(String, String)> = vars
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        if actual != expected {
            return Err(format!(
                "container {name} env is {actual:?}, expected {expected:?}"
            ));
        }
    }
    if let Some(host_ipc) = want.host_ipc {
        let actual = doc
            .pointer(&format!("{}/spec/hostIPC", template_base(&doc)))
            .and_then(Value::as_bool);
        if actual != host_ipc {
            return Err(format!("hostIPC is {actual:?}, expected {host_ipc:?}"));
        }
    }
    if let Some(volumes) = &want.volumes {
        let actual = doc
            .pointer(&format!("{}/spec/volumes", template_base(&doc)))
            .cloned()
            .unwrap_or(Value::Null);
        if &actual != volumes {
            return Err(format!("volumes are {actual}, expected {volumes}"));
        }
    }
    for (name, mounts) in &want.mounts {
        let actual = &container(&doc, name)?["volumeMounts"];
        if actual != mounts {
            return Err(format!(
                "container {name} volumeMounts are {actual}, expected {mounts}"
            ));
        }
    }
    if mutation.warnings.len() != want.warnings {
        return Err(format!(
            "expected {} warning(s), got {:?}",
            want.warnings, mutation.warnings
        ));
    }
    if let Some(name) = want.outcome {
        if outcome_name(&mutation.outcome) != name {
            return Err(format!(
                "the outcome is {:?}, expected {name}",
                mutation.outcome
            ));
        }
    }
    if let Some((pods, clients)) = want.holds {
        match &mutation.outcome {
            Outcome::Assigned(claim) if (claim.pods(), claim.clients()) == (pods, clients) => {}
            other => {
                return Err(format!(
                    "expected a claim of {pods} pods and {clients} client processes, got {other:?}"
                ))
            }
        }
    }
    if let Some(needle) = want.warning {
        if !mutation.warnings.iter().any(|w| w.contains(needle)) {
            return Err(format!(
                "no warning mentions {needle:?}: {:?}",
                mutation.warnings
            ));
        }
    }
    Ok(doc)
}

pub fn run(row: &Row) -> Result<(), String> {
    let policy =
        Policy::from_yaml(row.policy).map_err(|e| format!("the row's policy is invalid: {e}"))?;
    let inventory = inventory(&row.nodes, &row.modules);
    let verdict = decide_json(
        row.namespace,
        &row.object,
        row.old.as_ref(),
        &policy,
        &inventory,
    )?;
    match (&row.expect, verdict) {
        (Expect::Denied { code, contains }, Verdict::Denied(denial)) => {
            if denial.code() != *code {
                return Err(format!(
                    "denied with code {}, expected {code}: {}",
                    denial.code(),
                    denial.message
                ));
            }
            if let Some(missing) = contains.iter().find(|s| !denial.message.contains(**s)) {
                return Err(format!(
                    "denial message lacks {missing:?}: {}",
                    denial.message
                ));
            }
            Ok(())
        }
        (Expect::Denied { code, .. }, Verdict::Allowed(mutation)) => Err(format!(
            "expected a {code} denial, got allowed ({:?}) with patch {} and warnings {:?}",
            mutation.outcome,
            json!(mutation.patch),
            mutation.warnings
        )),
        (Expect::Allowed(_), Verdict::Denied(denial)) => Err(format!(
            "expected allowed, got denied ({}): {}",
            denial.code(),
            denial.message
        )),
        (Expect::Allowed(want), Verdict::Allowed(mutation)) => {
            let patched = check_allowed(&row.object, &mutation, want)?;
            check_claim(row.namespace, &patched, &mutation)?;
            // Idempotency: the mutated object, sent again the same way, needs no patch.
            match decide_json(
                row.namespace,
                &patched,
                row.old.as_ref(),
                &policy,
                &inventory,
            )? {
                Verdict::Allowed(again) if again.patch.is_empty() => Ok(()),
                Verdict::Allowed(again) => Err(format!(
                    "not idempotent: second patch {}",
                    json!(again.patch)
                )),
                Verdict::Denied(d) => Err(format!(
                    "not idempotent: the mutated object is denied: {}",
                    d.message
                )),
            }
        }
    }
}
