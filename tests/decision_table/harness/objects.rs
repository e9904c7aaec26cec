//! The workload objects of the table: the Deployment `web()` as kubectl writes it, turned into
//! another kind when a row needs it, with builder methods for each tweak a row makes.

use serde_json::{json, Value};

use super::{A_GPU, A_MODE, A_PCT, PIPE_VOLUME};

/// A workload object with builder methods for the tweaks a row needs; it starts as the Deployment
/// `web()` and becomes another kind with `into_kind`, keeping its pod template.
#[derive(Clone)]
pub struct Dep(pub Value);

/// A Deployment as `kubectl create deployment web --image=nginx --dry-run=client -o json` writes it.
pub fn web() -> Dep {
    Dep(json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": { "name": "web", "creationTimestamp": null, "labels": { "app": "web" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "creationTimestamp": null, "labels": { "app": "web" } },
                "spec": { "containers": [ { "name": "nginx", "image": "nginx", "resources": {} } ] }
            },
            "strategy": {}
        },
        "status": {}
    }))
}

/// Where an object's pod template sits: `/spec/template`, the CronJob's, or `""` for a Pod (its
/// metadata and spec are the template's).
pub fn template_base(object: &Value) -> &'static str {
    match object["kind"].as_str() {
        Some("CronJob") => "/spec/jobTemplate/spec/template",
        Some("Pod") => "",
        _ => "/spec/template",
    }
}

/// Every metadata gpushare writes its assigned annotations on.
pub fn metadata_places(object: &Value) -> Vec<String> {
    match template_base(object) {
        "" => vec!["/metadata".to_string()],
        base => vec!["/metadata".to_string(), format!("{base}/metadata")],
    }
}

impl Dep {
    /// The same pod template (and object metadata) as another kind, the way its users write it.
    pub fn into_kind(self, kind: &str) -> Dep {
        let Dep(d) = self;
        let metadata = d["metadata"].clone();
        let template = d["spec"]["template"].clone();
        let labels = json!({ "matchLabels": { "app": "web" } });
        Dep(match kind {
            "ReplicaSet" | "StatefulSet" => json!({
                "apiVersion": "apps/v1", "kind": kind, "metadata": metadata,
                "spec": { "replicas": d["spec"]["replicas"], "selector": labels, "template": template }
            }),
            "DaemonSet" => json!({
                "apiVersion": "apps/v1", "kind": kind, "metadata": metadata,
                "spec": { "selector": labels, "template": template }
            }),
            "Job" => {
                let mut template = template;
                template["spec"]["restartPolicy"] = json!("Never");
                json!({
                    "apiVersion": "batch/v1", "kind": kind, "metadata": metadata,
                    "spec": { "backoffLimit": 4, "template": template }, "status": {}
                })
            }
            "CronJob" => {
                let mut template = template;
                template["spec"]["restartPolicy"] = json!("OnFailure");
                json!({
                    "apiVersion": "batch/v1", "kind": kind, "metadata": metadata,
                    "spec": { "schedule": "*/5 * * * *", "jobTemplate": { "spec": { "template": template } } }
                })
            }
            "Pod" => {
                let mut metadata = metadata;
                if let (Some(meta), Some(annotations)) = (
                    metadata.as_object_mut(),
                    template["metadata"]["annotations"].as_object(),
                ) {
                    meta.insert("annotations".into(), Value::Object(annotations.clone()));
                }
                json!({
                    "apiVersion": "v1", "kind": kind, "metadata": metadata,
                    "spec": template["spec"], "status": {}
                })
            }
            other => panic!("no test shape for kind {other}"),
        })
    }

