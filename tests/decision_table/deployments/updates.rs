//! Rows of the decision table for UPDATEs of a Deployment: what is kept, moved, released or denied
//! when the stored object changes.

use serde_json::json;

use super::gpu;
use crate::harness::*;

#[rustfmt::skip]
pub fn rows() -> Vec<Row> {
    vec![
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
    ]
}
