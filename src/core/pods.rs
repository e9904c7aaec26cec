//! How many pods a module runs at once on one candidate node (CONTRACT section 2a): its replicas
//! (or parallelism), plus the extra pods a rolling update starts beside the old ones before it
//! stops them (`maxSurge`). The surge is kept apart from the replicas so that a change of replicas
//! through the scale subresource resolves a percentage surge again, as the rollout would.

use std::fmt;

/// Extra pods a rollout may run: none, a fixed count, or a percentage of the replicas rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Surge {
    #[default]
    None,
    Pods(u32),
    Percent(u32),
}

impl Surge {
    /// The surge pods for `replicas`: a percentage is resolved against the replicas rounding up,
    /// as the Deployment controller does.
    pub fn pods(self, replicas: u32) -> u32 {
        match self {
            Surge::None => 0,
            Surge::Pods(n) => n,
            Surge::Percent(p) => {
                let scaled = u64::from(replicas) * u64::from(p);
                u32::try_from(scaled.div_ceil(100)).unwrap_or(u32::MAX)
            }
        }
    }
}

/// Pods per candidate node: replicas, and the rollout's surge on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PodCount {
    pub replicas: u32,
    pub surge: Surge,
}

impl PodCount {
    /// A count without a rollout surge (Jobs, Pods, StatefulSets, ReplicaSets).
    pub fn fixed(pods: u32) -> PodCount {
        PodCount {
            replicas: pods,
            surge: Surge::None,
        }
    }

    /// Every pod that may run at once.
    pub fn total(self) -> u32 {
        self.replicas.saturating_add(self.surge.pods(self.replicas))
    }

    /// The surge pods on top of the replicas.
    pub fn surge_pods(self) -> u32 {
        self.surge.pods(self.replicas)
    }

    /// The same rollout with another number of replicas (a scale).
    pub fn with_replicas(self, replicas: u32) -> PodCount {
        PodCount { replicas, ..self }
    }
}

/// `3` or `2 + maxSurge 1`, as denials explain a count.
impl fmt::Display for PodCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.surge_pods() {
            0 => write!(f, "{}", self.replicas),
            surge => write!(f, "{} + maxSurge {surge}", self.replicas),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentage_surge_rounds_up_against_the_replicas() {
        let default = Surge::Percent(25);
        assert_eq!(default.pods(1), 1);
        assert_eq!(default.pods(4), 1);
        assert_eq!(default.pods(5), 2);
        assert_eq!(default.pods(0), 0);
        assert_eq!(Surge::Pods(2).pods(0), 2);
        let count = PodCount {
            replicas: 2,
            surge: default,
        };
        assert_eq!(
            (count.total(), count.to_string()),
            (3, "2 + maxSurge 1".into())
        );
        assert_eq!(count.with_replicas(8).total(), 10);
        assert_eq!(PodCount::fixed(3).to_string(), "3");
    }
}
