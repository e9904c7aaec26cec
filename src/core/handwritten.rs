//! Containers that select a GPU themselves (CONTRACT section 2b). The device's own documentation
//! and samples write `NVIDIA_VISIBLE_DEVICES` (and the MPS variables) into a container's env by
//! hand; such a container uses the GPU as much as a managed one, so it is read as the annotations
//! it stands for, or counted as one more client process of its module's GPU.

use crate::core::annotations::{self, ModuleRequest};
use crate::core::denial::{Denial, Rule};
use crate::core::domain::{
    GpuIndex, MemoryLimit, Mode, Percentage, MPS_MEMORY_LIMIT, MPS_THREAD_PERCENTAGE,
    VISIBLE_DEVICES,
};
use crate::core::policy::GpuChoice;
use crate::core::workload::{Container, Workload};

/// What a container writes itself, parsed; `None` where it writes nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Written {
    pub gpu: Option<GpuIndex>,
    pub percentage: Option<Percentage>,
    pub memory_limit: Option<MemoryLimit>,
}

/// Whether an `NVIDIA_VISIBLE_DEVICES` value gives the container no GPU.
pub fn hides_gpu(value: &str) -> bool {
    let value = value.trim();
    value.is_empty() || value.eq_ignore_ascii_case("none") || value.eq_ignore_ascii_case("void")
}

/// Whether a container uses a GPU by hand: its own env sets `NVIDIA_VISIBLE_DEVICES` to anything
/// but none, void or empty, or sets one of the MPS variables (a `valueFrom` included).
pub fn uses_gpu(container: &Container) -> bool {
    let visible = container
        .effective_env(VISIBLE_DEVICES)
        .is_some_and(|e| e.value_from.is_some() || !hides_gpu(e.literal()));
    visible
        || container.effective_env(MPS_THREAD_PERCENTAGE).is_some()
        || container.effective_env(MPS_MEMORY_LIMIT).is_some()
}

/// Whether any container of the pod template (init containers included) uses a GPU by hand.
pub fn any(workload: &Workload) -> bool {
    let pod = &workload.pod;
    pod.containers
        .iter()
        .chain(&pod.init_containers)
        .any(uses_gpu)
}

fn unverifiable(container: &Container, variable: &str, annotation: &str) -> Denial {
    Denial::new(
        Rule::Unverifiable,
        format!(
            "container {:?} sets {variable} with valueFrom, which gpushare cannot check; write the value itself, \
             or use the annotation {annotation} instead of the variable",
            container.name
        ),
    )
}

/// Reads what a container that uses a GPU by hand writes. A value gpushare cannot check is denied
/// with a message that names the annotation to use instead.
pub fn read(container: &Container) -> Result<Written, Denial> {
    let mut written = Written::default();
    if let Some(entry) = container.effective_env(VISIBLE_DEVICES) {
        if entry.value_from.is_some() {
            return Err(unverifiable(container, VISIBLE_DEVICES, annotations::GPU));
        }
        written.gpu = Some(read_index(container, entry.literal())?);
    }
    if let Some(entry) = container.effective_env(MPS_THREAD_PERCENTAGE) {
        if entry.value_from.is_some() {
            return Err(unverifiable(
                container,
                MPS_THREAD_PERCENTAGE,
                annotations::MPS_PERCENTAGE,
            ));
        }
        let value = entry.literal().trim();
        let parsed = value
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| value.parse::<u64>().ok())
            .flatten()
            .and_then(Percentage::new);
        written.percentage = Some(parsed.ok_or_else(|| {
            Denial::new(
                Rule::InvalidValue,
                format!(
                    "container {:?} sets {MPS_THREAD_PERCENTAGE}={:?}; write a whole number from 1 to 100, or use \
                     the annotation {}",
                    container.name,
                    entry.literal(),
                    annotations::MPS_PERCENTAGE
                ),
            )
        })?);
    }
    if let Some(entry) = container.effective_env(MPS_MEMORY_LIMIT) {
        if entry.value_from.is_some() {
            return Err(unverifiable(
                container,
                MPS_MEMORY_LIMIT,
                annotations::MPS_MEMORY_LIMIT,
            ));
        }
        // gpushare writes `0=<size>` (ordinal 0 is the one GPU the container sees).
        let value = entry.literal().trim();
        let size = value.strip_prefix("0=").unwrap_or(value);
        written.memory_limit = Some(MemoryLimit::parse(size).ok_or_else(|| {
            Denial::new(
                Rule::InvalidValue,
                format!(
                    "container {:?} sets {MPS_MEMORY_LIMIT}={:?}; write \"0=\" and a whole number with M or G, e.g. \
                     \"0=512M\", or use the annotation {}",
                    container.name,
                    entry.literal(),
                    annotations::MPS_MEMORY_LIMIT
                ),
            )
        })?);
    }
    Ok(written)
}

