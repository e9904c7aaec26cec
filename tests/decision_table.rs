//! The decision core, table-driven: one row per rule and edge case of CONTRACT sections 2-4.
//! Each row feeds `gpushare::core::decision::decide` a Deployment as `kubectl` writes it, applies the
//! returned JSON Patch, and checks what a user would see; allowed rows are re-decided to prove
//! the mutation is idempotent.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};

use gpushare::core::decision::{decide, Operation, Request};
use gpushare::core::domain::{GpuIndex, Mode, Percentage};
use gpushare::core::inventory::{Inventory, Module, ModuleKey, Node, Placement};
use gpushare::core::policy::Policy;
use gpushare::core::verdict::{Assignment, Mutation, Outcome, Verdict};
use gpushare::core::workload::Deployment;
use serde_json::{json, Value};

const GPU: &str = "gpushare.io/gpu";
const MODE: &str = "gpushare.io/mode";
const PCT: &str = "gpushare.io/mps-percentage";
const MEM: &str = "gpushare.io/mps-memory-limit";
const CONTAINERS: &str = "gpushare.io/containers";
const A_GPU: &str = "gpushare.io/assigned-gpu";
const A_MODE: &str = "gpushare.io/assigned-mode";
const A_PCT: &str = "gpushare.io/assigned-mps-percentage";

const NVD: &str = "NVIDIA_VISIBLE_DEVICES";
const MPS_PCT: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";
const MPS_MEM: &str = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT";
const MPS_PIPE: &str = "CUDA_MPS_PIPE_DIRECTORY";
const PIPE_VOLUME: &str = "gpushare-mps-pipe";

// ---- the Deployment -----------------------------------------------------------------------------

/// A Deployment as `kubectl create deployment web --image=nginx --dry-run=client -o json` writes it,
/// with builder methods for the tweaks a row needs.
#[derive(Clone)]
struct Dep(Value);

