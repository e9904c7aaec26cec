//! Workload annotations (CONTRACT section 2): read from the object's metadata and its pod
//! template, checked for typos and conflicts, and parsed once into a typed `ModuleRequest`.

use crate::core::denial::{Denial, Rule};
use crate::core::domain::{GpuIndex, MemoryLimit, Mode, Percentage};
use crate::core::policy::GpuChoice;

pub use crate::core::keys::*;

use crate::core::workload::{Annotations, Workload};

/// The user's gpushare keys, merged from the object's metadata and its pod template.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UserAnnotations<'a> {
    values: [Option<&'a str>; 5],
}

impl<'a> UserAnnotations<'a> {
    /// Merges the object's metadata and its pod template's (a Pod has only the one); a key set
    /// to different values in each, or an unknown `gpushare.io/` key anywhere, is denied.
    pub fn collect(workload: &'a Workload) -> Result<UserAnnotations<'a>, Denial> {
        UserAnnotations::merge([
            ("metadata", workload.annotations()),
            (
                workload.layout().template_metadata_field,
                workload.template_annotations(),
            ),
        ])
    }

    /// Merges annotation maps, each named by its place (`metadata`, `spec.template.metadata`).
    pub fn merge(
        places: [(&str, Option<&'a Annotations>); 2],
    ) -> Result<UserAnnotations<'a>, Denial> {
        let mut merged = UserAnnotations::default();
        let first = places[0].0;
        for (place, annotations) in places {
            for (key, value) in annotations.into_iter().flatten() {
                if !key.starts_with(PREFIX) || ASSIGNED_KEYS.contains(&key.as_str()) {
                    continue;
                }
                let Some(slot) = USER_KEYS.iter().position(|k| k == key) else {
                    return Err(unknown_key(key, place));
                };
                match merged.values[slot] {
                    Some(earlier) if earlier != value => {
                        return Err(Denial::new(
                            Rule::InvalidValue,
                            format!(
                                "{key} is {earlier:?} in {first}.annotations but {value:?} in \
                                 {place}.annotations; set it in one place, or to the same value in both"
                            ),
                        ))
                    }
                    _ => merged.values[slot] = Some(value.as_str()),
                }
            }
        }
        Ok(merged)
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        USER_KEYS
            .iter()
            .position(|k| *k == key)
            .and_then(|slot| self.values[slot])
    }

    /// A workload with at least one user key is managed.
    pub fn is_managed(&self) -> bool {
        self.values.iter().any(Option::is_some)
    }

    /// Parses every value; the first malformed one is denied.
    pub fn parse(&self, default_gpu: GpuChoice) -> Result<ModuleRequest, Denial> {
        let gpu = match self.get(GPU) {
            Some(value) => parse_gpu(value)?,
            None => default_gpu,
        };
        let explicit_mode = self.get(MODE).map(parse_mode).transpose()?;
        let percentage = self.get(MPS_PERCENTAGE).map(parse_percentage).transpose()?;
        let memory_limit = self
            .get(MPS_MEMORY_LIMIT)
            .map(parse_memory_limit)
            .transpose()?;
        let containers = self.get(CONTAINERS).map(parse_containers).transpose()?;
        let implies_mps = percentage.is_some() || memory_limit.is_some();
        if explicit_mode == Some(Mode::TimeSlicing) && implies_mps {
            let key = if percentage.is_some() {
                MPS_PERCENTAGE
            } else {
                MPS_MEMORY_LIMIT
            };
            return Err(Denial::new(
                Rule::InvalidValue,
                format!(
                    "{key} applies only to mps, but {MODE} is \"time-slicing\"; remove {key} or set {MODE}: mps"
                ),
            ));
        }
        let mode = explicit_mode.or(implies_mps.then_some(Mode::Mps));
        Ok(ModuleRequest {
            gpu,
            mode,
            percentage,
            memory_limit,
            containers,
        })
    }
}

/// What a managed module asks for, every value well formed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleRequest {
    pub gpu: GpuChoice,
    /// `None` when neither the mode nor an mps-only key was given: the GPU's mode applies.
    pub mode: Option<Mode>,
    pub percentage: Option<Percentage>,
    pub memory_limit: Option<MemoryLimit>,
    /// `None` means every container.
    pub containers: Option<Vec<String>>,
}

fn unknown_key(key: &str, place: &str) -> Denial {
    let known = USER_KEYS.join(", ");
    let hint = closest_key(key)
        .map(|k| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    Denial::new(
        Rule::UnknownAnnotation,
        format!("unknown annotation {key} in {place}{hint}; gpushare understands {known}"),
    )
}

/// The known key sharing the longest prefix with a typo, if it shares a reasonable one.
fn closest_key(key: &str) -> Option<&'static str> {
    let common = |k: &str| {
        k.bytes()
            .zip(key.bytes())
            .take_while(|(a, b)| a == b)
            .count()
    };
    USER_KEYS
        .iter()
        .copied()
        .max_by_key(|k| common(k))
        .filter(|k| common(k) > PREFIX.len() + 1)
}

fn parse_gpu(raw: &str) -> Result<GpuChoice, Denial> {
    let value = raw.trim();
    if value.eq_ignore_ascii_case("auto") {
        return Ok(GpuChoice::Auto);
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse::<u32>()
            .map(|i| GpuChoice::Index(GpuIndex(i)))
            .map_err(|_| {
                Denial::new(
                    Rule::InvalidValue,
                    format!("{GPU} is {raw:?}: not a GPU index; use 0, 1 or auto"),
                )
            });
    }
    let lower = value.to_ascii_lowercase();
    let several = value.contains(',') || value.contains(' ') || lower == "all";
    let range = value.contains('-')
        && value
            .split('-')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let uuid = lower.starts_with("gpu-") || lower.starts_with("mig-");
    let message = if several || range {
        format!(
            "{GPU} is {raw:?}: a module may use only one GPU; set one index such as \"0\" or \"auto\", \
             and deploy a second workload for another GPU"
        )
    } else if uuid {
        format!("{GPU} is {raw:?}: GPUs are named by index here; set one index such as \"0\" or \"auto\"")
    } else {
        format!("{GPU} is {raw:?}: not a GPU index; set one index such as \"0\" or \"auto\"")
    };
    let rule = if several || range {
        Rule::MultipleGpus
    } else {
        Rule::InvalidValue
    };
    Err(Denial::new(rule, message))
}

fn parse_mode(raw: &str) -> Result<Mode, Denial> {
    Mode::parse(raw.trim()).ok_or_else(|| {
        Denial::new(
            Rule::InvalidValue,
            format!("{MODE} is {raw:?}; use \"time-slicing\" or \"mps\""),
        )
    })
}

fn parse_percentage(raw: &str) -> Result<Percentage, Denial> {
    let value = raw.trim();
    value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse::<u64>().ok())
        .flatten()
        .and_then(Percentage::new)
        .ok_or_else(|| {
            Denial::new(
                Rule::InvalidValue,
                format!(
                    "{MPS_PERCENTAGE} is {raw:?}; use a whole number from 1 to 100, e.g. \"25\""
                ),
            )
        })
}

fn parse_memory_limit(raw: &str) -> Result<MemoryLimit, Denial> {
    MemoryLimit::parse(raw.trim()).ok_or_else(|| {
        Denial::new(
            Rule::InvalidValue,
            format!("{MPS_MEMORY_LIMIT} is {raw:?}; use a whole number followed by M or G, e.g. \"512M\" or \"2G\""),
        )
    })
}

/// The names a `gpushare.io/containers` value lists.
pub fn container_names(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_containers(raw: &str) -> Result<Vec<String>, Denial> {
    let names = container_names(raw);
    if names.is_empty() {
        return Err(Denial::new(
            Rule::InvalidValue,
            format!("{CONTAINERS} is {raw:?} and names no container; list container names, or remove it to select all"),
        ));
    }
    Ok(names)
}
