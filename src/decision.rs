//! The one decision: (workload, policy, inventory) -> allowed with a patch, or denied with a
//! message. Pure: no I/O, no clock, no shared state. The webhook and `gpushare check` both call it.

use std::fmt::Write as _;

use crate::annotations::{
    self, UserAnnotations, ASSIGNED_GPU, ASSIGNED_KEYS, ASSIGNED_MODE, ASSIGNED_MPS_PERCENTAGE,
};
use crate::domain::*;
use crate::inventory::{Inventory, ModuleKey, Node, Placement};
use crate::patch::{EnvChange, PatchBuilder};
use crate::policy::{Enforcement, GpuChoice, Policy, Strategy};
use crate::verdict::{Assignment, Denial, Mutation, Outcome, Rule, Verdict};
use crate::workload::{Container, Deployment, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// One admission question about a Deployment.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub operation: Operation,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a Deployment,
    /// The stored object, on UPDATE.
    pub old_object: Option<&'a Deployment>,
}

impl Request<'_> {
    pub fn key(&self) -> ModuleKey {
        ModuleKey {
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }
}

/// Decides one request.
pub fn decide(request: &Request<'_>, policy: &Policy, inventory: &Inventory) -> Verdict {
    match decide_managed(request, policy, inventory) {
        Ok(mutation) => Verdict::Allowed(mutation),
        Err(denial) => Verdict::Denied(denial),
    }
}

fn unchanged(outcome: Outcome) -> Mutation {
    Mutation {
        patch: Vec::new(),
        warnings: Vec::new(),
        outcome,
    }
}

fn decide_managed(
    request: &Request<'_>,
    policy: &Policy,
    inventory: &Inventory,
) -> Result<Mutation, Denial> {
    if policy.is_excluded(request.namespace) {
        return Ok(unchanged(Outcome::Excluded));
    }
    let workload = request.object.workload();
    let user = UserAnnotations::collect(
        workload.metadata.annotations.as_ref(),
        workload.template.annotations(),
    )?;
    if !user.is_managed() {
        if request.operation == Operation::Update && was_assigned(request) {
            return Ok(release(&workload));
        }
        for container in all_containers(&workload) {
            check_single_gpu_env(container)?;
        }
        return Ok(unchanged(Outcome::Unmanaged));
    }
    let module = user.parse(policy.default_gpu)?;
    let containers = &workload.template.spec.containers;
    let selected = select_containers(containers, module.containers.as_deref())?;
    let mut builder = PatchBuilder::default();
    check_containers(&workload, &selected, policy, &mut builder.warnings)?;

    let demand = Demand {
        replicas: workload.replicas,
        clients: workload
            .replicas
            .saturating_mul(selected.iter().filter(|s| **s).count() as u32),
        mode: module.mode,
        percentage: module.percentage.unwrap_or(policy.default_mps_percentage),
    };
    let placement = Placement {
        node_selector: workload.template.spec.node_selector.clone(),
        node_name: workload.template.spec.node_name.clone(),
    };
    let scope = Scope::new(request.key(), &placement, policy, inventory)?;
    let kept = kept_gpu(request, &user);
    // A kept GPU wins even over a policy defaultGpu changed since: modules move only when their user asks.
    let gpu = match (kept, module.gpu) {
        (Some(gpu), _) if scope.usable(gpu, demand.mode).is_ok() => {
            scope.explicit(gpu, &demand, &mut builder.warnings)?
        }
        (_, GpuChoice::Index(gpu)) => scope.explicit(gpu, &demand, &mut builder.warnings)?,
        (_, GpuChoice::Auto) => scope.auto(&demand, &mut builder.warnings)?,
    };
    let mode = scope.mode_of(gpu);
    let assignment = Assignment {
        gpu,
        mode,
        percentage: (mode == Mode::Mps).then_some(demand.percentage),
        memory_limit: module.memory_limit,
        replicas: demand.replicas,
        clients: demand.clients,
    };
    write_assignment(&mut builder, &workload, &selected, &assignment, policy);
    Ok(Mutation {
        patch: builder.ops,
        warnings: builder.warnings,
        outcome: Outcome::Assigned(assignment),
    })
}

fn all_containers<'a>(workload: &Workload<'a>) -> impl Iterator<Item = &'a Container> {
    let spec = &workload.template.spec;
    spec.containers.iter().chain(spec.init_containers.iter())
}

// ---- containers -------------------------------------------------------------------------------

