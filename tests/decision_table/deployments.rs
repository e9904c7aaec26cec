//! Rows of the decision table for Deployments: every rule and edge case of CONTRACT sections 2-4.

use serde_json::{json, Value};

use super::harness::*;

pub fn rows() -> Vec<Row> {
    let visible = |value: &str| web().var("nginx", NVD, value);
    let gpu = |value: &str| web().ann(GPU, value);
    vec![
        // -- section 2: managed or not, rule 1 on containers gpushare does not write to
        row("unmanaged: allowed unchanged", web(), unchanged().done()),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=all denied", visible("all"), denied(403, &[NVD, "all"])),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=0,1 denied", visible("0,1"), denied(403, &[NVD, "0,1"])),
        row(
            "hand-written NVIDIA_VISIBLE_DEVICES=0 is counted as gpushare.io/gpu: \"0\"",
            visible("0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).holds(2, 2).done(),
        ),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=none allowed", visible("none"), unchanged().done()),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES=void allowed", visible("void"), unchanged().done()),
        row("unmanaged: NVIDIA_VISIBLE_DEVICES empty allowed", visible(""), unchanged().done()),
        row(
            "unmanaged: init container with NVIDIA_VISIBLE_DEVICES=all denied",
            web().init_container("setup", json!([{ "name": NVD, "value": "all" }])),
            denied(403, &[NVD, "setup"]),
        ),
        row(
            "unmanaged: a GPU UUID list in NVIDIA_VISIBLE_DEVICES denied",
            visible("GPU-11111111-2222-3333-4444-555555555555,GPU-66666666-7777-8888-9999-000000000000"),
            denied(403, &[NVD]),
        ),
        // -- rule 1 and 2: the one GPU index
        row(
            "gpu 0 on 2 GPUs",
            gpu("0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row("gpu 1 on 2 GPUs", gpu("1"), assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done()),
        row("gpu 2 on 2 GPUs denied with the VM hint", gpu("2"), denied(403, &[GPU, "VMs"])),
        row("gpu list 0,1 denied", gpu("0,1"), denied(403, &[GPU, "0,1", "one GPU"])),
        row("gpu all denied", gpu("all"), denied(403, &[GPU, "all"])),
        row("gpu range 0-1 denied", gpu("0-1"), denied(403, &[GPU, "0-1"])),
        row("gpu UUID denied as malformed", gpu("GPU-11111111-2222-3333-4444-555555555555"), denied(400, &[GPU])),
        row("gpu UUID list denied", gpu("GPU-1111,GPU-2222"), denied(403, &[GPU])),
        row("gpu not a number denied", gpu("first"), denied(400, &[GPU, "auto"])),
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
        // -- rule 4 and 3: modes and well-formed values
        row("mode mps on a time-slicing GPU denied", gpu("0").ann(MODE, "mps"), denied(403, &["mps", "time-slicing"])),
        row(
            "mode time-slicing on an mps GPU denied",
            gpu("0").ann(MODE, "time-slicing"),
            denied(403, &["mps", "time-slicing"]),
        )
        .policy("gpuModes: { 0: mps }"),
        row(
            "mode mps on an mps GPU gets the default percentage",
            gpu("1").ann(MODE, "mps"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50")]).done(),
        )
        .policy("gpuModes: { 1: mps }"),
        row("mode not a mode denied", gpu("0").ann(MODE, "shared"), denied(400, &[MODE])),
        row(
            "mps-percentage implies mps and auto finds the mps GPU",
            web().ann(PCT, "20"),
            assigned("1", MPS, Some("20")).env("nginx", &[(NVD, "1"), (MPS_PCT, "20")]).done(),
        )
        .policy("gpuModes: { 1: mps }"),
        row("mps-percentage on a time-slicing GPU denied", gpu("0").ann(PCT, "20"), denied(403, &["mps"])),
        row("mps-percentage with mode time-slicing denied", gpu("0").ann(MODE, "time-slicing").ann(PCT, "20"), denied(400, &[PCT]))
            .policy("gpuModes: { 0: mps }"),
        row("mps-percentage 0 denied", web().ann(PCT, "0"), denied(400, &[PCT])).policy("defaultMode: mps"),
        row("mps-percentage 101 denied", web().ann(PCT, "101"), denied(400, &[PCT])).policy("defaultMode: mps"),
        row("mps-percentage abc denied", web().ann(PCT, "abc"), denied(400, &[PCT])).policy("defaultMode: mps"),
        row("mps-percentage 20% denied", web().ann(PCT, "20%"), denied(400, &[PCT])).policy("defaultMode: mps"),
        row(
            "mps-percentage 100 allowed",
            web().ann(PCT, "100").no_surge(),
            assigned("0", MPS, Some("100")).env("nginx", &[(NVD, "0"), (MPS_PCT, "100")]).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "mps-memory-limit 512M sets the pinned memory limit for ordinal 0",
            gpu("0").ann(MEM, "512M"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50"), (MPS_MEM, "0=512M")]).done(),
        )
        .policy("gpuModes: { 0: mps }"),
        row(
            "mps-memory-limit implies mps",
            web().ann(MEM, "2G"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50"), (MPS_MEM, "0=2G")]).done(),
        )
        .policy("gpuModes: { 1: mps }"),
        row("mps-memory-limit 2Gi denied", web().ann(MEM, "2Gi"), denied(400, &[MEM])).policy("defaultMode: mps"),
        row("mps-memory-limit with mode time-slicing denied", web().ann(MODE, "time-slicing").ann(MEM, "1G"), denied(400, &[MEM])),
        // -- section 2: keys
        row(
            "unknown gpushare.io key denied even alone, suggesting the right key",
            web().ann("gpushare.io/gpus", "0"),
            denied(400, &["gpushare.io/gpus", "did you mean gpushare.io/gpu?"]),
        ),
        row(
            "unknown gpushare.io key on the template denied",
            gpu("0").tann("gpushare.io/mps-percent", "20"),
            denied(400, &["gpushare.io/mps-percent", PCT]),
        ),
        row(
            "assigned-* keys alone do not make a Deployment managed",
            web().assigned("1", MPS, Some("20")),
            unchanged().done(),
        ),
        row(
            "a user's assigned-* values are overwritten",
            gpu("0").assigned("1", MPS, Some("30")),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row("metadata and template disagree: denied", gpu("0").tann(GPU, "1"), denied(400, &[GPU, "spec.template"])),
        row(
            "metadata and template agree: allowed",
            gpu("1").tann(GPU, "1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        ),
        row(
            "a key on the template alone makes it managed",
            web().tann(GPU, "1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        ),
        row(
            "a template without metadata gets the assigned annotations",
            gpu("0").without_template_metadata(),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row(
            "replicas absent count as one",
            {
                let mut d = gpu("0").ann(PCT, "100").no_surge();
                d.at("/spec").as_object_mut().expect("spec").remove("replicas");
                d
            },
            assigned("0", MPS, Some("100")).env("nginx", &[(NVD, "0"), (MPS_PCT, "100")]).done(),
        )
        .policy("defaultMode: mps"),
        // -- containers
        row(
            "containers selects one of two",
            gpu("0").sidecar().ann(CONTAINERS, "nginx"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[]).done(),
        ),
        row(
            "no containers key selects every container",
            gpu("0").sidecar(),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[(NVD, "0")]).done(),
        ),
        row(
            "containers listing a missing container denied",
            gpu("0").ann(CONTAINERS, "nginx,ghost"),
            denied(400, &[CONTAINERS, "ghost"]),
        ),
        row(
            "unselected container with NVIDIA_VISIBLE_DEVICES=all denied",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var("sidecar", NVD, "all"),
            denied(403, &[NVD, "sidecar"]),
        ),
        row(
            "unselected container naming another GPU denied: one module, one GPU",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var("sidecar", NVD, "1"),
            denied(403, &[NVD, "sidecar", "only one GPU"]),
        ),
        row(
            "unselected container naming the module's GPU is one more client process, untouched",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var("sidecar", NVD, "0").no_surge(),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[(NVD, "0")]).holds(1, 2).done(),
        ),
        row(
            "unselected container's GPU pins auto",
            gpu("auto").sidecar().ann(CONTAINERS, "nginx").var("sidecar", NVD, "1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).env("sidecar", &[(NVD, "1")]).done(),
        ),
        row(
            "managed: init container with NVIDIA_VISIBLE_DEVICES=0,1 denied",
            gpu("0").init_container("setup", json!([{ "name": NVD, "value": "0,1" }])),
            denied(403, &[NVD, "setup"]),
        ),
        row(
            "hideGpuFromOtherContainers sets void on unselected containers",
            gpu("0").sidecar().ann(CONTAINERS, "nginx"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[(NVD, "void")]).done(),
        )
        .policy("hideGpuFromOtherContainers: true"),
        row(
            "hideGpuFromOtherContainers replaces an unselected container's all with void",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var("sidecar", "A", "1").var("sidecar", NVD, "all"),
            assigned("0", TS, None)
                .env("nginx", &[(NVD, "0")])
                .env("sidecar", &[("A", "1"), (NVD, "void")])
                .warns(1, NVD)
                .done(),
        )
        .policy("hideGpuFromOtherContainers: true"),
        // -- section 3: env ownership
        row(
            "env: an existing value is replaced in place with a warning",
            gpu("0").var("nginx", "A", "1").var("nginx", NVD, "1").var("nginx", "B", "2"),
            assigned("0", TS, None).env("nginx", &[("A", "1"), (NVD, "0"), ("B", "2")]).warns(1, NVD).done(),
        ),
        row(
            "env: an existing equal value gives no warning",
            gpu("0").var("nginx", NVD, "0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row(
            "env: new entries are appended after the others",
            gpu("0").ann(PCT, "20").var("nginx", "A", "1").var("nginx", "B", "2"),
            assigned("0", MPS, Some("20")).env("nginx", &[("A", "1"), ("B", "2"), (NVD, "0"), (MPS_PCT, "20")]).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "env: mps percentage replaced with a warning",
            gpu("0").ann(PCT, "20").var("nginx", MPS_PCT, "30"),
            assigned("0", MPS, Some("20")).env("nginx", &[(MPS_PCT, "20"), (NVD, "0")]).warns(1, MPS_PCT).done(),
        )
        .policy("defaultMode: mps"),
        row("env: valueFrom on NVIDIA_VISIBLE_DEVICES denied", gpu("0").var_from("nginx", NVD), denied(403, &[NVD, "valueFrom"])),
        row(
            "env: valueFrom on CUDA_MPS_ACTIVE_THREAD_PERCENTAGE denied",
            gpu("0").var_from("nginx", MPS_PCT),
            denied(403, &[MPS_PCT, "valueFrom"]),
        )
        .policy("defaultMode: mps"),
        row(
            "env: valueFrom on other variables is kept",
            gpu("0").var_from("nginx", "POD"),
            assigned("0", TS, None).env("nginx", &[("POD", "<valueFrom>"), (NVD, "0")]).done(),
        ),
        row(
            "time-slicing removes CUDA_MPS_* variables",
            gpu("0").var("nginx", MPS_PCT, "30").var("nginx", "X", "1").var("nginx", MPS_MEM, "0=1G"),
            assigned("0", TS, None).env("nginx", &[("X", "1"), (NVD, "0")]).done(),
        ),
        // -- rule 1: nvidia.com/gpu resources
        row("nvidia.com/gpu limit 2 denied", gpu("0").gpu_limit("nginx", json!(2)), denied(403, &["nvidia.com/gpu"])),
        row(
            "nvidia.com/gpu request 2 denied",
            gpu("0").resource("nginx", "requests", json!("2")),
            denied(403, &["nvidia.com/gpu"]),
        ),
        row(
            "nvidia.com/gpu limit 1 allowed with a warning",
            gpu("0").gpu_limit("nginx", json!(1)),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).warns(1, "nvidia.com/gpu").done(),
        ),
        // -- section 5 mps options
        row(
            "mps.hostIPC sets hostIPC on mps modules",
            gpu("0"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).host_ipc(Some(true)).done(),
        )
        .policy("gpuModes: { 0: mps }\nmps: { hostIPC: true }"),
        row(
            "mps.hostIPC leaves time-slicing modules alone",
            gpu("1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).host_ipc(None).done(),
        )
        .policy("gpuModes: { 0: mps }\nmps: { hostIPC: true }"),
        row(
            "mps.pipeDirectory mounts the pipe directory and sets CUDA_MPS_PIPE_DIRECTORY",
            gpu("0"),
            assigned("0", MPS, Some("50"))
                .env("nginx", &[(NVD, "0"), (MPS_PCT, "50"), (MPS_PIPE, "/run/nvidia-mps")])
                .volumes(json!([{ "name": PIPE_VOLUME, "hostPath": { "path": "/run/nvidia-mps", "type": "Directory" } }]))
                .mounts("nginx", json!([{ "name": PIPE_VOLUME, "mountPath": "/run/nvidia-mps" }]))
                .done(),
        )
        .policy("defaultMode: mps\nmps: { pipeDirectory: /run/nvidia-mps }"),
        row(
            "mps.pipeDirectory is not added to time-slicing modules",
            gpu("0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).volumes(Value::Null).mounts("nginx", Value::Null).done(),
        )
        .policy("mps: { pipeDirectory: /run/nvidia-mps }"),
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
        // -- UPDATE
        row(
            "UPDATE does not count the module itself twice",
            gpu("0").ann(PCT, "80").no_surge().assigned("0", MPS, Some("80")).var("nginx", NVD, "0").var("nginx", MPS_PCT, "80"),
            assigned("0", MPS, Some("80")).env("nginx", &[(NVD, "0"), (MPS_PCT, "80")]).done(),
        )
        .policy("defaultMode: mps")
        .module(committed("default/web", 0, Some(80), 1, 1))
        .update(gpu("0").ann(PCT, "80").no_surge().assigned("0", MPS, Some("80")).var("nginx", NVD, "0").var("nginx", MPS_PCT, "80")),
        row(
            "UPDATE keeps the old GPU for auto though another is less loaded",
            gpu("auto").assigned("1", TS, None).var("nginx", NVD, "1").replicas(2),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .module(committed("default/web", 1, None, 1, 1))
        .module(committed("other/busy", 1, None, 20, 20))
        .update(gpu("auto").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE keeps the old GPU when no gpu key is set",
            web().ann(CONTAINERS, "nginx").assigned("1", TS, None).var("nginx", NVD, "1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .module(committed("default/web", 1, None, 1, 1))
        .module(committed("other/busy", 1, None, 20, 20))
        .update(web().ann(CONTAINERS, "nginx").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE re-chooses when the user changed gpushare.io/gpu",
            gpu("auto").assigned("1", TS, None).var("nginx", NVD, "1"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).warns(1, NVD).done(),
        )
        .module(committed("default/web", 1, None, 1, 1))
        .module(committed("other/busy", 1, None, 20, 20))
        .update(gpu("1").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE to an explicit index moves the module",
            gpu("0").assigned("1", TS, None).var("nginx", NVD, "1"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).warns(1, NVD).done(),
        )
        .update(gpu("1").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE from mps to time-slicing drops the mps annotation and variables",
            gpu("1").assigned("0", MPS, Some("50")).var("nginx", NVD, "0").var("nginx", MPS_PCT, "50"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).warns(1, NVD).done(),
        )
        .policy("gpuModes: { 0: mps }")
        .update(gpu("0").assigned("0", MPS, Some("50")).var("nginx", NVD, "0").var("nginx", MPS_PCT, "50")),
        row(
            "UPDATE removing every key releases the module",
            web()
                .assigned("0", MPS, Some("50"))
                .var("nginx", "A", "1")
                .var("nginx", NVD, "0")
                .var("nginx", MPS_PCT, "50")
                .var("nginx", MPS_PIPE, "/run/nvidia-mps")
                .volume(json!({ "name": "data", "emptyDir": {} }))
                .pipe_volume("/run/nvidia-mps")
                .mount("nginx", "data", "/data")
                .mount("nginx", PIPE_VOLUME, "/run/nvidia-mps")
                .spec_field("hostIPC", json!(true)),
            allowed()
                .env("nginx", &[("A", "1")])
                .volumes(json!([{ "name": "data", "emptyDir": {} }]))
                .mounts("nginx", json!([{ "name": "data", "mountPath": "/data" }]))
                .host_ipc(Some(true))
                .warns(1, "hostIPC")
                .done(),
        )
        .policy("gpuModes: { 0: mps }\nmps: { hostIPC: true, pipeDirectory: /run/nvidia-mps }")
        .update(
            gpu("0")
                .assigned("0", MPS, Some("50"))
                .var("nginx", "A", "1")
                .var("nginx", NVD, "0")
                .var("nginx", MPS_PCT, "50")
                .var("nginx", MPS_PIPE, "/run/nvidia-mps")
                .volume(json!({ "name": "data", "emptyDir": {} }))
                .pipe_volume("/run/nvidia-mps")
                .mount("nginx", "data", "/data")
                .mount("nginx", PIPE_VOLUME, "/run/nvidia-mps")
                .spec_field("hostIPC", json!(true)),
        ),
        row(
            "UPDATE removing every key from a time-slicing module releases it without warnings",
            web().assigned("1", TS, None).var("nginx", NVD, "1"),
            allowed().env("nginx", &[]).done(),
        )
        .update(gpu("1").assigned("1", TS, None).var("nginx", NVD, "1")),
        row(
            "UPDATE of an unmanaged Deployment never assigned stays unchanged",
            web().replicas(3),
            unchanged().done(),
        )
        .update(web()),
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
        // -- policy defaults
        row(
            "policy defaultGpu is used when no gpu is named",
            web().ann(MODE, "time-slicing"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        )
        .policy("defaultGpu: 1"),
        row(
            "policy defaultMpsPercentage is applied",
            web().ann(MODE, "mps"),
            assigned("0", MPS, Some("30")).env("nginx", &[(NVD, "0"), (MPS_PCT, "30")]).done(),
        )
        .policy("defaultMode: mps\ndefaultMpsPercentage: 30"),
        row(
            "policy defaultMode mps makes every GPU mps",
            gpu("1"),
            assigned("1", MPS, Some("50")).env("nginx", &[(NVD, "1"), (MPS_PCT, "50")]).done(),
        )
        .policy("defaultMode: mps"),
        row(
            "UPDATE keeps the old GPU though policy defaultGpu names another",
            web().ann(MODE, "time-slicing").assigned("0", TS, None).var("nginx", NVD, "0").replicas(2),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        )
        .policy("defaultGpu: 1")
        .update(web().ann(MODE, "time-slicing").assigned("0", TS, None).var("nginx", NVD, "0")),
        // -- robustness: what clients send besides kubectl's shape
        row(
            "null annotations, env and template metadata are read as absent",
            {
                let mut d = gpu("0");
                d.0["spec"]["template"]["metadata"] = Value::Null;
                d.container("nginx")["env"] = Value::Null;
                d
            },
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row(
            "hideGpuFromOtherContainers: valueFrom on an unselected container denied",
            gpu("0").sidecar().ann(CONTAINERS, "nginx").var_from("sidecar", NVD),
            denied(403, &[NVD, "valueFrom"]),
        )
        .policy("hideGpuFromOtherContainers: true"),
        row("containers naming no container denied", gpu("0").ann(CONTAINERS, " , "), denied(400, &[CONTAINERS])),
        row(
            "containers with spaces after commas",
            gpu("0").sidecar().ann(CONTAINERS, "nginx, sidecar"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).env("sidecar", &[(NVD, "0")]).done(),
        ),
    ]
}
