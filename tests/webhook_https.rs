//! The real `gpushare serve --standalone` over HTTPS, driven like the API server drives it:
//! complete `admission.k8s.io/v1` AdmissionReviews, the returned JSON Patch applied to the object,
//! and the patched object sent back to prove the mutation is idempotent (CONTRACT sections 3, 4, 6);
//! `webhook_https/kinds.rs` does the same for every other workload kind (section 2a).

mod common;
#[path = "webhook_https/kinds.rs"]
mod kinds;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

/// Sends the patched object back as a CREATE and as an UPDATE of itself: neither may change it.
async fn assert_idempotent(server: &Server, patched: &Value) {
    let again = server
        .review(&Review::create(patched.clone()).to_json())
        .await;
    again.assert_allowed_unchanged();
    let update = server
        .review(&Review::update(patched.clone(), patched.clone()).to_json())
        .await;
    update.assert_allowed_unchanged();
}

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
async fn foreign_kinds_controlled_pods_and_deletes_are_allowed_unchanged() {
    let server = Server::start(&[]);
    // A bare Pod is examined: two GPUs are denied, as on a Deployment.
    let pod = fixture_json("pod-gpu.json");
    server
        .review(&Review::pod("CREATE", pod.clone()).to_json())
        .await
        .assert_denied(403, GPU);
    // The same Pod created by a ReplicaSet is not: its controller's template was.
    let mut owned = pod;
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "gpu-5d4f", "uid": "2c5e1f0a-7b3d-4e8a-9f61-0d2c4b6a8e10", "controller": true}]);
    server
        .review(&Review::pod("CREATE", owned).to_json())
        .await
        .assert_allowed_unchanged();
    // A kind gpushare does not examine, with an annotation that would be denied.
    let mut foreign = Review::create(web(&[(GPU, "0,1")]));
    foreign.group = "argoproj.io".into();
    foreign.version = "v1alpha1".into();
    foreign.kind = "Rollout".into();
    foreign.resource = "rollouts".into();
    server
        .review(&foreign.to_json())
        .await
        .assert_allowed_unchanged();

    // DELETE: the API server sends object null and the stored object as oldObject.
    let stored = web(&[(GPU, "0,1")]);
    let mut delete = Review::deployment("DELETE", Value::Null);
    delete.old_object = stored;
    server
        .review(&delete.to_json())
        .await
        .assert_allowed_unchanged();
}

#[tokio::test]
async fn a_deployment_in_kube_system_is_allowed_unchanged() {
    let server = Server::start(&[]);
    for annotations in [vec![(GPU, "0")], vec![(GPU, "0,1")]] {
        let mut object = web(&annotations);
        object["metadata"]["namespace"] = json!("kube-system");
        let review = Review::create(object).namespace("kube-system");
        server
            .review(&review.to_json())
            .await
            .assert_allowed_unchanged();
    }
}

#[tokio::test]
async fn malformed_bodies_get_400_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let valid = Review::create(web(&[(GPU, "0")])).to_json();
    let mut wrong_version = valid.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut wrong_kind = valid.clone();
    wrong_kind["kind"] = json!("ConfigMap");
    let mut no_request = valid.clone();
    no_request
        .as_object_mut()
        .expect("object")
        .remove("request");
    let mut no_uid = valid.clone();
    no_uid["request"]
        .as_object_mut()
        .expect("object")
        .remove("uid");
    let mut bad_object = valid.clone();
    bad_object["request"]["object"] = json!("not a Deployment");

    // A well-formed review but for one byte that is not UTF-8, inside a label value.
    let mut not_utf8 = valid.clone();
    not_utf8["request"]["object"]["metadata"]["labels"] = json!({ "team": "vision@" });
    let mut not_utf8 = serde_json::to_vec(&not_utf8).expect("json");
    let at = not_utf8
        .windows(7)
        .position(|w| w == b"vision@")
        .expect("the label is in the body")
        + 6;
    not_utf8[at] = 0xff;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffthis is not JSON{{".to_vec()),
        ("a string that is not UTF-8", not_utf8),
        ("empty body", Vec::new()),
        ("a JSON array", b"[1, 2, 3]".to_vec()),
        (
            "a Deployment instead of a review",
            serde_json::to_vec(&web(&[])).expect("json"),
        ),
        (
            "wrong apiVersion",
            serde_json::to_vec(&wrong_version).expect("json"),
        ),
        ("wrong kind", serde_json::to_vec(&wrong_kind).expect("json")),
        (
            "missing request",
            serde_json::to_vec(&no_request).expect("json"),
        ),
        ("missing uid", serde_json::to_vec(&no_uid).expect("json")),
        (
            "object is not a Deployment",
            serde_json::to_vec(&bad_object).expect("json"),
        ),
    ];
    for (name, body) in cases {
        let (status, answer) = server.post_raw(body).await;
        assert_eq!(status, 400, "{name}: {}", String::from_utf8_lossy(&answer));
        server.assert_healthy().await;
    }
    // And it still answers real reviews.
    assert!(server.review(&valid).await.allowed);
}

