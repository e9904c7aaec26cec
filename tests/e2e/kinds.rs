//! Every kind that runs pods (CONTRACT section 2a) through the real kubectl: Azure Stack Edge's own
//! GPU-sharing sample (two Jobs), a CronJob, and the Pods kube-controller-manager creates for them.

use crate::support::*;

/// The Azure Stack Edge sample with gpushare's annotations, pinned to `node`.
fn ase_sample(node: &str) -> String {
    let text = std::fs::read_to_string(root().join("tests/fixtures/ase-gpu-sharing.yaml"))
        .expect("fixture");
    text.replace(
        "      hostPID: true\n",
        &format!("      nodeSelector: {{kubernetes.io/hostname: {node}}}\n      hostPID: true\n"),
    )
}

fn job_env(ns: &str, job: &str, name: &str) -> Option<String> {
    template_env(&get_json(&["-n", ns, "job", job]), "/spec/template", name)
}

#[test]
fn the_azure_stack_edge_sample_jobs_share_one_mps_gpu_and_their_pods_carry_the_assignment() {
    let _restore = crate::PolicyRestore;
    let node = TestNode::new("e2e-ase", 1);
    let ns = Namespace::new("e2e-ase");
    crate::set_policy("nodes:\n  e2e-ase: { gpuModes: { \"0\": mps } }").ok();
    crate::wait_for_node(&node, &ns);
    let sample = ase_sample(&node.name);
    eventually("the mps policy to admit the sample", || {
        let run = apply(&sample, &["-n", &ns.name]);
        if run.code == 0 {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
    for job in ["cuda-sample1", "cuda-sample2"] {
        assert_eq!(
            job_env(&ns.name, job, "NVIDIA_VISIBLE_DEVICES").as_deref(),
            Some("0"),
            "{job}"
        );
        assert_eq!(
            job_env(&ns.name, job, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").as_deref(),
            Some("50"),
            "{job}"
        );
        let stored = get_json(&["-n", &ns.name, "job", job]);
        for metadata in ["/metadata", "/spec/template/metadata"] {
            assert_eq!(
                annotation(&stored, metadata, "gpushare.io/assigned-gpu").as_deref(),
                Some("0")
            );
            assert_eq!(
                annotation(&stored, metadata, "gpushare.io/assigned-mode").as_deref(),
                Some("mps")
            );
        }
    }
    // The Job controller's Pods are owned by their Jobs: not examined, never blocked, and they
    // carry the Job's mutated template.
    let pod = eventually("a Pod of cuda-sample1", || {
        let pods = get_json(&["-n", &ns.name, "pods", "-l", "job-name=cuda-sample1"]);
        pods["items"]
            .get(0)
            .cloned()
            .ok_or_else(|| "no Pod yet".to_string())
    });
    assert_eq!(
        template_env(&pod, "", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").as_deref(),
        Some("50")
    );

    // GPU 0 is full (2 x 50%): a third Job is denied, and the two of the sample count as Jobs.
    let third = sample
        .replace("cuda-sample1", "cuda-sample3")
        .split("\n---\n")
        .next()
        .unwrap()
        .to_string();
    let denied = apply(&third, &["-n", &ns.name]);
    assert_denied(&denied, MANAGED_DENIED, "exceeds maxMpsPercentagePerGpu");
}

#[test]
fn a_cronjob_is_stored_with_its_job_template_mutated_and_overlapping_runs_are_warned_about() {
    let node = TestNode::new("e2e-cron", 2);
    let ns = Namespace::new("e2e-cron");
    crate::wait_for_node(&node, &ns);
    let cronjob = format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: retrain
  namespace: {ns}
  annotations: {{gpushare.io/gpu: "1"}}
spec:
  schedule: "0 2 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          nodeSelector: {{kubernetes.io/hostname: {node}}}
          restartPolicy: OnFailure
          containers:
            - name: retrain
              image: nvcr.io/nvidia/pytorch:24.08-py3
"#,
        ns = ns.name,
        node = node.name
    );
    let run = apply(&cronjob, &[]).ok();
    assert!(
        run.stderr.contains("Warning:") && run.stderr.contains("overlap"),
        "{}",
        run.stderr
    );
    let stored = get_json(&["-n", &ns.name, "cronjob", "retrain"]);
    let template = "/spec/jobTemplate/spec/template";
    assert_eq!(
        template_env(&stored, template, "NVIDIA_VISIBLE_DEVICES").as_deref(),
        Some("1")
    );
    assert_eq!(
        annotation(&stored, "/metadata", "gpushare.io/assigned-gpu").as_deref(),
        Some("1")
    );
    assert_eq!(
        annotation(
            &stored,
            &format!("{template}/metadata"),
            "gpushare.io/assigned-gpu"
        )
        .as_deref(),
        Some("1")
    );
    // Re-applying the manifest changes nothing.
    let again = apply(&cronjob, &[]).ok();
    assert!(again.stdout.contains("unchanged"), "{}", again.stdout);
}
