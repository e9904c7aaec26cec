//! The one decision: (workload, policy, inventory) -> allowed with a patch, or denied with a
//! message. Pure: no I/O, no clock, no shared state. The webhook and `gpushare check` both call it.

use crate::core::annotations::{self, UserAnnotations, ASSIGNED_GPU};
use crate::core::domain::*;
use crate::core::inventory::{Inventory, ModuleKey, Placement};
use crate::core::mutation::{release, write_assignment};
use crate::core::patch::PatchBuilder;
use crate::core::placement::{Demand, Scope};
use crate::core::policy::{GpuChoice, Policy};
use crate::core::verdict::{Assignment, Denial, Mutation, Outcome, Rule, Verdict};
use crate::core::workload::{Container, Deployment, Workload};

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
            // Release removes gpushare's variables from the containers; init containers keep theirs.
            for container in &workload.template.spec.init_containers {
                check_single_gpu_env(container)?;
            }
            return Ok(release(&workload));
        }
        for container in all_containers(&workload) {
            check_single_gpu_env(container)?;
        }
        return Ok(unchanged(Outcome::Unmanaged));
    }
    let module = user.parse(policy.default_gpu)?;
    let containers = &workload.template.spec.containers;
    if containers.is_empty() {
        return Err(Denial::new(
            Rule::InvalidValue,
            "spec.template.spec.containers is empty: a managed Deployment needs a pod template with at least one container",
        ));
    }
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

// ---- UPDATE: keeping an assignment ------------------------------------------------

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
