//! What the decision core answers: an allowed mutation (patch, warnings, what was assigned) or a
//! denial with an HTTP code and a message that tells the user what to change.

use json_patch::PatchOperation;

use crate::core::claim::{Claim, ClaimChange};
use crate::core::workload::WorkloadKey;

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

impl Mutation {
    /// Allowed as it is: no patch, no warnings.
    pub fn unchanged(outcome: Outcome) -> Mutation {
        Mutation {
            patch: Vec::new(),
            warnings: Vec::new(),
            outcome,
        }
    }
}

/// Why an allowed object looks the way it does afterwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The namespace is excluded by policy: the object is not looked at.
    Excluded,
    /// Made by this built-in controller (`Kind/name`) from its template: not examined and not
    /// counted, the controller's pod template is.
    Controlled(String),
    /// No gpushare annotations: allowed unchanged (after the multi-GPU check).
    Unmanaged,
    /// A finished Job or Pod: it no longer counts against its GPU.
    Finished,
    /// An UPDATE removed the annotations: gpushare's writes were taken back.
    Released,
    /// A managed module, with what it holds.
    Assigned(Claim),
}

impl Outcome {
    /// What this admission changes in the committed claims of `key`, if anything: the input of
    /// the commit step that follows the decision.
    pub fn claim_change(&self, key: &WorkloadKey) -> Option<ClaimChange> {
        match self {
            Outcome::Assigned(claim) => Some(ClaimChange::Hold(claim.clone())),
            Outcome::Released | Outcome::Finished => Some(ClaimChange::Free(key.clone())),
            Outcome::Excluded | Outcome::Controlled(_) | Outcome::Unmanaged => None,
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
