//! What the cluster offers and what is already committed: nodes with their GPU counts, and the
//! claims of the modules already assigned. The decision core reads it; the shells (standalone,
//! `check`, the cluster watchers) build it.

use std::collections::{BTreeMap, HashMap};

use crate::core::claim::Claim;
use crate::core::domain::{GpuIndex, Mode};
use crate::core::policy::Policy;
use crate::core::workload::WorkloadKey;

/// A node as gpushare sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// A count fixed on the command line (`--gpus`), stronger than any policy value.
    pub forced_gpus: Option<u32>,
    /// The count the node itself reports (label or allocatable), weaker than the policy.
    pub reported_gpus: Option<u32>,
    /// The implicit standalone node stands for whatever node the pods land on: it matches every
    /// nodeSelector and nodeName, so offline checks of real manifests do not fail on placement.
    pub matches_any_placement: bool,
}

impl Node {
    /// The GPUs Kubernetes may use on this node: `--gpus`, policy `nodes.<name>.gpus`, policy
    /// `gpusPerNode`, then what the node reports; a node that reports nothing has none.
    pub fn gpu_count(&self, policy: &Policy) -> u32 {
        self.forced_gpus
            .or_else(|| policy.gpu_count_override(&self.name))
            .or(self.reported_gpus)
            .unwrap_or(0)
    }
}

/// Where a module's pods may run, from its pod template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub node_selector: BTreeMap<String, String>,
    pub node_name: String,
}

impl Placement {
    fn is_unconstrained(&self) -> bool {
        self.node_selector.is_empty() && self.node_name.is_empty()
    }

    /// Whether pods with this placement may run on `node`: the candidate nodes of a module.
    fn lands_on(&self, node: &Node, policy: &Policy) -> bool {
        if self.is_unconstrained() {
            node.gpu_count(policy) > 0
        } else {
            self.admits(node)
        }
    }

    fn admits(&self, node: &Node) -> bool {
        node.matches_any_placement
            || (self.node_name.is_empty() || self.node_name == node.name)
                && self
                    .node_selector
                    .iter()
                    .all(|(k, v)| node.labels.get(k) == Some(v))
    }
}

/// Nodes, and the claims of the modules already admitted. A claim counts against its GPU index
/// on every node its pods may land on.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    nodes: Vec<Node>,
    claims: HashMap<WorkloadKey, Claim>,
}

/// What is committed on one GPU of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuUsage {
    pub percentage: u32,
    pub clients: u32,
    pub modules: Vec<WorkloadKey>,
}

impl GpuUsage {
    fn add(&mut self, claim: &Claim) {
        // Saturating: pods may be as large as int32 allows, and any saturated sum is over every cap.
        self.percentage = self.percentage.saturating_add(claim.committed_percentage());
        self.clients = self.clients.saturating_add(claim.clients());
    }
}

impl Inventory {
    /// One implicit node named `standalone` (standalone `serve` and `check`): its count comes from
    /// `--gpus`, else the policy, else 1.
    pub fn standalone(gpus: Option<u32>) -> Inventory {
        let node = Node {
            name: "standalone".into(),
            forced_gpus: gpus,
            reported_gpus: Some(1),
            matches_any_placement: true,
            ..Node::default()
        };
        Inventory::new(vec![node])
    }

    pub fn new(nodes: Vec<Node>) -> Inventory {
        Inventory {
            nodes,
            claims: HashMap::new(),
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn set_nodes(&mut self, nodes: Vec<Node>) {
        self.nodes = nodes;
    }

    /// The claim a workload holds, if any.
    pub fn claim(&self, key: &WorkloadKey) -> Option<&Claim> {
        self.claims.get(key)
    }

    pub fn claims(&self) -> impl Iterator<Item = &Claim> {
        self.claims.values()
    }

    /// Records a claim, replacing the workload's previous one.
    pub fn hold(&mut self, claim: Claim) {
        self.claims.insert(claim.key.clone(), claim);
    }

    /// Forgets a workload's claim.
    pub fn free(&mut self, key: &WorkloadKey) -> Option<Claim> {
        self.claims.remove(key)
    }

    /// The nodes a pod template may land on: those matching its nodeSelector and nodeName, or,
    /// when it sets neither, every node with at least one GPU.
    pub fn candidates<'a>(
        &'a self,
        placement: &'a Placement,
        policy: &'a Policy,
    ) -> impl Iterator<Item = &'a Node> {
        self.nodes
            .iter()
            .filter(move |node| placement.lands_on(node, policy))
    }

    /// The claims on GPU `gpu` that may land on `node`, leaving out `except` (an UPDATE replaces
    /// its own previous claim instead of counting it twice).
    fn claims_on<'a>(
        &'a self,
        node: &'a Node,
        gpu: GpuIndex,
        except: Option<&'a WorkloadKey>,
        policy: &'a Policy,
    ) -> impl Iterator<Item = &'a Claim> {
        self.claims.values().filter(move |claim| {
            Some(&claim.key) != except
                && claim.gpu() == gpu
                && claim.placement.lands_on(node, policy)
        })
    }

    /// Committed MPS percentage and client processes of GPU `gpu` on `node` (without module names:
    /// this runs on every admission).
    pub fn usage(
        &self,
        node: &Node,
        gpu: GpuIndex,
        except: &WorkloadKey,
        policy: &Policy,
    ) -> GpuUsage {
        let mut usage = GpuUsage::default();
        for claim in self.claims_on(node, gpu, Some(except), policy) {
            usage.add(claim);
        }
        usage
    }

    /// Usage of every GPU of every node, for `status` and metrics.
    pub fn table(&self, policy: &Policy) -> Vec<GpuRow> {
        let mut rows = Vec::new();
        for node in &self.nodes {
            for i in 0..node.gpu_count(policy) {
                let gpu = GpuIndex(i);
                rows.push(GpuRow {
                    node: node.name.clone(),
                    gpu,
                    mode: policy.gpu_mode(&node.name, gpu),
                    reserved: policy.is_reserved(&node.name, gpu),
                    usage: {
                        let mut usage = GpuUsage::default();
                        for claim in self.claims_on(node, gpu, None, policy) {
                            usage.add(claim);
                            usage.modules.push(claim.key.clone());
                        }
                        usage.modules.sort();
                        usage
                    },
                });
            }
        }
        rows
    }
}

/// One row of the per-node, per-GPU usage table.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuRow {
    pub node: String,
    pub gpu: GpuIndex,
    pub mode: Mode,
    pub reserved: bool,
    pub usage: GpuUsage,
}
