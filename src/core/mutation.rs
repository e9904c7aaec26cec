//! The mutation (CONTRACT section 3): the JSON Patch that writes an assignment into a workload,
//! or takes gpushare's writes back when a workload stops being managed.

use crate::core::claim::Assigned;
use crate::core::domain::*;
use crate::core::keys::ASSIGNED_KEYS;
use crate::core::patch::{EnvChange, PatchBuilder};
use crate::core::policy::Policy;
use crate::core::verdict::{Mutation, Outcome};
use crate::core::workload::Workload;

/// Sets and removes assigned annotations on the object's own metadata.
fn annotate_object(
    b: &mut PatchBuilder,
    workload: &Workload,
    set: &[(&str, String)],
    remove: &[&str],
) {
    b.annotations(
        "/metadata",
        workload.metadata.present,
        workload.annotations(),
        set,
        remove,
    );
}

/// Sets and removes assigned annotations on the object and on its pod template (a Pod has one
/// metadata for both).
fn annotate(b: &mut PatchBuilder, workload: &Workload, set: &[(&str, String)], remove: &[&str]) {
    annotate_object(b, workload, set, remove);
    if let (Some(path), Some(template)) = (
        workload.layout().template_metadata,
        &workload.template_metadata,
    ) {
        b.annotations(
            path,
            template.present,
            template.annotations.as_ref(),
            set,
            remove,
        );
    }
}

/// Records a kept assignment on the object's own metadata only: what an UPDATE of a Job or a Pod
/// may still change.
pub fn record_on_object(b: &mut PatchBuilder, workload: &Workload, assigned: &Assigned) {
    let (set, remove) = assigned.encode();
    annotate_object(b, workload, &set, &remove);
}

/// Takes back everything gpushare wrote, so the workload returns to unmanaged.
pub fn release(workload: &Workload) -> Mutation {
    let mut b = PatchBuilder::default();
    let spec_path = workload.layout().pod_spec;
    annotate(&mut b, workload, &[], &ASSIGNED_KEYS);
    let removals: [EnvChange<'_>; 4] = [
        (VISIBLE_DEVICES, None),
        (MPS_THREAD_PERCENTAGE, None),
        (MPS_MEMORY_LIMIT, None),
        (MPS_PIPE_DIRECTORY, None),
    ];
    for (i, container) in workload.pod.containers.iter().enumerate() {
        let path = format!("{spec_path}/containers/{i}");
        b.env(&path, container, &removals);
        b.remove_mounts(&path, container.volume_mounts.as_ref(), PIPE_VOLUME);
    }
    b.remove_volume(spec_path, workload.pod.volumes.as_ref(), PIPE_VOLUME);
    if workload.pod.host_ipc == Some(true) {
        b.warnings.push(format!(
            "gpushare no longer manages this {}; hostIPC: true was left as it is: remove it if the \
             workload does not need it",
            workload.kind()
        ));
    }
    Mutation {
        patch: b.ops,
        warnings: b.warnings,
        outcome: Outcome::Released,
    }
}

/// Takes back gpushare's record of an assignment but leaves every variable as it is: the
/// containers wrote them themselves.
pub fn unassign(workload: &Workload) -> Mutation {
    let mut b = PatchBuilder::default();
    annotate(&mut b, workload, &[], &ASSIGNED_KEYS);
    Mutation {
        patch: b.ops,
        warnings: b.warnings,
        outcome: Outcome::Released,
    }
}

/// Policy `hideGpuFromUnmanaged`: `NVIDIA_VISIBLE_DEVICES=void` on every container (init
/// containers included) that does not set the variable, so an image built on NVIDIA's CUDA
/// images (which default to `all`) sees no GPU.
pub fn hide_gpu(workload: &Workload) -> Vec<json_patch::PatchOperation> {
    let mut b = PatchBuilder::default();
    let spec_path = workload.layout().pod_spec;
    let hidden: [EnvChange<'_>; 1] = [(VISIBLE_DEVICES, Some("void"))];
    let spec = &workload.pod;
    for (field, list) in [
        ("containers", &spec.containers),
        ("initContainers", &spec.init_containers),
    ] {
        for (i, container) in list.iter().enumerate() {
            if container.env_var(VISIBLE_DEVICES).is_none() {
                b.env(&format!("{spec_path}/{field}/{i}"), container, &hidden);
            }
        }
    }
    b.ops
}

/// Writes an assignment: the annotations on the object and its template, and the variables,
/// volume and hostIPC on the pod template.
pub fn write_assignment(
    b: &mut PatchBuilder,
    workload: &Workload,
    selected: &[bool],
    a: &Assigned,
    memory_limit: Option<&MemoryLimit>,
    policy: &Policy,
) {
    let gpu = a.gpu.to_string();
    let percentage = a.share.percentage().map(|p| p.to_string());
    let (set, remove) = a.encode();
    let spec_path = workload.layout().pod_spec;
    annotate(b, workload, &set, &remove);

    let mps = a.share.mode() == Mode::Mps;
    let pipe = policy.mps_pipe_directory.as_deref().filter(|_| mps);
    let memory_limit = memory_limit.map(|m| format!("0={}", m.as_str()));
    let mut changes: Vec<EnvChange<'_>> = vec![(VISIBLE_DEVICES, Some(&gpu))];
    changes.push((MPS_THREAD_PERCENTAGE, percentage.as_deref()));
    changes.push((MPS_MEMORY_LIMIT, memory_limit.as_deref()));
    if policy.mps_pipe_directory.is_some() {
        changes.push((MPS_PIPE_DIRECTORY, pipe));
    }
    let hidden: [EnvChange<'_>; 1] = [(VISIBLE_DEVICES, Some("void"))];
    let spec = &workload.pod;
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
        Some(dir) => b.ensure_host_path_volume(spec_path, spec.volumes.as_ref(), PIPE_VOLUME, dir),
        None => b.remove_volume(spec_path, spec.volumes.as_ref(), PIPE_VOLUME),
    }
    if mps && policy.mps_host_ipc {
        b.ensure_true(spec_path, "hostIPC", spec.host_ipc);
    }
}
