//! `kubectl gpushare` through the real kubectl of the cluster's release, with the plugin found on the PATH as kubectl
//! finds plugins: `apply -f` as a user bound to a namespace-scoped Role only (no nodes, no policy
//! ConfigMap, no other namespace), and `status` and `check` as the admin. The cluster's webhook also
//! mutates what the plugin applies; its patch is idempotent, so the stored object is the plugin's.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::*;
use super::{wait_for_node, ASSIGNED_GPU, ASSIGNED_MODE, GPU, NVD};

/// A directory on the PATH holding `kubectl-gpushare`, a link to this build's binary.
struct PluginPath {
    dir: tempfile::TempDir,
}

impl PluginPath {
    fn new() -> PluginPath {
        let dir = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_gpushare"),
            dir.path().join("kubectl-gpushare"),
        )
        .expect("plugin link");
        PluginPath { dir }
    }

    /// `kubectl gpushare ARGS` with this kubeconfig.
    fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Run {
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| env_var("KUBECTL").to_string());
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(kubectl);
        command
            .env("PATH", path)
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .arg("gpushare")
            .args(args);
        run(&mut command, None)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("manifest written");
        path
    }
}

/// A ServiceAccount of `ns` with a Role on the workload kinds of `ns` and nothing cluster-wide,
/// and a kubeconfig with its token whose context namespace is `ns`.
fn namespace_user(ns: &Namespace, dir: &Path) -> PathBuf {
    let name = &ns.name;
    let rbac = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: app-team, namespace: {name}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: app-team, namespace: {name}}}
rules:
  - apiGroups: [apps]
    resources: [deployments, replicasets, statefulsets, daemonsets]
    verbs: [get, list, watch, create, patch, update]
  - apiGroups: [batch]
    resources: [jobs, cronjobs]
    verbs: [get, list, watch, create, patch, update]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: app-team, namespace: {name}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: app-team}}
subjects: [{{kind: ServiceAccount, name: app-team, namespace: {name}}}]
"#
    );
    apply(&rbac, &[]).ok();
    let token = kubectl(&["-n", name, "create", "token", "app-team", "--duration=1h"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let admin = kubectl(&["config", "view", "--raw", "--minify", "-o", "json"])
        .ok()
        .json();
    let cluster = &admin["clusters"][0]["cluster"];
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
         users:\n- name: app-team\n  user:\n    token: {token}\ncontexts:\n- name: app-team\n  context:\n    cluster: local\n\
         \x20   user: app-team\n    namespace: {name}\ncurrent-context: app-team\n",
        cluster["server"].as_str().expect("server"),
        cluster["certificate-authority-data"]
            .as_str()
            .expect("certificate-authority-data"),
    );
    let path = dir.join("app-team.kubeconfig");
    std::fs::write(&path, kubeconfig).expect("kubeconfig written");
    // The Role takes effect when the RBAC caches have it.
    eventually("the Role to allow listing deployments", || {
        let mut command = Command::new(env_var("KUBECTL"));
        command
            .env("KUBECONFIG", &path)
            .args(["auth", "can-i", "list", "deployments"]);
        let run = run(&mut command, None);
        if run.stdout.trim() == "yes" {
            Ok(())
        } else {
            Err(run.stdout + &run.stderr)
        }
    });
    path
}

#[test]
fn kubectl_gpushare_apply_as_a_namespace_only_user_stores_the_mutated_deployment_and_uses_gpus() {
    let node = TestNode::new("e2e-plugin-apply", 2);
    let ns = Namespace::new("e2e-plugin-apply");
    wait_for_node(&node, &ns);
    let plugin = PluginPath::new();
    let user = namespace_user(&ns, plugin.dir.path());
    let cannot = kubectl_as(&user, &["auth", "can-i", "list", "nodes"]);
    assert_eq!(cannot.stdout.trim(), "no", "the user may not read nodes");

    let manifest = plugin.file(
        "nbody.yaml",
        &deployment("nbody", &ns.name, &node.name, 1, &[(GPU, "1")])
            .replace(&format!("  namespace: {}\n", ns.name), ""),
    );
    let manifest = manifest.to_str().expect("utf-8");
    let run = plugin.kubectl(&user, &["apply", "-f", manifest, "--gpus", "2"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_eq!(
        run.stdout,
        "ALLOWED e2e-plugin-apply/Deployment/nbody gpu=1 mode=time-slicing\n\
         deployment.apps/nbody serverside-applied\n"
    );
    assert!(
        run.stderr.contains("you may not list nodes")
            && run.stderr.contains("2 GPUs (--gpus)")
            && run.stderr.contains("you may not list deployments, "),
        "the fallbacks are said: {}",
        run.stderr
    );
    let stored = get_json(&[
        "--show-managed-fields",
        "-n",
        &ns.name,
        "deployment",
        "nbody",
    ]);
    assert_eq!(
        template_env(&stored, "/spec/template", NVD).as_deref(),
        Some("1")
    );
    for metadata in ["/metadata", "/spec/template/metadata"] {
        assert_eq!(
            annotation(&stored, metadata, ASSIGNED_GPU).as_deref(),
            Some("1")
        );
        assert_eq!(
            annotation(&stored, metadata, ASSIGNED_MODE).as_deref(),
            Some("time-slicing")
        );
    }
    let managers: Vec<(String, String)> = stored["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or("").to_string(),
                m["operation"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("gpushare".into(), "Apply".into())),
        "server-side apply by field manager gpushare: {managers:?}"
    );

    // The nodes are unreadable, so --gpus is the count: with 1 GPU, index 1 does not exist.
    let second = plugin.file(
        "second.yaml",
        &deployment("second", &ns.name, &node.name, 1, &[(GPU, "1")]),
    );
    let run = plugin.kubectl(
        &user,
        &[
            "apply",
            "-f",
            second.to_str().expect("utf-8"),
            "--gpus",
            "1",
        ],
    );
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout
            .starts_with("DENIED e2e-plugin-apply/Deployment/second: "),
        "{}",
        run.stdout
    );
    let missing = kubectl(&["-n", &ns.name, "get", "deployment", "second"]);
    assert_ne!(missing.code, 0, "nothing stored: {}", missing.stdout);
}

fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env_var("KUBECTL"));
    command.env("KUBECONFIG", kubeconfig).args(args);
    run(&mut command, None)
}

