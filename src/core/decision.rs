//! The one decision: (workload, policy, inventory) -> allowed with a patch and the claim the
//! workload then holds, or denied with a message. Pure: no I/O, no clock, no shared state. The
//! webhook and `gpushare check` both call it; recording the claim is the caller's next step.

use crate::core::annotations::{ModuleRequest, UserAnnotations, USER_KEYS};
use crate::core::claim::{Assigned, Claim, PerPod, Share};
use crate::core::containers::{self, check_single_gpu_env};
use crate::core::domain::{GpuIndex, Mode};
use crate::core::handwritten::{self, Extras};
use crate::core::inventory::Inventory;
use crate::core::mutation::{hide_gpu, record_on_object, release, unassign, write_assignment};
use crate::core::patch::PatchBuilder;
use crate::core::placement::{Demand, Scope};
use crate::core::policy::{GpuChoice, HandWritten, Policy};
use crate::core::verdict::{Denial, Mutation, Outcome, Rule, Verdict};
use crate::core::workload::{Kind, Workload, WorkloadKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    /// An UPDATE of a Pod's `ephemeralcontainers` subresource (`kubectl debug`).
    EphemeralContainers,
}

impl Operation {
    /// As the AdmissionReview names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update | Operation::EphemeralContainers => "UPDATE",
        }
    }
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

/// Whether a built-in controller made this object from a template gpushare examined (in a cluster:
/// the controller exists with that uid and the object carries its template's GPU variables).
pub fn made_by_controller(workload: &Workload, inventory: &Inventory) -> bool {
    workload
        .builtin_controller()
        .is_some_and(|c| inventory.trusts_owner(c, workload.gpu_fingerprint()))
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
    if request.operation == Operation::EphemeralContainers {
        return ephemeral(request, policy, inventory);
    }
    // The controller's own template was examined and counts; its objects do not, twice.
    if made_by_controller(workload, inventory) {
        let controller = workload.controller.as_ref().map(ToString::to_string);
        return Ok(Mutation::unchanged(Outcome::Controlled(
            controller.unwrap_or_default(),
        )));
    }
    if workload.finished {
        return Ok(Mutation::unchanged(Outcome::Finished));
    }
    let user = UserAnnotations::collect(workload)?;
    let update = request.operation == Operation::Update;
    let fixed_template = update && !workload.kind().template_mutable();
    let old_annotated = request
        .old_object
        .and_then(|old| UserAnnotations::collect(old).ok())
        .is_some_and(|old| old.is_managed());
    // Removing every annotation releases the module, though the variables gpushare wrote for it
    // still look like a GPU chosen by hand.
    let released = update && old_annotated && !user.is_managed();
    let asked = if released {
        Asked::Nothing
    } else {
        ask(workload, &user, policy)?
    };
    let module = match asked {
        Asked::Module(module) => module,
        Asked::Nothing | Asked::HandAllowed => {
            return unmanaged(request, asked, fixed_template, old_annotated, policy)
        }
    };
    if fixed_template {
        keep(request, &user, &module, policy, inventory)
    } else {
        assign(request, &module, policy, inventory)
    }
}

/// What a workload asks of gpushare.
enum Asked {
    /// A module: from its annotations, or from the variables its containers write by hand.
    Module(ModuleRequest),
    /// Nothing: it uses no GPU gpushare can see.
    Nothing,
    /// Its containers write the GPU variables themselves and the policy allows that uncounted.
    HandAllowed,
}

/// The annotations, or without any the variables containers write by hand, as policy
/// `handWrittenGpuEnv` says.
fn ask(workload: &Workload, user: &UserAnnotations<'_>, policy: &Policy) -> Result<Asked, Denial> {
    if user.is_managed() {
        return user.parse(policy.default_gpu).map(Asked::Module);
    }
    if !handwritten::any(workload) {
        return Ok(Asked::Nothing);
    }
    match policy.hand_written_gpu_env {
        HandWritten::Count => Ok(handwritten::module_request(workload, policy.default_gpu)?
            .map_or(Asked::Nothing, Asked::Module)),
        HandWritten::Allow => Ok(Asked::HandAllowed),
        HandWritten::Deny => Err(Denial::new(
            Rule::HandWritten,
            format!(
                "a container of this {} sets NVIDIA_VISIBLE_DEVICES or a CUDA_MPS_ variable itself, which the \
                 policy (handWrittenGpuEnv: deny) refuses; remove the variables and set the annotations \
                 gpushare.io/gpu (an index or auto) and, for MPS, gpushare.io/mps-percentage instead",
                workload.kind()
            ),
        )),
    }
}

