//! What an admitted workload costs (a claim), and the codec of the `gpushare.io/assigned-*`
//! annotations that record it on the object. The decision returns a claim; the cluster cache,
//! `check`, `status` and the commit step keep claims; a claim read back from the stored object
//! equals the one the decision returned, so nothing is rebuilt by hand or lost on the way.

use std::fmt;

use crate::core::annotations::{
    self, UserAnnotations, ASSIGNED_GPU, ASSIGNED_MODE, ASSIGNED_MPS_PERCENTAGE,
};
use crate::core::domain::{GpuIndex, Mode, Percentage};
use crate::core::handwritten::{self, Extras};
use crate::core::pods::PodCount;
use crate::core::workload::Placement;
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
        // Room for the percentage too: no regrowth on the mps path.
        let mut set = Vec::with_capacity(3);
        set.push((ASSIGNED_GPU, self.gpu.to_string()));
        set.push((ASSIGNED_MODE, self.share.mode().as_str().to_string()));
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
    pub pods: PodCount,
    /// Client processes per pod: the selected containers, and the containers gpushare leaves
    /// alone that use the module's GPU by hand.
    pub containers: u32,
    /// MPS percentage per pod that containers gpushare leaves alone write by hand, on top of the
    /// module's share.
    pub extra_percentage: u32,
}

/// The client processes of one pod of a module.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PerPod {
    /// The containers gpushare writes the GPU to.
    pub selected: u32,
    /// The containers that use the module's GPU by hand.
    pub extras: Extras,
}

impl Claim {
    /// The one way to build a claim: what a module of `key` holds with `assigned`, for `pods` pods
    /// of `per_pod` client processes each.
    pub fn new(
        key: WorkloadKey,
        placement: Placement,
        assigned: Assigned,
        pods: PodCount,
        per_pod: PerPod,
    ) -> Claim {
        Claim {
            key,
            placement,
            assigned,
            pods,
            containers: per_pod.selected.saturating_add(per_pod.extras.clients),
            extra_percentage: per_pod.extras.percentage,
        }
    }

    pub fn gpu(&self) -> GpuIndex {
        self.assigned.gpu
    }

    pub fn mode(&self) -> Mode {
        self.assigned.share.mode()
    }

    /// Every pod that may run at once on a candidate node, a rollout's surge included.
    pub fn pods(&self) -> u32 {
        self.pods.total()
    }

    /// Client processes: pods x client processes per pod. Saturating: pods may be as large as
    /// int32 allows, and any saturated sum is over every cap.
    pub fn clients(&self) -> u32 {
        self.pods().saturating_mul(self.containers)
    }

    /// Committed MPS percentage: pods x (the module's percentage + what its other containers
    /// write by hand); 0 in time-slicing mode.
    pub fn committed_percentage(&self) -> u32 {
        self.assigned.share.percentage().map_or(0, |p| {
            p.get()
                .saturating_add(self.extra_percentage)
                .saturating_mul(self.pods())
        })
    }

    /// The same module with another number of replicas (a scale), its rollout surge resolved again.
    pub fn with_replicas(&self, replicas: u32) -> Claim {
        Claim {
            pods: self.pods.with_replicas(replicas),
            ..self.clone()
        }
    }