#[test]
fn kubectl_gpushare_apply_of_a_set_with_one_denied_prints_it_exits_1_and_stores_nothing() {
    let node = TestNode::new("e2e-plugin-denied", 2);
    let ns = Namespace::new("e2e-plugin-denied");
    wait_for_node(&node, &ns);
    let plugin = PluginPath::new();
    let user = namespace_user(&ns, plugin.dir.path());
    let set = format!(
        "{}---\n{}",
        deployment("good", &ns.name, &node.name, 1, &[(GPU, "0")]),
        deployment("bad", &ns.name, &node.name, 1, &[(GPU, "0,1")])
    );
    let file = plugin.file("set.yaml", &set);
    let run = plugin.kubectl(
        &user,
        &["apply", "-f", file.to_str().expect("utf-8"), "--gpus", "2"],
    );
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("ALLOWED e2e-plugin-denied/Deployment/good gpu=0 mode=time-slicing")
    );
    assert!(
        lines.get(1).is_some_and(|l| l
            .starts_with("DENIED e2e-plugin-denied/Deployment/bad: gpushare.io/gpu is \"0,1\"")),
        "{}",
        run.stdout
    );
    assert_eq!(lines.len(), 2, "no serverside-applied line: {}", run.stdout);
    assert!(run.stderr.contains("nothing applied"), "{}", run.stderr);
    let listed = get_json(&["-n", &ns.name, "deployments"]);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );
}

#[test]
fn kubectl_gpushare_status_and_check_run_through_kubectl() {
    let node = TestNode::new("e2e-plugin-status", 2);
    let ns = Namespace::new("e2e-plugin-status");
    wait_for_node(&node, &ns);
    apply(
        &deployment("tracker", &ns.name, &node.name, 3, &[(GPU, "0")]),
        &[],
    )
    .ok();
    let plugin = PluginPath::new();
    let admin = Path::new(kubeconfig());
    let module = format!("{}/Deployment/tracker", ns.name);
    eventually("kubectl gpushare status to show the module", || {
        let run = plugin.kubectl(admin, &["status"]);
        let row = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} ", node.name)) && l.contains(&module))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
        match row {
            Some(row) if run.code == 0 => Ok(row),
            _ => Err(format!("exit {}: {}{}", run.code, run.stdout, run.stderr)),
        }
    });
    let run = plugin.kubectl(admin, &["status"]).ok();
    assert!(run.stdout.starts_with("NODE"), "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells
                == [
                    node.name.as_str(),
                    "0",
                    "time-slicing",
                    "no",
                    "3/48",
                    "-",
                    // No kubelet on this node: counted, nothing running.
                    "0",
                    format!("{module}(3)").as_str(),
                ]
        }),
        "{}",
        run.stdout
    );

    let good = plugin.file(
        "good.yaml",
        &deployment("web", &ns.name, &node.name, 1, &[(GPU, "1")]),
    );
    let run = plugin.kubectl(
        admin,
        &["check", "--gpus", "2", good.to_str().expect("utf-8")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "ALLOWED {}/Deployment/web gpu=1 mode=time-slicing\n",
            ns.name
        )
    );
    let bad = plugin.file(
        "bad.yaml",
        &deployment("web", &ns.name, &node.name, 1, &[(GPU, "all")]),
    );
    let run = plugin.kubectl(
        admin,
        &["check", "--gpus", "2", bad.to_str().expect("utf-8")],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with(&format!("DENIED {}/Deployment/web: ", ns.name)),
        "{}",
        run.stdout
    );
}