/// The same question about the stored object of an UPDATE, answered leniently: `None` when it
/// was no module (or cannot be read as one any more).
fn old_module(request: &Request<'_>, policy: &Policy) -> Option<ModuleRequest> {
    let old = request.old_object?;
    let user = UserAnnotations::collect(old).ok()?;
    match ask(old, &user, policy).ok()? {
        Asked::Module(module) => Some(module),
        Asked::Nothing | Asked::HandAllowed => None,
    }
}

/// A workload that asks nothing of gpushare: rule 1 on its containers, gpushare's earlier writes
/// taken back, and the GPU hidden when the policy says so.
fn unmanaged(
    request: &Request<'_>,
    asked: Asked,
    fixed_template: bool,
    old_annotated: bool,
    policy: &Policy,
) -> Result<Mutation, Denial> {
    let workload = request.object;
    let update = request.operation == Operation::Update;
    if update && old_annotated && fixed_template {
        return Err(annotations_removed(request));
    }
    let hand_allowed = matches!(asked, Asked::HandAllowed);
    let mut warnings = Vec::new();
    if hand_allowed {
        warnings.push(format!(
            "a container of this {} sets NVIDIA_VISIBLE_DEVICES or a CUDA_MPS_ variable itself; the policy \
             (handWrittenGpuEnv: allow) lets it through unchanged, and gpushare does not count its GPU use: \
             set gpushare.io/gpu to have it checked and counted",
            workload.kind()
        ));
    }
    if update && was_assigned(request) && !fixed_template {
        if hand_allowed {
            // The variables are the user's: only gpushare's record of a share goes.
            let mut mutation = unassign(workload);
            mutation.warnings.extend(warnings);
            return Ok(mutation);
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
    let mut mutation = Mutation::unchanged(Outcome::Unmanaged);
    if policy.hide_gpu_from_unmanaged && !fixed_template {
        mutation.patch = hide_gpu(workload);
    }
    mutation.warnings = warnings;
    Ok(mutation)
}

/// The containers gpushare leaves alone that use a GPU by hand, and the GPU that then must be the
/// module's: they are more client processes of it (CONTRACT section 2b).
fn extras_of(workload: &Workload, selected: &[bool], policy: &Policy) -> Result<Extras, Denial> {
    handwritten::extras(handwritten::unwritten(
        workload,
        selected,
        policy.hide_gpu_from_other_containers,
    ))
}

/// The GPU containers writing by hand pin a module to, against what the module asks for.
fn pinned_choice(module: &ModuleRequest, extras: &Extras) -> Result<GpuChoice, Denial> {
    match (module.gpu, extras.gpu) {
        (GpuChoice::Index(asked), Some(written)) if asked != written => Err(Denial::new(
            Rule::MultipleGpus,
            format!(
                "container {:?}, which gpushare does not write to, sets NVIDIA_VISIBLE_DEVICES=\"{written}\", but the \
                 module's GPU is {asked}: a module may use only one GPU; make that container name GPU {asked}, or \
                 list it in gpushare.io/containers",
                extras.first.as_deref().unwrap_or_default()
            ),
        )),
        (GpuChoice::Auto, Some(written)) => Ok(GpuChoice::Index(written)),
        (choice, _) => Ok(choice),
    }
}

/// CREATE of any kind, or UPDATE of a kind whose pod template may change: choose a GPU and write it.
fn assign(
    request: &Request<'_>,
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
    let extras = extras_of(workload, &selected, policy)?;
    let choice = pinned_choice(module, &extras)?;
    let percentage = module.percentage.unwrap_or(policy.default_mps_percentage);
    let per_pod = PerPod {
        selected: selected.iter().filter(|s| **s).count() as u32,
        extras,
    };
    let demand = Demand {
        pods: workload.pods,
        clients: workload
            .pods
            .total()
            .saturating_mul(per_pod.selected.saturating_add(per_pod.extras.clients)),
        pods_field: workload.kind().pods_field(),
        mode: module.mode,
        percentage: percentage.get().saturating_add(per_pod.extras.percentage),
    };
    let placement = workload.placement();
    let scope = Scope::new(workload.key.clone(), &placement, policy, inventory)?;
    // A kept GPU wins even over a policy defaultGpu changed since: modules move only when their
    // user asks (or a container writing by hand names another GPU).
    let kept = kept_gpu(request, module, policy)
        .filter(|kept| per_pod.extras.gpu.is_none_or(|written| written == *kept));
    let gpu = match (kept, choice) {
        (Some(gpu), _) if scope.usable(gpu, demand.mode).is_ok() => {
            scope.explicit(gpu, &demand, &mut builder.warnings)?
        }
        (_, GpuChoice::Index(gpu)) => scope.explicit(gpu, &demand, &mut builder.warnings)?,
        (_, GpuChoice::Auto) => scope.auto(&demand, &mut builder.warnings)?,
    };
    let share = match scope.mode_of(gpu) {
        Mode::Mps => Share::Mps(percentage),
        Mode::TimeSlicing => Share::TimeSlicing,
    };
    let assigned = Assigned { gpu, share };
    check_pod_security(workload, &assigned, policy, inventory)?;
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
        outcome: Outcome::Assigned(Claim::new(
            workload.key.clone(),
            placement,
            assigned,
            workload.pods,
            per_pod,
        )),
    })
}

