//! The mutation (CONTRACT section 3): the JSON Patch that writes an assignment into a workload,
//! or takes gpushare's writes back when a workload stops being managed.

use crate::core::annotations::{
    ASSIGNED_GPU, ASSIGNED_KEYS, ASSIGNED_MODE, ASSIGNED_MPS_PERCENTAGE,
};
use crate::core::domain::*;
use crate::core::patch::{EnvChange, PatchBuilder};
use crate::core::policy::Policy;
use crate::core::verdict::{Assignment, Mutation, Outcome};
use crate::core::workload::Workload;

/// Sets and removes the assigned annotations on the workload and on its pod template.
fn annotate(
    b: &mut PatchBuilder,
    workload: &Workload<'_>,
    set: &[(&str, String)],
    remove: &[&str],
) {
    let template_meta = format!("{}/metadata", workload.template_path);
    b.annotations(
        "/metadata",
        workload.metadata.present,
        workload.metadata.annotations.as_ref(),
        set,
        remove,
    );
    b.annotations(
        &template_meta,
        workload.template.metadata.present,
        workload.template.annotations(),
        set,
        remove,
    );
}

/// Takes back everything gpushare wrote, so the workload returns to unmanaged.
pub fn release(workload: &Workload<'_>) -> Mutation {
    let mut b = PatchBuilder::default();
    let spec_path = format!("{}/spec", workload.template_path);
    annotate(&mut b, workload, &[], &ASSIGNED_KEYS);
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

pub fn write_assignment(
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
    let spec_path = format!("{}/spec", workload.template_path);
    annotate(b, workload, &set, &remove);

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
