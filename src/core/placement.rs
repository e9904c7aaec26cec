//! Choosing a GPU for a module on its candidate nodes (CONTRACT rules 2, 4, 5 and 6): whether an
//! index exists, is free of VMs and has the module's mode on every candidate node, whether the
//! module fits, and which GPU `auto` takes.

use std::fmt::Write as _;

use crate::core::annotations;
use crate::core::denial::{Denial, Rule};
use crate::core::domain::{GpuIndex, Mode};
use crate::core::inventory::{Inventory, Node, Placement};
use crate::core::pods::PodCount;
use crate::core::policy::{Enforcement, Policy, Strategy};
use crate::core::workload::WorkloadKey;

/// What one module needs from a GPU.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    /// Pods per candidate node: replicas, and the surge of a rolling update.
    pub pods: PodCount,
    pub clients: u32,
    /// The field that sets `pods`, for messages (`replicas`, `parallelism`; `None`: always 1).
    pub pods_field: Option<&'static str>,
    /// The requested mode; `None` takes the GPU's.
    pub mode: Option<Mode>,
    /// MPS percentage per pod, used only if the module lands on an mps GPU: its share and what
    /// its other containers write by hand.
    pub percentage: u32,
}

impl Demand {
    /// `lower replicas or <then>`, or `lower <then>` for kinds that run one pod per node; a
    /// rollout's surge pods are named, since users rarely count them.
    fn lower(&self, then: &str) -> String {
        let surge = if self.pods.surge_pods() > 0 {
            ", or set the rollout's maxSurge to 0 (its surge pods run beside the old ones)"
        } else {
            ""
        };
        match self.pods_field {
            Some(field) => format!("lower {field} or {then}{surge}"),
            None => format!("lower {then}{surge}"),
        }
    }

    fn percentage_on(&self, mode: Mode) -> u32 {
        match mode {
            Mode::Mps => self.pods.total().saturating_mul(self.percentage),
            Mode::TimeSlicing => 0,
        }
    }
}

/// The candidate nodes of one module, with everything needed to judge a GPU index on all of them.
pub struct Scope<'a> {
    key: WorkloadKey,
    nodes: Vec<&'a Node>,
    policy: &'a Policy,
    inventory: &'a Inventory,
}

fn vm_hint() -> &'static str {
    "GPUs passed through to VMs are not available to containers"
}