/// Rule 8: in a namespace whose Pod Security level refuses host access, a module whose pods would
/// get `hostIPC` or the MPS pipe hostPath from gpushare would hold its share while every pod is
/// refused.
fn check_pod_security(
    workload: &Workload,
    assigned: &Assigned,
    policy: &Policy,
    inventory: &Inventory,
) -> Result<(), Denial> {
    let adds_host_access = assigned.share.mode() == Mode::Mps
        && (policy.mps_host_ipc || policy.mps_pipe_directory.is_some());
    let Some(level) = inventory
        .pod_security(&workload.key.namespace)
        .filter(|_| adds_host_access)
    else {
        return Ok(());
    };
    Err(Denial::new(
        Rule::PodSecurity,
        format!(
            "namespace {} enforces Pod Security {level} (label {}={level}), which refuses the hostIPC and hostPath \
             volume that the policy's mps.hostIPC and mps.pipeDirectory give mps pods, so no pod of this {} could \
             start; use a time-slicing GPU, or ask an admin to relax the namespace's label or turn those policy \
             keys off",
            workload.key.namespace,
            crate::core::inventory::PodSecurity::LABEL,
            workload.kind(),
            level = level.as_str(),
        ),
    ))
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
    if let Some(old) = request.old_object {
        if old_module(request, policy).is_none() {
            return Err(annotations_added(workload));
        }
        if let Ok(old_user) = UserAnnotations::collect(old) {
            if let Some(key) = USER_KEYS.iter().find(|k| old_user.get(k) != user.get(k)) {
                return Err(annotation_changed(
                    workload,
                    key,
                    old_user.get(key),
                    user.get(key),
                ));
            }
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
    let extras = extras_of(workload, &selected, policy)?;
    let claim = Claim::new(
        workload.key.clone(),
        workload.placement(),
        assigned,
        workload.pods,
        PerPod {
            selected: selected.iter().filter(|s| **s).count() as u32,
            extras,
        },
    );
    let mut builder = PatchBuilder::default();
    // Only the pods count can change here; anything else fit when the workload was created.
    if request.old_object.map(|old| old.pods) != Some(workload.pods) {
        let scope = Scope::new(workload.key.clone(), &claim.placement, policy, inventory)?;
        scope.explicit(assigned.gpu, &demand_of(&claim), &mut builder.warnings)?;
    }
    record_on_object(&mut builder, workload, &assigned);
    builder.warnings.extend(kind_warnings(workload));
    Ok(Mutation {
        patch: builder.ops,
        warnings: builder.warnings,
        outcome: Outcome::Assigned(claim),
    })
}

/// What a claim asks of its GPU, to check it again with another pods count.
pub fn demand_of(claim: &Claim) -> Demand {
    Demand {
        pods: claim.pods,
        clients: claim.clients(),
        pods_field: claim.key.kind.pods_field(),
        mode: None,
        percentage: claim
            .assigned
            .share
            .percentage()
            .map_or(0, |p| p.get())
            .saturating_add(claim.extra_percentage),
    }
}

/// `kubectl debug`: gpushare never gives an ephemeral container a GPU, but one that writes the GPU
/// variables itself is one more client process of the GPU it names, and must fit (CONTRACT 2b).
fn ephemeral(
    request: &Request<'_>,
    policy: &Policy,
    inventory: &Inventory,
) -> Result<Mutation, Denial> {
    let pod = request.object;
    let existed = |name: &str| {
        request
            .old_object
            .is_some_and(|old| old.pod.ephemeral_containers.iter().any(|c| c.name == name))
    };
    let added_by_hand = pod
        .pod
        .ephemeral_containers
        .iter()
        .any(|c| !existed(&c.name) && handwritten::uses_gpu(c));
    if !added_by_hand || pod.finished {
        return Ok(Mutation::unchanged(Outcome::Unmanaged));
    }
    match policy.hand_written_gpu_env {
        HandWritten::Count => {}
        HandWritten::Allow => {
            let mut mutation = Mutation::unchanged(Outcome::Unmanaged);
            mutation.warnings.push(
                "this ephemeral container sets NVIDIA_VISIBLE_DEVICES or a CUDA_MPS_ variable itself; the policy \
                 (handWrittenGpuEnv: allow) lets it through and gpushare does not count its GPU use"
                    .to_string(),
            );
            return Ok(mutation);
        }
        HandWritten::Deny => {
            return Err(Denial::new(
                Rule::HandWritten,
                "this ephemeral container sets NVIDIA_VISIBLE_DEVICES or a CUDA_MPS_ variable itself, which the \
                 policy (handWrittenGpuEnv: deny) refuses; debug without the GPU variables (gpushare never gives \
                 an ephemeral container a GPU)",
            ))
        }
    }
    let extras = handwritten::extras(&pod.pod.ephemeral_containers)?;
    let exempt = made_by_controller(pod, inventory);
    if !exempt {
        if let (Some(own), Some(written)) = (recorded(pod), extras.gpu) {
            if own.gpu != written {
                return Err(Denial::new(
                    Rule::MultipleGpus,
                    format!(
                        "the ephemeral container sets NVIDIA_VISIBLE_DEVICES=\"{written}\" but this Pod's GPU is {}: a \
                         module may use only one GPU; debug with NVIDIA_VISIBLE_DEVICES={}",
                        own.gpu, own.gpu
                    ),
                ));
            }
        }
    }
    let Some(claim) = Claim::of_stored(pod, exempt) else {
        return Ok(Mutation::unchanged(Outcome::Unmanaged));
    };
    let mut warnings = Vec::new();
    let scope = Scope::new(pod.key.clone(), &claim.placement, policy, inventory)?;
    scope.explicit(claim.gpu(), &demand_of(&claim), &mut warnings)?;
    Ok(Mutation {
        patch: Vec::new(),
        warnings,
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

/// On UPDATE, the GPU the module already has, unless the user changed the GPU it asks for.
fn kept_gpu(request: &Request<'_>, module: &ModuleRequest, policy: &Policy) -> Option<GpuIndex> {
    if request.operation != Operation::Update {
        return None;
    }
    let old = old_module(request, policy)?;
    if old.gpu != module.gpu {
        return None;
    }
    request.old_object.and_then(recorded).map(|a| a.gpu)
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