#[tokio::test]
async fn a_4_mib_body_gets_413_and_the_server_survives() {
    let server = Server::start(&[]);
    // A syntactically plausible review padded past the limit.
    let mut review = Review::create(web(&[(GPU, "0")])).to_json();
    review["request"]["object"]["metadata"]["labels"]["padding"] = json!("x".repeat(4 << 20));
    let body = serde_json::to_vec(&review).expect("json");
    assert!(body.len() >= 4 << 20);
    let (status, answer) = server.post_raw(body).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    server.assert_healthy().await;
    assert!(
        server
            .review(&Review::create(web(&[(GPU, "0")])).to_json())
            .await
            .allowed
    );
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let server = Server::start(&[]);
    for path in ["/healthz", "/readyz"] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn metrics_count_admission_requests() {
    let server = Server::start(&[]);
    // One admission first: a counter family only has samples once something was counted.
    assert!(
        server
            .review(&Review::create(web(&[(GPU, "0")])).to_json())
            .await
            .allowed
    );
    let response = server
        .client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = response.text().await.expect("body");
    assert!(
        body.lines()
            .any(|l| l.starts_with("gpushare_admission_requests_total")),
        "{body}"
    );
}

/// A raw TLS client limited to one protocol version, speaking HTTP/1.1 over tokio-rustls.
async fn healthz_over(
    server: &Server,
    version: &'static rustls::SupportedProtocolVersion,
) -> (rustls::ProtocolVersion, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut roots = rustls::RootCertStore::empty();
    let ca = server.certs.ca_pem();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots
            .add(cert.expect("ca.crt is PEM"))
            .expect("CA is valid");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("ring supports the version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let negotiated = tls.get_ref().1.protocol_version().expect("negotiated");
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = Vec::new();
        // The server closes after answering (Connection: close); some servers skip close_notify.
        let _ = tls.read_to_end(&mut response).await;
        (negotiated, String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("the TLS exchange finishes in time")
}

#[tokio::test]
async fn tls_1_2_only_and_tls_1_3_only_clients_both_succeed() {
    let server = Server::start(&[]);
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let (negotiated, response) = healthz_over(&server, version).await;
        assert_eq!(negotiated, expected);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{expected:?}: {response}"
        );
    }
}

/// A ClientHello offering only `version` (no supported_versions extension), written by hand
/// since rustls cannot speak TLS 1.1: record header, handshake header, then the hello body.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
                  // ECDHE-ECDSA and ECDHE-RSA with AES-GCM (TLS 1.2) and AES-CBC-SHA (TLS 1.1).
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc009, 0xc013, 0xc00a, 0xc014];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let host = b"localhost";
    let mut server_name = Vec::new();
    server_name.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    server_name.push(0); // host_name
    server_name.extend_from_slice(&(host.len() as u16).to_be_bytes());
    server_name.extend_from_slice(host);
    let mut extensions = Vec::new();
    for (kind, data) in [
        (0x0000u16, server_name),
        (0x000a, vec![0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]), // groups: x25519, secp256r1
        (0x000b, vec![0x01, 0x00]),                         // uncompressed points
        (0x000d, vec![0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]), // signature algorithms
    ] {
        extensions.extend_from_slice(&kind.to_be_bytes());
        extensions.extend_from_slice(&(data.len() as u16).to_be_bytes());
        extensions.extend_from_slice(&data);
    }
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends a ClientHello and returns the first bytes the server answers (empty if it just closes).
async fn first_reply(server: &Server, hello: Vec<u8>) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        tcp.write_all(&hello).await.expect("write");
        let mut reply = vec![0; 64];
        let read = tcp.read(&mut reply).await.unwrap_or(0);
        reply.truncate(read);
        reply
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("the server answers the hello in time")
}