    /// The claim a stored workload holds, read back from the object as the decision would have
    /// made it: the assignment its pods carry (the pod template's annotations, else the object's)
    /// or, for one stored without an assignment, the GPU its containers write by hand. `exempt`:
    /// the object is made by a built-in controller whose template counts, so it holds only what
    /// its ephemeral containers use by hand. `None` when it holds nothing.
    pub fn of_stored(workload: &Workload, exempt: bool) -> Option<Claim> {
        if workload.finished {
            return None;
        }
        if exempt {
            return Claim::of_ephemeral(workload);
        }
        let ephemeral = lenient_extras(&workload.pod.ephemeral_containers);
        let assigned = Assigned::read(workload.pod_annotations())
            .or_else(|| Assigned::read(workload.annotations()));
        let (assigned, selected) = match assigned {
            Some(assigned) => {
                let user = UserAnnotations::collect(workload).ok();
                let selected = match user.as_ref().filter(|u| u.is_managed()) {
                    Some(user) => {
                        let listed = user
                            .get(annotations::CONTAINERS)
                            .map(annotations::container_names);
                        selection(&workload.pod.containers, listed.as_deref())
                    }
                    // A module read from its hand-written variables selects the containers that wrote them.
                    None if handwritten::any(workload) => workload
                        .pod
                        .containers
                        .iter()
                        .map(handwritten::uses_gpu)
                        .collect(),
                    None => selection(&workload.pod.containers, None),
                };
                (assigned, selected)
            }
            // Stored without gpushare's assignment (while it was down, or before it was installed):
            // counted on the GPU its containers name, with the share they write; else it holds
            // what its ephemeral containers use by hand, if anything.
            None => (
                match Assigned::written_by_hand(
                    workload
                        .pod
                        .containers
                        .iter()
                        .chain(&workload.pod.init_containers),
                ) {
                    Some(assigned) => assigned,
                    None => return Claim::of_ephemeral(workload),
                },
                workload
                    .pod
                    .containers
                    .iter()
                    .map(handwritten::uses_gpu)
                    .collect(),
            ),
        };
        let mut extras = lenient_extras(handwritten::unwritten(workload, &selected, false));
        extras.clients += ephemeral.clients;
        extras.percentage += ephemeral.percentage;
        let per_pod = PerPod {
            selected: selected.iter().filter(|s| **s).count() as u32,
            extras,
        };
        Some(Claim::new(
            workload.key.clone(),
            workload.placement(),
            assigned,
            workload.pods,
            per_pod,
        ))
    }

    /// What a Pod made by a built-in controller holds of its own: the ephemeral containers
    /// (`kubectl debug`) that use a GPU by hand, on the GPU they name.
    fn of_ephemeral(workload: &Workload) -> Option<Claim> {
        let assigned = Assigned::written_by_hand(&workload.pod.ephemeral_containers)?;
        let extras = lenient_extras(&workload.pod.ephemeral_containers);
        Some(Claim::new(
            workload.key.clone(),
            workload.placement(),
            assigned,
            workload.pods,
            PerPod {
                selected: 0,
                extras: Extras {
                    percentage: extras
                        .percentage
                        .saturating_sub(assigned.share.percentage().map_or(0, Percentage::get)),
                    ..extras
                },
            },
        ))
    }
}

impl Assigned {
    /// The assignment containers that use a GPU by hand stand for: the first index they write,
    /// with an MPS share when they write a percentage. `None` when none of them names an index.
    pub fn written_by_hand<'a>(
        containers: impl IntoIterator<Item = &'a Container>,
    ) -> Option<Assigned> {
        let written: Vec<handwritten::Written> = containers
            .into_iter()
            .filter(|c| handwritten::uses_gpu(c))
            .filter_map(|c| handwritten::read(c).ok())
            .collect();
        let gpu = written.iter().find_map(|w| w.gpu)?;
        let share = written
            .iter()
            .find_map(|w| w.percentage)
            .map_or(Share::TimeSlicing, Share::Mps);
        Some(Assigned { gpu, share })
    }
}

/// Containers that use a GPU by hand in a stored object, each one client process with the
/// percentage it writes (values gpushare would have refused count as a client only).
fn lenient_extras<'a>(containers: impl IntoIterator<Item = &'a Container>) -> Extras {
    let mut extras = Extras::default();
    for container in containers.into_iter().filter(|c| handwritten::uses_gpu(c)) {
        let written = handwritten::read(container).unwrap_or_default();
        extras.gpu = extras.gpu.or(written.gpu);
        extras.clients += 1;
        extras.percentage += written.percentage.map_or(0, Percentage::get);
    }
    extras
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
        let claim = Claim::of_stored(&Workload::from_raw(Kind::Job, raw), false).unwrap();
        assert_eq!(claim.key.to_string(), "ns/Job/m");
        assert_eq!(
            (claim.gpu(), claim.clients(), claim.committed_percentage()),
            (GpuIndex(1), 6, 60)
        );
        assert_eq!(claim.placement.node_selector.get("edge"), Some("1"));
    }
}
