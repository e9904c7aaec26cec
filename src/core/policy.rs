//! The sharing policy admins write (CONTRACT section 5): parsed strictly from YAML (unknown keys
//! are errors at any depth) and validated once into a typed `Policy` the decision core trusts.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::core::domain::{GpuIndex, Mode, Percentage, MPS_MAX_CLIENTS};

/// The embedded default policy: every key at its documented default.
pub const DEFAULT_POLICY_YAML: &str = include_str!("default-policy.yaml");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid YAML for the gpushare schema: {0}")]
    Syntax(String),
    #[error("policy key {key}: {problem}")]
    Value { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError::Value {
        key: key.into(),
        problem: problem.into(),
    }
}

/// How `auto` chooses among GPUs that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Strategy {
    #[serde(rename = "least-loaded")]
    LeastLoaded,
    #[serde(rename = "pack")]
    Pack,
}

/// Whether capacity violations (rule 5) deny or only warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Enforcement {
    #[serde(rename = "deny")]
    Deny,
    #[serde(rename = "warn")]
    Warn,
}

/// What happens to a workload without gpushare annotations whose containers write the GPU
/// variables themselves (CONTRACT section 2b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HandWritten {
    /// Read as the annotations the variables stand for, checked and counted.
    #[serde(rename = "count")]
    Count,
    /// Denied, with the annotations to use instead.
    #[serde(rename = "deny")]
    Deny,
    /// Allowed unchanged and not counted, with a warning.
    #[serde(rename = "allow")]
    Allow,
}

/// A GPU chosen by the user or the policy: one index or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuChoice {
    Auto,
    Index(GpuIndex),
}

/// The validated policy. Built only by `Policy::from_yaml`, so every value is in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub default_mode: Mode,
    pub default_gpu: GpuChoice,
    pub default_mps_percentage: Percentage,
    /// `None` means no cap (written as 0).
    pub max_mps_percentage_per_gpu: Option<u32>,
    pub max_clients_per_gpu: u32,
    pub strategy: Strategy,
    pub hide_gpu_from_other_containers: bool,
    pub mps_host_ipc: bool,
    /// Absolute host path of the MPS pipe directory, when the policy asks to mount it.
    pub mps_pipe_directory: Option<String>,
    pub gpus_per_node: Option<u32>,
    pub gpu_modes: BTreeMap<GpuIndex, Mode>,
    pub reserved_for_vms: BTreeSet<GpuIndex>,
    pub nodes: BTreeMap<String, NodePolicy>,
    pub excluded_namespaces: BTreeSet<String>,
    pub enforcement: Enforcement,
    pub hand_written_gpu_env: HandWritten,
    /// Write `NVIDIA_VISIBLE_DEVICES=void` on unmanaged containers that do not set it.
    pub hide_gpu_from_unmanaged: bool,
}

/// Per-node overrides: `gpus` and `reserved_for_vms` replace the global values, `gpu_modes` entries override.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodePolicy {
    pub gpus: Option<u32>,
    pub gpu_modes: BTreeMap<GpuIndex, Mode>,
    pub reserved_for_vms: Option<BTreeSet<GpuIndex>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_yaml(DEFAULT_POLICY_YAML).expect("the embedded default policy is valid")
    }
}

