//! A managed Deployment over HTTPS: the returned patch applied, what a user would see checked, and
//! the patched object sent back to prove the mutation is idempotent; denials, UPDATEs that release
//! or keep a module, dry runs.

use serde_json::{json, Value};

use crate::assert_idempotent;
use crate::common::*;

/// CREATE `object`, assert it is allowed, and return the patched object.
async fn create_patched(server: &Server, object: &Value) -> (Value, Answer) {
    let answer = server
        .review(&Review::create(object.clone()).to_json())
        .await;
    assert!(answer.allowed, "expected allowed: {:#}", answer.review);
    assert!(
        !answer.unchanged(),
        "a managed Deployment must be patched: {:#}",
        answer.review
    );
    (answer.apply(object), answer)
}

#[tokio::test]
async fn time_slicing_gpu_0_sets_visible_devices_and_assigned_annotations() {
    let server = Server::start(&[]);
    let object = web(&[(GPU, "0")]);
    let (patched, answer) = create_patched(&server, &object).await;

    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_eq!(
        env(&patched, 0),
        vec![(VISIBLE_DEVICES.to_string(), Some("0".to_string()))],
        "a container without env gets one holding only NVIDIA_VISIBLE_DEVICES"
    );
    assert_assigned(&patched, "0", "time-slicing", None);
    // The user's annotation stays; nothing else in the object moves.
    assert_eq!(annotation(&patched, "/metadata", GPU).as_deref(), Some("0"));
    assert_eq!(
        patched["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx"
    );
    assert_eq!(patched["spec"]["replicas"], 1);
    assert_eq!(patched["status"], json!({}));

    assert_idempotent(&server, &patched).await;
}

#[tokio::test]
async fn auto_chooses_the_lowest_index_on_an_idle_node() {
    let server = Server::start(&[]);
    let object = web(&[(GPU, "auto")]);
    let (patched, _) = create_patched(&server, &object).await;

    // Both GPUs are idle and time-slicing: least-loaded ties go to the lowest index.
    assert_eq!(
        env_value(&patched, 0, VISIBLE_DEVICES).as_deref(),
        Some("0")
    );
    assert_eq!(env_value(&patched, 0, MPS_THREAD_PERCENTAGE), None);
    assert_assigned(&patched, "0", "time-slicing", None);

    assert_idempotent(&server, &patched).await;
}

#[tokio::test]
async fn mps_gpu_from_policy_file_gets_percentage_and_memory_limit() {
    let policy = fixture_path("policy-gpu1-mps.yaml");
    let server = Server::start(&["--policy", policy.to_str().expect("UTF-8 path")]);
    let object = web(&[(GPU, "1"), (MPS_PERCENTAGE, "20"), (MPS_MEMORY_LIMIT, "1G")]);
    let (patched, _) = create_patched(&server, &object).await;

    assert_eq!(
        env(&patched, 0),
        vec![
            (VISIBLE_DEVICES.to_string(), Some("1".to_string())),
            (MPS_THREAD_PERCENTAGE.to_string(), Some("20".to_string())),
            (MPS_MEM_LIMIT.to_string(), Some("0=1G".to_string())),
        ]
    );
    assert_assigned(&patched, "1", "mps", Some("20"));
    assert_idempotent(&server, &patched).await;

    // `auto` with an mps annotation only considers mps GPUs.
    let (auto, _) = create_patched(&server, &web(&[(MPS_PERCENTAGE, "20")])).await;
    assert_eq!(env_value(&auto, 0, VISIBLE_DEVICES).as_deref(), Some("1"));
    assert_assigned(&auto, "1", "mps", Some("20"));

    // GPU 0 stays time-slicing: asking it for mps is denied.
    let mismatch = server
        .review(&Review::create(web(&[(GPU, "0"), (MPS_PERCENTAGE, "20")])).to_json())
        .await;
    assert!(!mismatch.allowed, "{:#}", mismatch.review);
    assert!(mismatch.message.contains("mps"), "{}", mismatch.message);
}

#[tokio::test]
async fn existing_env_keeps_its_order_and_a_differing_visible_devices_is_replaced_with_a_warning() {
    let server = Server::start(&[]);
    let object = with_annotations(fixture_json("deployment-web-env.json"), &[(GPU, "0")]);
    let (patched, answer) = create_patched(&server, &object).await;

    let env = env(&patched, 0);
    let others: Vec<&str> = env
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != VISIBLE_DEVICES)
        .collect();
    assert_eq!(
        others,
        ["LOG_LEVEL", "MODEL_PATH"],
        "other entries keep their order; time-slicing removes the MPS variable: {env:?}"
    );
    assert_eq!(
        env_value(&patched, 0, "LOG_LEVEL").as_deref(),
        Some("debug")
    );
    assert_eq!(
        env_value(&patched, 0, "MODEL_PATH").as_deref(),
        Some("/models/resnet")
    );
    assert_eq!(
        env_value(&patched, 0, VISIBLE_DEVICES).as_deref(),
        Some("0")
    );
    assert!(
        answer.warnings.iter().any(|w| w.contains(VISIBLE_DEVICES)),
        "replacing NVIDIA_VISIBLE_DEVICES=1 with 0 deserves a warning: {:?}",
        answer.warnings
    );
    assert_assigned(&patched, "0", "time-slicing", None);

    assert_idempotent(&server, &patched).await;
}