/// Which containers get the GPU, by position in `spec.containers`.
fn select_containers(
    containers: &[Container],
    listed: Option<&[String]>,
) -> Result<Vec<bool>, Denial> {
    let Some(listed) = listed else {
        return Ok(vec![true; containers.len()]);
    };
    if let Some(missing) = listed
        .iter()
        .find(|name| !containers.iter().any(|c| &c.name == *name))
    {
        let existing: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
        return Err(Denial::new(
            Rule::InvalidValue,
            format!(
                "{} lists container {missing:?}, which this Deployment does not have; its containers are {}",
                annotations::CONTAINERS,
                existing.join(", ")
            ),
        ));
    }
    Ok(containers
        .iter()
        .map(|c| listed.contains(&c.name))
        .collect())
}

/// Rule 1 on containers, and the variables gpushare cannot own when they come from `valueFrom`.
fn check_containers(
    workload: &Workload<'_>,
    selected: &[bool],
    policy: &Policy,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let owned = owned_variables(policy);
    for (container, &is_selected) in workload.template.spec.containers.iter().zip(selected) {
        if is_selected {
            if let Some(quantity) = container.gpu_request() {
                match quantity.whole() {
                    Some(0) => {}
                    Some(1) => warnings.push(format!(
                        "container {:?} sets nvidia.com/gpu: 1; the NVIDIA device plugin overrides {VISIBLE_DEVICES} \
                         for such containers, so the GPU gpushare assigns may not apply; remove the nvidia.com/gpu \
                         resource to share the GPU",
                        container.name
                    )),
                    _ => {
                        return Err(Denial::new(
                            Rule::MultipleGpus,
                            format!(
                                "container {:?} asks for nvidia.com/gpu: {}; a module may use only one GPU: remove \
                                 the nvidia.com/gpu resource (gpushare.io/gpu chooses the GPU) or ask for at most 1",
                                container.name, quantity.0
                            ),
                        ))
                    }
                }
            }
            deny_value_from(container, &owned)?;
        } else if policy.hide_gpu_from_other_containers {
            deny_value_from(container, &[VISIBLE_DEVICES])?;
        } else {
            check_single_gpu_env(container)?;
        }
    }
    for container in &workload.template.spec.init_containers {
        check_single_gpu_env(container)?;
    }
    Ok(())
}

fn owned_variables(policy: &Policy) -> Vec<&'static str> {
    let mut owned = vec![VISIBLE_DEVICES, MPS_THREAD_PERCENTAGE, MPS_MEMORY_LIMIT];
    if policy.mps_pipe_directory.is_some() {
        owned.push(MPS_PIPE_DIRECTORY);
    }
    owned
}

fn deny_value_from(container: &Container, owned: &[&str]) -> Result<(), Denial> {
    match container.env_entries().iter().find(|e| e.value_from.is_some() && owned.contains(&e.name.as_str())) {
        Some(entry) => Err(Denial::new(
            Rule::Unverifiable,
            format!(
                "container {:?} sets {} with valueFrom, which gpushare cannot check; remove that env entry \
                 (gpushare sets {} itself)",
                container.name, entry.name, entry.name
            ),
        )),
        None => Ok(()),
    }
}

/// A container gpushare does not write to may name at most one GPU itself.
fn check_single_gpu_env(container: &Container) -> Result<(), Denial> {
    let Some(entry) = container.env_var(VISIBLE_DEVICES) else {
        return Ok(());
    };
    if entry.value_from.is_some() || names_at_most_one_gpu(entry.literal()) {
        return Ok(());
    }
    Err(Denial::new(
        Rule::MultipleGpus,
        format!(
            "container {:?} sets {VISIBLE_DEVICES}={:?}: a module may use only one GPU; set a single index such \
             as \"0\", or let gpushare choose with the annotation gpushare.io/gpu: auto",
            container.name,
            entry.literal()
        ),
    ))
}

fn names_at_most_one_gpu(value: &str) -> bool {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    v.is_empty()
        || lower == "none"
        || lower == "void"
        || v.bytes().all(|b| b.is_ascii_digit())
        || ((lower.starts_with("gpu-") || lower.starts_with("mig-")) && !v.contains(','))
}

// ---- UPDATE: keeping and releasing assignments ------------------------------------------------

