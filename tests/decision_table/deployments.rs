//! Rows of the decision table for Deployments: every rule and edge case of CONTRACT sections 2-4.
//!
//! Placement (how `auto` chooses, reserved GPUs, capacity, rule 7, candidate nodes) is in
//! `deployments/placement.rs`, UPDATEs in `deployments/updates.rs`.

#[path = "deployments/placement.rs"]
mod placement;
#[path = "deployments/updates.rs"]
mod updates;

use serde_json::{json, Value};

use super::harness::*;

/// Every row, in the order of the contract's sections. The parts are `rustfmt::skip`: the table
/// keeps one line per row where it fits, as rustfmt left it when the rows were one `vec!`.
pub fn rows() -> Vec<Row> {
    [
        managed_and_one_gpu(),
        placement::auto_and_reserved(),
        modes_keys_containers_and_env(),
        placement::capacity(),
        updates::rows(),
        placement::rule_7_and_nodes(),
        defaults_and_robustness(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn visible(value: &str) -> Dep {
    web().var("nginx", NVD, value)
}

fn gpu(value: &str) -> Dep {
    web().ann(GPU, value)
}

#[rustfmt::skip]
fn managed_and_one_gpu() -> Vec<Row> {
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
    ]
}

#[rustfmt::skip]
fn modes_keys_containers_and_env() -> Vec<Row> {
    vec![
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
    ]
}

#[rustfmt::skip]
fn defaults_and_robustness() -> Vec<Row> {
    vec![
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