#[tokio::test]
async fn a_list_of_gpus_is_denied_with_403_naming_the_annotation() {
    let server = Server::start(&[]);
    let answer = server
        .review(&Review::create(web(&[(GPU, "0,1")])).to_json())
        .await;
    answer.assert_denied(403, GPU);
}

#[tokio::test]
async fn an_unknown_gpushare_key_is_denied_with_400() {
    let server = Server::start(&[]);
    // A typo of gpushare.io/gpu, and the only gpushare key.
    let answer = server
        .review(&Review::create(web(&[("gpushare.io/gpus", "0")])).to_json())
        .await;
    answer.assert_denied(400, "gpushare.io/gpus");
}

#[tokio::test]
async fn an_update_removing_every_user_key_releases_the_module() {
    let policy = fixture_path("policy-gpu1-mps.yaml");
    let server = Server::start(&["--policy", policy.to_str().expect("UTF-8 path")]);
    let original = with_annotations(
        fixture_json("deployment-web-env.json"),
        &[
            (GPU, "1"),
            (MPS_PERCENTAGE, "20"),
            (MPS_MEMORY_LIMIT, "512M"),
        ],
    );
    let (patched, _) = create_patched(&server, &original).await;
    assert_assigned(&patched, "1", "mps", Some("20"));

    // The user deletes their annotations (kubectl edit keeps everything else).
    let mut edited = patched.clone();
    let annotations = edited["metadata"]["annotations"]
        .as_object_mut()
        .expect("metadata.annotations");
    for key in [GPU, MPS_PERCENTAGE, MPS_MEMORY_LIMIT] {
        annotations.remove(key);
    }
    let answer = server
        .review(&Review::update(edited.clone(), patched.clone()).to_json())
        .await;
    let released = answer.apply(&edited);

    for metadata in ["/metadata", "/spec/template/metadata"] {
        assert_eq!(
            gpushare_annotations(&released, metadata),
            vec![],
            "{metadata} keeps no gpushare annotation: {released:#}"
        );
    }
    assert_eq!(
        env(&released, 0),
        vec![
            ("LOG_LEVEL".to_string(), Some("debug".to_string())),
            ("MODEL_PATH".to_string(), Some("/models/resnet".to_string())),
        ],
        "gpushare's variables are gone, the user's stay in order"
    );

    // Unmanaged now: sending it again changes nothing.
    let again = server
        .review(&Review::update(released.clone(), released.clone()).to_json())
        .await;
    again.assert_allowed_unchanged();
}

#[tokio::test]
async fn an_update_keeps_the_gpu_already_assigned_to_an_auto_module() {
    let server = Server::start(&[]);
    // A module that `auto` once placed on GPU 1 (say, while GPU 0 was busy).
    let (on_gpu_1, _) = create_patched(&server, &web(&[(GPU, "1")])).await;
    let mut stored = on_gpu_1.clone();
    stored["metadata"]["annotations"][GPU] = json!("auto");
    assert_assigned(&stored, "1", "time-slicing", None);

    // An UPDATE that leaves gpushare.io/gpu alone (here: a new image) must not move it to GPU 0.
    let mut edited = stored.clone();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
    let answer = server
        .review(&Review::update(edited.clone(), stored.clone()).to_json())
        .await;
    let kept = answer.apply(&edited);
    assert_eq!(env_value(&kept, 0, VISIBLE_DEVICES).as_deref(), Some("1"));
    assert_assigned(&kept, "1", "time-slicing", None);

    // Changing gpushare.io/gpu does move it.
    let mut moved = stored.clone();
    moved["metadata"]["annotations"][GPU] = json!("0");
    let answer = server
        .review(&Review::update(moved.clone(), stored.clone()).to_json())
        .await;
    let moved = answer.apply(&moved);
    assert_eq!(env_value(&moved, 0, VISIBLE_DEVICES).as_deref(), Some("0"));
    assert_assigned(&moved, "0", "time-slicing", None);
}

