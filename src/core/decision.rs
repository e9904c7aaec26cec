//! The one decision: (workload, policy, inventory) -> allowed with a patch and the claim the
//! workload then holds, or denied with a message. Pure: no I/O, no clock, no shared state. The
//! webhook and `gpushare check` both call it; recording the claim is the caller's next step.

use crate::core::annotations::{self, ModuleRequest, UserAnnotations, USER_KEYS};
use crate::core::claim::{Assigned, Claim, Share};
use crate::core::containers::{self, check_single_gpu_env};
use crate::core::domain::{GpuIndex, Mode};
use crate::core::inventory::Inventory;
use crate::core::mutation::{record_on_object, release, write_assignment};
use crate::core::patch::PatchBuilder;
use crate::core::placement::{Demand, Scope};
use crate::core::policy::{GpuChoice, Policy};
use crate::core::verdict::{Denial, Mutation, Outcome, Rule, Verdict};
use crate::core::workload::{Kind, Workload, WorkloadKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// One admission question about a workload of any kind.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub operation: Operation,
    pub object: &'a Workload,
    /// The stored object, on UPDATE.
    pub old_object: Option<&'a Workload>,
}

impl Request<'_> {
    pub fn key(&self) -> &WorkloadKey {
        &self.object.key
    }
}

/// Decides one request.
pub fn decide(request: &Request<'_>, policy: &Policy, inventory: &Inventory) -> Verdict {
    match decide_inner(request, policy, inventory) {
        Ok(mutation) => Verdict::Allowed(mutation),
        Err(denial) => Verdict::Denied(denial),
    }
}

fn decide_inner(
    request: &Request<'_>,
    policy: &Policy,
    inventory: &Inventory,
) -> Result<Mutation, Denial> {
    let workload = request.object;
    if policy.is_excluded(&workload.key.namespace) {
        return Ok(Mutation::unchanged(Outcome::Excluded));
    }
    // The controller's own template was examined and counts; its objects do not, twice.
    if let Some(controller) = &workload.controller {
        return Ok(Mutation::unchanged(Outcome::Controlled(controller.clone())));
    }
    if workload.finished {
        return Ok(Mutation::unchanged(Outcome::Finished));
    }
    let user = UserAnnotations::collect(workload)?;
    let update = request.operation == Operation::Update;
    let fixed_template = update && !workload.kind().template_mutable();
    if !user.is_managed() {
        if update && was_assigned(request) {
            if fixed_template {
                return Err(annotations_removed(request));
            }
            // Release removes gpushare's variables from the containers; init containers keep theirs.
            for container in &workload.pod.init_containers {
                check_single_gpu_env(container)?;
            }
            return Ok(release(workload));
        }
        for container in containers::all(workload) {
            check_single_gpu_env(container)?;
        }
        return Ok(Mutation::unchanged(Outcome::Unmanaged));
    }
    let module = user.parse(policy.default_gpu)?;
    if fixed_template {
        keep(request, &user, &module, policy, inventory)
    } else {
        assign(request, &user, &module, policy, inventory)
    }
}