impl<'a> Scope<'a> {
    pub fn new(
        key: WorkloadKey,
        placement: &'a Placement,
        policy: &'a Policy,
        inventory: &'a Inventory,
    ) -> Result<Scope<'a>, Denial> {
        let nodes: Vec<&Node> = inventory.candidates(placement, policy).collect();
        if nodes.is_empty() {
            let constraint = if placement.node_selector.is_empty() && placement.node_name.is_empty()
            {
                "no node offers a GPU to Kubernetes".to_string()
            } else {
                "no node matches the pod template's nodeSelector/nodeName".to_string()
            };
            return Err(Denial::new(
                Rule::NoSuchGpu,
                format!("{constraint}: the device's GPUs may be assigned to VMs ({}); free a GPU from its VM, or fix the nodeSelector", vm_hint()),
            ));
        }
        if let Some(node) = nodes.iter().find(|n| n.gpu_count(policy) == 0) {
            return Err(Denial::new(
                Rule::NoSuchGpu,
                format!(
                    "node {} offers 0 GPUs to Kubernetes: its GPUs may be assigned to VMs ({}); free a GPU from its VM, \
                     or use a nodeSelector that avoids this node",
                    node.name,
                    vm_hint()
                ),
            ));
        }
        Ok(Scope {
            key,
            nodes,
            policy,
            inventory,
        })
    }

    /// The GPU's mode (the same on every candidate node once `usable` said so).
    pub fn mode_of(&self, gpu: GpuIndex) -> Mode {
        self.policy.gpu_mode(&self.nodes[0].name, gpu)
    }

    /// Rules 2, 4 and 6 for one index: it exists, is not reserved, and has the requested mode, on
    /// every candidate node.
    pub fn usable(&self, gpu: GpuIndex, wanted: Option<Mode>) -> Result<Mode, Denial> {
        let mode = self.available(gpu)?;
        match wanted {
            Some(wanted) if wanted != mode => Err(Denial::new(
                Rule::ModeMismatch,
                format!(
                    "the module asks for {wanted} ({}) but GPU {gpu} is in {mode} mode (policy gpuModes/defaultMode); \
                     {}",
                    mode_source(wanted),
                    self.suggest_mode(wanted)
                ),
            )),
            _ => Ok(mode),
        }
    }

    /// Rules 2 and 6, and one mode across the candidate nodes: the index's mode when it may be assigned.
    fn available(&self, gpu: GpuIndex) -> Result<Mode, Denial> {
        for node in &self.nodes {
            let count = node.gpu_count(self.policy);
            if gpu.0 >= count {
                return Err(Denial::new(
                    Rule::NoSuchGpu,
                    format!(
                        "{} is \"{gpu}\" but node {} offers {count} GPU{} to Kubernetes (indexes 0..{}); {}; \
                         choose an index below {count} or auto",
                        annotations::GPU,
                        node.name,
                        if count == 1 { "" } else { "s" },
                        count - 1,
                        vm_hint()
                    ),
                ));
            }
            if self.policy.is_reserved(&node.name, gpu) {
                return Err(Denial::new(
                    Rule::Reserved,
                    format!(
                        "GPU {gpu} on node {} is reserved for VMs by policy reservedForVms; set gpushare.io/gpu to another index or auto",
                        node.name
                    ),
                ));
            }
        }
        let mode = self.mode_of(gpu);
        if let Some(other) = self
            .nodes
            .iter()
            .find(|n| self.policy.gpu_mode(&n.name, gpu) != mode)
        {
            return Err(Denial::new(
                Rule::ModeMismatch,
                format!(
                    "GPU {gpu} is {mode} on node {} but {} on node {}; pin the module to nodes with one mode using a \
                     nodeSelector",
                    self.nodes[0].name,
                    mode.other(),
                    other.name
                ),
            ));
        }
        Ok(mode)
    }

    /// How many GPU indexes every candidate node has.
    fn shared_count(&self) -> u32 {
        self.nodes
            .iter()
            .map(|n| n.gpu_count(self.policy))
            .min()
            .unwrap_or(0)
    }

    fn suggest_mode(&self, wanted: Mode) -> String {
        let count = self.shared_count();
        let matching: Vec<String> = (0..count)
            .map(GpuIndex)
            .filter(|&g| self.available(g) == Ok(wanted))
            .map(|g| g.to_string())
            .collect();
        if matching.is_empty() {
            format!("no {wanted} GPU is available: ask an admin to set gpuModes in the policy, or use the GPU's mode")
        } else {
            format!("use a {wanted} GPU ({}) or auto", matching.join(", "))
        }
    }

    /// Rule 5 for one index on every candidate node: `Some(reason)` when the module does not fit.
    fn overflow(&self, gpu: GpuIndex, mode: Mode, demand: &Demand) -> Option<String> {
        let wanted_percentage = demand.percentage_on(mode);
        let max_clients = self.policy.max_clients(mode);
        for node in &self.nodes {
            let usage = self.inventory.usage(node, gpu, &self.key, self.policy);
            if let (Mode::Mps, Some(cap)) = (mode, self.policy.max_mps_percentage_per_gpu) {
                if usage.percentage.saturating_add(wanted_percentage) > cap {
                    return Some(format!(
                        "GPU {gpu} on node {}: {}% MPS committed + {} x {}% = {}% exceeds maxMpsPercentagePerGpu {cap}% \
                         ({})",
                        node.name,
                        usage.percentage,
                        pods_term(demand.pods),
                        demand.percentage,
                        usage.percentage.saturating_add(wanted_percentage),
                        demand.lower("gpushare.io/mps-percentage")
                    ));
                }
            }
            if usage.clients.saturating_add(demand.clients) > max_clients {
                return Some(format!(
                    "GPU {gpu} on node {}: {} client processes + {} = {} exceeds the limit of {max_clients}{} \
                     ({})",
                    node.name,
                    usage.clients,
                    demand.clients,
                    usage.clients.saturating_add(demand.clients),
                    if mode == Mode::Mps { " (maxClientsPerGpu, at most 48 with MPS)" } else { " (maxClientsPerGpu)" },
                    demand.lower("list fewer containers in gpushare.io/containers")
                ));
            }
        }
        None
    }

    /// The load `auto` compares: committed MPS percentage, or client share on time-slicing GPUs;
    /// the worst candidate node counts.
    fn load(&self, gpu: GpuIndex, mode: Mode) -> u32 {
        self.nodes
            .iter()
            .map(|node| {
                let usage = self.inventory.usage(node, gpu, &self.key, self.policy);
                match mode {
                    Mode::Mps => usage.percentage,
                    Mode::TimeSlicing => {
                        usage.clients.saturating_mul(100) / self.policy.max_clients_per_gpu
                    }
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// A named index (or the one kept on UPDATE): usable, and within capacity unless enforcement warns.
    pub fn explicit(
        &self,
        gpu: GpuIndex,
        demand: &Demand,
        warnings: &mut Vec<String>,
    ) -> Result<GpuIndex, Denial> {
        let mode = self.usable(gpu, demand.mode)?;
        if let Some(reason) = self.overflow(gpu, mode, demand) {
            self.over_capacity(reason, warnings)?;
        }
        Ok(gpu)
    }

    fn over_capacity(&self, reason: String, warnings: &mut Vec<String>) -> Result<(), Denial> {
        match self.policy.enforcement {
            Enforcement::Deny => Err(Denial::new(
                Rule::Capacity,
                format!("{reason}; or set gpushare.io/gpu to a GPU with room (auto picks one), or free capacity"),
            )),
            Enforcement::Warn => {
                warnings.push(format!("over capacity (enforcement: warn): {reason}"));
                Ok(())
            }
        }
    }

    /// `auto`: among usable GPUs that fit, the least or most loaded by strategy; ties to the lowest index.
    pub fn auto(&self, demand: &Demand, warnings: &mut Vec<String>) -> Result<GpuIndex, Denial> {
        let count = self.shared_count();
        let mut usable = Vec::new();
        let mut refusals = Vec::new();
        for gpu in (0..count).map(GpuIndex) {
            match self.available(gpu) {
                Ok(mode) if demand.mode.is_none_or(|wanted| wanted == mode) => {
                    usable.push((gpu, mode))
                }
                Ok(mode) => refusals.push(format!("GPU {gpu} is in {mode} mode")),
                Err(denial) => refusals.push(first_clause(&denial.message).to_string()),
            }
        }
        if usable.is_empty() {
            let (rule, wanted, hint) = match demand.mode {
                Some(m) => (
                    Rule::ModeMismatch,
                    format!("{m} "),
                    format!("ask an admin to switch a GPU to {m} (policy gpuModes), or drop the {m} annotations"),
                ),
                None => (Rule::Reserved, String::new(), "free a GPU from its VM or from reservedForVms".to_string()),
            };
            return Err(Denial::new(
                rule,
                format!(
                    "no {wanted}GPU can be chosen automatically: {}; {hint}",
                    refusals.join("; ")
                ),
            ));
        }
        let fitting: Vec<(GpuIndex, u32)> = usable
            .iter()
            .filter(|(gpu, mode)| self.overflow(*gpu, *mode, demand).is_none())
            .map(|(gpu, mode)| (*gpu, self.load(*gpu, *mode)))
            .collect();
        if let Some(gpu) = self.pick(&fitting) {
            return Ok(gpu);
        }
        let mut reasons = String::new();
        for (gpu, mode) in &usable {
            if let Some(reason) = self.overflow(*gpu, *mode, demand) {
                let _ = write!(
                    reasons,
                    "{}{reason}",
                    if reasons.is_empty() { "" } else { "; " }
                );
            }
        }
        let all: Vec<(GpuIndex, u32)> = usable
            .iter()
            .map(|(g, m)| (*g, self.load(*g, *m)))
            .collect();
        self.over_capacity(
            format!("no GPU has room for this module: {reasons}"),
            warnings,
        )?;
        Ok(self.pick(&all).expect("usable is not empty"))
    }

    fn pick(&self, loads: &[(GpuIndex, u32)]) -> Option<GpuIndex> {
        // Iterating in index order and replacing only on a strict improvement sends ties to the lowest index.
        let mut best: Option<(GpuIndex, u32)> = None;
        for &(gpu, load) in loads {
            let better = match (best, self.policy.strategy) {
                (None, _) => true,
                (Some((_, b)), Strategy::LeastLoaded) => load < b,
                (Some((_, b)), Strategy::Pack) => load > b,
            };
            if better {
                best = Some((gpu, load));
            }
        }
        best.map(|(gpu, _)| gpu)
    }
}

/// `3` or `(2 + maxSurge 1)`, as a factor in a message.
fn pods_term(pods: PodCount) -> String {
    if pods.surge_pods() > 0 {
        format!("({pods})")
    } else {
        pods.to_string()
    }
}

fn mode_source(mode: Mode) -> &'static str {
    match mode {
        Mode::Mps => {
            "gpushare.io/mode: mps, or implied by gpushare.io/mps-percentage or mps-memory-limit"
        }
        Mode::TimeSlicing => "gpushare.io/mode: time-slicing",
    }
}

fn first_clause(message: &str) -> &str {
    message.split(';').next().unwrap_or(message)
}
