//! The Deployment, its PodDisruptionBudget and Service.

use serde_json::{json, Value};

use crate::objects::*;
use crate::NAME;

#[test]
fn deployment_runs_two_hardened_replicas_with_probes() {
    let deployment = the("Deployment", NAME);
    assert_eq!(
        deployment["spec"]["replicas"], 2,
        "Deployment gpushare must have 2 replicas"
    );

    let pod = &pod_template()["spec"];
    assert_eq!(
        pod["serviceAccountName"], NAME,
        "the pods must run as ServiceAccount gpushare"
    );
    assert!(
        pod["hostNetwork"].is_null() || pod["hostNetwork"] == false,
        "the pods must not use hostNetwork"
    );
    let pod_security = &pod["securityContext"];
    let containers = pod["containers"]
        .as_array()
        .expect("the pod has containers");
    assert!(!containers.is_empty(), "the pod must have a container");

    for container in containers {
        let cname = &container["name"];
        let security = &container["securityContext"];
        let non_root = if security["runAsNonRoot"].is_null() {
            &pod_security["runAsNonRoot"]
        } else {
            &security["runAsNonRoot"]
        };
        assert_eq!(
            non_root, true,
            "container {cname} must run with runAsNonRoot: true"
        );
        assert_eq!(
            security["readOnlyRootFilesystem"], true,
            "container {cname} must have readOnlyRootFilesystem: true"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"], false,
            "container {cname} must have allowPrivilegeEscalation: false"
        );
        assert_eq!(
            strings(&security["capabilities"]["drop"]),
            ["ALL"],
            "container {cname} must drop ALL capabilities"
        );
        assert!(
            security["privileged"].is_null() || security["privileged"] == false,
            "container {cname} must not be privileged"
        );
        // Plain HTTP on the health port: the kubelet presents no client certificate, which the
        // webhook port requires with --client-ca.
        let health_port = container["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == "health"))
            .unwrap_or_else(|| panic!("container {cname} must declare a port named health"));
        let args = strings(&container["args"]);
        let listen = format!("0.0.0.0:{}", health_port["containerPort"]);
        assert!(
            args.windows(2)
                .any(|w| w == ["--health-listen", listen.as_str()]),
            "container {cname} must serve health on its health port: {args:?}"
        );
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let get = &container[probe]["httpGet"];
            assert!(
                get.is_object(),
                "container {cname} must have an HTTP {probe}"
            );
            assert_eq!(
                (&get["scheme"], &get["port"]),
                (&Value::from("HTTP"), &Value::from("health")),
                "container {cname}'s {probe} must use the plain-HTTP health port"
            );
        }
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "the readinessProbe must call /readyz (503 until the caches synced)"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "the livenessProbe must call /healthz"
        );
    }
}

#[test]
fn deployment_mounts_its_tls_secret_read_only() {
    let pod = &pod_template()["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    let arg_after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("the container must pass {flag} to gpushare serve"))
    };
    let volumes = pod["volumes"].as_array().expect("the pod has volumes");
    for flag in ["--tls-cert", "--tls-key"] {
        let file = arg_after(flag);
        let mount = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| file.starts_with(&format!("{p}/")))
            })
            .unwrap_or_else(|| panic!("{flag} {file} must be inside a volume mount"));
        assert_eq!(
            mount["readOnly"], true,
            "the TLS volume must be mounted read-only"
        );
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume is declared");
        assert_eq!(
            volume["secret"]["secretName"], "gpushare-tls",
            "{flag} must come from Secret gpushare-tls"
        );
    }
}

#[test]
fn pod_disruption_budget_keeps_one_replica_serving() {
    let pdbs = all_of_kind("PodDisruptionBudget");
    assert_eq!(
        pdbs.len(),
        1,
        "manifests must contain one PodDisruptionBudget"
    );
    let pdb = pdbs[0];
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "the PodDisruptionBudget takes one replica at a time (gpushare raises it while no node can \
         take an evicted replica)"
    );
    assert!(
        selects(
            &pdb["spec"]["selector"],
            &pod_template()["metadata"]["labels"]
        ),
        "the PodDisruptionBudget must select the gpushare pods"
    );
}

#[test]
fn service_routes_443_to_the_https_container_port() {
    let service = the("Service", NAME);
    let spec = &service["spec"];
    let selector = json!({ "matchLabels": spec["selector"] });
    assert!(
        selects(&selector, &pod_template()["metadata"]["labels"]),
        "Service gpushare must select the gpushare pods"
    );
    let port = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"] == 443)
        .expect("Service gpushare must expose port 443");
    let container_ports = pod_template()["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("the container declares its ports");
    assert!(
        container_ports
            .iter()
            .any(|p| p["name"] == port["targetPort"] || p["containerPort"] == port["targetPort"]),
        "Service port 443 must target a port the container declares (https)"
    );
}
