//! What the cluster offers and what is already committed: nodes with their GPU counts, and the
//! claims of the modules already assigned. The decision core reads it; the shells (standalone,
//! `check`, the cluster watchers) build it.

use std::collections::{HashMap, HashSet};

use crate::core::claim::Claim;
use crate::core::domain::{GpuIndex, Mode};
use crate::core::policy::Policy;
use crate::core::workload::{ControllerRef, Kind, Labels, WorkloadKey};

/// A node as gpushare sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
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

pub use crate::core::workload::Placement;

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

/// What gpushare knows of a workload that may own others: enough to tell whether an object it
/// made carries its template as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub kind: Kind,
    /// `Workload::gpu_fingerprint` of its pod template.
    pub fingerprint: u64,
}

/// How the controllers that objects name are checked (CONTRACT section 2a).
#[derive(Debug, Clone, Default)]
enum Owners {
    /// Standalone and `check`: nothing can be looked up, so a built-in controller is trusted.
    #[default]
    Trusted,
    /// Cluster mode: the owners that exist, by uid.
    Known(HashMap<String, Owner>),
}

/// The Pod Security level a namespace enforces (label `pod-security.kubernetes.io/enforce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSecurity {
    Baseline,
    Restricted,
}

impl PodSecurity {
    pub const LABEL: &'static str = "pod-security.kubernetes.io/enforce";

    /// The level that refuses host namespaces and hostPath volumes, if the label names one.
    pub fn refusing_host_access(label: &str) -> Option<PodSecurity> {
        match label {
            "baseline" => Some(PodSecurity::Baseline),
            "restricted" => Some(PodSecurity::Restricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurity::Baseline => "baseline",
            PodSecurity::Restricted => "restricted",
        }
    }
}

/// The label most modules are pinned to one node with.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Nodes, and the claims of the modules already admitted. A claim counts against its GPU index
/// on every node its pods may land on.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    nodes: Vec<Node>,
    claims: HashMap<WorkloadKey, Claim>,
    /// The claims pinned to one node (by `nodeName`, else the hostname label), so that a node's
    /// usage reads its own claims and the unpinned ones, not every claim of the cluster.
    by_node_name: HashMap<String, HashSet<WorkloadKey>>,
    by_hostname: HashMap<String, HashSet<WorkloadKey>>,
    unpinned: HashSet<WorkloadKey>,
    /// Positions in `nodes` by name and by hostname label, and of nodes that match every
    /// placement, so a pinned module's candidates are found without a scan of every node.
    nodes_by_name: HashMap<String, Vec<usize>>,
    nodes_by_hostname: HashMap<String, Vec<usize>>,
    match_any: Vec<usize>,
    owners: Owners,
    /// Namespaces whose Pod Security level refuses host access (cluster mode only).
    pod_security: HashMap<String, PodSecurity>,
}

