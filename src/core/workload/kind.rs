//! The workload kinds gpushare examines (CONTRACT section 2a), and where each keeps its pod
//! template: the facts about a kind that the rest of the core reads instead of a kind's type.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    Pod,
}

/// Where a kind's pod template sits in the object: JSON pointers for patches, and the same
/// places as users read them in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The pod template's metadata; `None` for a Pod, whose only metadata is `/metadata`.
    pub template_metadata: Option<&'static str>,
    /// The pod spec.
    pub pod_spec: &'static str,
    /// `spec.template.metadata` (`metadata` for a Pod).
    pub template_metadata_field: &'static str,
    /// `spec.template.spec`.
    pub pod_spec_field: &'static str,
}

const APPS_TEMPLATE: Layout = Layout {
    template_metadata: Some("/spec/template/metadata"),
    pod_spec: "/spec/template/spec",
    template_metadata_field: "spec.template.metadata",
    pod_spec_field: "spec.template.spec",
};

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::CronJob,
        Kind::Pod,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::Pod => "Pod",
        }
    }

    /// The API group: `apps`, `batch`, or `""` for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet | Kind::DaemonSet => "apps",
            Kind::Job | Kind::CronJob => "batch",
            Kind::Pod => "",
        }
    }

    /// The one version gpushare reads: `v1` in every group.
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// The resource name in URLs and RBAC rules, e.g. `cronjobs`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::Job => "jobs",
            Kind::CronJob => "cronjobs",
            Kind::Pod => "pods",
        }
    }

    /// The kind an API group and kind name stand for. The version is not compared: every
    /// version of these kinds has the same pod template, and the webhook is registered for v1.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.as_str() == kind)
    }

    /// The kind of a manifest's `apiVersion` (`apps/v1`, `v1`) and `kind`.
    pub fn from_api_version(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        Kind::from_group_kind(group, kind)
    }

    pub fn layout(self) -> Layout {
        match self {
            Kind::Deployment
            | Kind::ReplicaSet
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::Job => APPS_TEMPLATE,
            Kind::CronJob => Layout {
                template_metadata: Some("/spec/jobTemplate/spec/template/metadata"),
                pod_spec: "/spec/jobTemplate/spec/template/spec",
                template_metadata_field: "spec.jobTemplate.spec.template.metadata",
                pod_spec_field: "spec.jobTemplate.spec.template.spec",
            },
            Kind::Pod => Layout {
                template_metadata: None,
                pod_spec: "/spec",
                template_metadata_field: "metadata",
                pod_spec_field: "spec",
            },
        }
    }

    /// The field users lower to run fewer pods per node, as messages name it (`None`: one pod).
    pub fn pods_field(self) -> Option<&'static str> {
        match self {
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet => Some("replicas"),
            Kind::Job | Kind::CronJob => Some("parallelism"),
            Kind::DaemonSet | Kind::Pod => None,
        }
    }

    /// Whether Kubernetes lets the pod template change after creation: a Job's and a Pod's may not.
    pub fn template_mutable(self) -> bool {
        !matches!(self, Kind::Job | Kind::Pod)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_group_and_api_version() {
        assert_eq!(Kind::from_api_version("batch/v1", "Job"), Some(Kind::Job));
        assert_eq!(Kind::from_api_version("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(Kind::from_api_version("apps/v1", "Pod"), None);
        assert_eq!(
            Kind::from_api_version("extensions/v1beta1", "Deployment"),
            None
        );
        assert_eq!(
            Kind::from_group_kind("apps", "DaemonSet"),
            Some(Kind::DaemonSet)
        );
        for kind in Kind::ALL {
            let layout = kind.layout();
            let dotted = |pointer: &str| pointer.trim_start_matches('/').replace('/', ".");
            assert_eq!(layout.pod_spec_field, dotted(layout.pod_spec), "{kind}");
            assert_eq!(
                layout.template_metadata_field,
                dotted(layout.template_metadata.unwrap_or("/metadata")),
                "{kind}"
            );
        }
    }
}