#[tokio::test]
async fn assigned_keys_alone_do_not_make_a_deployment_managed_and_are_overwritten() {
    let server = Server::start(&[]);
    // Not an unknown key, and not managed: allowed unchanged.
    server
        .review(&Review::create(web(&[(ASSIGNED_GPU, "1")])).to_json())
        .await
        .assert_allowed_unchanged();
    // On a managed Deployment the user's value is replaced by the real assignment.
    let (patched, _) = create_patched(&server, &web(&[(GPU, "0"), (ASSIGNED_GPU, "1")])).await;
    assert_assigned(&patched, "0", "time-slicing", None);
    assert_idempotent(&server, &patched).await;
}

#[tokio::test]
async fn dry_run_gets_the_same_answer() {
    let server = Server::start(&[]);
    for annotations in [vec![(GPU, "0")], vec![(GPU, "auto")], vec![(GPU, "0,1")]] {
        let object = web(&annotations);
        let review = Review::create(object);
        let real = server.review(&review.to_json()).await;
        let dry = server.review(&review.again().dry_run(true).to_json()).await;
        assert_eq!(dry.allowed, real.allowed, "{annotations:?}");
        assert_eq!(dry.patch, real.patch, "{annotations:?}");
        assert_eq!(dry.warnings, real.warnings, "{annotations:?}");
        assert_eq!(dry.code, real.code, "{annotations:?}");
        assert_eq!(dry.message, real.message, "{annotations:?}");
    }
}

#[tokio::test]
async fn a_release_takes_back_the_pipe_directory_and_leaves_host_ipc_with_a_warning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "defaultMode: mps\nmps:\n  hostIPC: true\n  pipeDirectory: /tmp/nvidia-mps\n",
    )
    .expect("write policy");
    let server = Server::start(&["--policy", policy.to_str().expect("UTF-8 path")]);
    let original = web(&[(GPU, "0")]);
    let (patched, _) = create_patched(&server, &original).await;
    let spec = &patched["spec"]["template"]["spec"];
    assert_eq!(spec["hostIPC"], json!(true), "{patched:#}");
    assert_eq!(
        env_value(&patched, 0, "CUDA_MPS_PIPE_DIRECTORY").as_deref(),
        Some("/tmp/nvidia-mps")
    );
    let volume = spec["volumes"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|v| v["hostPath"]["path"] == "/tmp/nvidia-mps")
        })
        .unwrap_or_else(|| panic!("a hostPath volume for the pipe directory: {patched:#}"))
        .clone();
    let mounts = spec["containers"][0]["volumeMounts"].clone();
    assert!(
        mounts.as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["name"] == volume["name"] && m["mountPath"] == "/tmp/nvidia-mps")),
        "mounted at the same path: {mounts:#}"
    );
    assert_idempotent(&server, &patched).await;

    let mut edited = patched.clone();
    edited["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove(GPU);
    let answer = server
        .review(&Review::update(edited.clone(), patched.clone()).to_json())
        .await;
    let released = answer.apply(&edited);
    let spec = &released["spec"]["template"]["spec"];
    assert_eq!(env(&released, 0), vec![], "{released:#}");
    assert!(
        !spec["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == volume["name"])),
        "the pipe volume is removed: {released:#}"
    );
    assert!(
        !spec["containers"][0]["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["name"] == volume["name"])),
        "the pipe mount is removed: {released:#}"
    );
    assert_eq!(spec["hostIPC"], json!(true), "hostIPC is left as it is");
    assert!(
        answer.warnings.iter().any(|w| w.contains("hostIPC")),
        "with a warning: {:?}",
        answer.warnings
    );
    for metadata in ["/metadata", "/spec/template/metadata"] {
        assert_eq!(
            gpushare_annotations(&released, metadata),
            vec![],
            "{metadata}"
        );
    }
}
