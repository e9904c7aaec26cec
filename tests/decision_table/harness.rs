//! The harness of the decision table: workload objects as their users write them, nodes and
//! committed claims, expectations, and running one row (decide, apply the patch, check what a
//! user would see, read the claim back from the stored object, decide again for idempotence).
//!
//! The workload objects are in `harness/objects.rs`, the nodes and committed claims in
//! `harness/nodes.rs`.

#[path = "harness/nodes.rs"]
mod nodes;
#[path = "harness/objects.rs"]
mod objects;

use gpushare::core::claim::Claim;
use gpushare::core::decision::{decide, Operation, Request};
use gpushare::core::inventory::Inventory;
use gpushare::core::policy::Policy;
use gpushare::core::verdict::{Mutation, Outcome, Verdict};
use gpushare::core::workload::{Kind, RawObject, Workload};
use serde_json::{json, Value};

pub use nodes::{committed, node, pinned, two_full_nodes, two_nodes, Nodes};
pub use objects::{metadata_places, template_base, web, Dep};

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
    workload.key.namespace = namespace.into();
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