fn web() -> Dep {
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

impl Dep {
    fn at(&mut self, pointer: &str) -> &mut Value {
        self.0
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("test object has no {pointer}"))
    }

    fn annotate(mut self, meta: &str, key: &str, value: &str) -> Dep {
        let meta = self
            .at(meta)
            .as_object_mut()
            .expect("metadata is an object");
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        annotations[key] = json!(value);
        self
    }

    /// An annotation on the Deployment's metadata.
    fn ann(self, key: &str, value: &str) -> Dep {
        self.annotate("/metadata", key, value)
    }

    /// An annotation on the pod template's metadata.
    fn tann(self, key: &str, value: &str) -> Dep {
        self.annotate("/spec/template/metadata", key, value)
    }

    /// The annotations gpushare records, on both metadata and template.
    fn assigned(self, gpu: &str, mode: &str, pct: Option<&str>) -> Dep {
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

    fn without_template_metadata(mut self) -> Dep {
        self.at("/spec/template")
            .as_object_mut()
            .expect("template")
            .remove("metadata");
        self
    }

    fn replicas(mut self, n: u32) -> Dep {
        *self.at("/spec/replicas") = json!(n);
        self
    }

    fn sidecar(mut self) -> Dep {
        let containers = self
            .at("/spec/template/spec/containers")
            .as_array_mut()
            .expect("containers");
        containers.push(json!({ "name": "sidecar", "image": "busybox", "resources": {} }));
        self
    }

    fn init_container(self, name: &str, env: Value) -> Dep {
        self.spec_field(
            "initContainers",
            json!([{ "name": name, "image": "busybox", "resources": {}, "env": env }]),
        )
    }

    fn container(&mut self, name: &str) -> &mut Value {
        let containers = self
            .at("/spec/template/spec/containers")
            .as_array_mut()
            .expect("containers");
        containers
            .iter_mut()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn push(mut self, container: &str, field: &str, entry: Value) -> Dep {
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

    fn var(self, container: &str, name: &str, value: &str) -> Dep {
        self.push(container, "env", json!({ "name": name, "value": value }))
    }

    fn var_from(self, container: &str, name: &str) -> Dep {
        self.push(
            container,
            "env",
            json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        )
    }

    fn mount(self, container: &str, name: &str, path: &str) -> Dep {
        self.push(
            container,
            "volumeMounts",
            json!({ "name": name, "mountPath": path }),
        )
    }

    fn resource(mut self, container: &str, kind: &str, quantity: Value) -> Dep {
        let c = self.container(container);
        c["resources"][kind] = json!({ "nvidia.com/gpu": quantity });
        self
    }

    fn gpu_limit(self, container: &str, quantity: Value) -> Dep {
        self.resource(container, "limits", quantity)
    }

    fn spec_field(mut self, field: &str, value: Value) -> Dep {
        self.at("/spec/template/spec")[field] = value;
        self
    }

    fn node_selector(self, key: &str, value: &str) -> Dep {
        self.spec_field("nodeSelector", json!({ key: value }))
    }

    fn volume(mut self, volume: Value) -> Dep {
        let spec = self
            .at("/spec/template/spec")
            .as_object_mut()
            .expect("spec");
        spec.entry("volumes")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("volumes")
            .push(volume);
        self
    }

    fn pipe_volume(self, path: &str) -> Dep {
        self.volume(
            json!({ "name": PIPE_VOLUME, "hostPath": { "path": path, "type": "Directory" } }),
        )
    }
}

// ---- nodes and committed modules --------------------------------------------------------------

enum Nodes {
    /// `Inventory::standalone(--gpus)`.
    Standalone(Option<u32>),
    Explicit(Vec<Node>),
}

/// A node whose GPU count the cluster side read from its `nvidia.com/gpu.count` label.
fn node(name: &str, pool: &str, gpus: Option<u32>) -> Node {
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
fn two_nodes() -> Nodes {
    Nodes::Explicit(vec![
        node("node-a", "a", Some(2)),
        node("node-b", "b", Some(1)),
    ])
}

/// Two edge nodes with 2 GPUs each.
fn two_full_nodes() -> Nodes {
    Nodes::Explicit(vec![
        node("node-a", "a", Some(2)),
        node("node-b", "b", Some(2)),
    ])
}

/// A module already admitted: `mps_pct` is per replica and makes it an mps module.
fn committed(
    key: &str,
    gpu: u32,
    mps_pct: Option<u64>,
    replicas: u32,
    clients: u32,
) -> (ModuleKey, Module) {
    let (namespace, name) = key.split_once('/').expect("namespace/name");
    let assignment = Assignment {
        gpu: GpuIndex(gpu),
        mode: if mps_pct.is_some() {
            Mode::Mps
        } else {
            Mode::TimeSlicing
        },
        percentage: mps_pct.map(|p| Percentage::new(p).expect("1..=100")),
        memory_limit: None,
        replicas,
        clients,
    };
    let key = ModuleKey {
        namespace: namespace.into(),
        name: name.into(),
    };
    (
        key,
        Module {
            placement: Placement::default(),
            assignment,
        },
    )
}

fn pinned(mut module: (ModuleKey, Module), pool: &str) -> (ModuleKey, Module) {
    module.1.placement.node_selector = BTreeMap::from([("pool".to_string(), pool.to_string())]);
    module
}

// ---- expectations -----------------------------------------------------------------------------

enum Assigned {
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

struct Allowed {
    unchanged: bool,
    assigned: Assigned,
    /// Per container: every env entry, name and value, in order (`<valueFrom>` for valueFrom).
    env: Vec<(&'static str, &'static [(&'static str, &'static str)])>,
    host_ipc: Option<Option<bool>>,
    volumes: Option<Value>,
    mounts: Vec<(&'static str, Value)>,
    warnings: usize,
    warning: Option<&'static str>,
}

enum Expect {
    Denied {
        code: u16,
        contains: &'static [&'static str],
    },
    Allowed(Allowed),
}

fn denied(code: u16, contains: &'static [&'static str]) -> Expect {
    Expect::Denied { code, contains }
}

/// Allowed with no patch at all.
fn unchanged() -> Allowed {
    Allowed {
        unchanged: true,
        assigned: Assigned::Unchecked,
        env: Vec::new(),
        host_ipc: None,
        volumes: None,
        mounts: Vec::new(),
        warnings: 0,
        warning: None,
    }
}

/// Allowed, with the patch checked by the builder methods below.
fn allowed() -> Allowed {
    Allowed {
        unchanged: false,
        assigned: Assigned::Absent,
        ..unchanged()
    }
}

/// A managed module assigned `gpu` in `mode`.
fn assigned(gpu: &'static str, mode: &'static str, pct: Option<&'static str>) -> Allowed {
    Allowed {
        assigned: Assigned::Is { gpu, mode, pct },
        ..allowed()
    }
}

impl Allowed {
    fn env(
        mut self,
        container: &'static str,
        vars: &'static [(&'static str, &'static str)],
    ) -> Allowed {
        self.env.push((container, vars));
        self
    }

    fn host_ipc(mut self, value: Option<bool>) -> Allowed {
        self.host_ipc = Some(value);
        self
    }

    fn volumes(mut self, volumes: Value) -> Allowed {
        self.volumes = Some(volumes);
        self
    }

    fn mounts(mut self, container: &'static str, mounts: Value) -> Allowed {
        self.mounts.push((container, mounts));
        self
    }

    fn warns(mut self, count: usize, contains: &'static str) -> Allowed {
        self.warnings = count;
        self.warning = Some(contains);
        self
    }

    fn done(self) -> Expect {
        Expect::Allowed(self)
    }
}

// ---- the table --------------------------------------------------------------------------------

struct Row {
    name: &'static str,
    policy: &'static str,
    nodes: Nodes,
    modules: Vec<(ModuleKey, Module)>,
    namespace: &'static str,
    object: Value,
    /// The stored object: `Some` makes the row an UPDATE.
    old: Option<Value>,
    expect: Expect,
}

fn row(name: &'static str, object: Dep, expect: Expect) -> Row {
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
    fn policy(mut self, yaml: &'static str) -> Row {
        self.policy = yaml;
        self
    }

    fn nodes(mut self, nodes: Nodes) -> Row {
        self.nodes = nodes;
        self
    }

    fn gpus(self, forced: Option<u32>) -> Row {
        self.nodes(Nodes::Standalone(forced))
    }

    fn module(mut self, module: (ModuleKey, Module)) -> Row {
        self.modules.push(module);
        self
    }

    fn namespace(mut self, namespace: &'static str) -> Row {
        self.namespace = namespace;
        self
    }

    fn update(mut self, old: Dep) -> Row {
        self.old = Some(old.0);
        self
    }
}

const TS: &str = "time-slicing";
const MPS: &str = "mps";

fn rows() -> Vec<Row> {
    let visible = |value: &str| web().var("nginx", NVD, value);
    let gpu = |value: &str| web().ann(GPU, value);
    vec![
        // -- section 2: managed or not, rule 1 on containers gpushare does not write to
        row("unmanaged: allowed unchanged", web(), unchanged().done()),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=all denied", visible("all"), denied(403, &[NVD, "all"])),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=0,1 denied", visible("0,1"), denied(403, &[NVD, "0,1"])),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=0 allowed", visible("0"), unchanged().done()),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=none allowed", visible("none"), unchanged().done()),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=void allowed", visible("void"), unchanged().done()),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES empty allowed", visible(""), unchanged().done()),
        row(
            "unmanaged: init container with NVIDIA_VISIBLE_DEVICES=all denied",
            web().init_container("setup", json!([{ "name": NVD, "value": "all" }])),
            denied(403, &[NVD, "setup"]),
        ),
        row(
            "unmanaged: a GPU UUID list in NVIDIA_VISIBLE_DEVICES denied",
            visible("GPU-11111111-2222-3333-4444-555555555555,GPU-66666666-7777-8888-9999-000000000000"),
            denied(403, &[NVD]),
        ),
        // -- rule 1 and 2: the one GPU index
        row(
            "gpu 0 on 2 GPUs",
            gpu("0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row("gpu 1 on 2 GPUs", gpu("1"), assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done()),
        row("gpu 2 on 2 GPUs denied with the VM hint", gpu("2"), denied(403, &[GPU, "VMs"])),
        row("gpu list 0,1 denied", gpu("0,1"), denied(403, &[GPU, "0,1", "one GPU"])),
        row("gpu all denied", gpu("all"), denied(403, &[GPU, "all"])),
        row("gpu range 0-1 denied", gpu("0-1"), denied(403, &[GPU, "0-1"])),
        row("gpu UUID denied as malformed", gpu("GPU-11111111-2222-3333-4444-555555555555"), denied(400, &[GPU])),
        row("gpu UUID list denied", gpu("GPU-1111,GPU-2222"), denied(403, &[GPU])),
        row("gpu not a number denied", gpu("first"), denied(400, &[GPU, "auto"])),
        // -- rule 5: how auto chooses
        row("auto ties go to the lowest index", gpu("auto"), assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done()),
        row(
            "auto least-loaded picks the less loaded GPU",
            gpu("auto"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .module(committed("other/busy", 0, None, 10, 10)),
        row(
            "auto least-loaded on mps GPUs compares committed percentage",
            gpu("auto").ann(PCT, "10"),
            assigned("1", MPS, Some("10")).env("nginx", &[(NVD, "1"), (MPS_PCT, "10")]).done(),
        )
        .policy("defaultMode: mps")
        .module(committed("other/a", 0, Some(30), 1, 1))
        .module(committed("other/b", 1, Some(20), 1, 1)),
        row(
            "auto pack picks the most loaded GPU that fits",
            gpu("auto").ann(PCT, "30"),
            assigned("1", MPS, Some("30")).env("nginx", &[(NVD, "1"), (MPS_PCT, "30")]).done(),
        )
        .policy("defaultMode: mps\nstrategy: pack")
        .module(committed("other/a", 1, Some(60), 1, 1)),
        row(
            "auto pack skips a GPU the module does not fit on",
            gpu("auto").ann(PCT, "50"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).done(),
        )
        .policy("defaultMode: mps\nstrategy: pack")
        .module(committed("other/a", 1, Some(60), 1, 1)),
        row("auto pack ties go to the lowest index", gpu("auto"), assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done())
            .policy("strategy: pack"),
        row(
            "auto skips a reserved GPU even when it is less loaded",
            gpu("auto"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("reservedForVms: [0]")
        .module(committed("other/busy", 1, None, 10, 10)),
        row("auto with every GPU reserved denied", gpu("auto"), denied(403, &["reservedForVms"]))
            .policy("reservedForVms: [0, 1]"),
        row(
            "auto with a mode picks only GPUs of that mode",
            gpu("auto").ann(MODE, "mps"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50")]).done(),
        )
        .policy("gpuModes: { 1: mps }"),
        row(
            "auto without a mode takes the chosen GPU's mode",
            web().ann(CONTAINERS, "nginx"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).done(),
        )
        .policy("gpuModes: { \"0\": mps }"),
        row("auto with no GPU of the mode denied", gpu("auto").ann(MODE, "mps"), denied(403, &["mps"])),
        row("auto with no GPU that fits denied with per-GPU usage", gpu("auto").ann(PCT, "30"), denied(403, &["GPU 0", "GPU 1", "80%"]))
            .policy("defaultMode: mps")
            .module(committed("other/a", 0, Some(80), 1, 1))
            .module(committed("other/b", 1, Some(80), 1, 1)),
        row(
            "auto with no GPU that fits allowed with a warning under enforcement warn",
            gpu("auto").ann(PCT, "30"),
            assigned("0", MPS, Some("30")).env("nginx", &[(NVD, "0"), (MPS_PCT, "30")]).warns(1, "capacity").done(),
        )
        .policy("defaultMode: mps\nenforcement: warn")
        .module(committed("other/a", 0, Some(80), 1, 1))
        .module(committed("other/b", 1, Some(80), 1, 1)),
        // -- rule 6: reserved GPUs
        row("reserved explicit index denied", gpu("1"), denied(403, &["reserved"])).policy("reservedForVms: [1]"),
        row("reserved explicit index denied even with enforcement warn", gpu("1"), denied(403, &["reserved"]))
            .policy("reservedForVms: [1]\nenforcement: warn"),
        // -- rule 4 and 3: modes and well-formed values
        row("mode mps on a time-slicing GPU denied", gpu("0").ann(MODE, "mps"), denied(403, &["mps", "time-slicing"])),
        row(
            "mode time-slicing on an mps GPU denied",
            gpu("0").ann(MODE, "time-slicing"),
            denied(403, &["mps", "time-slicing"]),
        )
        .policy("gpuModes: { 0: mps }"),
        row(
            "mode mps on an mps GPU gets the default percentage",
            gpu("1").ann(MODE, "mps"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50")]).done(),
        )
        .policy("gpuModes: { 1: mps }"),
        row("mode not a mode denied", gpu("0").ann(MODE, "shared"), denied(400, &[MODE])),
        row(
            "mps-percentage implies mps and auto finds the mps GPU",
            web().ann(PCT, "20"),
            assigned("1", MPS, Some("20")).env("nginx", &[(NVD, "1"), (MPS_PCT, "20")]).done(),
        )
        .policy("gpuModes: { 1: mps }"),
        row("mps-percentage on a time-slicing GPU denied", gpu("0").ann(PCT, "20"), denied(403, &["mps"])),
        row("mps-percentage with mode time-slicing denied", gpu("0").ann(MODE, "time-slicing").ann(PCT, "20"), denied(400, &[PCT]))
            .policy("gpuModes: { 0: mps }"),
        row("mps-percentage 0 denied", web().ann(PCT, "0"), denied(400, &[PCT])).policy("defaultMode: mps"),
        row("mps-percentage 101 denied", web().ann(PCT, "101"), denied(400, &[PCT])).policy("defaultMode: mps"),
        row("mps-percentage abc denied", web().ann(PCT, "abc"), denied(400, &[PCT])).policy("defaultMode: mps"),
        row("mps-percentage 20% denied", web().ann(PCT, "20%"), denied(400, &[PCT])).policy("defaultMode: mps"),
        row(
            "mps-percentage 100 allowed",
            web().ann(PCT, "100"),
            assigned("0", MPS, Some("100")).env("nginx", &[(NVD, "0"), (MPS_PCT, "100")]).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "mps-memory-limit 512M sets the pinned memory limit for ordinal 0",
            gpu("0").ann(MEM, "512M"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50"), (MPS_MEM, "0=512M")]).done(),
        )
        .policy("gpuModes: { 0: mps }"),
        row(
            "mps-memory-limit implies mps",
            web().ann(MEM, "2G"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50"), (MPS_MEM, "0=2G")]).done(),
        )
        .policy("gpuModes: { 1: mps }"),
        row("mps-memory-limit 2Gi denied", web().ann(MEM, "2Gi"), denied(400, &[MEM])).policy("defaultMode: mps"),
        row("mps-memory-limit with mode time-slicing denied", web().ann(MODE, "time-slicing").ann(MEM, "1G"), denied(400, &[MEM])),
        // -- section 2: keys
        row(
            "unknown gpushare.io key denied even alone, suggesting the right key",
            web().ann("gpushare.io/gpus", "0"),
            denied(400, &["gpushare.io/gpus", "did you mean gpushare.io/gpu?"]),
        ),
        row(
            "unknown gpushare.io key on the template denied",
            gpu("0").tann("gpushare.io/mps-percent", "20"),
            denied(400, &["gpushare.io/mps-percent", PCT]),
        ),
        row(
            "assigned-* keys alone do not make a Deployment managed",
            web().assigned("1", MPS, Some("20")),
            unchanged().done(),
        ),
        row(
            "a user's assigned-* values are overwritten",
            gpu("0").assigned("1", MPS, Some("30")),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row("metadata and template disagree: denied", gpu("0").tann(GPU, "1"), denied(400, &[GPU, "spec.template"])),
        row(
            "metadata and template agree: allowed",
            gpu("1").tann(GPU, "1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        ),
        row(
            "a key on the template alone makes it managed",
            web().tann(GPU, "1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        ),
        row(
            "a template without metadata gets the assigned annotations",
            gpu("0").without_template_metadata(),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row(
            "replicas absent count as one",
            {
                let mut d = gpu("0").ann(PCT, "100");
                d.at("/spec").as_object_mut().expect("spec").remove("replicas");
                d
            },
            assigned("0", MPS, Some("100")).env("nginx", &[(NVD, "0"), (MPS_PCT, "100")]).done(),
        )
        .policy("defaultMode: mps"),
        // -- containers
        row(
            "containers selects one of two",
            gpu("0").sidecar().ann(CONTAINERS, "nginx"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[]).done(),
        ),
        row(
            "no containers key selects every container",
            gpu("0").sidecar(),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[(NVD, "0")]).done(),
        ),
        row(
            "containers listing a missing container denied",
            gpu("0").ann(CONTAINERS, "nginx,ghost"),
            denied(400, &[CONTAINERS, "ghost"]),
        ),
        row(
            "unselected container with NVIDIA_VISIBLE_DEVICES=all denied",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var("sidecar", NVD, "all"),
            denied(403, &[NVD, "sidecar"]),
        ),
        row(
            "unselected container with a single index allowed and untouched",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var("sidecar", NVD, "1"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[(NVD, "1")]).done(),
        ),
        row(
            "managed: init container with NVIDIA_VISIBLE_DEVICES=0,1 denied",
            gpu("0").init_container("setup", json!([{ "name": NVD, "value": "0,1" }])),
            denied(403, &[NVD, "setup"]),
        ),
        row(
            "hideGpuFromOtherContainers sets void on unselected containers",
            gpu("0").sidecar().ann(CONTAINERS, "nginx"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[(NVD, "void")]).done(),
        )
        .policy("hideGpuFromOtherContainers: true"),
        row(
            "hideGpuFromOtherContainers replaces an unselected container's all with void",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var("sidecar", "A", "1").var("sidecar", NVD, "all"),
            assigned("0", TS, None)
                .env("nginx", &[(NVD, "0")])
                .env("sidecar", &[("A", "1"), (NVD, "void")])
                .warns(1, NVD)
                .done(),
        )
        .policy("hideGpuFromOtherContainers: true"),
        // -- section 3: env ownership
        row(
            "env: an existing value is replaced in place with a warning",
            gpu("0").var("nginx", "A", "1").var("nginx", NVD, "1").var("nginx", "B", "2"),
            assigned("0", TS, None).env("nginx", &[("A", "1"), (NVD, "0"), ("B", "2")]).warns(1, NVD).done(),
        ),
        row(
            "env: an existing equal value gives no warning",
            gpu("0").var("nginx", NVD, "0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row(
            "env: new entries are appended after the others",
            gpu("0").ann(PCT, "20").var("nginx", "A", "1").var("nginx", "B", "2"),
            assigned("0", MPS, Some("20")).env("nginx", &[("A", "1"), ("B", "2"), (NVD, "0"), (MPS_PCT, "20")]).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "env: mps percentage replaced with a warning",
            gpu("0").ann(PCT, "20").var("nginx", MPS_PCT, "30"),
            assigned("0", MPS, Some("20")).env("nginx", &[(MPS_PCT, "20"), (NVD, "0")]).warns(1, MPS_PCT).done(),
        )
        .policy("defaultMode: mps"),
        row("env: valueFrom on NVIDIA_VISIBLE_DEVICES denied", gpu("0").var_from("nginx", NVD), denied(403, &[NVD, "valueFrom"])),
        row(
            "env: valueFrom on CUDA_MPS_ACTIVE_THREAD_PERCENTAGE denied",
            gpu("0").var_from("nginx", MPS_PCT),
            denied(403, &[MPS_PCT, "valueFrom"]),
        )
        .policy("defaultMode: mps"),
        row(
            "env: valueFrom on other variables is kept",
            gpu("0").var_from("nginx", "POD"),
            assigned("0", TS, None).env("nginx", &[("POD", "<valueFrom>"), (NVD, "0")]).done(),
        ),
        row(
            "time-slicing removes CUDA_MPS_* variables",
            gpu("0").var("nginx", MPS_PCT, "30").var("nginx", "X", "1").var("nginx", MPS_MEM, "0=1G"),
            assigned("0", TS, None).env("nginx", &[("X", "1"), (NVD, "0")]).done(),
        ),
        // -- rule 1: nvidia.com/gpu resources
        row("nvidia.com/gpu limit 2 denied", gpu("0").gpu_limit("nginx", json!(2)), denied(403, &["nvidia.com/gpu"])),
        row(
            "nvidia.com/gpu request 2 denied",
            gpu("0").resource("nginx", "requests", json!("2")),
            denied(403, &["nvidia.com/gpu"]),
        ),
        row(
            "nvidia.com/gpu limit 1 allowed with a warning",
            gpu("0").gpu_limit("nginx", json!(1)),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).warns(1, "nvidia.com/gpu").done(),
        ),
        // -- section 5 mps options
        row(
            "mps.hostIPC sets hostIPC on mps modules",
            gpu("0"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).host_ipc(Some(true)).done(),
        )
        .policy("gpuModes: { 0: mps }\nmps: { hostIPC: true }"),
        row(
            "mps.hostIPC leaves time-slicing modules alone",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).host_ipc(None).done(),
        )
        .policy("gpuModes: { 0: mps }\nmps: { hostIPC: true }"),
        row(
            "mps.pipeDirectory mounts the pipe directory and sets CUDA_MPS_PIPE_DIRECTORY",
            gpu("0"),
            assigned("0", MPS, Some("50"))
                .env("nginx", &[(NVD, "0"), (MPS_PCT, "50"), (MPS_PIPE, "/run/nvidia-mps")])
                .volumes(json!([{ "name": PIPE_VOLUME, "hostPath": { "path": "/run/nvidia-mps", "type": "Directory" } }]))
                .mounts("nginx", json!([{ "name": PIPE_VOLUME, "mountPath": "/run/nvidia-mps" }]))
                .done(),
        )
        .policy("defaultMode: mps\nmps: { pipeDirectory: /run/nvidia-mps }"),
        row(
            "mps.pipeDirectory is not added to time-slicing modules",
            gpu("0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).volumes(Value::Null).mounts("nginx", Value::Null).done(),
        )
        .policy("mps: { pipeDirectory: /run/nvidia-mps }"),
        // -- rule 5: capacity
        row(
            "capacity: replicas x percentage over 100 denied",
            gpu("0").ann(PCT, "40").replicas(3),
            denied(403, &["maxMpsPercentagePerGpu", "120%"]),
        )
        .policy("defaultMode: mps"),
        row(
            "capacity: replicas x percentage of exactly 100 allowed",
            gpu("0").ann(PCT, "50").replicas(2),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "capacity: over 100 allowed with a warning under enforcement warn",
            gpu("0").ann(PCT, "40").replicas(3),
            assigned("0", MPS, Some("40")).env("nginx", &[(NVD, "0"), (MPS_PCT, "40")]).warns(1, "maxMpsPercentagePerGpu").done(),
        )
        .policy("defaultMode: mps\nenforcement: warn"),
        row(
            "capacity: maxMpsPercentagePerGpu 0 is no cap",
            gpu("0").ann(PCT, "40").replicas(3),
            assigned("0", MPS, Some("40")).env("nginx", &[(NVD, "0"), (MPS_PCT, "40")]).done(),
        )
        .policy("defaultMode: mps\nmaxMpsPercentagePerGpu: 0"),
        row("capacity: maxClientsPerGpu exceeded", gpu("0").replicas(5), denied(403, &["maxClientsPerGpu"]))
            .policy("maxClientsPerGpu: 4"),
        row(
            "capacity: clients are replicas x selected containers",
            gpu("0").sidecar().replicas(3),
            denied(403, &["maxClientsPerGpu", "6"]),
        )
        .policy("maxClientsPerGpu: 4"),
        row(
            "capacity: unselected containers are not clients",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").replicas(3),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[]).done(),
        )
        .policy("maxClientsPerGpu: 4"),
        row("capacity: mps clients never above 48", gpu("0").ann(PCT, "1").replicas(49), denied(403, &["48"]))
            .policy("defaultMode: mps\nmaxClientsPerGpu: 100"),
        row(
            "capacity: 48 mps clients allowed",
            gpu("0").ann(PCT, "1").replicas(48),
            assigned("0", MPS, Some("1")).env("nginx", &[(NVD, "0"), (MPS_PCT, "1")]).done(),
        )
        .policy("defaultMode: mps\nmaxClientsPerGpu: 100"),
        row(
            "capacity: time-slicing clients may exceed 48 when the policy says so",
            gpu("0").replicas(60),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        )
        .policy("maxClientsPerGpu: 100"),
        row("capacity: committed modules on the GPU count", gpu("0").ann(PCT, "50"), denied(403, &["maxMpsPercentagePerGpu", "60%"]))
            .policy("defaultMode: mps")
            .module(committed("other/a", 0, Some(60), 1, 1)),
        row(
            "capacity: committed clients on the GPU count",
            gpu("0").replicas(2),
            denied(403, &["maxClientsPerGpu"]),
        )
        .policy("maxClientsPerGpu: 4")
        .module(committed("other/a", 0, None, 3, 3)),
        row(
            "capacity: a module counts on every candidate node (worst case)",
            gpu("0").ann(PCT, "30"),
            denied(403, &["node-b", "maxMpsPercentagePerGpu"]),
        )
        .policy("defaultMode: mps")
        .nodes(two_full_nodes())
        .module(pinned(committed("other/a", 0, Some(80), 1, 1), "b")),
        row(
            "capacity: a module pinned elsewhere does not count",
            gpu("0").ann(PCT, "30").node_selector("pool", "a"),
            assigned("0", MPS, Some("30")).env("nginx", &[(NVD, "0"), (MPS_PCT, "30")]).done(),
        )
        .policy("defaultMode: mps")
        .nodes(two_full_nodes())
        .module(pinned(committed("other/a", 0, Some(80), 1, 1), "b")),
        // -- UPDATE
        row(
            "UPDATE does not count the module itself twice",
            gpu("0").ann(PCT, "80").assigned("0", MPS, Some("80")).var("nginx", NVD, "0").var("nginx", MPS_PCT, "80"),
            assigned("0", MPS, Some("80")).env("nginx", &[(NVD, "0"), (MPS_PCT, "80")]).done(),
        )
        .policy("defaultMode: mps")
        .module(committed("default/web", 0, Some(80), 1, 1))
        .update(gpu("0").ann(PCT, "80").assigned("0", MPS, Some("80")).var("nginx", NVD, "0").var("nginx", MPS_PCT, "80")),
        row(
            "UPDATE keeps the old GPU for auto though another is less loaded",
            gpu("auto").assigned("1", TS, None).var("nginx", NVD, "1").replicas(2),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .module(committed("default/web", 1, None, 1, 1))
        .module(committed("other/busy", 1, None, 20, 20))
        .update(gpu("auto").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE keeps the old GPU when no gpu key is set",
            web().ann(CONTAINERS, "nginx").assigned("1", TS, None).var("nginx", NVD, "1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .module(committed("default/web", 1, None, 1, 1))
        .module(committed("other/busy", 1, None, 20, 20))
        .update(web().ann(CONTAINERS, "nginx").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE re-chooses when the user changed gpushare.io/gpu",
            gpu("auto").assigned("1", TS, None).var("nginx", NVD, "1"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).warns(1, NVD).done(),
        )
        .module(committed("default/web", 1, None, 1, 1))
        .module(committed("other/busy", 1, None, 20, 20))
        .update(gpu("1").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE to an explicit index moves the module",
            gpu("0").assigned("1", TS, None).var("nginx", NVD, "1"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).warns(1, NVD).done(),
        )
        .update(gpu("1").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE from mps to time-slicing drops the mps annotation and variables",
            gpu("1").assigned("0", MPS, Some("50")).var("nginx", NVD, "0").var("nginx", MPS_PCT, "50"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).warns(1, NVD).done(),
        )
        .policy("gpuModes: { 0: mps }")
        .update(gpu("0").assigned("0", MPS, Some("50")).var("nginx", NVD, "0").var("nginx", MPS_PCT, "50")),
        row(
            "UPDATE removing every key releases the module",
            web()
                .assigned("0", MPS, Some("50"))
                .var("nginx", "A", "1")
                .var("nginx", NVD, "0")
                .var("nginx", MPS_PCT, "50")
                .var("nginx", MPS_PIPE, "/run/nvidia-mps")
                .volume(json!({ "name": "data", "emptyDir": {} }))
                .pipe_volume("/run/nvidia-mps")
                .mount("nginx", "data", "/data")
                .mount("nginx", PIPE_VOLUME, "/run/nvidia-mps")
                .spec_field("hostIPC", json!(true)),
            allowed()
                .env("nginx", &[("A", "1")])
                .volumes(json!([{ "name": "data", "emptyDir": {} }]))
                .mounts("nginx", json!([{ "name": "data", "mountPath": "/data" }]))
                .host_ipc(Some(true))
                .warns(1, "hostIPC")
                .done(),
        )
        .policy("gpuModes: { 0: mps }\nmps: { hostIPC: true, pipeDirectory: /run/nvidia-mps }")
        .update(
            gpu("0")
                .assigned("0", MPS, Some("50"))
                .var("nginx", "A", "1")
                .var("nginx", NVD, "0")
                .var("nginx", MPS_PCT, "50")
                .var("nginx", MPS_PIPE, "/run/nvidia-mps")
                .volume(json!({ "name": "data", "emptyDir": {} }))
                .pipe_volume("/run/nvidia-mps")
                .mount("nginx", "data", "/data")
                .mount("nginx", PIPE_VOLUME, "/run/nvidia-mps")
                .spec_field("hostIPC", json!(true)),
        ),
        row(
            "UPDATE removing every key from a time-slicing module releases it without warnings",
            web().assigned("1", TS, None).var("nginx", NVD, "1"),
            allowed().env("nginx", &[]).done(),
        )
        .update(gpu("1").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE of an unmanaged Deployment never assigned stays unchanged",
            web().replicas(3),
            unchanged().done(),
        )
        .update(web()),
        // -- rule 7
        row(
            "excluded namespace allowed unchanged even with a typo key",
            web().ann("gpushare.io/gpus", "0,1").var("nginx", NVD, "all"),
            unchanged().done(),
        )
        .namespace("kube-system"),
        row("policy namespaces.exclude replaces the default list", gpu("all"), unchanged().done())
            .policy("namespaces: { exclude: [batch] }")
            .namespace("batch"),
        // -- rule 2: candidate nodes and GPU counts
        row(
            "nodeSelector matching a 1-GPU node denies index 1",
            gpu("1").node_selector("pool", "b"),
            denied(403, &[GPU, "node-b", "VMs"]),
        )
        .nodes(two_nodes()),
        row(
            "nodeSelector matching a 2-GPU node allows index 1",
            gpu("1").node_selector("pool", "a"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .nodes(two_nodes()),
        row(
            "no nodeSelector: index 1 must exist on every GPU node",
            gpu("1"),
            denied(403, &[GPU, "node-b"]),
        )
        .nodes(two_nodes()),
        row(
            "no nodeSelector: auto only considers indexes every node has",
            gpu("auto"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        )
        .nodes(two_nodes())
        .module(committed("other/busy", 0, None, 10, 10)),
        row(
            "nodeName pins the candidate node",
            gpu("1").spec_field("nodeName", json!("node-a")),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .nodes(two_nodes()),
        row(
            "no nodeSelector: nodes without GPUs are not candidates",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .nodes(Nodes::Explicit(vec![node("node-a", "a", Some(2)), node("cpu-1", "cpu", Some(0)), node("cpu-2", "cpu", None)])),
        row("no candidate node denied with the VM hint", gpu("0").node_selector("pool", "gpu-xl"), denied(403, &["nodeSelector", "VMs"]))
            .nodes(two_nodes()),
        row(
            "nodeSelector matching only a node with 0 GPUs denied with the VM hint",
            gpu("0").node_selector("pool", "cpu"),
            denied(403, &["VMs"]),
        )
        .nodes(Nodes::Explicit(vec![node("node-a", "a", Some(2)), node("cpu-1", "cpu", Some(0))])),
        row("zero GPUs (all passed to VMs) denied with the VM hint", gpu("auto"), denied(403, &["VMs"])).gpus(Some(0)),
        row("no node reports a GPU denied with the VM hint", gpu("0"), denied(403, &["VMs"]))
            .nodes(Nodes::Explicit(vec![node("node-a", "a", Some(0)), node("node-b", "b", None)])),
        row(
            "policy nodes.<name>.gpus overrides the node's count",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("nodes: { node-b: { gpus: 2 } }")
        .nodes(two_nodes()),
        row(
            "policy nodes.<name>.gpus can hide a GPU the node reports",
            gpu("1").node_selector("pool", "a"),
            denied(403, &[GPU, "node-a"]),
        )
        .policy("nodes: { node-a: { gpus: 1 } }")
        .nodes(two_nodes()),
        row(
            "policy nodes.<name>.gpuModes sets a GPU's mode on that node",
            gpu("1").ann(MODE, "mps").node_selector("pool", "a"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50")]).done(),
        )
        .policy("nodes: { node-a: { gpuModes: { 1: mps } } }")
        .nodes(two_full_nodes()),
        row(
            "a GPU whose mode differs between candidate nodes denied",
            gpu("1").ann(MODE, "mps"),
            denied(403, &["mps", "node-b"]),
        )
        .policy("nodes: { node-a: { gpuModes: { 1: mps } } }")
        .nodes(two_full_nodes()),
        row(
            "auto skips a GPU whose mode differs between candidate nodes",
            gpu("auto"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("nodes: { node-a: { gpuModes: { 0: mps } } }")
        .nodes(two_full_nodes()),
        row(
            "policy nodes.<name>.reservedForVms replaces the global list",
            gpu("1").node_selector("pool", "a"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("reservedForVms: [1]\nnodes: { node-a: { reservedForVms: [] } }")
        .nodes(two_full_nodes()),
        row(
            "GPU count from the nvidia.com/gpu.count label",
            gpu("1").node_selector("pool", "a"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .nodes(two_nodes()),
        row("policy gpusPerNode beats the node's label", gpu("1").node_selector("pool", "a"), denied(403, &[GPU, "VMs"]))
            .policy("gpusPerNode: 1")
            .nodes(two_nodes()),
        row(
            "policy gpusPerNode raises a node's count",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("gpusPerNode: 2")
        .nodes(two_nodes()),
        row(
            "policy nodes.<name>.gpus beats gpusPerNode",
            gpu("1").node_selector("pool", "a"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("gpusPerNode: 1\nnodes: { node-a: { gpus: 2 } }")
        .nodes(two_nodes()),
        row("standalone without --gpus has 1 GPU", gpu("1"), denied(403, &[GPU, "VMs"])).gpus(None),
        row(
            "standalone without --gpus takes gpusPerNode",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("gpusPerNode: 2")
        .gpus(None),
        row(
            "standalone without --gpus takes nodes.standalone.gpus",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("gpusPerNode: 1\nnodes: { standalone: { gpus: 2 } }")
        .gpus(None),
        row("standalone --gpus beats the policy", gpu("1"), denied(403, &[GPU, "VMs"]))
            .policy("gpusPerNode: 2\nnodes: { standalone: { gpus: 2 } }")
            .gpus(Some(1)),
        // -- policy defaults
        row(
            "policy defaultGpu is used when no gpu is named",
            web().ann(MODE, "time-slicing"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("defaultGpu: 1"),
        row(
            "policy defaultMpsPercentage is applied",
            web().ann(MODE, "mps"),
            assigned("0", MPS, Some("30")).env("nginx", &[(NVD, "0"), (MPS_PCT, "30")]).done(),
        )
        .policy("defaultMode: mps\ndefaultMpsPercentage: 30"),
        row(
            "policy defaultMode mps makes every GPU mps",
            gpu("1"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50")]).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "UPDATE keeps the old GPU though policy defaultGpu names another",
            web().ann(MODE, "time-slicing").assigned("0", TS, None).var("nginx", NVD, "0").replicas(2),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        )
        .policy("defaultGpu: 1")
        .update(web().ann(MODE, "time-slicing").assigned("0", TS, None).var("nginx", NVD, "0")),
        // -- robustness: what clients send besides kubectl's shape
        row(
            "null annotations, env and template metadata are read as absent",
            {
                let mut d = gpu("0");
                d.0["spec"]["template"]["metadata"] = Value::Null;
                d.container("nginx")["env"] = Value::Null;
                d
            },
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row(
            "hideGpuFromOtherContainers: valueFrom on an unselected container denied",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var_from("sidecar", NVD),
            denied(403, &[NVD, "valueFrom"]),
        )
        .policy("hideGpuFromOtherContainers: true"),
        row("containers naming no container denied", gpu("0").ann(CONTAINERS, " , "), denied(400, &[CONTAINERS])),
        row(
            "containers with spaces after commas",
            gpu("0").sidecar().ann(CONTAINERS, "nginx, sidecar"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[(NVD, "0")]).done(),
        ),
    ]
}

// ---- running a row ----------------------------------------------------------------------------

fn inventory(nodes: &Nodes, modules: &[(ModuleKey, Module)]) -> Inventory {
    let mut inventory = match nodes {
        Nodes::Standalone(forced) => Inventory::standalone(*forced),
        Nodes::Explicit(nodes) => Inventory {
            nodes: nodes.clone(),
            ..Inventory::default()
        },
    };
    inventory.modules.extend(modules.iter().cloned());
    inventory
}

fn deployment(object: &Value) -> Result<Deployment, String> {
    serde_json::from_value(object.clone())
        .map_err(|e| format!("the object does not deserialize: {e}"))
}

fn decide_json(
    namespace: &str,
    object: &Value,
    old: Option<&Value>,
    policy: &Policy,
    inventory: &Inventory,
) -> Result<Verdict, String> {
    let object = deployment(object)?;
    let old = old.map(deployment).transpose()?;
    let request = Request {
        operation: if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        },
        namespace,
        name: &object.metadata.name,
        object: &object,
        old_object: old.as_ref(),
    };
    Ok(decide(&request, policy, inventory))
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
    doc.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .ok_or_else(|| format!("patched object has no container {name}"))
}

fn check_assigned(doc: &Value, expected: &Assigned) -> Result<(), String> {
    let want: Vec<(&str, Option<&str>)> = match expected {
        Assigned::Unchecked => return Ok(()),
        Assigned::Absent => vec![(A_GPU, None), (A_MODE, None), (A_PCT, None)],
        Assigned::Is { gpu, mode, pct } => {
            vec![(A_GPU, Some(*gpu)), (A_MODE, Some(*mode)), (A_PCT, *pct)]
        }
    };
    for meta in ["/metadata", "/spec/template/metadata"] {
        for (key, value) in &want {
            let actual = doc
                .pointer(meta)
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
            .pointer("/spec/template/spec/hostIPC")
            .and_then(Value::as_bool);
        if actual != host_ipc {
            return Err(format!("hostIPC is {actual:?}, expected {host_ipc:?}"));
        }
    }
    if let Some(volumes) = &want.volumes {
        let actual = doc
            .pointer("/spec/template/spec/volumes")
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

fn run(row: &Row) -> Result<(), String> {
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

#[test]
fn decision_table() {
    let rows = rows();
    assert!(
        rows.len() >= 45,
        "the table should cover every rule: {} rows",
        rows.len()
    );
    let mut names = std::collections::HashSet::new();
    for row in &rows {
        assert!(names.insert(row.name), "duplicate row name {:?}", row.name);
    }
    let mut failures = Vec::new();
    for row in &rows {
        let result = panic::catch_unwind(AssertUnwindSafe(|| run(row))).unwrap_or_else(|panic| {
            Err(format!(
                "panicked: {:?}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or(panic.downcast_ref::<&str>().copied())
            ))
        });
        if let Err(reason) = result {
            failures.push(format!("- {}: {reason}", row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

// ---- what a table does not show well ----------------------------------------------------------

/// Admits `names` one after the other in standalone mode, committing each assignment like the
/// shells do, and returns the GPU each got.
fn admit_in_order(policy: &str, names: &[&str]) -> Vec<u32> {
    let policy = Policy::from_yaml(policy).expect("policy");
    let mut inventory = Inventory::standalone(Some(2));
    let mut gpus = Vec::new();
    for name in names {
        let mut object = web().ann(GPU, "auto").0;
        object["metadata"]["name"] = json!(name);
        let Verdict::Allowed(mutation) =
            decide_json("default", &object, None, &policy, &inventory).expect("decide")
        else {
            panic!("{name} denied");
        };
        let Outcome::Assigned(assignment) = mutation.outcome else {
            panic!("{name} not assigned")
        };
        gpus.push(assignment.gpu.0);
        let key = ModuleKey {
            namespace: "default".into(),
            name: name.to_string(),
        };
        inventory.modules.insert(
            key,
            Module {
                placement: Placement::default(),
                assignment,
            },
        );
    }
    gpus
}

#[test]
fn least_loaded_spreads_modules_as_they_are_admitted() {
    assert_eq!(admit_in_order("", &["a", "b", "c", "d"]), vec![0, 1, 0, 1]);
}

#[test]
fn pack_fills_one_gpu_before_the_next() {
    assert_eq!(
        admit_in_order("strategy: pack\nmaxClientsPerGpu: 2", &["a", "b", "c", "d"]),
        vec![0, 0, 1, 1]
    );
}

#[test]
fn create_then_update_of_the_mutated_object_needs_no_patch() {
    let policy = Policy::from_yaml(
        "gpuModes: { 1: mps }\nmps: { hostIPC: true, pipeDirectory: /run/nvidia-mps }",
    )
    .expect("policy");
    let inventory = Inventory::standalone(Some(2));
    let created = web().ann(PCT, "25").sidecar().0;
    let Verdict::Allowed(mutation) =
        decide_json("default", &created, None, &policy, &inventory).expect("decide")
    else {
        panic!("denied");
    };
    let mut stored = created.clone();
    json_patch::patch(&mut stored, &mutation.patch).expect("patch applies");
    // The user scales the stored object: gpushare keeps the GPU and writes nothing.
    let mut scaled = stored.clone();
    scaled["spec"]["replicas"] = json!(2);
    let Verdict::Allowed(update) =
        decide_json("default", &scaled, Some(&stored), &policy, &inventory).expect("decide")
    else {
        panic!("update denied");
    };
    assert!(
        update.patch.is_empty(),
        "unexpected patch {}",
        json!(update.patch)
    );
    assert!(matches!(
        update.outcome,
        Outcome::Assigned(Assignment {
            gpu: GpuIndex(1),
            mode: Mode::Mps,
            ..
        })
    ));
}
