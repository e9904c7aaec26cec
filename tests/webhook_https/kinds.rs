//! Every workload kind over HTTPS (CONTRACT section 2a): complete AdmissionReviews of a
//! ReplicaSet, StatefulSet, DaemonSet, Job, CronJob and Pod as the API server sends them, the
//! returned patch applied where each kind keeps its pod template, and sent back.

use serde_json::{json, Value};

use crate::common::*;

async fn create(server: &Server, object: &Value) -> (Value, Answer) {
    let answer = server
        .review(&Review::create_of(object.clone()).to_json())
        .await;
    assert!(answer.allowed, "expected allowed: {:#}", answer.review);
    (answer.apply(object), answer)
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().expect("a kind")
}

#[tokio::test]
async fn every_kind_gets_its_gpu_where_it_keeps_its_pod_template() {
    let policy = fixture_path("policy-gpu1-mps.yaml");
    let server = Server::start(&["--policy", policy.to_str().expect("UTF-8 path")]);
    for object in every_kind(&[(GPU, "1"), (MPS_PERCENTAGE, "10")]) {
        let (patched, answer) = create(&server, &object).await;
        let kind = kind(&object);
        assert_eq!(
            env(&patched, 0),
            vec![
                (VISIBLE_DEVICES.to_string(), Some("1".to_string())),
                (MPS_THREAD_PERCENTAGE.to_string(), Some("10".to_string())),
            ],
            "{kind}: {patched:#}"
        );
        assert_assigned(&patched, "1", "mps", Some("10"));
        // Only the metadata and the pod template are written.
        for op in &answer.patch.as_ref().expect("a patch").0 {
            let path = serde_json::to_value(op).expect("an operation")["path"]
                .as_str()
                .expect("a path")
                .to_string();
            assert!(
                path.starts_with("/metadata") || path.starts_with(template_of(&object)),
                "{kind}: the patch writes {path}"
            );
        }
        let overlap = answer.warnings.iter().any(|w| w.contains("overlap"));
        assert_eq!(overlap, kind == "CronJob", "{kind}: {:?}", answer.warnings);
        // Idempotent: the patched object again, as a CREATE and as an UPDATE of itself.
        server
            .review(&Review::create_of(patched.clone()).to_json())
            .await
            .assert_allowed_unchanged();
        server
            .review(&Review::update_of(patched.clone(), patched.clone()).to_json())
            .await
            .assert_allowed_unchanged();
    }
}

#[tokio::test]
async fn every_kind_is_denied_two_gpus_with_the_annotation_named() {
    let server = Server::start(&[]);
    for object in every_kind(&[(GPU, "0,1")]) {
        let answer = server
            .review(&Review::create_of(object.clone()).to_json())
            .await;
        assert!(!answer.allowed, "{}: {:#}", kind(&object), answer.review);
        answer.assert_denied(403, GPU);
    }
}

#[tokio::test]
async fn a_job_update_keeps_its_gpu_writes_only_its_metadata_and_checks_parallelism() {
    let policy = fixture_path("policy-gpu1-mps.yaml");
    let server = Server::start(&["--policy", policy.to_str().expect("UTF-8 path")]);
    let job = with_annotations(fixture_json("job-nbody.json"), &[(MPS_PERCENTAGE, "40")]);
    let (stored, _) = create(&server, &job).await;
    assert_assigned(&stored, "1", "mps", Some("40"));

    // kubectl annotate --overwrite dropped the object's assigned annotations; parallelism 2 fits.
    let mut update = stored.clone();
    update["metadata"]["annotations"] = json!({ MPS_PERCENTAGE: "40" });
    update["spec"]["parallelism"] = json!(2);
    let answer = server
        .review(&Review::update_of(update.clone(), stored.clone()).to_json())
        .await;
    let patched = answer.apply(&update);
    for op in &answer.patch.as_ref().expect("the metadata annotations").0 {
        let op = serde_json::to_value(op).expect("an operation");
        assert!(
            op["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/metadata")),
            "a Job's pod template is never patched on UPDATE: {op}"
        );
    }
    assert_assigned(&patched, "1", "mps", Some("40"));
    assert_eq!(
        env_value(&patched, 0, VISIBLE_DEVICES).as_deref(),
        Some("1")
    );

    // Parallelism 3 x 40% is over the GPU: denied with the field to lower.
    let mut wider = stored.clone();
    wider["spec"]["parallelism"] = json!(3);
    let answer = server
        .review(&Review::update_of(wider, stored.clone()).to_json())
        .await;
    answer.assert_denied(403, "parallelism");

    // Changing the GPU cannot reach the pods: denied, saying why.
    let moved = with_annotations(stored.clone(), &[(GPU, "0"), (MPS_PERCENTAGE, "40")]);
    let answer = server
        .review(&Review::update_of(moved, stored).to_json())
        .await;
    answer.assert_denied(403, "pod template");
}

