//! What the cluster offers and what is already committed: nodes with their GPU counts, and the
//! modules already assigned. The decision core reads it; the shells (standalone, `check`, the
//! cluster watchers) build it.

use std::collections::{BTreeMap, HashMap};

use crate::core::domain::{GpuIndex, Mode};
use crate::core::policy::Policy;
use crate::core::verdict::Assignment;

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

/// Identifies a module: a Deployment's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ModuleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A module already admitted, counted against its GPU index on every candidate node.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    pub placement: Placement,
    pub assignment: Assignment,
}

/// Nodes and committed modules.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub nodes: Vec<Node>,
    pub modules: HashMap<ModuleKey, Module>,
}

/// What is committed on one GPU of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuUsage {
    pub percentage: u32,
    pub clients: u32,
    pub modules: Vec<ModuleKey>,
}

impl GpuUsage {
    fn add(&mut self, module: &Module) {
        // Saturating: replicas may be as large as int32 allows, and any saturated sum is over every cap.
        self.percentage = self
            .percentage
            .saturating_add(module.assignment.committed_percentage());
        self.clients = self.clients.saturating_add(module.assignment.clients);
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
        Inventory {
            nodes: vec![node],
            modules: HashMap::new(),
        }
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

    /// The modules committed to GPU `gpu` that may land on `node`, leaving out `except` (an UPDATE
    /// replaces its own previous allocation instead of counting it twice).
    fn modules_on<'a>(
        &'a self,
        node: &'a Node,
        gpu: GpuIndex,
        except: Option<&'a ModuleKey>,
        policy: &'a Policy,
    ) -> impl Iterator<Item = (&'a ModuleKey, &'a Module)> {
        self.modules.iter().filter(move |(key, module)| {
            Some(*key) != except
                && module.assignment.gpu == gpu
                && module.placement.lands_on(node, policy)
        })
    }

    /// Committed MPS percentage and client processes of GPU `gpu` on `node` (without module names:
    /// this runs on every admission).
    pub fn usage(
        &self,
        node: &Node,
        gpu: GpuIndex,
        except: &ModuleKey,
        policy: &Policy,
    ) -> GpuUsage {
        let mut usage = GpuUsage::default();
        for (_, module) in self.modules_on(node, gpu, Some(except), policy) {
            usage.add(module);
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
                        for (key, module) in self.modules_on(node, gpu, None, policy) {
                            usage.add(module);
                            usage.modules.push(key.clone());
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
