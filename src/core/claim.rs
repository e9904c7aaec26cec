//! What an admitted workload costs (a claim), and the codec of the `gpushare.io/assigned-*`
//! annotations that record it on the object. The decision returns a claim; the cluster cache,
//! `check`, `status` and the commit step keep claims; a claim read back from the stored object
//! equals the one the decision returned, so nothing is rebuilt by hand or lost on the way.

use std::fmt;

use crate::core::annotations::{
    self, UserAnnotations, ASSIGNED_GPU, ASSIGNED_MODE, ASSIGNED_MPS_PERCENTAGE,
};
use crate::core::domain::{GpuIndex, Mode, Percentage};
use crate::core::inventory::Placement;
use crate::core::workload::{Annotations, Container, Workload, WorkloadKey};

/// How a module shares its GPU: whole (time-slicing) or an MPS share per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Share {
    TimeSlicing,
    Mps(Percentage),
}

impl Share {
    pub fn mode(self) -> Mode {
        match self {
            Share::TimeSlicing => Mode::TimeSlicing,
            Share::Mps(_) => Mode::Mps,
        }
    }

    pub fn percentage(self) -> Option<Percentage> {
        match self {
            Share::TimeSlicing => None,
            Share::Mps(p) => Some(p),
        }
    }
}

/// The assignment as the `gpushare.io/assigned-*` annotations record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Assigned {
    pub gpu: GpuIndex,
    pub share: Share,
}

impl Assigned {
    /// Reads the annotations; `None` unless they name a GPU and a mode (and, for mps, a
    /// percentage) that gpushare could have written.
    pub fn read(annotations: Option<&Annotations>) -> Option<Assigned> {
        let annotations = annotations?;
        let gpu = GpuIndex(annotations.get(ASSIGNED_GPU)?.trim().parse().ok()?);
        let share = match Mode::parse(annotations.get(ASSIGNED_MODE)?.trim())? {
            Mode::TimeSlicing => Share::TimeSlicing,
            Mode::Mps => Share::Mps(
                annotations
                    .get(ASSIGNED_MPS_PERCENTAGE)?
                    .trim()
                    .parse()
                    .ok()
                    .and_then(Percentage::new)?,
            ),
        };
        Some(Assigned { gpu, share })
    }

    /// Whether the annotations carry an assignment at all (even a damaged one).
    pub fn is_recorded(annotations: Option<&Annotations>) -> bool {
        annotations.is_some_and(|a| a.contains_key(ASSIGNED_GPU))
    }

    /// The annotations to set, and the assigned keys to remove.
    pub fn encode(&self) -> (Vec<(&'static str, String)>, Vec<&'static str>) {
        let mut set = vec![
            (ASSIGNED_GPU, self.gpu.to_string()),
            (ASSIGNED_MODE, self.share.mode().as_str().to_string()),
        ];
        let mut remove = Vec::new();
        match self.share.percentage() {
            Some(p) => set.push((ASSIGNED_MPS_PERCENTAGE, p.to_string())),
            None => remove.push(ASSIGNED_MPS_PERCENTAGE),
        }
        (set, remove)
    }
}

/// `gpu=1 mode=mps 20%`, as `gpushare check` prints it.
impl fmt::Display for Assigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gpu={} mode={}", self.gpu, self.share.mode())?;
        match self.share.percentage() {
            Some(p) => write!(f, " {p}%"),
            None => Ok(()),
        }
    }
}

/// What one admitted workload holds: its GPU on every candidate node, for `pods` pods of
/// `containers` client processes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: WorkloadKey,
    pub placement: Placement,
    pub assigned: Assigned,
    /// Pods per candidate node.
    pub pods: u32,
    /// Selected containers per pod: each is one client process of the GPU.
    pub containers: u32,
}

impl Claim {
    pub fn gpu(&self) -> GpuIndex {
        self.assigned.gpu
    }

    pub fn mode(&self) -> Mode {
        self.assigned.share.mode()
    }

    /// Client processes: pods x selected containers. Saturating: pods may be as large as int32
    /// allows, and any saturated sum is over every cap.
    pub fn clients(&self) -> u32 {
        self.pods.saturating_mul(self.containers)
    }