impl Policy {
    /// Parses and validates a policy document. Keys left out take their defaults; an empty
    /// document is the default policy.
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = if text.trim().is_empty() {
            RawPolicy::default()
        } else {
            serde_yaml::from_str::<Option<RawPolicy>>(text)
                .map_err(|e| PolicyError::Syntax(e.to_string()))?
                .unwrap_or_default()
        };
        raw.validate()
    }

    /// The mode of GPU `gpu` on node `node`.
    pub fn gpu_mode(&self, node: &str, gpu: GpuIndex) -> Mode {
        self.nodes
            .get(node)
            .and_then(|n| n.gpu_modes.get(&gpu))
            .or_else(|| self.gpu_modes.get(&gpu))
            .copied()
            .unwrap_or(self.default_mode)
    }

    /// Whether GPU `gpu` on node `node` is kept free for a VM.
    pub fn is_reserved(&self, node: &str, gpu: GpuIndex) -> bool {
        match self
            .nodes
            .get(node)
            .and_then(|n| n.reserved_for_vms.as_ref())
        {
            Some(reserved) => reserved.contains(&gpu),
            None => self.reserved_for_vms.contains(&gpu),
        }
    }

    /// The policy's override of a node's GPU count, if any.
    pub fn gpu_count_override(&self, node: &str) -> Option<u32> {
        self.nodes
            .get(node)
            .and_then(|n| n.gpus)
            .or(self.gpus_per_node)
    }

    /// Client processes a GPU of `mode` may serve.
    pub fn max_clients(&self, mode: Mode) -> u32 {
        match mode {
            Mode::Mps => self.max_clients_per_gpu.min(MPS_MAX_CLIENTS),
            Mode::TimeSlicing => self.max_clients_per_gpu,
        }
    }

    pub fn is_excluded(&self, namespace: &str) -> bool {
        self.excluded_namespaces.contains(namespace)
    }
}

// ---- the YAML schema, as written -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct RawPolicy {
    default_mode: Mode,
    default_gpu: RawGpu,
    default_mps_percentage: i64,
    max_mps_percentage_per_gpu: i64,
    max_clients_per_gpu: i64,
    strategy: Strategy,
    hide_gpu_from_other_containers: bool,
    mps: RawMps,
    gpus_per_node: Option<i64>,
    gpu_modes: Option<BTreeMap<RawIndex, Mode>>,
    reserved_for_vms: Option<Vec<RawIndex>>,
    nodes: Option<BTreeMap<String, RawNode>>,
    namespaces: RawNamespaces,
    enforcement: Enforcement,
    hand_written_gpu_env: HandWritten,
    hide_gpu_from_unmanaged: bool,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            default_mode: Mode::TimeSlicing,
            default_gpu: RawGpu("auto".into()),
            default_mps_percentage: 50,
            max_mps_percentage_per_gpu: 100,
            max_clients_per_gpu: 48,
            strategy: Strategy::LeastLoaded,
            hide_gpu_from_other_containers: false,
            mps: RawMps::default(),
            gpus_per_node: None,
            gpu_modes: None,
            reserved_for_vms: None,
            nodes: None,
            namespaces: RawNamespaces::default(),
            enforcement: Enforcement::Deny,
            hand_written_gpu_env: HandWritten::Count,
            hide_gpu_from_unmanaged: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct RawMps {
    #[serde(rename = "hostIPC")]
    host_ipc: bool,
    pipe_directory: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespaces {
    #[serde(default = "default_excluded_namespaces")]
    exclude: Vec<String>,
}

fn default_excluded_namespaces() -> Vec<String> {
    vec!["kube-system".into(), "gpushare-system".into()]
}

impl Default for RawNamespaces {
    fn default() -> Self {
        RawNamespaces {
            exclude: default_excluded_namespaces(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNode {
    #[serde(default)]
    gpus: Option<i64>,
    #[serde(default)]
    gpu_modes: Option<BTreeMap<RawIndex, Mode>>,
    #[serde(default)]
    reserved_for_vms: Option<Vec<RawIndex>>,
}

/// `defaultGpu` may be written `auto`, `0` or `"0"`.
#[derive(Debug)]
struct RawGpu(String);

impl<'de> Deserialize<'de> for RawGpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RawGpu(scalar_to_string(d)?))
    }
}

/// A GPU index written as a YAML integer or string (`{ 1: mps }` or `{ "1": mps }`).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RawIndex(String);

impl<'de> Deserialize<'de> for RawIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RawIndex(scalar_to_string(d)?))
    }
}

fn scalar_to_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_yaml::Value::deserialize(d)? {
        serde_yaml::Value::String(s) => Ok(s),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        other => Err(de::Error::custom(format!(
            "expected a GPU index or `auto`, found {other:?}"
        ))),
    }
}

fn parse_index(key: &str, raw: &RawIndex) -> Result<GpuIndex, PolicyError> {
    raw.0
        .trim()
        .parse::<u32>()
        .map(GpuIndex)
        .map_err(|_| invalid(key, format!("{:?} is not a GPU index (0, 1, ...)", raw.0)))
}

