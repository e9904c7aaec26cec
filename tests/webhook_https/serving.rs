//! HTTP around the reviews: malformed and oversized bodies are refused while the server keeps
//! serving; health, readiness and metrics answer.

use serde_json::json;

use crate::common::*;

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
