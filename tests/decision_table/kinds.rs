//! Rows of the decision table for every other workload kind (CONTRACT section 2a): where each
//! keeps its pod template, how many pods it counts, controller-owned objects, finished Jobs and
//! Pods, UPDATEs that may not change a Job's or a Pod's pod template, and capacity across kinds.

use serde_json::json;

use super::harness::*;

const MPS_POLICY: &str = "defaultMode: mps";

/// `web()` as another kind.
fn of(kind: &str) -> Dep {
    web().into_kind(kind)
}

/// A Job as gpushare stored it: GPU 0, time-slicing.
fn stored_job() -> Dep {
    of("Job")
        .ann(GPU, "0")
        .assigned("0", TS, None)
        .var("nginx", NVD, "0")
}

/// A Job as gpushare stored it on an mps GPU 0 at 40% per pod.
fn stored_mps_job() -> Dep {
    of("Job")
        .ann(PCT, "40")
        .assigned("0", MPS, Some("40"))
        .var("nginx", NVD, "0")
        .var("nginx", MPS_PCT, "40")
}

fn stored_pod() -> Dep {
    of("Pod")
        .ann(GPU, "0")
        .assigned("0", TS, None)
        .var("nginx", NVD, "0")
}

pub fn rows() -> Vec<Row> {
    vec![
        // -- apps/v1: ReplicaSet, StatefulSet, DaemonSet read like a Deployment
        row(
            "ReplicaSet: an mps module gets its variables and assigned annotations on both metadata",
            of("ReplicaSet").ann(PCT, "20"),
            assigned("0", MPS, Some("20")).env("nginx", &[(NVD, "0"), (MPS_PCT, "20")]).holds(1, 1).done(),
        )
        .policy(MPS_POLICY),
        row(
            "ReplicaSet owned by a Deployment is not examined",
            of("ReplicaSet").ann(GPU, "0,1").owned_by("Deployment", "web"),
            unchanged().outcome("Controlled").done(),
        ),
        row(
            "StatefulSet: 3 replicas x 30% fit on one GPU",
            of("StatefulSet").ann(PCT, "30").replicas(3),
            assigned("0", MPS, Some("30")).env("nginx", &[(NVD, "0"), (MPS_PCT, "30")]).holds(3, 3).done(),
        )
        .policy(MPS_POLICY)
        .gpus(Some(1)),
        row(
            "StatefulSet: 4 replicas x 30% exceed one GPU",
            of("StatefulSet").ann(PCT, "30").replicas(4),
            denied(403, &["4 x 30%", "120%", "lower replicas"]),
        )
        .policy(MPS_POLICY)
        .gpus(Some(1)),
        row(
            "DaemonSet: one pod per candidate node, whatever replicas says",
            of("DaemonSet").ann(PCT, "60").replicas(5),
            assigned("0", MPS, Some("60")).env("nginx", &[(NVD, "0"), (MPS_PCT, "60")]).holds(1, 1).done(),
        )
        .policy(MPS_POLICY)
        .gpus(Some(1)),
        row(
            "DaemonSet: over capacity names only what it can lower",
            of("DaemonSet").ann(PCT, "60"),
            denied(403, &["1 x 60%", "(lower gpushare.io/mps-percentage)"]),
        )
        .policy(MPS_POLICY)
        .gpus(Some(1))
        .module(committed("other/a", 0, Some(50), 1, 1)),
        row(
            "DaemonSet: the GPU must exist on every node it runs on",
            of("DaemonSet").ann(GPU, "1"),
            denied(403, &[GPU, "node-b"]),
        )
        .nodes(two_nodes()),
        // -- batch/v1 Job
        row(
            "Job: time-slicing GPU 0 on its pod template",
            of("Job").ann(GPU, "0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).holds(1, 1).outcome("Assigned").done(),
        ),
        row(
            "Job: parallelism x percentage counts against capacity",
            of("Job").ann(PCT, "30").replicas(4),
            denied(403, &["4 x 30%", "lower parallelism"]),
        )
        .policy(MPS_POLICY)
        .gpus(Some(1)),
        row(
            "Job: parallelism x containers are its client processes",
            of("Job").ann(GPU, "0").sidecar().replicas(3),
            assigned("0", TS, None).holds(3, 6).done(),
        ),
        row(
            "Job: a Complete Job holds nothing and is not examined",
            of("Job").ann(GPU, "0,1").condition("Complete"),
            unchanged().outcome("Finished").done(),
        ),
        row(
            "Job: a Failed Job holds nothing",
            stored_job().condition("Failed"),
            unchanged().outcome("Finished").done(),
        )
        .update(stored_job()),
        row(
            "Job owned by a CronJob is not examined",
            of("Job").var("nginx", NVD, "all").owned_by("CronJob", "nightly"),
            unchanged().outcome("Controlled").done(),
        ),
        row(
            "Job: resourceClaims are allowed with a warning",
            of("Job").ann(GPU, "0").spec_field("resourceClaims", json!([{ "name": "gpu", "resourceClaimName": "t4" }])),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).warns(1, "resourceClaims").done(),
        ),
        row(
            "Job UPDATE keeps the CREATE assignment and writes nothing",
            stored_job().top_spec("suspend", json!(true)),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).outcome("Assigned").holds(1, 1).done(),
        )
        .policy("defaultGpu: 1")
        .update(stored_job()),
        row(
            "Job UPDATE writes missing assigned annotations on its own metadata only",
            {
                let mut job = stored_job();
                job.0["metadata"]["annotations"] = json!({ GPU: "0" });
                job
            },
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).holds(1, 1).done(),
        )
        .update(stored_job()),
        row(
            "Job UPDATE: a higher parallelism within capacity is allowed",
            stored_mps_job().replicas(2),
            assigned("0", MPS, Some("40")).env("nginx", &[(NVD, "0"), (MPS_PCT, "40")]).holds(2, 2).done(),
        )
        .policy(MPS_POLICY)
        .gpus(Some(1))
        .update(stored_mps_job()),
        row(
            "Job UPDATE: a higher parallelism over capacity is denied",
            stored_mps_job().replicas(3),
            denied(403, &["3 x 40%", "120%", "lower parallelism"]),
        )
        .policy(MPS_POLICY)
        .gpus(Some(1))
        .update(stored_mps_job()),
        row(
            "Job UPDATE: changing gpushare.io/gpu is denied, the pods keep their GPU",
            stored_job().ann(GPU, "1"),
            denied(403, &[GPU, "from \"0\" to \"1\"", "Job", "pod template"]),
        )
        .update(stored_job()),
        row(
            "Job UPDATE: adding gpushare.io/ annotations after creation is denied",
            of("Job").ann(GPU, "0"),
            denied(403, &["added", "Job web", "delete the Job"]),
        )
        .update(of("Job")),
        row(
            "Job UPDATE: removing the annotations is denied while its pods keep GPU 0",
            {
                let mut job = stored_job();
                job.0["metadata"]["annotations"] = json!({});
                job
            },
            denied(403, &["removed", "GPU 0", "delete the Job"]),
        )
        .update(stored_job()),
        row(
            "Job UPDATE of a Job created without an assignment is allowed with a warning",
            of("Job").ann(GPU, "0").top_spec("suspend", json!(false)),
            unchanged().outcome("Unmanaged").warns(1, "without a GPU assignment").done(),
        )
        .update(of("Job").ann(GPU, "0")),
        row(
            "Job UPDATE: a malformed value is still denied",
            stored_job().ann(GPU, "0,1"),
            denied(403, &[GPU, "0,1"]),
        )
        .update(stored_job()),
        // -- batch/v1 CronJob: the pod template of its job template
        row(
            "CronJob: the job template's pod template gets the GPU, with the overlap warning",
            of("CronJob").ann(GPU, "1"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).warns(1, "overlap").holds(1, 1).done(),
        ),
        row(
            "CronJob with concurrencyPolicy Forbid gets no overlap warning",
            of("CronJob").ann(GPU, "1").top_spec("concurrencyPolicy", json!("Forbid")),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).done(),
        ),
        row(
            "CronJob: annotations on the job template's pod template are read",
            of("CronJob").tann(PCT, "20").top_spec("concurrencyPolicy", json!("Replace")),
            assigned("0", MPS, Some("20")).env("nginx", &[(NVD, "0"), (MPS_PCT, "20")]).done(),
        )
        .policy(MPS_POLICY),
        row(
            "CronJob: the job template's parallelism counts",
            of("CronJob").ann(PCT, "30").replicas(4),
            denied(403, &["4 x 30%", "lower parallelism"]),
        )
        .policy(MPS_POLICY)
        .gpus(Some(1)),
        row(
            "CronJob UPDATE may move its GPU: its template may change",
            of("CronJob").ann(GPU, "1").assigned("0", TS, None).var("nginx", NVD, "0"),
            assigned("1", TS, None).env("nginx", &[(NVD, "1")]).warns(2, "overlap").done(),
        )
        .update(of("CronJob").ann(GPU, "0").assigned("0", TS, None).var("nginx", NVD, "0")),
        // -- v1 Pod: its own template, one metadata
        row(
            "Pod: a bare Pod gets the GPU and the assigned annotations on its one metadata",
            of("Pod").ann(GPU, "0"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).holds(1, 1).done(),
        ),
        row(
            "Pod: mps with hostIPC and the pipe directory on the pod spec",
            of("Pod").ann(PCT, "25"),
            assigned("1", MPS, Some("25"))
                .env("nginx", &[(NVD, "1"), (MPS_PCT, "25"), (MPS_PIPE, "/run/nvidia-mps")])
                .host_ipc(Some(true))
                .volumes(json!([{ "name": PIPE_VOLUME, "hostPath": { "path": "/run/nvidia-mps", "type": "Directory" } }]))
                .mounts("nginx", json!([{ "name": PIPE_VOLUME, "mountPath": "/run/nvidia-mps" }]))
                .done(),
        )
        .policy("gpuModes: { 1: mps }\nmps: { hostIPC: true, pipeDirectory: /run/nvidia-mps }"),
        row(
            "Pod owned by a ReplicaSet is not examined",
            of("Pod").ann(GPU, "0,1").owned_by("ReplicaSet", "web-5d4f"),
            unchanged().outcome("Controlled").done(),
        ),
        row(
            "Pod: a Succeeded Pod holds nothing",
            stored_pod().phase("Succeeded"),
            unchanged().outcome("Finished").done(),
        )
        .update(stored_pod()),
        row(
            "Pod: unmanaged with NVIDIA_VISIBLE_DEVICES=all is denied",
            of("Pod").var("nginx", NVD, "all"),
            denied(403, &[NVD, "all"]),
        ),
        row(
            "Pod UPDATE keeps its GPU and never patches the spec",
            stored_pod().ann("team", "vision"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).outcome("Assigned").done(),
        )
        .policy("defaultGpu: 1")
        .update(stored_pod()),
        row(
            "Pod UPDATE: changing gpushare.io/gpu is denied",
            stored_pod().ann(GPU, "auto"),
            denied(403, &[GPU, "Pod", "delete the Pod"]),
        )
        .update(stored_pod()),
        // -- capacity across kinds
        row(
            "a Job's claim counts against a Deployment on the same GPU",
            web().ann(GPU, "0").ann(PCT, "30"),
            denied(403, &["80% MPS committed", "gpushare.io/gpu"]),
        )
        .policy(MPS_POLICY)
        .module(committed("default/Job/batch", 0, Some(80), 1, 1)),
        row(
            "a Job and a Deployment of the same name are two modules",
            web().ann(GPU, "0").ann(PCT, "30"),
            denied(403, &["80% MPS committed"]),
        )
        .policy(MPS_POLICY)
        .module(committed("default/Job/web", 0, Some(80), 1, 1)),
        row(
            "a Pod's claim counts against a CronJob",
            of("CronJob").ann(PCT, "30").top_spec("concurrencyPolicy", json!("Forbid")),
            assigned("1", MPS, Some("30")).env("nginx", &[(NVD, "1"), (MPS_PCT, "30")]).done(),
        )
        .policy(MPS_POLICY)
        .module(committed("default/Pod/solo", 0, Some(80), 1, 1)),
        // -- every GPU consumer is counted (CONTRACT section 2b)
        row(
            "the device's Job sample (NVIDIA_VISIBLE_DEVICES=0 by hand) is assigned GPU 0 at the default percentage",
            of("Job").var("nginx", NVD, "0"),
            assigned("0", MPS, Some("50")).env("nginx", &[(NVD, "0"), (MPS_PCT, "50")]).holds(1, 1).done(),
        )
        .policy(MPS_POLICY),
        row(
            "a hand-written percentage is the module's share and counts against capacity",
            of("Job").var("nginx", NVD, "0").var("nginx", MPS_PCT, "60"),
            denied(403, &["60% MPS committed", "maxMpsPercentagePerGpu"]),
        )
        .policy(MPS_POLICY)
        .module(committed("default/Job/other", 0, Some(60), 1, 1)),
        row(
            "a hand-written Pod is a module of its own",
            of("Pod").var("nginx", NVD, "1").var("nginx", MPS_PCT, "30"),
            assigned("1", MPS, Some("30")).env("nginx", &[(NVD, "1"), (MPS_PCT, "30")]).holds(1, 1).done(),
        )
        .policy(MPS_POLICY),
        row(
            "a hand-written percentage without an index lets auto choose and writes it",
            of("Job").var("nginx", MPS_PCT, "30"),
            assigned("0", MPS, Some("30")).env("nginx", &[(MPS_PCT, "30"), (NVD, "0")]).done(),
        )
        .policy(MPS_POLICY),
        row(
            "a hand-written valueFrom for NVIDIA_VISIBLE_DEVICES is denied naming gpushare.io/gpu",
            of("Job").var_from("nginx", NVD),
            denied(403, &["valueFrom", GPU]),
        ),
        row(
            "a hand-written GPU UUID is denied naming gpushare.io/gpu",
            of("Job").var("nginx", NVD, "GPU-3b1f0c2d"),
            denied(400, &["by index", GPU]),
        ),
        row(
            "two containers writing different GPUs by hand are denied",
            of("Job").sidecar().var("nginx", NVD, "0").var("sidecar", NVD, "1"),
            denied(403, &["nginx", "sidecar", "only one GPU"]),
        ),
        row(
            "handWrittenGpuEnv: deny refuses hand-written variables, naming the annotations",
            of("Job").var("nginx", NVD, "0"),
            denied(403, &["handWrittenGpuEnv: deny", GPU, PCT]),
        )
        .policy("handWrittenGpuEnv: deny"),
        row(
            "handWrittenGpuEnv: allow lets them through uncounted, with a warning",
            of("Job").var("nginx", NVD, "0"),
            unchanged().warns(1, "does not count").done(),
        )
        .policy("handWrittenGpuEnv: allow"),
        row(
            "an init container using the module's GPU by hand is one more client process",
            of("Job").ann(GPU, "0").init_container("warm-up", json!([{ "name": NVD, "value": "0" }])),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).holds(1, 2).done(),
        ),
        row(
            "an init container using another GPU by hand is denied",
            of("Job").ann(GPU, "0").init_container("warm-up", json!([{ "name": NVD, "value": "1" }])),
            denied(403, &["warm-up", "only one GPU"]),
        ),
        row(
            "a Pod whose controller is a ConfigMap is a module of its own",
            of("Pod").ann(GPU, "0").owned_by("ConfigMap", "forged"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).holds(1, 1).done(),
        ),
        row(
            "a Pod an unknown operator made (an Argo Workflow) is a module of its own",
            of("Pod").ann(GPU, "0").owned_by("Workflow", "train"),
            assigned("0", TS, None).env("nginx", &[(NVD, "0")]).done(),
        ),
        row(
            "hideGpuFromUnmanaged writes void on unmanaged containers without the variable",
            of("Job").init_container("setup", json!([])),
            allowed().env("nginx", &[(NVD, "void")]).done(),
        )
        .policy("hideGpuFromUnmanaged: true"),
        row(
            "hideGpuFromUnmanaged leaves a container that sets the variable alone",
            of("Job").var("nginx", NVD, "none"),
            unchanged().done(),
        )
        .policy("hideGpuFromUnmanaged: true"),
        row(
            "Pod Security is not known offline: mps hostIPC is allowed",
            of("Job").ann(PCT, "20"),
            assigned("0", MPS, Some("20")).host_ipc(Some(true)).done(),
        )
        .policy("defaultMode: mps\nmps: { hostIPC: true }"),
    ]
}
