//! Shares that follow the pods (CONTRACT sections 2a, 4 rule 8, 6a), on the real node of
//! `make cluster`: a rollout's surge pods are counted, so a rolling restart never runs more than
//! the GPU holds; a finished Job frees its share and the next one runs; `status` shows the pods
//! running now beside each module's share; and a module whose pods Pod Security would refuse is
//! denied instead of holding a share nothing uses.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;
use crate::{set_policy, PolicyRestore};

const POD_DEADLINE: Duration = Duration::from_secs(180);

fn node() -> &'static str {
    env_var("NODE")
}

/// GPU `gpu` of the real node in mps mode, and waits until a 100% module fits on it (what earlier
/// tests held there is freed).
fn mps_gpu_free(ns: &Namespace, gpu: &str) {
    set_policy(&format!(
        "nodes:\n  {}: {{ gpuModes: {{ \"{gpu}\": mps }} }}",
        node()
    ))
    .ok();
    let whole = job("whole", gpu, 100, "true");
    eventually_within(POD_DEADLINE, "the GPU to be free", || {
        let run = apply(&whole, &["-n", &ns.name, "--dry-run=server"]);
        if run.code == 0 {
            Ok(())
        } else {
            Err(run.stderr)
        }
    });
}

fn job(name: &str, gpu: &str, percentage: u32, command: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations: {{gpushare.io/gpu: "{gpu}", gpushare.io/mps-percentage: "{percentage}"}}
spec:
  backoffLimit: 0
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      restartPolicy: Never
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers:
        - {{name: main, image: {image}, imagePullPolicy: Never, command: [sh, -c, "{command}"]}}
"#,
        node = node(),
        image = env_var("TEST_IMAGE"),
    )
}

fn deployment(name: &str, percentage: u32, strategy: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations: {{gpushare.io/gpu: "1", gpushare.io/mps-percentage: "{percentage}"}}
spec:
  replicas: 2
  {strategy}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers:
        - {{name: main, image: {image}, imagePullPolicy: Never, command: [sleep, "3600"]}}
"#,
        node = node(),
        image = env_var("TEST_IMAGE"),
    )
}