/// Where the index keeps a claim. Only a pre-filter: `lands_on` still decides.
enum Pin<'a> {
    NodeName(&'a str),
    Hostname(&'a str),
    None,
}

fn pin(placement: &Placement) -> Pin<'_> {
    if !placement.node_name.is_empty() {
        Pin::NodeName(&placement.node_name)
    } else if let Some(host) = placement.node_selector.get(HOSTNAME_LABEL) {
        Pin::Hostname(host)
    } else {
        Pin::None
    }
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
        let mut inventory = Inventory::default();
        inventory.set_nodes(nodes);
        inventory
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Adds the node, or replaces the one of the same name; returns whether anything changed.
    /// Nodes added here keep name order. Rebuilds the node indexes, like `set_nodes`.
    pub fn upsert_node(&mut self, node: Node) -> bool {
        let mut nodes = std::mem::take(&mut self.nodes);
        match self.nodes_by_name.get(&node.name).and_then(|at| at.first()) {
            Some(&i) if nodes[i] == node => {
                self.nodes = nodes;
                return false;
            }
            Some(&i) => nodes[i] = node,
            None => {
                let at = nodes.partition_point(|n| n.name < node.name);
                nodes.insert(at, node);
            }
        }
        self.set_nodes(nodes);
        true
    }

    /// Removes the nodes named `name`; returns whether there was one.
    pub fn remove_node(&mut self, name: &str) -> bool {
        if !self.nodes_by_name.contains_key(name) {
            return false;
        }
        let mut nodes = std::mem::take(&mut self.nodes);
        nodes.retain(|n| n.name != name);
        self.set_nodes(nodes);
        true
    }

    pub fn set_nodes(&mut self, nodes: Vec<Node>) {
        self.nodes_by_name.clear();
        self.nodes_by_hostname.clear();
        self.match_any.clear();
        for (i, node) in nodes.iter().enumerate() {
            self.nodes_by_name
                .entry(node.name.clone())
                .or_default()
                .push(i);
            if let Some(host) = node.labels.get(HOSTNAME_LABEL) {
                self.nodes_by_hostname
                    .entry(host.to_string())
                    .or_default()
                    .push(i);
            }
            if node.matches_any_placement {
                self.match_any.push(i);
            }
        }
        self.nodes = nodes;
    }

    /// Checks the owners objects name against `set_owner`'s records instead of trusting them.
    pub fn verify_owners(&mut self) {
        if matches!(self.owners, Owners::Trusted) {
            self.owners = Owners::Known(HashMap::new());
        }
    }

    /// Records (or, with `None`, forgets) the workload with `uid` as a possible owner.
    pub fn set_owner(&mut self, uid: &str, owner: Option<Owner>) {
        let Owners::Known(owners) = &mut self.owners else {
            return;
        };
        match owner {
            Some(owner) => {
                owners.insert(uid.to_string(), owner);
            }
            None => {
                owners.remove(uid);
            }
        }
    }

    /// Whether an object that names `controller` and carries `fingerprint` was made by it from
    /// a template gpushare examined: the controller exists with that uid and kind, and its
    /// template carries the same GPU variables and assignment (CONTRACT section 2a).
    pub fn trusts_owner(&self, controller: &ControllerRef, fingerprint: u64) -> bool {
        let Some(kind) = controller.builtin() else {
            return false;
        };
        match &self.owners {
            Owners::Trusted => true,
            Owners::Known(owners) => owners
                .get(&controller.uid)
                .is_some_and(|owner| owner.kind == kind && owner.fingerprint == fingerprint),
        }
    }

    /// Whether `owner` is recorded for `uid` as it is.
    pub fn has_owner(&self, uid: &str, owner: &Owner) -> bool {
        match &self.owners {
            Owners::Trusted => false,
            Owners::Known(owners) => owners.get(uid) == Some(owner),
        }
    }

    /// Whether the owner with `uid` is known (cluster mode; always true when owners are trusted).
    pub fn knows_owner(&self, uid: &str) -> bool {
        match &self.owners {
            Owners::Trusted => true,
            Owners::Known(owners) => owners.contains_key(uid),
        }
    }

    /// Sets the Pod Security level a namespace enforces (`None`: none that refuses host access).
    pub fn set_pod_security(&mut self, namespace: &str, level: Option<PodSecurity>) {
        match level {
            Some(level) => {
                self.pod_security.insert(namespace.to_string(), level);
            }
            None => {
                self.pod_security.remove(namespace);
            }
        }
    }

    /// Forgets every namespace's Pod Security level (before a full list).
    pub fn clear_pod_security(&mut self) {
        self.pod_security.clear();
    }

    /// The Pod Security level that refuses host access in `namespace`, if it enforces one.
    pub fn pod_security(&self, namespace: &str) -> Option<PodSecurity> {
        self.pod_security.get(namespace).copied()
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
        self.unindex(&claim.key);
        match pin(&claim.placement) {
            Pin::NodeName(name) => self.by_node_name.entry(name.to_string()).or_default(),
            Pin::Hostname(host) => self.by_hostname.entry(host.to_string()).or_default(),
            Pin::None => &mut self.unpinned,
        }
        .insert(claim.key.clone());
        self.claims.insert(claim.key.clone(), claim);
    }

    /// Forgets a workload's claim.
    pub fn free(&mut self, key: &WorkloadKey) -> Option<Claim> {
        self.unindex(key);
        self.claims.remove(key)
    }

    fn unindex(&mut self, key: &WorkloadKey) {
        let Some(old) = self.claims.get(key) else {
            return;
        };
        fn take(map: &mut HashMap<String, HashSet<WorkloadKey>>, at: &str, key: &WorkloadKey) {
            if let Some(keys) = map.get_mut(at) {
                keys.remove(key);
                if keys.is_empty() {
                    map.remove(at);
                }
            }
        }
        match pin(&old.placement) {
            Pin::NodeName(name) => take(&mut self.by_node_name, name, key),
            Pin::Hostname(host) => take(&mut self.by_hostname, host, key),
            Pin::None => {
                self.unpinned.remove(key);
            }
        }
    }

    /// The nodes a pod template may land on: those matching its nodeSelector and nodeName, or,
    /// when it sets neither, every node with at least one GPU.
    pub fn candidates<'a>(
        &'a self,
        placement: &'a Placement,
        policy: &'a Policy,
    ) -> impl Iterator<Item = &'a Node> {
        // A pinned placement can only land on its pinned nodes (and those matching everything);
        // they are read in the same order as a scan would.
        let positions: Option<Vec<usize>> = match pin(placement) {
            Pin::NodeName(name) => Some(self.nodes_by_name.get(name).cloned().unwrap_or_default()),
            Pin::Hostname(host) => Some(
                self.nodes_by_hostname
                    .get(host)
                    .cloned()
                    .unwrap_or_default(),
            ),
            Pin::None => None,
        };
        let nodes: Box<dyn Iterator<Item = &'a Node> + 'a> = match positions {
            Some(mut positions) => {
                positions.extend(&self.match_any);
                positions.sort_unstable();
                positions.dedup();
                Box::new(positions.into_iter().map(|i| &self.nodes[i]))
            }
            None => Box::new(self.nodes.iter()),
        };
        nodes.filter(move |node| placement.lands_on(node, policy))
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
        // The standalone node matches every placement: it reads every claim.
        let keys: Box<dyn Iterator<Item = &'a WorkloadKey> + 'a> = if node.matches_any_placement {
            Box::new(self.claims.keys())
        } else {
            let named = self.by_node_name.get(&node.name).into_iter().flatten();
            let hosted = node
                .labels
                .get(HOSTNAME_LABEL)
                .and_then(|host| self.by_hostname.get(host))
                .into_iter()
                .flatten();
            Box::new(self.unpinned.iter().chain(named).chain(hosted))
        };
        keys.filter_map(|key| self.claims.get(key))
            .filter(move |claim| {
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
                rows.push(self.row(node, GpuIndex(i), policy));
            }
        }
        rows
    }

    /// The rows of the GPUs a claim counts against: those `claim.gpu()` on its candidate nodes
    /// (what changes when the claim is held or freed).
    pub fn rows_of(&self, claim: &Claim, policy: &Policy) -> Vec<GpuRow> {
        let gpu = claim.gpu();
        self.candidates(&claim.placement, policy)
            .filter(|node| gpu.0 < node.gpu_count(policy))
            .map(|node| self.row(node, gpu, policy))
            .collect()
    }

    fn row(&self, node: &Node, gpu: GpuIndex, policy: &Policy) -> GpuRow {
        let mut usage = GpuUsage::default();
        for claim in self.claims_on(node, gpu, None, policy) {
            usage.add(claim);
            usage.modules.push(claim.key.clone());
        }
        usage.modules.sort();
        GpuRow {
            node: node.name.clone(),
            gpu,
            mode: policy.gpu_mode(&node.name, gpu),
            reserved: policy.is_reserved(&node.name, gpu),
            usage,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::claim::{Assigned, Share};
    use crate::core::workload::Kind;

    fn node(name: &str, hostname: &str, pool: &str) -> Node {
        Node {
            name: name.into(),
            labels: [(HOSTNAME_LABEL, hostname), ("pool", pool)]
                .into_iter()
                .collect(),
            reported_gpus: Some(2),
            ..Node::default()
        }
    }

    fn claim(name: &str, selector: &[(&str, &str)], node_name: &str) -> Claim {
        Claim {
            key: WorkloadKey::new(Kind::Deployment, "ns", name),
            placement: Placement {
                node_selector: selector.iter().copied().collect(),
                node_name: node_name.into(),
            },
            assigned: Assigned {
                gpu: GpuIndex(0),
                share: Share::TimeSlicing,
            },
            pods: crate::core::pods::PodCount::fixed(1),
            containers: 1,
            extra_percentage: 0,
        }
    }

    /// The index only narrows the search: usage and candidates equal a scan of every claim and node,
    /// whatever pins a module (nodeName, hostname label, another label, nothing), also when a
    /// node's name differs from its hostname label, and after claims move or go.
    #[test]
    fn usage_and_candidates_read_through_the_index_equal_a_full_scan() {
        let policy = Policy::default();
        let mut inventory = Inventory::new(vec![
            node("a", "a", "x"),
            node("b", "host-b", "x"),
            node("c", "c", "y"),
        ]);
        let claims = [
            claim("by-name", &[], "b"),
            claim("by-host", &[(HOSTNAME_LABEL, "host-b")], ""),
            claim(
                "by-host-and-pool",
                &[(HOSTNAME_LABEL, "c"), ("pool", "x")],
                "",
            ),
            claim("by-pool", &[("pool", "x")], ""),
            claim("anywhere", &[], ""),
            claim("name-not-host", &[(HOSTNAME_LABEL, "b")], ""),
        ];
        for c in &claims {
            inventory.hold(c.clone());
        }
        // Moves: from nodeName to a hostname, and from pinned to unpinned.
        inventory.hold(claim("by-name", &[(HOSTNAME_LABEL, "a")], ""));
        inventory.hold(claim("by-host", &[], ""));
        inventory.free(&WorkloadKey::new(Kind::Deployment, "ns", "by-pool"));
        let nobody = WorkloadKey::new(Kind::Deployment, "ns", "nobody");
        for node in inventory.nodes() {
            let scanned: u32 = inventory
                .claims()
                .filter(|c| c.placement.lands_on(node, &policy))
                .map(Claim::clients)
                .sum();
            let usage = inventory.usage(node, GpuIndex(0), &nobody, &policy);
            assert_eq!(usage.clients, scanned, "node {}", node.name);
        }
        for c in inventory.claims() {
            let via_index: Vec<&str> = inventory
                .candidates(&c.placement, &policy)
                .map(|n| n.name.as_str())
                .collect();
            let scanned: Vec<&str> = inventory
                .nodes()
                .iter()
                .filter(|n| c.placement.lands_on(n, &policy))
                .map(|n| n.name.as_str())
                .collect();
            assert_eq!(via_index, scanned, "{}", c.key);
        }
    }

    #[test]
    fn nodes_added_replaced_and_removed_one_at_a_time_keep_the_indexes_right() {
        let policy = Policy::default();
        let mut inventory = Inventory::new(vec![node("b", "b", "x")]);
        assert!(inventory.upsert_node(node("c", "c", "x")));
        assert!(inventory.upsert_node(node("a", "a", "y")));
        assert!(
            !inventory.upsert_node(node("a", "a", "y")),
            "the same node changes nothing"
        );
        assert!(inventory.upsert_node(node("b", "host-b", "y")));
        let names = |inventory: &Inventory| -> Vec<String> {
            inventory.nodes().iter().map(|n| n.name.clone()).collect()
        };
        assert_eq!(names(&inventory), ["a", "b", "c"]);
        let on = |inventory: &Inventory, selector: &[(&str, &str)]| -> Vec<String> {
            inventory
                .candidates(&claim("q", selector, "").placement, &policy)
                .map(|n| n.name.clone())
                .collect()
        };
        assert_eq!(on(&inventory, &[(HOSTNAME_LABEL, "host-b")]), ["b"]);
        assert!(on(&inventory, &[(HOSTNAME_LABEL, "b")]).is_empty());
        assert!(inventory.remove_node("a"));
        assert!(!inventory.remove_node("a"));
        assert_eq!(names(&inventory), ["b", "c"]);
        assert_eq!(on(&inventory, &[("pool", "x")]), ["c"]);
    }
}
