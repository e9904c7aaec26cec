//! Pods that run (CONTRACT section 6b): on `edge-node-1`, the real node of `make cluster` (a
//! kubelet on containerd), a container that gpushare patched sees the patched variables in its
//! environment, an unmanaged one does not, and a managed Job runs to completion. The image is the
//! locally built `localhost/gpushare-test:latest` (busybox), never pulled.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Scheduling, a sandbox with its network and a started container on a busy 2-core machine.
const POD_DEADLINE: Duration = Duration::from_secs(180);

/// A Deployment of the test image on the real node that prints its environment, then waits.
fn printing_deployment(name: &str, namespace: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = if annotations.is_empty() {
        " {}".to_string()
    } else {
        annotations
            .iter()
            .map(|(k, v)| format!("\n    {k}: \"{v}\""))
            .collect()
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  annotations:{annotations}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: {image}
          imagePullPolicy: Never
          command: [sh, -c, "env; sleep 3600"]
"#,
        node = env_var("NODE"),
        image = env_var("TEST_IMAGE"),
    )
}

/// What the pods of `selector` look like, for a failure message.
fn describe(namespace: &str, selector: &str) -> String {
    let run = kubectl(&["-n", namespace, "describe", "pods", "-l", selector]);
    format!("{}{}", run.stdout, run.stderr)
}

/// The name of the Running, Ready pod of `app`, once there is one.
fn running_pod(namespace: &str, app: &str) -> Value {
    let selector = format!("app={app}");
    eventually_within(
        POD_DEADLINE,
        &format!("a running pod of {namespace}/{app}"),
        || {
            let pods = get_json(&["-n", namespace, "pods", "-l", &selector]);
            pods["items"]
                .as_array()
                .and_then(|items| {
                    items.iter().find(|p| {
                        p["status"]["phase"] == "Running"
                            && p["status"]["containerStatuses"][0]["ready"] == true
                    })
                })
                .cloned()
                .ok_or_else(|| describe(namespace, &selector))
        },
    )
}

/// The environment of the pod's running container, as `env` prints it there (`kubectl exec`).
fn exec_env(namespace: &str, pod: &str) -> Vec<String> {
    let run = kubectl(&["-n", namespace, "exec", pod, "--", "env"]).ok();
    run.stdout.lines().map(str::to_string).collect()
}

#[test]
fn a_managed_deployments_pod_runs_on_the_real_node_and_sees_its_gpu_an_unmanaged_one_does_not() {
    let ns = Namespace::new("e2e-pods");
    apply(
        &printing_deployment("managed", &ns.name, &[("gpushare.io/gpu", "0")]),
        &[],
    )
    .ok();
    apply(&printing_deployment("unmanaged", &ns.name, &[]), &[]).ok();

    let managed = running_pod(&ns.name, "managed");
    assert_eq!(managed["spec"]["nodeName"], env_var("NODE"), "{managed}");
    let pod = managed["metadata"]["name"].as_str().expect("pod name");
    let env = exec_env(&ns.name, pod);
    assert!(
        env.iter().any(|l| l == "NVIDIA_VISIBLE_DEVICES=0"),
        "the managed container's environment:\n{}",
        env.join("\n")
    );
    // What the container printed when it started, through the kubelet's log.
    eventually_within(POD_DEADLINE, "the managed container's log", || {
        let log = kubectl(&["-n", &ns.name, "logs", pod]);
        if log.stdout.lines().any(|l| l == "NVIDIA_VISIBLE_DEVICES=0") {
            Ok(())
        } else {
            Err(format!("{}{}", log.stdout, log.stderr))
        }
    });

    let unmanaged = running_pod(&ns.name, "unmanaged");
    let pod = unmanaged["metadata"]["name"].as_str().expect("pod name");
    let env = exec_env(&ns.name, pod);
    assert!(
        env.iter()
            .any(|l| l.starts_with("KUBERNETES_SERVICE_HOST=")),
        "not the container's environment:\n{}",
        env.join("\n")
    );
    assert!(
        !env.iter().any(|l| l.starts_with("NVIDIA_VISIBLE_DEVICES=")),
        "the unmanaged container's environment:\n{}",
        env.join("\n")
    );
}

#[test]
fn a_managed_job_runs_to_completion_on_the_real_node_and_its_container_saw_its_gpu() {
    let ns = Namespace::new("e2e-job");
    let job = format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: once
  namespace: {ns}
  annotations: {{gpushare.io/gpu: "1"}}
spec:
  backoffLimit: 0
  template:
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      restartPolicy: Never
      containers:
        - name: main
          image: {image}
          imagePullPolicy: Never
          command: [sh, -c, 'env; test "$NVIDIA_VISIBLE_DEVICES" = 1']
"#,
        ns = ns.name,
        node = env_var("NODE"),
        image = env_var("TEST_IMAGE"),
    );
    apply(&job, &[]).ok();
    eventually_within(POD_DEADLINE, "Job once to complete", || {
        let job = get_json(&["-n", &ns.name, "job", "once"]);
        let condition = |kind: &str| {
            job["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == kind && c["status"] == "True")
            })
        };
        if condition("Failed") {
            let log = kubectl(&["-n", &ns.name, "logs", "job/once"]);
            panic!("Job once failed: {}\nlog:\n{}", job["status"], log.stdout);
        }
        if condition("Complete") {
            Ok(())
        } else {
            Err(format!(
                "{}\n{}",
                job["status"],
                describe(&ns.name, "job-name=once")
            ))
        }
    });
    let log = kubectl(&["-n", &ns.name, "logs", "job/once"]).ok();
    assert!(
        log.stdout.lines().any(|l| l == "NVIDIA_VISIBLE_DEVICES=1"),
        "{}",
        log.stdout
    );
}

#[test]
fn a_managed_job_on_the_kwok_simulated_device_completes_and_keeps_its_assignment() {
    let Some(node) = env().get("KWOK_NODE") else {
        eprintln!("skipped: make cluster ran without kwok (KWOK=0)");
        return;
    };
    let ns = Namespace::new("e2e-kwok");
    let job = format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: simulated
  namespace: {ns}
  annotations: {{gpushare.io/gpu: "1"}}
spec:
  template:
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      tolerations: [{{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}]
      restartPolicy: Never
      containers:
        - name: main
          image: {image}
          imagePullPolicy: Never
          command: [sh, -c, "true"]
"#,
        ns = ns.name,
        image = env_var("TEST_IMAGE"),
    );
    apply(&job, &[]).ok();
    eventually_within(POD_DEADLINE, "the simulated Job to complete", || {
        let job = get_json(&["-n", &ns.name, "job", "simulated"]);
        let complete = job["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
        });
        if complete {
            Ok(())
        } else {
            Err(job["status"].to_string())
        }
    });
    // kwok ran the pod gpushare patched: it was bound to the simulated node with the variable.
    let pods = get_json(&["-n", &ns.name, "pods", "-l", "job-name=simulated"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["spec"]["nodeName"], node.as_str(), "{pod}");
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod}");
    assert_eq!(
        template_env(pod, "", "NVIDIA_VISIBLE_DEVICES").as_deref(),
        Some("1"),
        "{pod}"
    );
}