/// CREATE of any kind, or UPDATE of a kind whose pod template may change: choose a GPU and write it.
fn assign(
    request: &Request<'_>,
    user: &UserAnnotations<'_>,
    module: &ModuleRequest,
    policy: &Policy,
    inventory: &Inventory,
) -> Result<Mutation, Denial> {
    let workload = request.object;
    if workload.pod.containers.is_empty() {
        return Err(Denial::new(
            Rule::InvalidValue,
            format!(
                "{}.containers is empty: a managed {} needs a pod template with at least one container",
                workload.layout().pod_spec_field,
                workload.kind()
            ),
        ));
    }
    let selected = containers::select(workload, module.containers.as_deref())?;
    let mut builder = PatchBuilder::default();
    containers::check(workload, &selected, policy, &mut builder.warnings)?;
    let per_pod = selected.iter().filter(|s| **s).count() as u32;
    let demand = Demand {
        pods: workload.pods,
        clients: workload.pods.saturating_mul(per_pod),
        pods_field: workload.kind().pods_field(),
        mode: module.mode,
        percentage: module.percentage.unwrap_or(policy.default_mps_percentage),
    };
    let placement = workload.placement();
    let scope = Scope::new(workload.key.clone(), &placement, policy, inventory)?;
    let kept = kept_gpu(request, user);
    // A kept GPU wins even over a policy defaultGpu changed since: modules move only when their user asks.
    let gpu = match (kept, module.gpu) {
        (Some(gpu), _) if scope.usable(gpu, demand.mode).is_ok() => {
            scope.explicit(gpu, &demand, &mut builder.warnings)?
        }
        (_, GpuChoice::Index(gpu)) => scope.explicit(gpu, &demand, &mut builder.warnings)?,
        (_, GpuChoice::Auto) => scope.auto(&demand, &mut builder.warnings)?,
    };
    let share = match scope.mode_of(gpu) {
        Mode::Mps => Share::Mps(demand.percentage),
        Mode::TimeSlicing => Share::TimeSlicing,
    };
    let assigned = Assigned { gpu, share };
    write_assignment(
        &mut builder,
        workload,
        &selected,
        &assigned,
        module.memory_limit.as_ref(),
        policy,
    );
    builder.warnings.extend(kind_warnings(workload));
    Ok(Mutation {
        patch: builder.ops,
        warnings: builder.warnings,
        outcome: Outcome::Assigned(Claim {
            key: workload.key.clone(),
            placement,
            assigned,
            pods: workload.pods,
            containers: per_pod,
        }),
    })
}

/// UPDATE of a Job or a Pod: Kubernetes does not let the pod template change, so the assignment
/// made at CREATE stays and the user's keys may not change; only the object's own metadata is
/// written, and a new pods count (a Job's parallelism) is checked against capacity.
fn keep(
    request: &Request<'_>,
    user: &UserAnnotations<'_>,
    module: &ModuleRequest,
    policy: &Policy,
    inventory: &Inventory,
) -> Result<Mutation, Denial> {
    let workload = request.object;
    let kind = workload.kind();
    if let Some(Ok(old_user)) = request.old_object.map(UserAnnotations::collect) {
        if !old_user.is_managed() {
            return Err(annotations_added(workload));
        }
        if let Some(key) = USER_KEYS.iter().find(|k| old_user.get(k) != user.get(k)) {
            return Err(annotation_changed(
                workload,
                key,
                old_user.get(key),
                user.get(key),
            ));
        }
    }
    let Some(assigned) = recorded(workload).or_else(|| request.old_object.and_then(recorded))
    else {
        // Created while gpushare was not running or not registered for this kind.
        return Ok(Mutation {
            patch: Vec::new(),
            warnings: vec![format!(
                "this {kind} was created without a GPU assignment from gpushare (gpushare was not running, or \
                 not registered for {}), so its pods get no GPU from gpushare and are not counted; delete the \
                 {kind} and create it again to get one",
                kind.plural()
            )],
            outcome: Outcome::Unmanaged,
        });
    };
    let selected = containers::select(workload, module.containers.as_deref())?;
    let claim = Claim {
        key: workload.key.clone(),
        placement: workload.placement(),
        assigned,
        pods: workload.pods,
        containers: selected.iter().filter(|s| **s).count() as u32,
    };
    let mut builder = PatchBuilder::default();
    // Only the pods count can change here; anything else fit when the workload was created.
    if request.old_object.map(|old| old.pods) != Some(workload.pods) {
        let demand = Demand {
            pods: claim.pods,
            clients: claim.clients(),
            pods_field: kind.pods_field(),
            mode: Some(assigned.share.mode()),
            percentage: assigned
                .share
                .percentage()
                .unwrap_or(policy.default_mps_percentage),
        };
        let scope = Scope::new(workload.key.clone(), &claim.placement, policy, inventory)?;
        scope.explicit(assigned.gpu, &demand, &mut builder.warnings)?;
    }
    record_on_object(&mut builder, workload, &assigned);
    builder.warnings.extend(kind_warnings(workload));
    Ok(Mutation {
        patch: builder.ops,
        warnings: builder.warnings,
        outcome: Outcome::Assigned(claim),
    })
}

