//! The commands that talk to a cluster find it as kubectl does (`--kubeconfig`, `--context`,
//! KUBECONFIG, ~/.kube/config), say which policy ConfigMap they read, warn about webhooks the API
//! server cannot call, and hint only at flags they have. Against the in-process fake API server.

mod common;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use common::{gpushare, run_with_deadline, Certs, Server, DEADLINE};
use fake_apiserver::FakeApiServer;
use serde_json::{json, Value};

fn node(gpus: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "edge-1", "labels": {"nvidia.com/gpu.count": gpus.to_string()}},
        "status": {"allocatable": {"nvidia.com/gpu": gpus.to_string()}}
    })
}

/// A kubeconfig with a context `live` on the fake server and `dead`, the current one, on a port
/// nobody listens on.
fn two_contexts(api: &FakeApiServer, path: &Path) {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: live\n  cluster: {{server: {url}}}\n- name: dead\n  cluster: {{server: http://127.0.0.1:9}}\n\
         users:\n- name: user\n  user: {{token: fake-token}}\n\
         contexts:\n- name: live\n  context: {{cluster: live, user: user}}\n- name: dead\n  context: {{cluster: dead, user: user}}\n\
         current-context: dead\n",
        url = api.url()
    );
    std::fs::write(path, yaml).expect("kubeconfig written");
}

/// `gpushare ARGS` with no cluster configuration but what the test gives: an empty HOME, no
/// KUBECONFIG, not in a pod.
fn isolated(home: &Path) -> Command {
    let mut command = gpushare();
    command
        .env("HOME", home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT");
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

struct Setup {
    api: FakeApiServer,
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Setup {
    async fn new(objects: Vec<Value>) -> Setup {
        let api = FakeApiServer::start().await;
        for object in objects {
            api.apply(object);
        }
        let home = tempfile::tempdir().expect("temp dir");
        let kubeconfig = home.path().join("two-contexts");
        two_contexts(&api, &kubeconfig);
        Setup {
            api,
            home,
            kubeconfig,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with_deadline(isolated(self.home.path()).args(args), None)
    }

    fn status(&self, extra: &[&str]) -> Output {
        let kubeconfig = self.kubeconfig.to_str().expect("UTF-8");
        let mut args = vec!["status", "--kubeconfig", kubeconfig, "--context", "live"];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_and_context_flags_pick_the_cluster() {
    let setup = Setup::new(vec![node(2)]).await;
    let kubeconfig = setup.kubeconfig.to_str().expect("UTF-8");

    let output = setup.run(&["status", "--kubeconfig", kubeconfig, "--context", "live"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("edge-1"), "{stdout}");

    // The current-context is the dead one: without --context, status fails.
    let output = setup.run(&["status", "--kubeconfig", kubeconfig]);
    assert!(!output.status.success(), "{:?}", text(&output));

    // KUBECONFIG is read when --kubeconfig is not given, as kubectl does.
    let output = run_with_deadline(
        isolated(setup.home.path())
            .env("KUBECONFIG", &setup.kubeconfig)
            .args(["status", "--context", "live", "-o", "json"]),
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));

    // Then ~/.kube/config.
    let dot_kube = setup.home.path().join(".kube");
    std::fs::create_dir_all(&dot_kube).expect("~/.kube");
    std::fs::copy(&setup.kubeconfig, dot_kube.join("config")).expect("~/.kube/config");
    let output = setup.run(&["status", "--context", "live"]);
    assert!(output.status.success(), "{:?}", text(&output));

    // apply takes the same flags.
    let manifest = setup.home.path().join("m.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
    )
    .expect("manifest");
    let manifest = manifest.to_str().expect("UTF-8");
    let output = setup.run(&[
        "apply",
        "--kubeconfig",
        kubeconfig,
        "--context",
        "live",
        "-n",
        "team",
        "-f",
        manifest,
    ]);
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(setup.api.get("ConfigMap", Some("team"), "c").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_context_is_an_error_listing_the_known_ones() {
    let setup = Setup::new(vec![node(2)]).await;
    let kubeconfig = setup.kubeconfig.to_str().expect("UTF-8");
    for command in [
        &["status"][..],
        &["apply", "-f", "-"][..],
        &["serve", "--tls-cert", "x", "--tls-key", "y"][..],
    ] {
        let mut args = command.to_vec();
        args.extend(["--kubeconfig", kubeconfig, "--context", "nope"]);
        let output = setup.run(&args);
        let (_, stderr) = text(&output);
        assert!(!output.status.success(), "{command:?}: {stderr}");
        if command[0] == "serve" {
            // The certificate is checked first; the context error comes with valid ones.
            continue;
        }
        assert!(
            stderr.contains("\"nope\"") && stderr.contains("live") && stderr.contains("dead"),
            "{command:?} must name the context and list the known ones: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_the_cluster_of_its_kubeconfig_and_context() {
    let setup = Setup::new(vec![node(2)]).await;
    let kubeconfig = setup.kubeconfig.to_str().expect("UTF-8").to_string();
    let server = tokio::task::spawn_blocking(move || {
        Server::start_serve(
            Certs::new(),
            &["--kubeconfig", &kubeconfig, "--context", "live"],
            &[],
        )
    })
    .await
    .expect("starts");
    let started = std::time::Instant::now();
    while server.get_health("/readyz").await.0 != 200 {
        assert!(
            started.elapsed() < DEADLINE,
            "not ready through --context live; log:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let usage = setup.run(&["serve", "--standalone", "--context", "live"]);
    assert_eq!(usage.status.code(), Some(2), "{:?}", text(&usage));
}

/// Every `--flag` a message names, e.g. `--from` in "pass --from FILE".
fn flags_in(message: &str) -> Vec<String> {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

#[test]
fn without_a_cluster_each_command_fails_naming_only_flags_it_has() {
    let home = tempfile::tempdir().expect("temp dir");
    let certs = Certs::new();
    let (cert, key) = (certs.cert(), certs.key());
    let (cert, key) = (cert.to_str().expect("UTF-8"), key.to_str().expect("UTF-8"));
    let manifest = home.path().join("m.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    )
    .expect("manifest");
    let manifest = manifest.to_str().expect("UTF-8");
    for command in [
        &["status"][..],
        &["apply", "-f", manifest][..],
        &[
            "serve",
            "--health-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ][..],
    ] {
        let output = run_with_deadline(isolated(home.path()).args(command), None);
        let (_, stderr) = text(&output);
        assert!(
            !output.status.success(),
            "{command:?} without a cluster must fail: {stderr}"
        );
        assert!(
            stderr.contains("no cluster configuration"),
            "{command:?}: {stderr}"
        );
        let help = run_with_deadline(isolated(home.path()).args([command[0], "--help"]), None);
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let named = flags_in(&stderr);
        assert!(
            !named.is_empty() || command[0] == "apply",
            "{command:?} gives no hint: {stderr}"
        );
        for flag in named {
            assert!(
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag}="))
                    || help.contains(&format!("{flag}\n")),
                "{command:?} hints at {flag}, which `{} --help` does not list: {stderr}",
                command[0]
            );
        }
    }
}

fn policy_configmap(namespace: &str, name: &str, labelled: bool, policy: &str) -> Value {
    let mut cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"policy.yaml": policy}
    });
    if labelled {
        cm["metadata"]["labels"] = json!({
            "app.kubernetes.io/part-of": "gpushare", "app.kubernetes.io/component": "policy"});
    }
    cm
}

/// The MODE column of GPU 1 in a status table.
fn mode_of_gpu_1(table: &str) -> String {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|row| row.get(1) == Some(&"1"))
        .and_then(|row| row.get(2).map(|m| m.to_string()))
        .unwrap_or_else(|| panic!("no row for GPU 1: {table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_finds_the_policy_configmap_of_a_helm_release_of_any_name_and_says_so() {
    let setup = Setup::new(vec![node(2)]).await;
    // Nothing at all: the embedded default, said on stderr.
    let output = setup.status(&[]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(mode_of_gpu_1(&stdout), "time-slicing");
    assert!(stderr.contains("embedded default"), "{stderr}");

    // A release named `edge` in gpu-system, found by its label.
    setup.api.apply(policy_configmap(
        "gpu-system",
        "edge-gpushare-policy",
        true,
        "gpuModes: {\"1\": mps}\n",
    ));
    setup.api.apply(policy_configmap(
        "other",
        "unlabelled",
        false,
        "defaultMode: mps\n",
    ));
    let output = setup.status(&[]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(mode_of_gpu_1(&stdout), "mps", "{stderr}");
    assert!(
        stderr.contains("gpu-system/edge-gpushare-policy"),
        "{stderr}"
    );

    // The default name wins, silently; --policy-configmap names another.
    setup.api.apply(policy_configmap(
        "gpushare-system",
        "gpushare-policy",
        false,
        "defaultMode: time-slicing\n",
    ));
    let output = setup.status(&[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(mode_of_gpu_1(&stdout), "time-slicing");
    assert!(!stderr.contains("policy"), "{stderr}");
    let output = setup.status(&["--policy-configmap", "gpu-system/edge-gpushare-policy"]);
    assert_eq!(mode_of_gpu_1(&text(&output).0), "mps");
    let output = setup.status(&["--policy-configmap", "gpu-system/absent"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(mode_of_gpu_1(&stdout), "time-slicing");
    assert!(
        stderr.contains("gpu-system/absent") && stderr.contains("embedded default"),
        "{stderr}"
    );
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn webhook(name: &str, ca_bundle: Option<&[u8]>) -> Value {
    let mut client_config =
        json!({"service": {"name": "gpushare", "namespace": "gpushare-system", "path": "/mutate"}});
    if let Some(bundle) = ca_bundle {
        client_config["caBundle"] = json!(base64(bundle));
    }
    json!({
        "name": name, "clientConfig": client_config, "failurePolicy": "Fail",
        "sideEffects": "None", "admissionReviewVersions": ["v1"]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_warns_about_each_webhook_without_a_ca_that_verifies_the_serving_certificate() {
    let serving = Certs::new();
    let stranger = Certs::new();
    let setup = Setup::new(vec![
        node(2),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "gpushare-tls", "namespace": "gpushare-system"},
            "data": {"tls.crt": base64(&std::fs::read(serving.cert()).expect("tls.crt")), "tls.key": ""}
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "gpushare"},
            "webhooks": [
                webhook("trusted.gpushare.io", Some(&serving.ca_pem())),
                webhook("bare.gpushare.io", None),
                webhook("stranger.gpushare.io", Some(&stranger.ca_pem())),
            ]
        }),
    ])
    .await;
    let output = setup.status(&[]);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "the check is not fatal: {stdout}{stderr}"
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains("bare.gpushare.io")
            && warnings[0].contains("no caBundle")
            && warnings[0].contains("make deploy")
            && warnings[0].contains("cert-manager.io/inject-ca-from"),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("stranger.gpushare.io")
            && warnings[1].contains("does not verify")
            && warnings[1].contains("gpushare-system/gpushare-tls"),
        "{stderr}"
    );
    assert!(!stderr.contains("trusted.gpushare.io"), "{stderr}");

    // Callers who may not read the configuration get the table and a note.
    setup
        .api
        .fail_requests("/apis/admissionregistration.k8s.io", 403);
    let output = setup.status(&[]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
    assert!(stderr.contains("not checked"), "{stderr}");
}