    /// Committed MPS percentage: pods x percentage (0 in time-slicing mode).
    pub fn committed_percentage(&self) -> u32 {
        self.assigned
            .share
            .percentage()
            .map_or(0, |p| p.get().saturating_mul(self.pods))
    }

    /// The claim a stored workload holds: the assignment its pods carry (the pod template's
    /// annotations, else the object's), for its pods and selected containers. `None` when it
    /// holds nothing: no assignment, owned by a controller (the controller counts), or finished.
    pub fn of_stored(workload: &Workload) -> Option<Claim> {
        if workload.controller.is_some() || workload.finished {
            return None;
        }
        let assigned = Assigned::read(workload.pod_annotations())
            .or_else(|| Assigned::read(workload.annotations()))?;
        let listed = UserAnnotations::collect(workload)
            .ok()
            .and_then(|user| user.get(annotations::CONTAINERS))
            .map(annotations::container_names);
        let containers = selection(&workload.pod.containers, listed.as_deref())
            .iter()
            .filter(|s| **s)
            .count() as u32;
        Some(Claim {
            key: workload.key.clone(),
            placement: workload.placement(),
            assigned,
            pods: workload.pods,
            containers,
        })
    }
}

/// Which containers get the GPU, by position: those listed in `gpushare.io/containers`, or all.
pub fn selection(containers: &[Container], listed: Option<&[String]>) -> Vec<bool> {
    match listed {
        None => vec![true; containers.len()],
        Some(listed) => containers
            .iter()
            .map(|c| listed.contains(&c.name))
            .collect(),
    }
}

/// What an allowed admission changes in what is committed: the step after deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimChange {
    /// The workload now holds this claim (new, or changed).
    Hold(Claim),
    /// The workload holds nothing any more (released, or finished).
    Free(WorkloadKey),
}

impl ClaimChange {
    pub fn key(&self) -> &WorkloadKey {
        match self {
            ClaimChange::Hold(claim) => &claim.key,
            ClaimChange::Free(key) => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::workload::Kind;

    fn annotations(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_codec_round_trips_and_rejects_what_gpushare_never_writes() {
        for assigned in [
            Assigned {
                gpu: GpuIndex(1),
                share: Share::Mps(Percentage::new(20).unwrap()),
            },
            Assigned {
                gpu: GpuIndex(0),
                share: Share::TimeSlicing,
            },
        ] {
            let (set, _) = assigned.encode();
            let written: Annotations = set.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            assert_eq!(Assigned::read(Some(&written)), Some(assigned));
        }
        assert_eq!(
            Assigned::read(Some(&annotations(&[
                (ASSIGNED_GPU, "0"),
                (ASSIGNED_MODE, "mps")
            ]))),
            None,
            "mps without a percentage"
        );
        assert_eq!(
            Assigned::read(Some(&annotations(&[
                (ASSIGNED_GPU, "x"),
                (ASSIGNED_MODE, "time-slicing")
            ]))),
            None
        );
        assert!(Assigned::is_recorded(Some(&annotations(&[(
            ASSIGNED_GPU,
            "x"
        )]))));
    }

    #[test]
    fn a_stored_workload_claims_pods_times_selected_containers() {
        let raw = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m", "namespace": "ns", "annotations": {"gpushare.io/containers": "a, b"}},
            "spec": {"parallelism": 3, "template": {
                "metadata": {"annotations": {ASSIGNED_GPU: "1", ASSIGNED_MODE: "mps", ASSIGNED_MPS_PERCENTAGE: "20"}},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "nodeSelector": {"edge": "1"}}}}
        }))
        .unwrap();
        let claim = Claim::of_stored(&Workload::from_raw(Kind::Job, raw)).unwrap();
        assert_eq!(claim.key.to_string(), "ns/Job/m");
        assert_eq!(
            (claim.gpu(), claim.clients(), claim.committed_percentage()),
            (GpuIndex(1), 6, 60)
        );
        assert_eq!(
            claim
                .placement
                .node_selector
                .get("edge")
                .map(String::as_str),
            Some("1")
        );
    }
}