#[tokio::test]
async fn finished_jobs_controlled_objects_and_unmanaged_pods_are_left_alone() {
    let server = Server::start(&[]);
    let job = with_annotations(fixture_json("job-nbody.json"), &[(GPU, "0,1")]);
    let mut complete = job.clone();
    complete["status"] = json!({ "conditions": [{ "type": "Complete", "status": "True" }] });
    server
        .review(&Review::update_of(complete.clone(), complete).to_json())
        .await
        .assert_allowed_unchanged();

    let mut owned = job;
    owned["metadata"]["ownerReferences"] = json!([{ "apiVersion": "batch/v1", "kind": "CronJob",
        "name": "nightly", "uid": "0b6f3a1e-9d2c-4f7e-8a15-3c4d5e6f7a8b", "controller": true }]);
    server
        .review(&Review::create_of(owned).to_json())
        .await
        .assert_allowed_unchanged();

    server
        .review(&Review::create_of(fixture_json("pod-infer.json")).to_json())
        .await
        .assert_allowed_unchanged();
}

#[tokio::test]
async fn resource_claims_and_forbidden_overlap_change_the_warnings() {
    let server = Server::start(&[]);
    let mut claimed = with_annotations(fixture_json("pod-infer.json"), &[(GPU, "0")]);
    claimed["spec"]["resourceClaims"] = json!([{ "name": "gpu", "resourceClaimName": "t4" }]);
    let (_, answer) = create(&server, &claimed).await;
    assert!(
        answer.warnings.iter().any(|w| w.contains("resourceClaims")),
        "{:?}",
        answer.warnings
    );

    let mut forbid = with_annotations(fixture_json("cronjob-nightly.json"), &[(GPU, "0")]);
    forbid["spec"]["concurrencyPolicy"] = json!("Forbid");
    let (patched, answer) = create(&server, &forbid).await;
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_assigned(&patched, "0", "time-slicing", None);
}

#[tokio::test]
async fn metrics_count_requests_by_kind() {
    let server = Server::start(&[]);
    let job = with_annotations(fixture_json("job-nbody.json"), &[(GPU, "0")]);
    assert!(
        server
            .review(&Review::create_of(job).to_json())
            .await
            .allowed
    );
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gpushare_admission_requests_total")
                && l.contains("kind=\"Job\"")
                && l.contains("decision=\"patched\"")),
        "{metrics}"
    );
}

/// `kubectl debug` over HTTPS: the `pods/ephemeralcontainers` UPDATE as the API server sends it.
/// gpushare never gives an ephemeral container a GPU and writes nothing; one that names the Pod's
/// own GPU is one more client process of it, one that names another is refused (CONTRACT 2b).
#[tokio::test]
async fn an_ephemeral_container_writing_gpu_variables_must_name_the_pods_gpu() {
    let server = Server::start(&[]);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "infer", "namespace": "default", "uid": "5f1c",
            "annotations": {GPU: "0", "gpushare.io/assigned-gpu": "0",
                "gpushare.io/assigned-mode": "time-slicing"}},
        "spec": {"nodeName": "standalone", "containers": [{"name": "infer", "image": "infer",
            "env": [{"name": VISIBLE_DEVICES, "value": "0"}]}]}
    });
    let debugged = |value: &str| {
        let mut debugged = pod.clone();
        debugged["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox",
            "env": [{"name": VISIBLE_DEVICES, "value": value}]}]);
        debugged
    };
    let same = server
        .review(&Review::ephemeral(debugged("0"), pod.clone()).to_json())
        .await;
    assert!(same.allowed && same.unchanged(), "{:#}", same.review);
    let other = server
        .review(&Review::ephemeral(debugged("1"), pod.clone()).to_json())
        .await;
    other.assert_denied(403, "only one GPU");
    let every = server
        .review(&Review::ephemeral(debugged("all"), pod.clone()).to_json())
        .await;
    every.assert_denied(403, VISIBLE_DEVICES);
    // Without GPU variables it is none of gpushare's business.
    let mut shell = pod.clone();
    shell["spec"]["ephemeralContainers"] = json!([{"name": "shell", "image": "busybox"}]);
    let plain = server
        .review(&Review::ephemeral(shell, pod.clone()).to_json())
        .await;
    assert!(plain.allowed && plain.unchanged(), "{:#}", plain.review);
}
