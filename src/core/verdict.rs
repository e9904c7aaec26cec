//! What the decision core answers: an allowed mutation (patch, warnings, what was assigned) or a
//! denial with an HTTP code and a message that tells the user what to change.

use json_patch::PatchOperation;

use crate::core::domain::{GpuIndex, MemoryLimit, Mode, Percentage};

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allowed(Mutation),
    Denied(Denial),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub patch: Vec<PatchOperation>,
    pub warnings: Vec<String>,
    pub outcome: Outcome,
}

/// Why an allowed object looks the way it does afterwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The namespace is excluded by policy: the object is not looked at.
    Excluded,
    /// No gpushare annotations: allowed unchanged (after the multi-GPU check).
    Unmanaged,
    /// An UPDATE removed the annotations: gpushare's writes were taken back.
    Released,
    /// A managed module, with the GPU it got.
    Assigned(Assignment),
}

/// The resolved placement of one module.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub gpu: GpuIndex,
    pub mode: Mode,
    /// Per replica, in mps mode only.
    pub percentage: Option<Percentage>,
    pub memory_limit: Option<MemoryLimit>,
    pub replicas: u32,
    /// Client processes: replicas x selected containers.
    pub clients: u32,
}

impl Assignment {
    /// Committed MPS percentage: replicas x percentage (0 in time-slicing mode).
    pub fn committed_percentage(&self) -> u32 {
        self.percentage
            .map_or(0, |p| p.get().saturating_mul(self.replicas))
    }

    /// `gpu=1 mode=mps 20%`, as `gpushare check` prints it.
    pub fn summary(&self) -> String {
        match self.percentage {
            Some(p) => format!("gpu={} mode={} {}%", self.gpu, self.mode, p),
            None => format!("gpu={} mode={}", self.gpu, self.mode),
        }
    }
}

/// Which rule denied, for metrics labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    MultipleGpus,
    NoSuchGpu,
    InvalidValue,
    UnknownAnnotation,
    ModeMismatch,
    Capacity,
    Reserved,
    Unverifiable,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::MultipleGpus => "multiple_gpus",
            Rule::NoSuchGpu => "no_such_gpu",
            Rule::InvalidValue => "invalid_value",
            Rule::UnknownAnnotation => "unknown_annotation",
            Rule::ModeMismatch => "mode_mismatch",
            Rule::Capacity => "capacity",
            Rule::Reserved => "reserved_for_vm",
            Rule::Unverifiable => "unverifiable",
        }
    }

    /// 400 for values that are malformed, 403 for well-formed requests the rules forbid.
    pub fn http_code(self) -> u16 {
        match self {
            Rule::InvalidValue | Rule::UnknownAnnotation => 400,
            _ => 403,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub rule: Rule,
    pub message: String,
}

impl Denial {
    pub fn new(rule: Rule, message: impl Into<String>) -> Denial {
        Denial {
            rule,
            message: message.into(),
        }
    }

    pub fn code(&self) -> u16 {
        self.rule.http_code()
    }
}
