//! One small adapter per kind (CONTRACT section 2a): which part of the wire view is the pod
//! template, how many pods run per candidate node, and whether the workload has finished.

use super::wire::{
    IntOrString, ObjectMeta, PodSpec, PodTemplate, RawObject, RawSpec, RawStatus, RolloutStrategy,
};
use super::{ControllerRef, Kind, Workload, WorkloadKey};
use crate::core::pods::{PodCount, Surge};

/// What a kind's adapter takes from the spec and status.
struct Parts {
    template_metadata: Option<ObjectMeta>,
    pod: PodSpec,
    pods: PodCount,
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
        Kind::Deployment => {
            let pods = PodCount {
                replicas: count(spec.replicas),
                surge: deployment_surge(&spec.strategy),
            };
            from_template(spec.template, pods)
        }
        Kind::ReplicaSet | Kind::StatefulSet => {
            let pods = PodCount::fixed(count(spec.replicas));
            from_template(spec.template, pods)
        }
        // A DaemonSet runs one pod on every node it selects, and during a rollout with maxSurge
        // a new one beside it before the old one stops.
        Kind::DaemonSet => {
            let pods = PodCount {
                replicas: 1,
                surge: daemon_set_surge(&spec.update_strategy),
            };
            from_template(spec.template, pods)
        }
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
        .map(|owner| ControllerRef {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        });
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

/// A Deployment's rolling update (the default strategy) runs up to `maxSurge` extra pods, 25% of
/// the replicas when unset; `Recreate` stops the old pods first.
fn deployment_surge(strategy: &RolloutStrategy) -> Surge {
    if strategy.type_ == "Recreate" {
        return Surge::None;
    }
    match &strategy.rolling_update.max_surge {
        None => Surge::Percent(25),
        Some(value) => surge(value),
    }
}

/// A DaemonSet surges only when its rolling update sets `maxSurge` (default 0), and then by at
/// most one pod on each node: the new pod beside the old one.
fn daemon_set_surge(strategy: &RolloutStrategy) -> Surge {
    if strategy.type_ == "OnDelete" {
        return Surge::None;
    }
    match strategy.rolling_update.max_surge.as_ref().map(surge) {
        None | Some(Surge::None) => Surge::None,
        Some(_) => Surge::Pods(1),
    }
}

/// One representation per surge (no `Pods(0)` beside `None`), so claims compare equal however
/// they were read back.
fn surge(value: &IntOrString) -> Surge {
    match surge_as_written(value) {
        Surge::Pods(0) | Surge::Percent(0) => Surge::None,
        surge => surge,
    }
}

fn surge_as_written(value: &IntOrString) -> Surge {
    let whole = |n: i64| n.clamp(0, i64::from(u32::MAX)) as u32;
    match value {
        IntOrString::Int(n) => Surge::Pods(whole(*n)),
        IntOrString::String(text) => {
            let text = text.trim();
            match text.strip_suffix('%') {
                Some(p) => p
                    .trim()
                    .parse()
                    .map_or(Surge::Percent(25), |p| Surge::Percent(whole(p))),
                None => text
                    .parse()
                    .map_or(Surge::Percent(25), |n| Surge::Pods(whole(n))),
            }
        }
    }
}

fn from_template(template: PodTemplate, pods: PodCount) -> Parts {
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
        ..from_template(spec.template, PodCount::fixed(pods))
    }
}

/// A CronJob's runs are Jobs from its job template; with `concurrencyPolicy: Allow` (the
/// default) a run may start while the previous one still runs.
fn cron_job(spec: RawSpec) -> Parts {
    let job = spec.job_template.map(|t| t.spec).unwrap_or_default();
    let overlapping_runs = matches!(spec.concurrency_policy.as_str(), "" | "Allow");
    Parts {
        overlapping_runs,
        ..from_template(job.template, PodCount::fixed(count(job.parallelism)))
    }
}

