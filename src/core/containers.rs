//! Rule 1 on containers (CONTRACT section 4): which containers a module selects, GPU resources
//! of selected ones, the variables gpushare cannot own when they come from `valueFrom`, and the
//! multi-GPU check on every container gpushare does not write to.

use crate::core::annotations;
use crate::core::claim::selection;
use crate::core::denial::{Denial, Rule};
use crate::core::domain::*;
use crate::core::policy::Policy;
use crate::core::workload::{Container, Workload};

/// Which containers get the GPU, by position in the pod spec's `containers`; a listed name
/// that does not exist is denied.
pub fn select(workload: &Workload, listed: Option<&[String]>) -> Result<Vec<bool>, Denial> {
    let containers = &workload.pod.containers;
    if let Some(missing) = listed.and_then(|l| {
        l.iter()
            .find(|name| !containers.iter().any(|c| &c.name == *name))
    }) {
        let existing: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
        return Err(Denial::new(
            Rule::InvalidValue,
            format!(
                "{} lists container {missing:?}, which this {} does not have; its containers are {}",
                annotations::CONTAINERS,
                workload.kind(),
                existing.join(", ")
            ),
        ));
    }
    Ok(selection(containers, listed))
}

/// Every container and init container of the pod spec.
pub fn all(workload: &Workload) -> impl Iterator<Item = &Container> {
    let spec = &workload.pod;
    spec.containers.iter().chain(spec.init_containers.iter())
}

/// Rule 1 on the containers of a managed module, and the variables gpushare cannot own when
/// they come from `valueFrom`.
pub fn check(
    workload: &Workload,
    selected: &[bool],
    policy: &Policy,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let owned = owned_variables(policy);
    for (container, &is_selected) in workload.pod.containers.iter().zip(selected) {
        if is_selected {
            check_gpu_resource(container, warnings)?;
            deny_value_from(container, &owned)?;
        } else if policy.hide_gpu_from_other_containers {
            deny_value_from(container, &[VISIBLE_DEVICES])?;
        } else {
            check_single_gpu_env(container)?;
        }
    }
    for container in &workload.pod.init_containers {
        check_single_gpu_env(container)?;
    }
    Ok(())
}

fn check_gpu_resource(container: &Container, warnings: &mut Vec<String>) -> Result<(), Denial> {
    let Some(quantity) = container.gpu_request() else {
        return Ok(());
    };
    match quantity.whole() {
        Some(0) => Ok(()),
        Some(1) => {
            warnings.push(format!(
                "container {:?} sets nvidia.com/gpu: 1; the NVIDIA device plugin overrides {VISIBLE_DEVICES} \
                 for such containers, so the GPU gpushare assigns may not apply; remove the nvidia.com/gpu \
                 resource to share the GPU",
                container.name
            ));
            Ok(())
        }
        _ => Err(Denial::new(
            Rule::MultipleGpus,
            format!(
                "container {:?} asks for nvidia.com/gpu: {}; a module may use only one GPU: remove \
                 the nvidia.com/gpu resource (gpushare.io/gpu chooses the GPU) or ask for at most 1",
                container.name, quantity.0
            ),
        )),
    }
}

fn owned_variables(policy: &Policy) -> Vec<&'static str> {
    let mut owned = vec![VISIBLE_DEVICES, MPS_THREAD_PERCENTAGE, MPS_MEMORY_LIMIT];
    if policy.mps_pipe_directory.is_some() {
        owned.push(MPS_PIPE_DIRECTORY);
    }
    owned
}

fn deny_value_from(container: &Container, owned: &[&str]) -> Result<(), Denial> {
    match container
        .env_entries()
        .iter()
        .find(|e| e.value_from.is_some() && owned.contains(&e.name.as_str()))
    {
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
pub fn check_single_gpu_env(container: &Container) -> Result<(), Denial> {
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
