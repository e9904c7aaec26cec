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

pub use crate::core::denial::{Denial, Rule};
