//! A denial: which rule refused an object, the HTTP code that goes with it, and the message that
//! tells the user what to change. Every part of the core may deny, so this sits below them all.

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
    /// A change Kubernetes cannot apply to a Job's or a Pod's pod template after creation.
    FixedTemplate,
    /// The commitment could not be recorded in the API server in time (docs/design.md, "The ledger").
    Unrecorded,
    /// A container writes the GPU variables itself and policy `handWrittenGpuEnv` is `deny`.
    HandWritten,
    /// Pod Security would refuse the pods the mutation makes (rule 8).
    PodSecurity,
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
            Rule::FixedTemplate => "fixed_template",
            Rule::Unrecorded => "unrecorded",
            Rule::HandWritten => "hand_written",
            Rule::PodSecurity => "pod_security",
        }
    }

    /// 400 for values that are malformed, 503 for a commitment that could not be recorded in
    /// time (the same request may pass when retried), 403 for well-formed requests the rules
    /// forbid.
    pub fn http_code(self) -> u16 {
        match self {
            Rule::InvalidValue | Rule::UnknownAnnotation => 400,
            // Not the user's fault: the same request may pass when retried.
            Rule::Unrecorded => 503,
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