fn assigned_gpu_of(object: &Deployment) -> Option<GpuIndex> {
    let annotation = |a: Option<&std::collections::BTreeMap<String, String>>| {
        a.and_then(|a| a.get(ASSIGNED_GPU))
            .and_then(|v| v.trim().parse().ok())
            .map(GpuIndex)
    };
    annotation(object.metadata.annotations.as_ref())
        .or_else(|| annotation(object.spec.template.annotations()))
}

fn was_assigned(request: &Request<'_>) -> bool {
    let has = |d: &Deployment| {
        d.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ASSIGNED_GPU))
            || d.spec
                .template
                .annotations()
                .is_some_and(|a| a.contains_key(ASSIGNED_GPU))
    };
    has(request.object) || request.old_object.is_some_and(has)
}

/// On UPDATE, the GPU the module already has, unless the user changed `gpushare.io/gpu`.
fn kept_gpu(request: &Request<'_>, user: &UserAnnotations<'_>) -> Option<GpuIndex> {
    if request.operation != Operation::Update {
        return None;
    }
    let old = request.old_object?;
    let old_user = UserAnnotations::collect(
        old.metadata.annotations.as_ref(),
        old.spec.template.annotations(),
    )
    .ok()?;
    if old_user.get(annotations::GPU) != user.get(annotations::GPU) {
        return None;
    }
    assigned_gpu_of(old)
}

/// Takes back everything gpushare wrote, so the workload returns to unmanaged.
fn release(workload: &Workload<'_>) -> Mutation {
    let mut b = PatchBuilder::default();
    let template_meta = format!("{}/metadata", workload.template_path);
    let spec_path = format!("{}/spec", workload.template_path);
    b.annotations(
        "/metadata",
        true,
        workload.metadata.annotations.as_ref(),
        &[],
        &ASSIGNED_KEYS,
    );
    b.annotations(
        &template_meta,
        workload.template.metadata.is_some(),
        workload.template.annotations(),
        &[],
        &ASSIGNED_KEYS,
    );
    let removals: [EnvChange<'_>; 4] = [
        (VISIBLE_DEVICES, None),
        (MPS_THREAD_PERCENTAGE, None),
        (MPS_MEMORY_LIMIT, None),
        (MPS_PIPE_DIRECTORY, None),
    ];
    for (i, container) in workload.template.spec.containers.iter().enumerate() {
        let path = format!("{spec_path}/containers/{i}");
        b.env(&path, container, &removals);
        b.remove_mounts(&path, container.volume_mounts.as_ref(), PIPE_VOLUME);
    }
    b.remove_volume(
        &spec_path,
        workload.template.spec.volumes.as_ref(),
        PIPE_VOLUME,
    );
    if workload.template.spec.host_ipc == Some(true) {
        b.warnings.push(
            "gpushare no longer manages this Deployment; hostIPC: true was left as it is: remove it if the \
             workload does not need it"
                .into(),
        );
    }
    Mutation {
        patch: b.ops,
        warnings: b.warnings,
        outcome: Outcome::Released,
    }
}

// ---- choosing a GPU ---------------------------------------------------------------------------

/// What one module needs from a GPU.
#[derive(Debug, Clone, Copy)]
struct Demand {
    replicas: u32,
    clients: u32,
    /// The requested mode; `None` takes the GPU's.
    mode: Option<Mode>,
    /// Per replica, used only if the module lands on an mps GPU.
    percentage: Percentage,
}

impl Demand {
    fn percentage_on(&self, mode: Mode) -> u32 {
        match mode {
            Mode::Mps => self.replicas.saturating_mul(self.percentage.get()),
            Mode::TimeSlicing => 0,
        }
    }
}

/// The candidate nodes of one module, with everything needed to judge a GPU index on all of them.
struct Scope<'a> {
    key: ModuleKey,
    nodes: Vec<&'a Node>,
    policy: &'a Policy,
    inventory: &'a Inventory,
}

fn vm_hint() -> &'static str {
    "GPUs passed through to VMs are not available to containers"
}

