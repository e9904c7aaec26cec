//! `gpushare version` and `--version`, the version in `serve`'s first log line and in
//! `gpushare_build_info`, and `gpushare completion SHELL` (also under the plugin's name).

mod common;

use common::{gpushare, run_with_deadline, Server};

fn stdout_of(args: &[&str]) -> String {
    let output = run_with_deadline(gpushare().args(args), None);
    assert!(
        output.status.success(),
        "gpushare {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn version_and_dash_dash_version_print_the_same_line() {
    let expected = format!("gpushare {VERSION}\n");
    assert_eq!(stdout_of(&["version"]), expected);
    assert_eq!(stdout_of(&["--version"]), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_the_version_first_and_exports_it_as_build_info() {
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("starts");
    let log = server.log();
    let first = log.lines().next().expect("a first log line");
    assert!(
        first.contains(&format!("gpushare {VERSION} starting")),
        "{first}"
    );
    let (_, metrics) = server.get_health("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("gpushare_build_info{{version=\"{VERSION}\"}} 1")),
        "{metrics}"
    );
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish_complete_the_subcommands() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef gpushare"),
        ("fish", "complete -c gpushare"),
    ] {
        let script = stdout_of(&["completion", shell]);
        assert!(script.contains(marker), "{shell}: {script}");
        for subcommand in ["serve", "check", "status", "apply", "version"] {
            assert!(script.contains(subcommand), "{shell} lacks {subcommand}");
        }
    }
    let unknown = run_with_deadline(gpushare().args(["completion", "tcsh"]), None);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn completion_under_the_plugin_name_completes_the_plugin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = dir.path().join("kubectl-gpushare");
    std::os::unix::fs::symlink(common::bin(), &plugin).expect("symlink");
    let output = run_with_deadline(
        std::process::Command::new(&plugin).args(["completion", "bash"]),
        None,
    );
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(script.contains("kubectl-gpushare"), "{script}");
}