fn parse_modes(
    key: &str,
    raw: Option<BTreeMap<RawIndex, Mode>>,
) -> Result<BTreeMap<GpuIndex, Mode>, PolicyError> {
    raw.unwrap_or_default()
        .into_iter()
        .map(|(index, mode)| Ok((parse_index(key, &index)?, mode)))
        .collect()
}

fn parse_indexes(key: &str, raw: Vec<RawIndex>) -> Result<BTreeSet<GpuIndex>, PolicyError> {
    raw.iter().map(|index| parse_index(key, index)).collect()
}

fn parse_count(key: &str, raw: i64) -> Result<u32, PolicyError> {
    u32::try_from(raw).map_err(|_| invalid(key, format!("{raw} must be a whole number >= 0")))
}

impl RawPolicy {
    fn validate(self) -> Result<Policy, PolicyError> {
        let default_gpu = match self.default_gpu.0.trim() {
            "auto" => GpuChoice::Auto,
            other => GpuChoice::Index(parse_index("defaultGpu", &RawIndex(other.to_string()))?),
        };
        let default_mps_percentage = u64::try_from(self.default_mps_percentage)
            .ok()
            .and_then(Percentage::new)
            .ok_or_else(|| {
                invalid(
                    "defaultMpsPercentage",
                    format!("{} must be 1..100", self.default_mps_percentage),
                )
            })?;
        let cap = parse_count("maxMpsPercentagePerGpu", self.max_mps_percentage_per_gpu)?;
        let max_clients_per_gpu = parse_count("maxClientsPerGpu", self.max_clients_per_gpu)?;
        if max_clients_per_gpu == 0 {
            return Err(invalid(
                "maxClientsPerGpu",
                "0 would deny every module; use at least 1",
            ));
        }
        let gpus_per_node = self
            .gpus_per_node
            .map(|n| parse_count("gpusPerNode", n))
            .transpose()?;
        let mps_pipe_directory = match self.mps.pipe_directory.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(path) if path.starts_with('/') => Some(path.to_string()),
            Some(path) => {
                return Err(invalid(
                    "mps.pipeDirectory",
                    format!("{path:?} must be an absolute host path"),
                ))
            }
        };
        let mut nodes = BTreeMap::new();
        for (name, node) in self.nodes.unwrap_or_default() {
            let prefix = format!("nodes.{name}");
            let gpus = node
                .gpus
                .map(|n| parse_count(&format!("{prefix}.gpus"), n))
                .transpose()?;
            let node_policy = NodePolicy {
                gpus,
                gpu_modes: parse_modes(&format!("{prefix}.gpuModes"), node.gpu_modes)?,
                reserved_for_vms: node
                    .reserved_for_vms
                    .map(|r| parse_indexes(&format!("{prefix}.reservedForVms"), r))
                    .transpose()?,
            };
            nodes.insert(name, node_policy);
        }
        Ok(Policy {
            default_mode: self.default_mode,
            default_gpu,
            default_mps_percentage,
            max_mps_percentage_per_gpu: (cap > 0).then_some(cap),
            max_clients_per_gpu,
            strategy: self.strategy,
            hide_gpu_from_other_containers: self.hide_gpu_from_other_containers,
            mps_host_ipc: self.mps.host_ipc,
            mps_pipe_directory,
            gpus_per_node,
            gpu_modes: parse_modes("gpuModes", self.gpu_modes)?,
            reserved_for_vms: parse_indexes(
                "reservedForVms",
                self.reserved_for_vms.unwrap_or_default(),
            )?,
            nodes,
            excluded_namespaces: self.namespaces.exclude.into_iter().collect(),
            enforcement: self.enforcement,
            hand_written_gpu_env: self.hand_written_gpu_env,
            hide_gpu_from_unmanaged: self.hide_gpu_from_unmanaged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_matches_the_contract() {
        let p = Policy::default();
        assert_eq!(
            p,
            Policy::from_yaml("").unwrap(),
            "the embedded file and the schema defaults agree"
        );
        assert_eq!(p.default_mode, Mode::TimeSlicing);
        assert_eq!(p.default_gpu, GpuChoice::Auto);
        assert_eq!(p.default_mps_percentage.get(), 50);
        assert_eq!(p.max_mps_percentage_per_gpu, Some(100));
        assert_eq!(p.max_clients_per_gpu, 48);
        assert_eq!(p.strategy, Strategy::LeastLoaded);
        assert!(!p.hide_gpu_from_other_containers && !p.mps_host_ipc);
        assert_eq!(p.mps_pipe_directory, None);
        assert_eq!(p.gpus_per_node, None);
        assert!(p.gpu_modes.is_empty() && p.reserved_for_vms.is_empty() && p.nodes.is_empty());
        assert!(p.is_excluded("kube-system") && p.is_excluded("gpushare-system"));
        assert_eq!(p.enforcement, Enforcement::Deny);
        assert_eq!(p.hand_written_gpu_env, HandWritten::Count);
        assert!(!p.hide_gpu_from_unmanaged);
        let p = Policy::from_yaml("handWrittenGpuEnv: allow\nhideGpuFromUnmanaged: true").unwrap();
        assert_eq!(
            (p.hand_written_gpu_env, p.hide_gpu_from_unmanaged),
            (HandWritten::Allow, true)
        );
    }

    #[test]
    fn per_node_values_replace_or_override() {
        let p = Policy::from_yaml(
            "gpusPerNode: 2\ngpuModes: { 1: mps }\nreservedForVms: [1]\n\
             nodes:\n  edge-1: { gpus: 1, gpuModes: { \"0\": mps }, reservedForVms: [] }\n",
        )
        .unwrap();
        assert_eq!(p.gpu_count_override("edge-1"), Some(1));
        assert_eq!(p.gpu_count_override("other"), Some(2));
        assert_eq!(p.gpu_mode("edge-1", GpuIndex(0)), Mode::Mps);
        assert_eq!(p.gpu_mode("edge-1", GpuIndex(1)), Mode::Mps);
        assert_eq!(p.gpu_mode("other", GpuIndex(0)), Mode::TimeSlicing);
        assert!(!p.is_reserved("edge-1", GpuIndex(1)));
        assert!(p.is_reserved("other", GpuIndex(1)));
    }

    #[test]
    fn zero_cap_means_no_cap_and_mps_clients_never_exceed_48() {
        let p = Policy::from_yaml("maxMpsPercentagePerGpu: 0\nmaxClientsPerGpu: 100").unwrap();
        assert_eq!(p.max_mps_percentage_per_gpu, None);
        assert_eq!(p.max_clients(Mode::Mps), 48);
        assert_eq!(p.max_clients(Mode::TimeSlicing), 100);
    }

    #[test]
    fn invalid_policies_are_rejected_with_the_key() {
        let cases = [
            ("defaultMode: shared", "defaultMode"),
            ("defaultMpsPercentage: 0", "defaultMpsPercentage"),
            ("defaultMpsPercentage: 101", "defaultMpsPercentage"),
            ("maxClientsPerGpu: 0", "maxClientsPerGpu"),
            ("maxClientsPerGpu: -1", "maxClientsPerGpu"),
            ("strategy: random", "strategy"),
            ("enforcement: audit", "enforcement"),
            ("handWrittenGpuEnv: ignore", "handWrittenGpuEnv"),
            ("hideGpuFromUnmanaged: maybe", "hideGpuFromUnmanaged"),
            ("defaultGpu: all", "defaultGpu"),
            ("gpuModes: { x: mps }", "gpuModes"),
            ("reservedForVms: [-1]", "reservedForVms"),
            ("mps: { pipeDirectory: relative/dir }", "pipeDirectory"),
            ("mps: { hostIpc: true }", "hostIpc"),
            ("typoKey: 1", "typoKey"),
            ("nodes: { a: { gpu: 1 } }", "gpu"),
            ("namespaces: { include: [a] }", "include"),
            ("- a list", "invalid type"),
        ];
        for (yaml, mention) in cases {
            let err = Policy::from_yaml(yaml).expect_err(yaml).to_string();
            assert!(
                err.contains(mention),
                "{yaml:?} -> {err:?} should mention {mention:?}"
            );
        }
    }
}