/// One GPU index, or a denial that says why the value is not one and names `gpushare.io/gpu`.
fn read_index(container: &Container, raw: &str) -> Result<GpuIndex, Denial> {
    let value = raw.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(index) = value.parse::<u32>() {
            return Ok(GpuIndex(index));
        }
    }
    let lower = value.to_ascii_lowercase();
    let (rule, why) = if value.contains(',') || lower == "all" {
        (
            Rule::MultipleGpus,
            "a module may use only one GPU; write a single index such as \"0\" and deploy a second workload \
             for another GPU",
        )
    } else if lower.starts_with("gpu-") || lower.starts_with("mig-") {
        (
            Rule::InvalidValue,
            "GPUs are named by index here; write an index such as \"0\"",
        )
    } else if hides_gpu(value) {
        (
            Rule::InvalidValue,
            "it gives the container no GPU while it also sets an MPS variable; write the index of its GPU, or \
             remove the MPS variables",
        )
    } else {
        (
            Rule::InvalidValue,
            "it is not a GPU index; write an index such as \"0\"",
        )
    };
    Err(Denial::new(
        rule,
        format!(
            "container {:?} sets {VISIBLE_DEVICES}={raw:?}: {why}, or use the annotation {} (an index or auto) \
             instead of the variable",
            container.name,
            annotations::GPU
        ),
    ))
}

