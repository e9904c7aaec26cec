//! Rows of the decision table for where a Deployment goes: how `auto` chooses (rule 5), reserved
//! GPUs (rule 6), capacity (rule 5), rule 7, and candidate nodes and GPU counts (rule 2).

use serde_json::json;

use super::gpu;
use crate::harness::*;

#[rustfmt::skip]
pub fn auto_and_reserved() -> Vec<Row> {
    vec![
        // -- rule 5: how auto chooses
        row("auto ties go to the lowest index", gpu("auto"), assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done()),
        row(
            "auto least-loaded picks the less loaded GPU",
            gpu("auto"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .module(committed("other/busy", 0, None, 10, 10)),
        row(
            "auto least-loaded on mps GPUs compares committed percentage",
            gpu("auto").ann(PCT, "10"),
            assigned("1", MPS, Some("10")).env("nginx", &[(NVD, "1"), (MPS_PCT, "10")]).done(),
        )
        .policy("defaultMode: mps")
        .module(committed("other/a", 0, Some(30), 1, 1))
        .module(committed("other/b", 1, Some(20), 1, 1)),
        row(
            "auto pack picks the most loaded GPU that fits",
            gpu("auto").ann(PCT, "30").no_surge(),
            assigned("1", MPS, Some("30")).env("nginx", &[(NVD, "1"), (MPS_PCT, "30")]).done(),
        )
        .policy("defaultMode: mps\nstrategy: pack")
        .module(committed("other/a", 1, Some(60), 1, 1)),
        row(
            "auto pack skips a GPU the module does not fit on",
            gpu("auto").ann(PCT, "50"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).done(),
        )
        .policy("defaultMode: mps\nstrategy: pack")
        .module(committed("other/a", 1, Some(60), 1, 1)),
        row("auto pack ties go to the lowest index", gpu("auto"), assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done())
            .policy("strategy: pack"),
        row(
            "auto skips a reserved GPU even when it is less loaded",
            gpu("auto"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("reservedForVms: [0]")
        .module(committed("other/busy", 1, None, 10, 10)),
        row("auto with every GPU reserved denied", gpu("auto"), denied(403, &["reservedForVms"]))
            .policy("reservedForVms: [0, 1]"),
        row(
            "auto with a mode picks only GPUs of that mode",
            gpu("auto").ann(MODE, "mps"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50")]).done(),
        )
        .policy("gpuModes: { 1: mps }"),
        row(
            "auto without a mode takes the chosen GPU's mode",
            web().ann(CONTAINERS, "nginx"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).done(),
        )
        .policy("gpuModes: { \"0\": mps }"),
        row("auto with no GPU of the mode denied", gpu("auto").ann(MODE, "mps"), denied(403, &["mps"])),
        row("auto with no GPU that fits denied with per-GPU usage", gpu("auto").ann(PCT, "30"), denied(403, &["GPU 0", "GPU 1", "80%"]))
            .policy("defaultMode: mps")
            .module(committed("other/a", 0, Some(80), 1, 1))
            .module(committed("other/b", 1, Some(80), 1, 1)),
        row(
            "auto with no GPU that fits allowed with a warning under enforcement warn",
            gpu("auto").ann(PCT, "30"),
            assigned("0", MPS, Some("30")).env("nginx", &[(NVD, "0"), (MPS_PCT, "30")]).warns(1, "capacity").done(),
        )
        .policy("defaultMode: mps\nenforcement: warn")
        .module(committed("other/a", 0, Some(80), 1, 1))
        .module(committed("other/b", 1, Some(80), 1, 1)),
        // -- rule 6: reserved GPUs
        row("reserved explicit index denied", gpu("1"), denied(403, &["reserved"])).policy("reservedForVms: [1]"),
        row("reserved explicit index denied even with enforcement warn", gpu("1"), denied(403, &["reserved"]))
            .policy("reservedForVms: [1]\nenforcement: warn"),
    ]
}

#[rustfmt::skip]
pub fn capacity() -> Vec<Row> {
    vec![
        // -- rule 5: capacity
        row(
            "capacity: replicas x percentage over 100 denied",
            gpu("0").ann(PCT, "40").replicas(3).no_surge(),
            denied(403, &["maxMpsPercentagePerGpu", "120%"]),
        )
        .policy("defaultMode: mps"),
        row(
            "capacity: replicas x percentage of exactly 100 allowed",
            gpu("0").ann(PCT, "50").replicas(2).no_surge(),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "capacity: a rolling update's surge pods count (the default maxSurge 25% rounds up to 1)",
            gpu("0").ann(PCT, "50").replicas(2),
            denied(403, &["maxMpsPercentagePerGpu", "(2 + maxSurge 1) x 50% = 150%", "maxSurge to 0"]),
        )
        .policy("defaultMode: mps"),
        row(
            "capacity: a Recreate rollout runs no surge pods",
            gpu("0").ann(PCT, "50").replicas(2).top_spec("strategy", json!({ "type": "Recreate" })),
            assigned("0", MPS, Some("50")).holds(2, 2).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "capacity: an explicit maxSurge counts that many pods",
            gpu("0").ann(PCT, "20").replicas(2).top_spec("strategy", json!({ "rollingUpdate": { "maxSurge": 3 } })),
            assigned("0", MPS, Some("20")).holds(5, 5).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "capacity: over 100 allowed with a warning under enforcement warn",
            gpu("0").ann(PCT, "40").replicas(3),
            assigned("0", MPS, Some("40")).env("nginx", &[(NVD, "0"), (MPS_PCT, "40")]).warns(1, "maxMpsPercentagePerGpu").done(),
        )
        .policy("defaultMode: mps\nenforcement: warn"),
        row(
            "capacity: maxMpsPercentagePerGpu 0 is no cap",
            gpu("0").ann(PCT, "40").replicas(3),
            assigned("0", MPS, Some("40")).env("nginx", &[(NVD, "0"), (MPS_PCT, "40")]).done(),
        )
        .policy("defaultMode: mps\nmaxMpsPercentagePerGpu: 0"),
        row("capacity: maxClientsPerGpu exceeded", gpu("0").replicas(5), denied(403, &["maxClientsPerGpu"]))
            .policy("maxClientsPerGpu: 4"),
        row(
            "capacity: clients are replicas x selected containers",
            gpu("0").sidecar().replicas(3).no_surge(),
            denied(403, &["maxClientsPerGpu", "6"]),
        )
        .policy("maxClientsPerGpu: 4"),
        row(
            "capacity: unselected containers are not clients",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").replicas(3),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[]).done(),
        )
        .policy("maxClientsPerGpu: 4"),
        row("capacity: mps clients never above 48", gpu("0").ann(PCT, "1").replicas(49), denied(403, &["48"]))
            .policy("defaultMode: mps\nmaxClientsPerGpu: 100"),
        row(
            "capacity: 48 mps clients allowed",
            gpu("0").ann(PCT, "1").replicas(48).no_surge(),
            assigned("0", MPS, Some("1")).env("nginx", &[(NVD, "0"), (MPS_PCT, "1")]).done(),
        )
        .policy("defaultMode: mps\nmaxClientsPerGpu: 100"),
        row(
            "capacity: time-slicing clients may exceed 48 when the policy says so",
            gpu("0").replicas(60),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        )
        .policy("maxClientsPerGpu: 100"),
        row("capacity: committed modules on the GPU count", gpu("0").ann(PCT, "50"), denied(403, &["maxMpsPercentagePerGpu", "60%"]))
            .policy("defaultMode: mps")
            .module(committed("other/a", 0, Some(60), 1, 1)),
        row(
            "capacity: committed clients on the GPU count",
            gpu("0").replicas(2),
            denied(403, &["maxClientsPerGpu"]),
        )
        .policy("maxClientsPerGpu: 4")
        .module(committed("other/a", 0, None, 3, 3)),
        row(
            "capacity: a module counts on every candidate node (worst case)",
            gpu("0").ann(PCT, "30"),
            denied(403, &["node-b", "maxMpsPercentagePerGpu"]),
        )
        .policy("defaultMode: mps")
        .nodes(two_full_nodes())
        .module(pinned(committed("other/a", 0, Some(80), 1, 1), "b")),
        row(
            "capacity: a module pinned elsewhere does not count",
            gpu("0").ann(PCT, "30").node_selector("pool", "a"),
            assigned("0", MPS, Some("30")).env("nginx", &[(NVD, "0"), (MPS_PCT, "30")]).done(),
        )
        .policy("defaultMode: mps")
        .nodes(two_full_nodes())
        .module(pinned(committed("other/a", 0, Some(80), 1, 1), "b")),
    ]
}

#[rustfmt::skip]
pub fn rule_7_and_nodes() -> Vec<Row> {
    vec![
        // -- rule 7
        row(
            "excluded namespace allowed unchanged even with a typo key",
            web().ann("gpushare.io/gpus", "0,1").var("nginx", NVD, "all"),
            unchanged().done(),
        )
        .namespace("kube-system"),
        row("policy namespaces.exclude replaces the default list", gpu("all"), unchanged().done())
            .policy("namespaces: { exclude: [batch] }")
            .namespace("batch"),
        // -- rule 2: candidate nodes and GPU counts
        row(
            "nodeSelector matching a 1-GPU node denies index 1",
            gpu("1").node_selector("pool", "b"),
            denied(403, &[GPU, "node-b", "VMs"]),
        )
        .nodes(two_nodes()),
        row(
            "nodeSelector matching a 2-GPU node allows index 1",
            gpu("1").node_selector("pool", "a"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .nodes(two_nodes()),
        row(
            "no nodeSelector: index 1 must exist on every GPU node",
            gpu("1"),
            denied(403, &[GPU, "node-b"]),
        )
        .nodes(two_nodes()),
        row(
            "no nodeSelector: auto only considers indexes every node has",
            gpu("auto"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        )
        .nodes(two_nodes())
        .module(committed("other/busy", 0, None, 10, 10)),
        row(
            "nodeName pins the candidate node",
            gpu("1").spec_field("nodeName", json!("node-a")),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .nodes(two_nodes()),
        row(
            "no nodeSelector: nodes without GPUs are not candidates",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .nodes(Nodes::Explicit(vec![node("node-a", "a", Some(2)), node("cpu-1", "cpu", Some(0)), node("cpu-2", "cpu", None)])),
        row("no candidate node denied with the VM hint", gpu("0").node_selector("pool", "gpu-xl"), denied(403, &["nodeSelector", "VMs"]))
            .nodes(two_nodes()),
        row(
            "nodeSelector matching only a node with 0 GPUs denied with the VM hint",
            gpu("0").node_selector("pool", "cpu"),
            denied(403, &["VMs"]),
        )
        .nodes(Nodes::Explicit(vec![node("node-a", "a", Some(2)), node("cpu-1", "cpu", Some(0))])),
        row("zero GPUs (all passed to VMs) denied with the VM hint", gpu("auto"), denied(403, &["VMs"])).gpus(Some(0)),
        row("no node reports a GPU denied with the VM hint", gpu("0"), denied(403, &["VMs"]))
            .nodes(Nodes::Explicit(vec![node("node-a", "a", Some(0)), node("node-b", "b", None)])),
        row(
            "policy nodes.<name>.gpus overrides the node's count",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("nodes: { node-b: { gpus: 2 } }")
        .nodes(two_nodes()),
        row(
            "policy nodes.<name>.gpus can hide a GPU the node reports",
            gpu("1").node_selector("pool", "a"),
            denied(403, &[GPU, "node-a"]),
        )
        .policy("nodes: { node-a: { gpus: 1 } }")
        .nodes(two_nodes()),
        row(
            "policy nodes.<name>.gpuModes sets a GPU's mode on that node",
            gpu("1").ann(MODE, "mps").node_selector("pool", "a"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50")]).done(),
        )
        .policy("nodes: { node-a: { gpuModes: { 1: mps } } }")
        .nodes(two_full_nodes()),
        row(
            "a GPU whose mode differs between candidate nodes denied",
            gpu("1").ann(MODE, "mps"),
            denied(403, &["mps", "node-b"]),
        )
        .policy("nodes: { node-a: { gpuModes: { 1: mps } } }")
        .nodes(two_full_nodes()),
        row(
            "auto skips a GPU whose mode differs between candidate nodes",
            gpu("auto"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("nodes: { node-a: { gpuModes: { 0: mps } } }")
        .nodes(two_full_nodes()),
        row(
            "policy nodes.<name>.reservedForVms replaces the global list",
            gpu("1").node_selector("pool", "a"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("reservedForVms: [1]\nnodes: { node-a: { reservedForVms: [] } }")
        .nodes(two_full_nodes()),
        row(
            "GPU count from the nvidia.com/gpu.count label",
            gpu("1").node_selector("pool", "a"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .nodes(two_nodes()),
        row("policy gpusPerNode beats the node's label", gpu("1").node_selector("pool", "a"), denied(403, &[GPU, "VMs"]))
            .policy("gpusPerNode: 1")
            .nodes(two_nodes()),
        row(
            "policy gpusPerNode raises a node's count",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("gpusPerNode: 2")
        .nodes(two_nodes()),
        row(
            "policy nodes.<name>.gpus beats gpusPerNode",
            gpu("1").node_selector("pool", "a"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("gpusPerNode: 1\nnodes: { node-a: { gpus: 2 } }")
        .nodes(two_nodes()),
        row("standalone without --gpus has 1 GPU", gpu("1"), denied(403, &[GPU, "VMs"])).gpus(None),
        row(
            "standalone without --gpus takes gpusPerNode",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("gpusPerNode: 2")
        .gpus(None),
        row(
            "standalone without --gpus takes nodes.standalone.gpus",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("gpusPerNode: 1\nnodes: { standalone: { gpus: 2 } }")
        .gpus(None),
        row("standalone --gpus beats the policy", gpu("1"), denied(403, &[GPU, "VMs"]))
            .policy("gpusPerNode: 2\nnodes: { standalone: { gpus: 2 } }")
            .gpus(Some(1)),
    ]
}