    /// The pods count a kind reads: replicas, parallelism (a CronJob's job template's).
    fn pods_pointer(&self) -> &'static str {
        match self.0["kind"].as_str() {
            Some("Job") => "/spec/parallelism",
            Some("CronJob") => "/spec/jobTemplate/spec/parallelism",
            _ => "/spec/replicas",
        }
    }

    fn template(&self) -> &'static str {
        template_base(&self.0)
    }

    pub fn at(&mut self, pointer: &str) -> &mut Value {
        self.0
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("test object has no {pointer}"))
    }

    pub fn annotate(mut self, meta: &str, key: &str, value: &str) -> Dep {
        let meta = self
            .at(meta)
            .as_object_mut()
            .expect("metadata is an object");
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        annotations[key] = json!(value);
        self
    }

    /// An annotation on the object's metadata.
    pub fn ann(self, key: &str, value: &str) -> Dep {
        self.annotate("/metadata", key, value)
    }

    /// An annotation on the pod template's metadata (a Pod's only metadata).
    pub fn tann(self, key: &str, value: &str) -> Dep {
        let meta = format!("{}/metadata", self.template());
        self.annotate(&meta, key, value)
    }

    /// A Deployment whose rolling update runs no surge pods (`maxSurge: 0`).
    pub fn no_surge(self) -> Dep {
        self.top_spec("strategy", json!({ "rollingUpdate": { "maxSurge": 0 } }))
    }

    /// A controller that owns the object.
    pub fn owned_by(mut self, kind: &str, name: &str) -> Dep {
        let api_version = match kind {
            "Job" | "CronJob" => "batch/v1",
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => "apps/v1",
            _ => "example.io/v1",
        };
        self.at("/metadata")["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": name,
            "uid": "6f1c7a52-5d0e-4d7e-9c1b-1a2b3c4d5e6f", "controller": true, "blockOwnerDeletion": true
        }]);
        self
    }

    /// A status condition (`Complete`, `Failed`) that is true.
    pub fn condition(mut self, condition: &str) -> Dep {
        self.0["status"] = json!({ "conditions": [{ "type": condition, "status": "True" }] });
        self
    }

    /// A Pod's `status.phase`.
    pub fn phase(mut self, phase: &str) -> Dep {
        self.0["status"] = json!({ "phase": phase });
        self
    }

    /// A field of the object's own spec (`concurrencyPolicy`).
    pub fn top_spec(mut self, field: &str, value: Value) -> Dep {
        self.at("/spec")[field] = value;
        self
    }

    /// The annotations gpushare records, on both metadata and template.
    pub fn assigned(self, gpu: &str, mode: &str, pct: Option<&str>) -> Dep {
        let mut d = self
            .ann(A_GPU, gpu)
            .tann(A_GPU, gpu)
            .ann(A_MODE, mode)
            .tann(A_MODE, mode);
        if let Some(p) = pct {
            d = d.ann(A_PCT, p).tann(A_PCT, p);
        }
        d
    }

    pub fn without_template_metadata(mut self) -> Dep {
        let template = self.template();
        self.at(template)
            .as_object_mut()
            .expect("template")
            .remove("metadata");
        self
    }

    /// Replicas, or a Job's parallelism.
    pub fn replicas(mut self, n: u32) -> Dep {
        let pointer = self.pods_pointer();
        let (parent, field) = pointer.rsplit_once('/').expect("a field");
        self.at(parent)[field] = json!(n);
        self
    }

    fn containers_pointer(&self) -> String {
        format!("{}/spec/containers", self.template())
    }

    pub fn sidecar(mut self) -> Dep {
        let pointer = self.containers_pointer();
        let containers = self.at(&pointer).as_array_mut().expect("containers");
        containers.push(json!({ "name": "sidecar", "image": "busybox", "resources": {} }));
        self
    }

    pub fn init_container(self, name: &str, env: Value) -> Dep {
        self.spec_field(
            "initContainers",
            json!([{ "name": name, "image": "busybox", "resources": {}, "env": env }]),
        )
    }

    pub fn container(&mut self, name: &str) -> &mut Value {
        let pointer = self.containers_pointer();
        let containers = self.at(&pointer).as_array_mut().expect("containers");
        containers
            .iter_mut()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    pub fn push(mut self, container: &str, field: &str, entry: Value) -> Dep {
        let c = self
            .container(container)
            .as_object_mut()
            .expect("container");
        c.entry(field)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("list")
            .push(entry);
        self
    }

    pub fn var(self, container: &str, name: &str, value: &str) -> Dep {
        self.push(container, "env", json!({ "name": name, "value": value }))
    }

    pub fn var_from(self, container: &str, name: &str) -> Dep {
        self.push(
            container,
            "env",
            json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        )
    }

    pub fn mount(self, container: &str, name: &str, path: &str) -> Dep {
        self.push(
            container,
            "volumeMounts",
            json!({ "name": name, "mountPath": path }),
        )
    }

    pub fn resource(mut self, container: &str, kind: &str, quantity: Value) -> Dep {
        let c = self.container(container);
        c["resources"][kind] = json!({ "nvidia.com/gpu": quantity });
        self
    }

    pub fn gpu_limit(self, container: &str, quantity: Value) -> Dep {
        self.resource(container, "limits", quantity)
    }

    /// A field of the pod spec.
    pub fn spec_field(mut self, field: &str, value: Value) -> Dep {
        let spec = format!("{}/spec", self.template());
        self.at(&spec)[field] = value;
        self
    }

    pub fn node_selector(self, key: &str, value: &str) -> Dep {
        self.spec_field("nodeSelector", json!({ key: value }))
    }

    pub fn volume(mut self, volume: Value) -> Dep {
        let spec = format!("{}/spec", self.template());
        let spec = self.at(&spec).as_object_mut().expect("spec");
        spec.entry("volumes")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("volumes")
            .push(volume);
        self
    }

    pub fn pipe_volume(self, path: &str) -> Dep {
        self.volume(
            json!({ "name": PIPE_VOLUME, "hostPath": { "path": path, "type": "Directory" } }),
        )
    }
}
