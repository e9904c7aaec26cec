//! One small adapter per kind (CONTRACT section 2a): which part of the wire view is the pod
//! template, how many pods run per candidate node, and whether the workload has finished.

use super::wire::{ObjectMeta, PodSpec, PodTemplate, RawObject, RawSpec, RawStatus};
use super::{Kind, Workload, WorkloadKey};

/// What a kind's adapter takes from the spec and status.
struct Parts {
    template_metadata: Option<ObjectMeta>,
    pod: PodSpec,
    pods: u32,
    finished: bool,
    overlapping_runs: bool,
}

pub fn workload(kind: Kind, raw: RawObject) -> Workload {
    let RawObject {
        metadata,
        spec,
        status,
    } = raw;
    let parts = match kind {
        Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet => {
            let pods = count(spec.replicas);
            from_template(spec.template, pods)
        }
        // A DaemonSet runs one pod on every node it selects: 1 per candidate node.
        Kind::DaemonSet => from_template(spec.template, 1),
        Kind::Job => job(spec, &status),
        Kind::CronJob => cron_job(spec),
        Kind::Pod => pod(spec, &status),
    };
    let namespace = Some(metadata.namespace.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let name = Some(metadata.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(metadata.generate_name.as_str());
    let key = WorkloadKey::new(kind, namespace, name);
    let controller = metadata
        .owner_references
        .iter()
        .find(|owner| owner.controller)
        .map(|owner| format!("{}/{}", owner.kind, owner.name));
    Workload {
        key,
        metadata,
        template_metadata: parts.template_metadata,
        pod: parts.pod,
        pods: parts.pods,
        finished: parts.finished,
        controller,
        overlapping_runs: parts.overlapping_runs,
    }
}

/// A pods count as the API server defaults it: a missing value means 1.
fn count(value: Option<i64>) -> u32 {
    value.unwrap_or(1).clamp(0, i64::from(u32::MAX)) as u32
}

fn from_template(template: PodTemplate, pods: u32) -> Parts {
    Parts {
        template_metadata: Some(template.metadata),
        pod: template.spec,
        pods,
        finished: false,
        overlapping_runs: false,
    }
}

/// A Job runs `parallelism` pods at a time until a `Complete` or `Failed` condition is true.
fn job(spec: RawSpec, status: &RawStatus) -> Parts {
    let finished = status
        .conditions
        .iter()
        .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True");
    let pods = if finished { 0 } else { count(spec.parallelism) };
    Parts {
        finished,
        ..from_template(spec.template, pods)
    }
}

/// A CronJob's runs are Jobs from its job template; with `concurrencyPolicy: Allow` (the
/// default) a run may start while the previous one still runs.
fn cron_job(spec: RawSpec) -> Parts {
    let job = spec.job_template.map(|t| t.spec).unwrap_or_default();
    let overlapping_runs = matches!(spec.concurrency_policy.as_str(), "" | "Allow");
    Parts {
        overlapping_runs,
        ..from_template(job.template, count(job.parallelism))
    }
}

/// A Pod is its own template; once it has succeeded or failed its containers hold no GPU.
fn pod(spec: RawSpec, status: &RawStatus) -> Parts {
    let finished = matches!(status.phase.as_str(), "Succeeded" | "Failed");
    Parts {
        template_metadata: None,
        pod: spec.into_pod_spec(),
        pods: if finished { 0 } else { 1 },
        finished,
        overlapping_runs: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(kind: Kind, object: serde_json::Value) -> Workload {
        workload(kind, serde_json::from_value(object).expect("a wire view"))
    }

    #[test]
    fn pods_per_candidate_node_by_kind() {
        let template = json!({"spec": {"containers": [{"name": "c"}]}});
        let replicated = json!({"spec": {"replicas": 3, "template": template}});
        for kind in [Kind::Deployment, Kind::ReplicaSet, Kind::StatefulSet] {
            assert_eq!(read(kind, replicated.clone()).pods, 3, "{kind}");
        }
        assert_eq!(
            read(Kind::Deployment, json!({"spec": {"template": template}})).pods,
            1
        );
        assert_eq!(read(Kind::DaemonSet, replicated.clone()).pods, 1);
        let job = read(
            Kind::Job,
            json!({"spec": {"parallelism": 4, "template": template}}),
        );
        assert_eq!((job.pods, job.finished), (4, false));
        let cron = read(
            Kind::CronJob,
            json!({"spec": {"jobTemplate": {"spec": {"parallelism": 2, "template": template}}}}),
        );
        assert_eq!((cron.pods, cron.overlapping_runs), (2, true));
        assert_eq!(cron.pod.containers.len(), 1);
        let pod = read(
            Kind::Pod,
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
        );
        assert_eq!((pod.pods, pod.template_metadata.is_none()), (1, true));
    }

    #[test]
    fn finished_jobs_and_pods_count_no_pods() {
        let done = read(
            Kind::Job,
            json!({"spec": {"parallelism": 2}, "status": {"conditions": [
                {"type": "Complete", "status": "True"}]}}),
        );
        assert_eq!((done.pods, done.finished), (0, true));
        let suspended = read(
            Kind::Job,
            json!({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}),
        );
        assert!(!suspended.finished);
        let succeeded = read(Kind::Pod, json!({"status": {"phase": "Succeeded"}}));
        assert_eq!((succeeded.pods, succeeded.finished), (0, true));
        let forbid = read(
            Kind::CronJob,
            json!({"spec": {"concurrencyPolicy": "Forbid"}}),
        );
        assert!(!forbid.overlapping_runs);
    }

    #[test]
    fn keys_and_controllers() {
        let owned = read(
            Kind::Pod,
            json!({"metadata": {"generateName": "web-", "namespace": "vision", "ownerReferences": [
                {"kind": "Node", "name": "n"}, {"kind": "ReplicaSet", "name": "web-5d4f", "controller": true}]}}),
        );
        assert_eq!(owned.key.to_string(), "vision/Pod/web-");
        assert_eq!(owned.controller.as_deref(), Some("ReplicaSet/web-5d4f"));
        let bare = read(Kind::Job, json!({"metadata": {"name": "j"}}));
        assert_eq!(
            (bare.key.to_string(), bare.controller),
            ("default/Job/j".to_string(), None)
        );
    }
}
