//! `gpushare status`: the per-node, per-GPU usage table, for people (`table`) and machines (`json`).

use serde::Serialize;

use crate::core::inventory::{GpuRow, Inventory};
use crate::core::policy::Policy;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    pub node: String,
    pub gpu: u32,
    pub mode: String,
    pub reserved_for_vm: bool,
    pub modules: Vec<String>,
    pub client_processes: u32,
    pub max_client_processes: u32,
    /// Committed MPS percentage (mps GPUs).
    pub committed_mps_percentage: u32,
    /// `maxMpsPercentagePerGpu`, `None` when uncapped.
    pub mps_percentage_cap: Option<u32>,
}

pub fn rows(inventory: &Inventory, policy: &Policy) -> Vec<StatusRow> {
    inventory
        .table(policy)
        .into_iter()
        .map(
            |GpuRow {
                 node,
                 gpu,
                 mode,
                 reserved,
                 usage,
             }| StatusRow {
                node,
                gpu: gpu.0,
                mode: mode.to_string(),
                reserved_for_vm: reserved,
                modules: usage.modules.iter().map(ToString::to_string).collect(),
                client_processes: usage.clients,
                max_client_processes: policy.max_clients(mode),
                committed_mps_percentage: usage.percentage,
                mps_percentage_cap: policy.max_mps_percentage_per_gpu,
            },
        )
        .collect()
}

pub fn render_table(rows: &[StatusRow]) -> String {
    let header = [
        "NODE", "GPU", "MODE", "RESERVED", "CLIENTS", "MPS%", "MODULES",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let mps = match (r.mode.as_str(), r.mps_percentage_cap) {
                ("mps", Some(cap)) => format!("{}/{cap}", r.committed_mps_percentage),
                ("mps", None) => format!("{}", r.committed_mps_percentage),
                _ => "-".into(),
            };
            [
                r.node.clone(),
                r.gpu.to_string(),
                r.mode.clone(),
                if r.reserved_for_vm {
                    "vm".into()
                } else {
                    "no".into()
                },
                format!("{}/{}", r.client_processes, r.max_client_processes),
                mps,
                if r.modules.is_empty() {
                    "-".into()
                } else {
                    r.modules.join(",")
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |fields: Vec<&str>| {
        let padded: Vec<String> = fields
            .iter()
            .zip(widths)
            .map(|(f, w)| format!("{f:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
    out
}