/// The pods of `app` that run now and are not being stopped, and the MPS percentage each has.
/// (A terminating pod gets its grace period to stop; the Deployment controller starts its
/// replacement at once, whatever the strategy but Recreate.)
fn running(ns: &str, app: &str) -> Vec<u32> {
    get_json(&["-n", ns, "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| {
            pod["status"]["phase"] == "Running" && pod["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|pod| {
            template_env(pod, "", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
                .and_then(|p| p.parse().ok())
                .unwrap_or(100)
        })
        .collect()
}

fn status_rows() -> Vec<Value> {
    let output = gpushare()
        .args(["status", "-o", "json"])
        .output()
        .expect("gpushare status");
    serde_json::from_slice::<Value>(&output.stdout)
        .ok()
        .and_then(|rows| rows.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn a_rollout_is_counted_with_its_surge_and_a_restart_never_runs_more_than_the_gpu_holds() {
    let _restore = PolicyRestore;
    let ns = Namespace::new("e2e-rollout");
    mps_gpu_free(&ns, "1");

    // 2 x 50% fills GPU 1, but the default rolling update runs a third pod during every update.
    let surging = apply(&deployment("web", 50, "strategy: {}"), &["-n", &ns.name]);
    assert_denied(&surging, MANAGED_DENIED, "maxSurge");
    let strategy = "strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}";
    apply(&deployment("web", 50, strategy), &["-n", &ns.name]).ok();
    eventually_within(POD_DEADLINE, "2 running pods", || {
        match running(&ns.name, "web").len() {
            2 => Ok(()),
            n => Err(format!("{n} running")),
        }
    });

    // status: the committed share and the pods running now, side by side.
    eventually("status to show the 2 running pods", || {
        let rows = status_rows();
        let row = rows
            .iter()
            .find(|r| r["node"] == node() && r["gpu"] == 1)
            .cloned()
            .unwrap_or_default();
        let share = row["shares"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["namespace"] == ns.name.as_str() && s["name"] == "web")
            .cloned()
            .unwrap_or_default();
        if share["pods"] == 2 && share["mpsPercentage"] == 50 && share["runningPods"] == 2 {
            Ok(())
        } else {
            Err(format!("{row:#}"))
        }
    });

    kubectl(&["-n", &ns.name, "rollout", "restart", "deployment", "web"]).ok();
    let mut peak = 0;
    eventually_within(POD_DEADLINE, "the restart to complete", || {
        let percentages = running(&ns.name, "web");
        peak = peak.max(percentages.iter().sum::<u32>());
        let done = kubectl(&[
            "-n",
            &ns.name,
            "rollout",
            "status",
            "deployment",
            "web",
            "--timeout=1s",
        ]);
        if done.code == 0 && percentages.len() == 2 {
            Ok(())
        } else {
            Err(format!("{percentages:?}"))
        }
    });
    assert!(
        peak <= 100,
        "the running pods on GPU 1 summed to {peak}% during the restart"
    );
}

#[test]
fn a_finished_job_frees_its_share_and_the_job_that_waited_for_it_runs() {
    let _restore = PolicyRestore;
    let ns = Namespace::new("e2e-jobs");
    mps_gpu_free(&ns, "0");
    // The device's two-Job sample, each asking for 60% of GPU 0.
    apply(&job("cuda-sample1", "0", 60, "sleep 6"), &["-n", &ns.name]).ok();
    let second = job("cuda-sample2", "0", 60, "true");
    assert_denied(
        &apply(&second, &["-n", &ns.name]),
        MANAGED_DENIED,
        "60% MPS committed",
    );
    eventually_within(
        POD_DEADLINE,
        "the second Job, once the first completed",
        || {
            let run = apply(&second, &["-n", &ns.name]);
            if run.code == 0 {
                Ok(())
            } else {
                Err(run.stderr)
            }
        },
    );
    let first = get_json(&["-n", &ns.name, "job", "cuda-sample1"]);
    let complete = first["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Complete" && c["status"] == "True");
    assert!(
        complete,
        "admitted only once the first had completed: {first:#}"
    );
    eventually_within(POD_DEADLINE, "the second Job to complete", || {
        let job = get_json(&["-n", &ns.name, "job", "cuda-sample2"]);
        let done = job["status"]["succeeded"] == 1;
        if done {
            Ok(())
        } else {
            Err(format!("{:#}", job["status"]))
        }
    });
}

#[test]
fn a_module_whose_pods_pod_security_would_refuse_is_denied_naming_the_label() {
    let _restore = PolicyRestore;
    let test_node = TestNode::new("e2e-psa", 2);
    let ns = Namespace::new("e2e-psa");
    set_policy("gpuModes: { \"1\": mps }\nmps: { hostIPC: true }").ok();
    crate::wait_for_node(&test_node, &ns);
    let module = crate::support::deployment(
        "ipc",
        &ns.name,
        &test_node.name,
        1,
        &[
            ("gpushare.io/gpu", "1"),
            ("gpushare.io/mps-percentage", "20"),
        ],
    );
    apply(&module, &["--dry-run=server"]).ok();
    kubectl(&[
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=baseline",
    ])
    .ok();
    eventually("the namespace's level to reach gpushare", || {
        let run = apply(&module, &["--dry-run=server"]);
        if run.code != 0
            && run
                .stderr
                .contains("pod-security.kubernetes.io/enforce=baseline")
        {
            Ok(())
        } else {
            Err(format!("{}{}", run.stdout, run.stderr))
        }
    });
    let denied = apply(&module, &[]);
    assert_denied(&denied, MANAGED_DENIED, "mps.hostIPC");
    // Time-slicing needs no host access: allowed in the same namespace.
    let time_slicing = crate::support::deployment(
        "plain-gpu",
        &ns.name,
        &test_node.name,
        1,
        &[("gpushare.io/gpu", "0")],
    );
    apply(&time_slicing, &["--dry-run=server"]).ok();
}