/// Warnings that depend on the kind or on what else the pod template asks for.
fn kind_warnings(workload: &Workload) -> Vec<String> {
    let mut warnings = Vec::new();
    if workload.overlapping_runs {
        warnings.push(
            "concurrencyPolicy is Allow (the default): runs of this CronJob may overlap, and overlapping runs \
             are not counted against the GPU's capacity (one run is); set concurrencyPolicy: Forbid or Replace \
             so that one run at a time uses the GPU"
                .to_string(),
        );
    }
    if workload.pod.resource_claims > 0 {
        warnings.push(format!(
            "{} has resourceClaims (Dynamic Resource Allocation): for a claim that asks for a GPU, the claim's \
             driver, not gpushare, chooses the device; use one or the other for a GPU",
            workload.layout().pod_spec_field
        ));
    }
    warnings
}

// ---- UPDATE: keeping an assignment ------------------------------------------------

/// The assignment a workload's pods carry: the pod template's annotations, else the object's.
fn recorded(workload: &Workload) -> Option<Assigned> {
    Assigned::read(workload.pod_annotations()).or_else(|| Assigned::read(workload.annotations()))
}

fn was_assigned(request: &Request<'_>) -> bool {
    let has = |w: &Workload| {
        Assigned::is_recorded(w.annotations()) || Assigned::is_recorded(w.template_annotations())
    };
    has(request.object) || request.old_object.is_some_and(has)
}

/// On UPDATE, the GPU the module already has, unless the user changed `gpushare.io/gpu`.
fn kept_gpu(request: &Request<'_>, user: &UserAnnotations<'_>) -> Option<GpuIndex> {
    if request.operation != Operation::Update {
        return None;
    }
    let old = request.old_object?;
    let old_user = UserAnnotations::collect(old).ok()?;
    if old_user.get(annotations::GPU) != user.get(annotations::GPU) {
        return None;
    }
    recorded(old).map(|a| a.gpu)
}

// ---- UPDATE of a Job or a Pod: what Kubernetes cannot apply -----------------------

fn fixed(kind: Kind) -> String {
    format!("Kubernetes does not let a {kind}'s pod template change after creation")
}

fn annotations_added(workload: &Workload) -> Denial {
    let kind = workload.kind();
    Denial::new(
        Rule::FixedTemplate,
        format!(
            "gpushare.io/ annotations were added to {kind} {} after it was created: {}, so gpushare cannot \
             give its pods a GPU; delete the {kind} and create it with the annotations",
            workload.key.name,
            fixed(kind)
        ),
    )
}

fn annotation_changed(
    workload: &Workload,
    key: &str,
    old: Option<&str>,
    new: Option<&str>,
) -> Denial {
    let kind = workload.kind();
    let shown = |v: Option<&str>| v.map_or("unset".to_string(), |v| format!("{v:?}"));
    Denial::new(
        Rule::FixedTemplate,
        format!(
            "{key} changed from {} to {} on {kind} {}: {}, so its pods keep the GPU assigned when it was \
             created; set {key} back to {}, or delete the {kind} and create it again",
            shown(old),
            shown(new),
            workload.key.name,
            fixed(kind),
            shown(old)
        ),
    )
}

fn annotations_removed(request: &Request<'_>) -> Denial {
    let workload = request.object;
    let kind = workload.kind();
    let gpu = recorded(workload)
        .or_else(|| request.old_object.and_then(recorded))
        .map_or("its GPU".to_string(), |a| format!("GPU {}", a.gpu));
    Denial::new(
        Rule::FixedTemplate,
        format!(
            "the gpushare.io/ annotations were removed from {kind} {}: {}, so its pods keep {gpu} and gpushare \
             keeps counting it; put the annotations back, or delete the {kind} to free the GPU",
            workload.key.name,
            fixed(kind)
        ),
    )
}
