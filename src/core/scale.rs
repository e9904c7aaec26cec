//! A change of replicas through the scale subresource (`kubectl scale`, HorizontalPodAutoscalers):
//! the stored workload's claim with the new pods count, checked against capacity on the GPU it
//! already holds (CONTRACT section 2a). A Scale carries no annotations and no template, so the
//! claim, not the request, says which GPU and share.

use crate::core::claim::Claim;
use crate::core::decision::demand_of;
use crate::core::inventory::Inventory;
use crate::core::placement::Scope;
use crate::core::policy::Policy;
use crate::core::verdict::{Mutation, Outcome, Verdict};
use crate::core::workload::WorkloadKey;

/// Decides a scale of `key` to `replicas`; `held` is what the workload holds now (`None`: it is
/// not managed, or not stored: allowed unchanged).
pub fn decide(
    key: &WorkloadKey,
    held: Option<&Claim>,
    replicas: u32,
    policy: &Policy,
    inventory: &Inventory,
) -> Verdict {
    let unchanged = |outcome| Verdict::Allowed(Mutation::unchanged(outcome));
    if policy.is_excluded(&key.namespace) {
        return unchanged(Outcome::Excluded);
    }
    let Some(held) = held else {
        return unchanged(Outcome::Unmanaged);
    };
    let claim = held.with_replicas(replicas);
    let mut warnings = Vec::new();
    if claim.pods() > held.pods() {
        let checked = Scope::new(key.clone(), &claim.placement, policy, inventory)
            .and_then(|scope| scope.explicit(claim.gpu(), &demand_of(&claim), &mut warnings));
        if let Err(denial) = checked {
            return Verdict::Denied(denial);
        }
    }
    Verdict::Allowed(Mutation {
        patch: Vec::new(),
        warnings,
        outcome: Outcome::Assigned(claim),
    })
}