impl<'a> Scope<'a> {
    fn new(
        key: ModuleKey,
        placement: &'a Placement,
        policy: &'a Policy,
        inventory: &'a Inventory,
    ) -> Result<Scope<'a>, Denial> {
        let nodes: Vec<&Node> = inventory.candidates(placement, policy).collect();
        if nodes.is_empty() {
            let constraint = if placement.node_selector.is_empty() && placement.node_name.is_empty()
            {
                "no node offers a GPU to Kubernetes".to_string()
            } else {
                "no node matches the pod template's nodeSelector/nodeName".to_string()
            };
            return Err(Denial::new(
                Rule::NoSuchGpu,
                format!("{constraint}: the device's GPUs may be assigned to VMs ({}); free a GPU from its VM, or fix the nodeSelector", vm_hint()),
            ));
        }
        if let Some(node) = nodes.iter().find(|n| n.gpu_count(policy) == 0) {
            return Err(Denial::new(
                Rule::NoSuchGpu,
                format!(
                    "node {} offers 0 GPUs to Kubernetes: its GPUs may be assigned to VMs ({}); free a GPU from its VM, \
                     or use a nodeSelector that avoids this node",
                    node.name,
                    vm_hint()
                ),
            ));
        }
        Ok(Scope {
            key,
            nodes,
            policy,
            inventory,
        })
    }

    /// The GPU's mode (the same on every candidate node once `usable` said so).
    fn mode_of(&self, gpu: GpuIndex) -> Mode {
        self.policy.gpu_mode(&self.nodes[0].name, gpu)
    }

    /// Rules 2, 4 and 6 for one index: it exists, is not reserved, and has the requested mode, on
    /// every candidate node.
    fn usable(&self, gpu: GpuIndex, wanted: Option<Mode>) -> Result<Mode, Denial> {
        let mode = self.available(gpu)?;
        match wanted {
            Some(wanted) if wanted != mode => Err(Denial::new(
                Rule::ModeMismatch,
                format!(
                    "the module asks for {wanted} ({}) but GPU {gpu} is in {mode} mode (policy gpuModes/defaultMode); \
                     {}",
                    mode_source(wanted),
                    self.suggest_mode(wanted)
                ),
            )),
            _ => Ok(mode),
        }
    }

    /// Rules 2 and 6, and one mode across the candidate nodes: the index's mode when it may be assigned.
    fn available(&self, gpu: GpuIndex) -> Result<Mode, Denial> {
        for node in &self.nodes {
            let count = node.gpu_count(self.policy);
            if gpu.0 >= count {
                return Err(Denial::new(
                    Rule::NoSuchGpu,
                    format!(
                        "{} is \"{gpu}\" but node {} offers {count} GPU{} to Kubernetes (indexes 0..{}); {}; \
                         choose an index below {count} or auto",
                        annotations::GPU,
                        node.name,
                        if count == 1 { "" } else { "s" },
                        count - 1,
                        vm_hint()
                    ),
                ));
            }
            if self.policy.is_reserved(&node.name, gpu) {
                return Err(Denial::new(
                    Rule::Reserved,
                    format!(
                        "GPU {gpu} on node {} is reserved for VMs by policy reservedForVms; choose another GPU or auto",
                        node.name
                    ),
                ));
            }
        }
        let mode = self.mode_of(gpu);
        if let Some(other) = self
            .nodes
            .iter()
            .find(|n| self.policy.gpu_mode(&n.name, gpu) != mode)
        {
            return Err(Denial::new(
                Rule::ModeMismatch,
                format!(
                    "GPU {gpu} is {mode} on node {} but {} on node {}; pin the module to nodes with one mode using a \
                     nodeSelector",
                    self.nodes[0].name,
                    mode.other(),
                    other.name
                ),
            ));
        }
        Ok(mode)
    }

    fn suggest_mode(&self, wanted: Mode) -> String {
        let count = self
            .nodes
            .iter()
            .map(|n| n.gpu_count(self.policy))
            .min()
            .unwrap_or(0);
        let matching: Vec<String> = (0..count)
            .map(GpuIndex)
            .filter(|&g| self.available(g) == Ok(wanted))
            .map(|g| g.to_string())
            .collect();
        if matching.is_empty() {
            format!("no {wanted} GPU is available: ask an admin to set gpuModes in the policy, or use the GPU's mode")
        } else {
            format!("use a {wanted} GPU ({}) or auto", matching.join(", "))
        }
    }

    /// Rule 5 for one index on every candidate node: `Some(reason)` when the module does not fit.
    fn overflow(&self, gpu: GpuIndex, mode: Mode, demand: &Demand) -> Option<String> {
        let wanted_percentage = demand.percentage_on(mode);
        let max_clients = self.policy.max_clients(mode);
        for node in &self.nodes {
            let usage = self.inventory.usage(node, gpu, &self.key, self.policy);
            if let (Mode::Mps, Some(cap)) = (mode, self.policy.max_mps_percentage_per_gpu) {
                if usage.percentage + wanted_percentage > cap {
                    return Some(format!(
                        "GPU {gpu} on node {}: {}% MPS committed + {} x {}% = {}% exceeds maxMpsPercentagePerGpu {cap}%",
                        node.name,
                        usage.percentage,
                        demand.replicas,
                        demand.percentage,
                        usage.percentage + wanted_percentage
                    ));
                }
            }
            if usage.clients + demand.clients > max_clients {
                return Some(format!(
                    "GPU {gpu} on node {}: {} client processes + {} = {} exceeds the limit of {max_clients}{}",
                    node.name,
                    usage.clients,
                    demand.clients,
                    usage.clients + demand.clients,
                    if mode == Mode::Mps { " (maxClientsPerGpu, at most 48 with MPS)" } else { " (maxClientsPerGpu)" }
                ));
            }
        }
        None
    }

    /// The load `auto` compares: committed MPS percentage, or client share on time-slicing GPUs;
    /// the worst candidate node counts.
    fn load(&self, gpu: GpuIndex, mode: Mode) -> u32 {
        self.nodes
            .iter()
            .map(|node| {
                let usage = self.inventory.usage(node, gpu, &self.key, self.policy);
                match mode {
                    Mode::Mps => usage.percentage,
                    Mode::TimeSlicing => {
                        usage.clients.saturating_mul(100) / self.policy.max_clients_per_gpu
                    }
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// A named index (or the one kept on UPDATE): usable, and within capacity unless enforcement warns.
    fn explicit(
        &self,
        gpu: GpuIndex,
        demand: &Demand,
        warnings: &mut Vec<String>,
    ) -> Result<GpuIndex, Denial> {
        let mode = self.usable(gpu, demand.mode)?;
        if let Some(reason) = self.overflow(gpu, mode, demand) {
            self.over_capacity(reason, warnings)?;
        }
        Ok(gpu)
    }

    fn over_capacity(&self, reason: String, warnings: &mut Vec<String>) -> Result<(), Denial> {
        match self.policy.enforcement {
            Enforcement::Deny => Err(Denial::new(
                Rule::Capacity,
                format!("{reason}; lower replicas or gpushare.io/mps-percentage, choose another GPU, or free capacity"),
            )),
            Enforcement::Warn => {
                warnings.push(format!("over capacity (enforcement: warn): {reason}"));
                Ok(())
            }
        }
    }

    /// `auto`: among usable GPUs that fit, the least or most loaded by strategy; ties to the lowest index.
    fn auto(&self, demand: &Demand, warnings: &mut Vec<String>) -> Result<GpuIndex, Denial> {
        let count = self
            .nodes
            .iter()
            .map(|n| n.gpu_count(self.policy))
            .min()
            .unwrap_or(0);
        let mut usable = Vec::new();
        let mut refusals = Vec::new();
        for gpu in (0..count).map(GpuIndex) {
            match self.available(gpu) {
                Ok(mode) if demand.mode.is_none_or(|wanted| wanted == mode) => {
                    usable.push((gpu, mode))
                }
                Ok(mode) => refusals.push(format!("GPU {gpu} is in {mode} mode")),
                Err(denial) => refusals.push(first_clause(&denial.message).to_string()),
            }
        }
        if usable.is_empty() {
            let (rule, wanted, hint) = match demand.mode {
                Some(m) => (
                    Rule::ModeMismatch,
                    format!("{m} "),
                    format!("ask an admin to switch a GPU to {m} (policy gpuModes), or drop the {m} annotations"),
                ),
                None => (Rule::Reserved, String::new(), "free a GPU from its VM or from reservedForVms".to_string()),
            };
            return Err(Denial::new(
                rule,
                format!(
                    "no {wanted}GPU can be chosen automatically: {}; {hint}",
                    refusals.join("; ")
                ),
            ));
        }
        let fitting: Vec<(GpuIndex, u32)> = usable
            .iter()
            .filter(|(gpu, mode)| self.overflow(*gpu, *mode, demand).is_none())
            .map(|(gpu, mode)| (*gpu, self.load(*gpu, *mode)))
            .collect();
        if let Some(gpu) = self.pick(&fitting) {
            return Ok(gpu);
        }
        let mut reasons = String::new();
        for (gpu, mode) in &usable {
            if let Some(reason) = self.overflow(*gpu, *mode, demand) {
                let _ = write!(
                    reasons,
                    "{}{reason}",
                    if reasons.is_empty() { "" } else { "; " }
                );
            }
        }
        let all: Vec<(GpuIndex, u32)> = usable
            .iter()
            .map(|(g, m)| (*g, self.load(*g, *m)))
            .collect();
        self.over_capacity(
            format!("no GPU has room for this module: {reasons}"),
            warnings,
        )?;
        Ok(self.pick(&all).expect("usable is not empty"))
    }

    fn pick(&self, loads: &[(GpuIndex, u32)]) -> Option<GpuIndex> {
        // Iterating in index order and replacing only on a strict improvement sends ties to the lowest index.
        let mut best: Option<(GpuIndex, u32)> = None;
        for &(gpu, load) in loads {
            let better = match (best, self.policy.strategy) {
                (None, _) => true,
                (Some((_, b)), Strategy::LeastLoaded) => load < b,
                (Some((_, b)), Strategy::Pack) => load > b,
            };
            if better {
                best = Some((gpu, load));
            }
        }
        best.map(|(gpu, _)| gpu)
    }
}

fn mode_source(mode: Mode) -> &'static str {
    match mode {
        Mode::Mps => {
            "gpushare.io/mode: mps, or implied by gpushare.io/mps-percentage or mps-memory-limit"
        }
        Mode::TimeSlicing => "gpushare.io/mode: time-slicing",
    }
}

fn first_clause(message: &str) -> &str {
    message.split(';').next().unwrap_or(message)
}

// ---- the mutation -----------------------------------------------------------------------------

fn write_assignment(
    b: &mut PatchBuilder,
    workload: &Workload<'_>,
    selected: &[bool],
    a: &Assignment,
    policy: &Policy,
) {
    let gpu = a.gpu.to_string();
    let percentage = a.percentage.map(|p| p.to_string());
    let mut set = vec![
        (ASSIGNED_GPU, gpu.clone()),
        (ASSIGNED_MODE, a.mode.as_str().to_string()),
    ];
    let mut remove = Vec::new();
    match &percentage {
        Some(p) => set.push((ASSIGNED_MPS_PERCENTAGE, p.clone())),
        None => remove.push(ASSIGNED_MPS_PERCENTAGE),
    }
    let template_meta = format!("{}/metadata", workload.template_path);
    let spec_path = format!("{}/spec", workload.template_path);
    b.annotations(
        "/metadata",
        true,
        workload.metadata.annotations.as_ref(),
        &set,
        &remove,
    );
    b.annotations(
        &template_meta,
        workload.template.metadata.is_some(),
        workload.template.annotations(),
        &set,
        &remove,
    );

    let mps = a.mode == Mode::Mps;
    let pipe = policy.mps_pipe_directory.as_deref().filter(|_| mps);
    let memory_limit = a.memory_limit.as_ref().map(|m| format!("0={}", m.as_str()));
    let mut changes: Vec<EnvChange<'_>> = vec![(VISIBLE_DEVICES, Some(&gpu))];
    changes.push((MPS_THREAD_PERCENTAGE, percentage.as_deref()));
    changes.push((MPS_MEMORY_LIMIT, memory_limit.as_deref()));
    if policy.mps_pipe_directory.is_some() {
        changes.push((MPS_PIPE_DIRECTORY, pipe));
    }
    let hidden: [EnvChange<'_>; 1] = [(VISIBLE_DEVICES, Some("void"))];
    let spec = &workload.template.spec;
    for (i, (container, &is_selected)) in spec.containers.iter().zip(selected).enumerate() {
        let path = format!("{spec_path}/containers/{i}");
        if is_selected {
            b.env(&path, container, &changes);
            if let Some(dir) = pipe {
                b.ensure_mount(&path, container.volume_mounts.as_ref(), PIPE_VOLUME, dir);
            }
        } else if policy.hide_gpu_from_other_containers {
            b.env(&path, container, &hidden);
        }
        if pipe.is_none() {
            b.remove_mounts(&path, container.volume_mounts.as_ref(), PIPE_VOLUME);
        }
    }
    match pipe {
        Some(dir) => b.ensure_host_path_volume(&spec_path, spec.volumes.as_ref(), PIPE_VOLUME, dir),
        None => b.remove_volume(&spec_path, spec.volumes.as_ref(), PIPE_VOLUME),
    }
    if mps && policy.mps_host_ipc {
        b.ensure_true(&spec_path, "hostIPC", spec.host_ipc);
    }
}