/// A Pod is its own template; once it has succeeded or failed its containers hold no GPU.
fn pod(spec: RawSpec, status: &RawStatus) -> Parts {
    let finished = matches!(status.phase.as_str(), "Succeeded" | "Failed");
    Parts {
        template_metadata: None,
        pod: spec.into_pod_spec(),
        pods: PodCount::fixed(if finished { 0 } else { 1 }),
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
        for kind in [Kind::ReplicaSet, Kind::StatefulSet] {
            assert_eq!(read(kind, replicated.clone()).pods.total(), 3, "{kind}");
        }
        // A Deployment's default rolling update surges by 25% of its replicas, rounded up.
        assert_eq!(read(Kind::Deployment, replicated.clone()).pods.total(), 4);
        assert_eq!(
            read(Kind::Deployment, json!({"spec": {"template": template}}))
                .pods
                .total(),
            2
        );
        let strategy = |strategy: serde_json::Value| {
            read(
                Kind::Deployment,
                json!({"spec": {"replicas": 4, "strategy": strategy, "template": template}}),
            )
            .pods
            .total()
        };
        assert_eq!(strategy(json!({"type": "Recreate"})), 4);
        assert_eq!(strategy(json!({"rollingUpdate": {"maxSurge": 0}})), 4);
        assert_eq!(strategy(json!({"rollingUpdate": {"maxSurge": 2}})), 6);
        assert_eq!(strategy(json!({"rollingUpdate": {"maxSurge": "50%"}})), 6);
        assert_eq!(read(Kind::DaemonSet, replicated.clone()).pods.total(), 1);
        let surging = json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxSurge": "10%"}},
            "template": template}});
        assert_eq!(read(Kind::DaemonSet, surging).pods.total(), 2);
        let job = read(
            Kind::Job,
            json!({"spec": {"parallelism": 4, "template": template}}),
        );
        assert_eq!((job.pods.total(), job.finished), (4, false));
        let cron = read(
            Kind::CronJob,
            json!({"spec": {"jobTemplate": {"spec": {"parallelism": 2, "template": template}}}}),
        );
        assert_eq!((cron.pods.total(), cron.overlapping_runs), (2, true));
        assert_eq!(cron.pod.containers.len(), 1);
        let pod = read(
            Kind::Pod,
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
        );
        assert_eq!(
            (pod.pods.total(), pod.template_metadata.is_none()),
            (1, true)
        );
    }

    #[test]
    fn finished_jobs_and_pods_count_no_pods() {
        let done = read(
            Kind::Job,
            json!({"spec": {"parallelism": 2}, "status": {"conditions": [
                {"type": "Complete", "status": "True"}]}}),
        );
        assert_eq!((done.pods.total(), done.finished), (0, true));
        let suspended = read(
            Kind::Job,
            json!({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}),
        );
        assert!(!suspended.finished);
        let succeeded = read(Kind::Pod, json!({"status": {"phase": "Succeeded"}}));
        assert_eq!((succeeded.pods.total(), succeeded.finished), (0, true));
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
                {"kind": "Node", "name": "n"}, {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-5d4f", "uid": "u1", "controller": true}]}}),
        );
        assert_eq!(owned.key.to_string(), "vision/Pod/web-");
        let controller = owned.controller.expect("a controller");
        assert_eq!(controller.to_string(), "ReplicaSet/web-5d4f");
        assert_eq!(
            (controller.builtin(), controller.uid.as_str()),
            (Some(Kind::ReplicaSet), "u1")
        );
        let bare = read(Kind::Job, json!({"metadata": {"name": "j"}}));
        assert_eq!(
            (bare.key.to_string(), bare.controller),
            ("default/Job/j".to_string(), None)
        );
        let argo = read(
            Kind::Pod,
            json!({"metadata": {"name": "p", "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1",
                "kind": "Workflow", "name": "w", "uid": "u2", "controller": true}]}}),
        );
        assert_eq!(argo.controller.and_then(|c| c.builtin()), None);
    }
}
