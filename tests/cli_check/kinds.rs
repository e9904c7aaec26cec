//! `gpushare check` on every workload kind: the Azure Stack Edge GPU-sharing sample (two Jobs),
//! one object of each kind with what gpushare skips, and capacity across kinds in one run.

use serde_json::Value;

use super::*;

fn ase() -> String {
    fixture("ase-gpu-sharing.yaml")
}

fn gpu0_mps() -> String {
    fixture("policy-gpu0-mps.yaml")
}

#[test]
fn the_azure_stack_edge_sample_jobs_share_gpu_0_through_mps() {
    let run = check(&["--gpus", "1", "--policy", &gpu0_mps(), &ase()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.lines(),
        [
            "ALLOWED default/Job/cuda-sample1 gpu=0 mode=mps 50%",
            "ALLOWED default/Job/cuda-sample2 gpu=0 mode=mps 50%",
        ],
        "{run:?}"
    );
    // The hand-set NVIDIA_VISIBLE_DEVICES already names GPU 0: nothing to warn about.
    assert!(!run.stderr.contains("warning"), "{run:?}");

    let yaml = check(&["--gpus", "1", "--policy", &gpu0_mps(), "-o", "yaml", &ase()]);
    assert_eq!(yaml.code, 0, "{yaml:?}");
    let jobs = parse_stream(&yaml.stdout);
    assert_eq!(jobs.len(), 2, "{yaml:?}");
    for job in &jobs {
        let spec = &job["spec"]["template"]["spec"];
        assert_eq!(
            spec["hostPID"], true,
            "the sample's own settings stay: {job:#}"
        );
        assert_eq!(spec["hostIPC"], true, "{job:#}");
        let env: Vec<(&str, &str)> = spec["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or(""),
                    e["value"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            env,
            [(VISIBLE_DEVICES, "0"), (MPS_THREAD_PERCENTAGE, "50")],
            "{job:#}"
        );
        for metadata in [&job["metadata"], &spec_metadata(job)] {
            assert_eq!(metadata["annotations"][ASSIGNED_GPU], "0", "{job:#}");
            assert_eq!(
                metadata["annotations"][ASSIGNED_MPS_PERCENTAGE], "50",
                "{job:#}"
            );
        }
    }
}

fn spec_metadata(job: &Value) -> Value {
    job["spec"]["template"]["metadata"].clone()
}

#[test]
fn without_mps_on_gpu_0_the_sample_is_denied_naming_the_mode() {
    let run = check(&["--gpus", "1", &ase()]);
    assert_eq!(run.code, 1, "{run:?}");
    let reason = run.lines()[0]
        .strip_prefix("DENIED default/Job/cuda-sample1: ")
        .unwrap_or_else(|| panic!("a DENIED line: {run:?}"));
    assert!(reason.contains("time-slicing mode"), "{reason}");
}

#[test]
fn capacity_is_counted_across_kinds_in_one_run() {
    // GPU 0 is full with the two Jobs: a Deployment asking for 10% more is denied.
    let deployment = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: late
  annotations: {gpushare.io/gpu: "0", gpushare.io/mps-percentage: "10"}
spec:
  selector: {matchLabels: {app: late}}
  template:
    metadata: {labels: {app: late}}
    spec:
      containers: [{name: late, image: nginx}]
"#;
    let run = check_with(
        &["--gpus", "1", "--policy", &gpu0_mps(), &ase(), "-"],
        Some(deployment.as_bytes()),
    );
    assert_eq!(run.code, 1, "{run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 3, "{run:?}");
    let reason = lines[2]
        .strip_prefix("DENIED default/Deployment/late: ")
        .unwrap_or_else(|| panic!("a DENIED line: {run:?}"));
    assert!(reason.contains("100% MPS committed"), "{reason}");
}

#[test]
fn every_kind_gets_a_line_and_what_gpushare_does_not_examine_is_skipped() {
    let run = check(&[
        "--gpus",
        "2",
        "--policy",
        &mps_policy(),
        &fixture("check-kinds.yaml"),
    ]);
    assert_eq!(run.code, 0, "SKIPPED lines do not fail a run: {run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 6, "{run:?}");
    assert_eq!(
        lines[0],
        "ALLOWED vision/StatefulSet/triton gpu=1 mode=mps 20%"
    );
    assert_eq!(
        lines[1],
        "ALLOWED vision/DaemonSet/agent gpu=0 mode=time-slicing"
    );
    assert_eq!(
        lines[2],
        "ALLOWED default/CronJob/nightly gpu=1 mode=mps 30%"
    );
    assert_eq!(
        lines[3],
        "ALLOWED default/Pod/probe gpu=0 mode=time-slicing"
    );
    assert!(
        lines[4].starts_with("SKIPPED default/Pod/cam-7d9f-x2k4q: ")
            && lines[4].contains("ReplicaSet/cam-7d9f"),
        "{run:?}"
    );
    assert!(
        lines[5].starts_with("SKIPPED default/Rollout/canary: ")
            && lines[5].contains("argoproj.io/v1alpha1 Rollout"),
        "{run:?}"
    );
    // concurrencyPolicy Forbid: no overlap warning.
    assert!(!run.stderr.contains("overlap"), "{run:?}");
}
