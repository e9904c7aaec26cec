//! What `serve` reads: an invalid policy file or a missing certificate stops it at start, the
//! standalone GPU count follows its documented sources, and a policy file edit takes effect live.

use crate::common::{self, *};

#[test]
fn an_invalid_policy_file_is_a_start_up_error() {
    let certs = Certs::new();
    // Standalone, and in cluster mode (where no cluster is reachable here): the file is the policy.
    for mode in [&["--standalone"][..], &[]] {
        let output = run_with_deadline(
            gpushare()
                .arg("serve")
                .args(mode)
                .args(["--listen", "127.0.0.1:0"])
                .arg("--tls-cert")
                .arg(certs.cert())
                .arg("--tls-key")
                .arg(certs.key())
                .arg("--policy")
                .arg(fixture_path("policy-invalid.yaml")),
            None,
        );
        let stderr = strip_ansi(&String::from_utf8_lossy(&output.stderr));
        assert!(
            !output.status.success(),
            "{mode:?}: serve must not start: {stderr}"
        );
        assert!(!stderr.contains("listening on"), "{mode:?}: {stderr}");
        assert!(
            stderr.contains("policy-invalid.yaml"),
            "{mode:?}: names the file: {stderr}"
        );
        assert!(
            stderr.contains("gpuMode"),
            "{mode:?}: names the unknown key: {stderr}"
        );
    }
}

#[test]
fn a_missing_certificate_is_a_start_up_error_pointing_to_gpushare_certs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run_with_deadline(
        gpushare()
            .args(["serve", "--standalone", "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key")),
        None,
    );
    let stderr = strip_ansi(&String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "serve must not start: {stderr}");
    assert!(stderr.contains("gpushare certs"), "{stderr}");
    assert!(
        stderr.contains("tls.crt"),
        "names the missing file: {stderr}"
    );
}

/// The standalone node's GPU count: `--gpus`, else policy `nodes.standalone.gpus`, else
/// `gpusPerNode`, else 1.
#[tokio::test]
async fn the_standalone_gpu_count_follows_the_documented_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write policy");
        path.to_str().expect("UTF-8 path").to_string()
    };
    let per_node_1 = write("per-node-1.yaml", "gpusPerNode: 1\n");
    let per_node_2 = write("per-node-2.yaml", "gpusPerNode: 2\n");
    let standalone_2 = write(
        "standalone-2.yaml",
        "gpusPerNode: 1\nnodes:\n  standalone:\n    gpus: 2\n",
    );
    let standalone_1 = write(
        "standalone-1.yaml",
        "gpusPerNode: 2\nnodes:\n  standalone:\n    gpus: 1\n",
    );
    // (arguments, whether GPU 1 exists)
    let cases: Vec<(Vec<&str>, bool)> = vec![
        (vec![], false),
        (vec!["--gpus", "2"], true),
        (vec!["--policy", &per_node_2], true),
        (vec!["--policy", &per_node_1], false),
        (vec!["--policy", &standalone_2], true),
        (vec!["--policy", &standalone_1], false),
        (vec!["--gpus", "2", "--policy", &standalone_1], true),
        (vec!["--gpus", "1", "--policy", &per_node_2], false),
    ];
    for (args, has_gpu_1) in cases {
        let server = Server::start_with(Certs::new(), &[], &args);
        let answer = server
            .review(&Review::create(web(&[(GPU, "1")])).to_json())
            .await;
        assert_eq!(answer.allowed, has_gpu_1, "{args:?}: {:#}", answer.review);
    }
}

/// `--policy FILE` is re-read when it changes; an invalid edit keeps the last valid policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_edit_takes_effect_without_a_restart_and_an_invalid_one_is_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "gpuModes: {\"1\": mps}\n").expect("write");
    let path = policy.to_str().expect("UTF-8").to_string();
    let server = tokio::task::spawn_blocking(move || common::Server::start(&["--policy", &path]))
        .await
        .expect("starts");
    let mps = common::Review::create(common::web(&[
        ("gpushare.io/gpu", "1"),
        ("gpushare.io/mps-percentage", "20"),
    ]));
    assert!(server.review(&mps.to_json()).await.allowed);

    std::fs::write(&policy, "gpuModes: {\"1\": mps}\nbogus: 1\n").expect("write");
    let started = std::time::Instant::now();
    while !server.log().contains("invalid policy rejected") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the invalid edit is logged:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        server.review(&mps.again().to_json()).await.allowed,
        "the last valid policy stays in force"
    );

    std::fs::write(&policy, "defaultMode: time-slicing\n").expect("write");
    let started = std::time::Instant::now();
    loop {
        let answer = server.review(&mps.again().to_json()).await;
        if !answer.allowed && answer.message.contains("time-slicing") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the new policy never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