#[tokio::test]
async fn a_tls_1_1_client_is_refused() {
    let server = Server::start(&[]);
    // The control: the same hello offering TLS 1.2 gets a ServerHello (a handshake record).
    let control = first_reply(&server, client_hello([0x03, 0x03])).await;
    assert_eq!(
        control.first(),
        Some(&0x16),
        "TLS 1.2 hello: {control:02x?}"
    );

    let reply = first_reply(&server, client_hello([0x03, 0x02])).await;
    assert_ne!(
        reply.first(),
        Some(&0x16),
        "the server must not continue a TLS 1.1 handshake: {reply:02x?}"
    );
    if let [0x15, _, _, _, _, level, ..] = reply[..] {
        assert_eq!(level, 2, "a fatal alert: {reply:02x?}");
    }
    server.assert_healthy().await;
}

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

/// What a row of the rules table expects.
enum Expect {
    /// Allowed and patched: NVIDIA_VISIBLE_DEVICES on container 0, and a warning mentioning this
    /// text when given.
    Patched(&'static str, Option<&'static str>),
    /// Allowed, no patch.
    Unchanged,
    /// Denied (a 4xx code), the message mentioning this text.
    Denied(&'static str),
}

fn container(object: &mut Value, index: usize) -> &mut Value {
    &mut object["spec"]["template"]["spec"]["containers"][index]
}

/// CONTRACT section 4, one row per rule, over HTTPS (the core's own table lives in
/// decision_table.rs; these rows prove the wire format carries each outcome).
#[tokio::test]
async fn rules_over_the_wire() {
    let policy = fixture_path("policy-gpu1-mps.yaml");
    let server = Server::start(&["--policy", policy.to_str().expect("UTF-8 path")]);
    let sidecar = json!({ "name": "sidecar", "image": "busybox", "resources": {} });

    let mut rows: Vec<(&str, Value, Expect)> = Vec::new();
    let mut template_only = web(&[]);
    template_only["spec"]["template"]["metadata"]["annotations"] = json!({ GPU: "0" });
    rows.push((
        "keys on the pod template only",
        template_only,
        Expect::Patched("0", None),
    ));
    let mut conflict = web(&[(GPU, "0")]);
    conflict["spec"]["template"]["metadata"]["annotations"] = json!({ GPU: "1" });
    rows.push((
        "a key set differently in both places",
        conflict,
        Expect::Denied(GPU),
    ));
    for value in [
        "all",
        "0-1",
        "GPU-8f6e0c2a-1b2c-4d5e-8f90-123456789abc,GPU-1234",
    ] {
        rows.push(("not one GPU", web(&[(GPU, value)]), Expect::Denied(GPU)));
    }
    rows.push((
        "an index the node lacks",
        web(&[(GPU, "2")]),
        Expect::Denied("VM"),
    ));
    for value in ["0", "101", "fifty"] {
        rows.push((
            "a percentage outside 1..100",
            web(&[(MPS_PERCENTAGE, value)]),
            Expect::Denied(MPS_PERCENTAGE),
        ));
    }
    rows.push((
        "an mps key with mode time-slicing",
        web(&[(MODE, "time-slicing"), (MPS_PERCENTAGE, "20")]),
        Expect::Denied(MPS_PERCENTAGE),
    ));
    rows.push((
        "a malformed memory limit",
        web(&[(GPU, "1"), (MPS_MEMORY_LIMIT, "1.5Gi")]),
        Expect::Denied(MPS_MEMORY_LIMIT),
    ));
    rows.push((
        "mode time-slicing on the mps GPU",
        web(&[(GPU, "1"), (MODE, "time-slicing")]),
        Expect::Denied("mps"),
    ));
    rows.push((
        "a listed container that does not exist",
        web(&[(GPU, "0"), (CONTAINERS, "nginx,worker")]),
        Expect::Denied("worker"),
    ));
    let mut two_gpus = web(&[(GPU, "0")]);
    container(&mut two_gpus, 0)["resources"] = json!({ "limits": { "nvidia.com/gpu": "2" } });
    rows.push((
        "nvidia.com/gpu: 2",
        two_gpus,
        Expect::Denied("nvidia.com/gpu"),
    ));
    let mut one_gpu = web(&[(GPU, "0")]);
    container(&mut one_gpu, 0)["resources"] = json!({ "limits": { "nvidia.com/gpu": "1" } });
    rows.push((
        "nvidia.com/gpu: 1 warns",
        one_gpu,
        Expect::Patched("0", Some("nvidia.com/gpu")),
    ));
    let mut value_from = web(&[(GPU, "0")]);
    container(&mut value_from, 0)["env"] = json!([{
        "name": VISIBLE_DEVICES,
        "valueFrom": { "configMapKeyRef": { "name": "gpus", "key": "visible" } }
    }]);
    rows.push((
        "valueFrom on an owned variable",
        value_from,
        Expect::Denied("valueFrom"),
    ));
    for (value, expect) in [
        ("all", Expect::Denied(VISIBLE_DEVICES)),
        ("0,1", Expect::Denied(VISIBLE_DEVICES)),
        // Written by hand: counted as gpushare.io/gpu: "1" (CONTRACT section 2b).
        ("1", Expect::Patched("1", None)),
        ("none", Expect::Unchanged),
        ("void", Expect::Unchanged),
        ("", Expect::Unchanged),
    ] {
        let mut unmanaged = web(&[]);
        container(&mut unmanaged, 0)["env"] = json!([{ "name": VISIBLE_DEVICES, "value": value }]);
        rows.push((
            "an unmanaged container's own NVIDIA_VISIBLE_DEVICES",
            unmanaged,
            expect,
        ));
    }
    let mut unselected = web(&[(GPU, "0"), (CONTAINERS, "nginx")]);
    let mut greedy = sidecar.clone();
    greedy["env"] = json!([{ "name": VISIBLE_DEVICES, "value": "all" }]);
    unselected["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(greedy);
    rows.push((
        "an unselected container asking for all GPUs",
        unselected,
        Expect::Denied(VISIBLE_DEVICES),
    ));
    let mut replicas = web(&[(GPU, "1"), (MPS_PERCENTAGE, "50")]);
    replicas["spec"]["replicas"] = json!(3);
    rows.push((
        "3 replicas x 50% on one GPU",
        replicas,
        Expect::Denied("100"),
    ));
    let mut clients = web(&[(GPU, "0")]);
    clients["spec"]["replicas"] = json!(49);
    rows.push(("49 client processes", clients, Expect::Denied("48")));

    for (name, object, expect) in rows {
        let answer = server
            .review(&Review::create(object.clone()).to_json())
            .await;
        match expect {
            Expect::Patched(gpu, warning) => {
                let patched = answer.apply(&object);
                assert_eq!(
                    env_value(&patched, 0, VISIBLE_DEVICES).as_deref(),
                    Some(gpu),
                    "{name}"
                );
                if let Some(warning) = warning {
                    assert!(
                        answer.warnings.iter().any(|w| w.contains(warning)),
                        "{name}: a warning mentioning {warning}: {:?}",
                        answer.warnings
                    );
                }
                assert_idempotent(&server, &patched).await;
            }
            Expect::Unchanged => {
                assert!(
                    answer.allowed && answer.unchanged(),
                    "{name}: {:#}",
                    answer.review
                )
            }
            Expect::Denied(mentions) => {
                // `Answer` already checked the 4xx code and the presence of a message.
                assert!(
                    !answer.allowed,
                    "{name}: expected a denial: {:#}",
                    answer.review
                );
                assert!(
                    answer.message.contains(mentions),
                    "{name}: the message should mention {mentions:?}: {}",
                    answer.message
                );
            }
        }
    }
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