/// The one value several containers agree on, or a denial naming the two that differ.
fn agree<T: PartialEq + Clone + std::fmt::Display>(
    values: &[(&Container, Option<T>)],
    what: &str,
    rule: Rule,
    fix: &str,
) -> Result<Option<T>, Denial> {
    let mut first: Option<(&Container, &T)> = None;
    for (container, value) in values {
        let Some(value) = value else { continue };
        match first {
            None => first = Some((container, value)),
            Some((other, earlier)) if earlier != value => {
                return Err(Denial::new(
                    rule,
                    format!(
                    "containers {:?} and {:?} set {what} to \"{earlier}\" and \"{value}\": {fix}",
                    other.name, container.name
                ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(first.map(|(_, value)| value.clone()))
}

/// A workload without gpushare annotations whose containers write the GPU variables themselves,
/// read as the annotations they stand for: the index written (else the policy's default GPU), the
/// percentage and memory limit written, and the containers that wrote them. `None` when no
/// container uses a GPU by hand.
pub fn module_request(
    workload: &Workload,
    default_gpu: GpuChoice,
) -> Result<Option<ModuleRequest>, Denial> {
    let pod = &workload.pod;
    let by_hand: Vec<&Container> = pod
        .containers
        .iter()
        .chain(&pod.init_containers)
        .filter(|c| uses_gpu(c))
        .collect();
    if by_hand.is_empty() {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(by_hand.len());
    for container in &by_hand {
        values.push((*container, read(container)?));
    }
    let gpus: Vec<_> = values.iter().map(|(c, w)| (*c, w.gpu)).collect();
    let gpu = agree(
        &gpus,
        VISIBLE_DEVICES,
        Rule::MultipleGpus,
        "a module may use only one GPU; deploy a second workload for the other GPU",
    )?;
    let percentages: Vec<_> = values.iter().map(|(c, w)| (*c, w.percentage)).collect();
    let percentage = agree(
        &percentages,
        MPS_THREAD_PERCENTAGE,
        Rule::InvalidValue,
        "a module has one share per pod; write one value, or use the annotation gpushare.io/mps-percentage",
    )?;
    let limits: Vec<_> = values
        .iter()
        .map(|(c, w)| (*c, w.memory_limit.as_ref().map(MemoryLimit::as_str)))
        .collect();
    let memory_limit = agree(
        &limits,
        MPS_MEMORY_LIMIT,
        Rule::InvalidValue,
        "write one value, or use the annotation gpushare.io/mps-memory-limit",
    )?
    .and_then(MemoryLimit::parse);
    let implies_mps = percentage.is_some() || memory_limit.is_some();
    Ok(Some(ModuleRequest {
        gpu: gpu.map_or(default_gpu, GpuChoice::Index),
        mode: implies_mps.then_some(Mode::Mps),
        percentage,
        memory_limit,
        containers: Some(
            pod.containers
                .iter()
                .filter(|c| uses_gpu(c))
                .map(|c| c.name.clone())
                .collect(),
        ),
    }))
}

/// Containers gpushare does not write to that use a GPU by hand, taken together: each is one
/// more client process of the module's GPU, with the percentage it writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extras {
    /// The one index they name (`None` when there are none).
    pub gpu: Option<GpuIndex>,
    /// The first of them, for messages.
    pub first: Option<String>,
    pub clients: u32,
    /// The MPS percentages they write, summed (per pod).
    pub percentage: u32,
}

/// Reads `containers` (those gpushare leaves alone) into one more client process each; every one
/// must name the same single GPU.
pub fn extras<'a>(containers: impl IntoIterator<Item = &'a Container>) -> Result<Extras, Denial> {
    let mut extras = Extras::default();
    let mut first: Option<&Container> = None;
    for container in containers.into_iter().filter(|c| uses_gpu(c)) {
        let written = read(container)?;
        let Some(gpu) = written.gpu else {
            return Err(Denial::new(
                Rule::InvalidValue,
                format!(
                    "container {:?} sets an MPS variable but no {VISIBLE_DEVICES}, so it would see every GPU its \
                     image names; write the index of the module's GPU, or list the container in {}",
                    container.name,
                    annotations::CONTAINERS
                ),
            ));
        };
        match (first, extras.gpu) {
            (Some(other), Some(earlier)) if earlier != gpu => {
                return Err(Denial::new(
                    Rule::MultipleGpus,
                    format!(
                        "containers {:?} and {:?} set {VISIBLE_DEVICES} to \"{earlier}\" and \"{gpu}\": a module may \
                         use only one GPU; make them name the same GPU",
                        other.name, container.name
                    ),
                ))
            }
            _ => {
                first.get_or_insert(container);
                extras.first.get_or_insert_with(|| container.name.clone());
                extras.gpu = Some(gpu);
            }
        }
        extras.clients += 1;
        extras.percentage += written.percentage.map_or(0, Percentage::get);
    }
    Ok(extras)
}

/// The containers of a module gpushare does not write to: unselected ones (unless the policy
/// hides the GPU from them) and every init container.
pub fn unwritten<'a>(
    workload: &'a Workload,
    selected: &'a [bool],
    hide_from_others: bool,
) -> impl Iterator<Item = &'a Container> {
    let pod = &workload.pod;
    pod.containers
        .iter()
        .zip(selected)
        .filter(move |(_, &is_selected)| !is_selected && !hide_from_others)
        .map(|(c, _)| c)
        .chain(&pod.init_containers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(env: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "env": env})).unwrap()
    }

    #[test]
    fn what_counts_as_using_a_gpu_by_hand() {
        let uses = |env| uses_gpu(&container(env));
        assert!(uses(
            serde_json::json!([{"name": VISIBLE_DEVICES, "value": "0"}])
        ));
        assert!(uses(
            serde_json::json!([{"name": VISIBLE_DEVICES, "value": "all"}])
        ));
        assert!(uses(
            serde_json::json!([{"name": VISIBLE_DEVICES, "valueFrom": {"fieldRef": {}}}])
        ));
        assert!(uses(
            serde_json::json!([{"name": MPS_THREAD_PERCENTAGE, "value": "20"}])
        ));
        for hidden in ["none", "void", "", "VOID"] {
            assert!(!uses(
                serde_json::json!([{"name": VISIBLE_DEVICES, "value": hidden}])
            ));
        }
        // The kubelet lets a later duplicate win.
        assert!(!uses(serde_json::json!([
            {"name": VISIBLE_DEVICES, "value": "0"}, {"name": VISIBLE_DEVICES, "value": "void"}])));
    }

    #[test]
    fn values_that_cannot_be_checked_name_the_annotation_to_use() {
        for (env, rule, annotation) in [
            (
                serde_json::json!([{"name": VISIBLE_DEVICES, "valueFrom": {}}]),
                Rule::Unverifiable,
                annotations::GPU,
            ),
            (
                serde_json::json!([{"name": VISIBLE_DEVICES, "value": "0,1"}]),
                Rule::MultipleGpus,
                annotations::GPU,
            ),
            (
                serde_json::json!([{"name": VISIBLE_DEVICES, "value": "GPU-3b1f"}]),
                Rule::InvalidValue,
                annotations::GPU,
            ),
            (
                serde_json::json!([{"name": MPS_THREAD_PERCENTAGE, "value": "0"}]),
                Rule::InvalidValue,
                annotations::MPS_PERCENTAGE,
            ),
            (
                serde_json::json!([{"name": MPS_MEMORY_LIMIT, "value": "lots"}]),
                Rule::InvalidValue,
                annotations::MPS_MEMORY_LIMIT,
            ),
        ] {
            let denial = read(&container(env.clone())).expect_err("denied");
            assert_eq!(denial.rule, rule, "{env}");
            assert!(denial.message.contains(annotation), "{}", denial.message);
        }
        let written = read(&container(serde_json::json!([
            {"name": VISIBLE_DEVICES, "value": "1"},
            {"name": MPS_THREAD_PERCENTAGE, "value": "60"},
            {"name": MPS_MEMORY_LIMIT, "value": "0=2G"}])))
        .unwrap();
        assert_eq!(written.gpu, Some(GpuIndex(1)));
        assert_eq!(written.percentage.map(Percentage::get), Some(60));
        assert_eq!(written.memory_limit.unwrap().as_str(), "2G");
    }
}
