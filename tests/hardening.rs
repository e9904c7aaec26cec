//! Production hardening, tested on the real binary: certificate rotation without a restart,
//! optional mTLS with health and metrics on their own plain-HTTP port, slow clients, and graceful
//! shutdown on SIGTERM.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{gpushare, run_with_deadline, web, Certs, Review, Server};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const DEADLINE: Duration = Duration::from_secs(30);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn roots(ca_files: &[&Path]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for file in ca_files {
        for cert in pem_certs(&std::fs::read(file).expect("CA readable")) {
            roots.add(cert).expect("a CA certificate");
        }
    }
    roots
}

fn client(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> TlsConnector {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Sends `request` over a fresh TLS connection: the status line, or the error that stopped it.
async fn exchange(
    connector: &TlsConnector,
    server: &Server,
    request: &str,
) -> Result<String, String> {
    let tcp = TcpStream::connect(server.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response).to_string();
    text.lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .map(str::to_string)
        .ok_or(format!("no HTTP answer: {text:?}"))
}

/// One HTTP/1.1 GET over a fresh TLS connection.
async fn get(connector: &TlsConnector, server: &Server, path: &str) -> Result<String, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    exchange(connector, server, &request).await
}

/// The serial number of the certificate the server presents on a new handshake.
async fn serving_serial(connector: &TlsConnector, server: &Server) -> Vec<u8> {
    let tcp = TcpStream::connect(server.addr).await.expect("connects");
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let (_, session) = tls.get_ref();
    let leaf = &session.peer_certificates().expect("a server certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("X.509");
    cert.raw_serial().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart_and_without_failed_requests() {
    let certs = Certs::new();
    let old_ca = certs.dir.path().join("old-ca.crt");
    std::fs::copy(certs.ca(), &old_ca).expect("keep the old CA");
    let dir = certs.dir.path().to_path_buf();
    let server =
        tokio::task::spawn_blocking(move || Server::start_with(certs, &["--gpus", "2"], &[]))
            .await
            .expect("starts");
    let trust_old = client(roots(&[&old_ca]), None);
    let before = serving_serial(&trust_old, &server).await;

    // Requests keep flowing on one keep-alive connection while the files change under the server.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (client, url, stop) = (server.client().clone(), server.url("/mutate"), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let review = Review::create(web(&[("gpushare.io/gpu", "0")])).to_json();
                let response = client
                    .post(&url)
                    .json(&review)
                    .send()
                    .await
                    .expect("no request fails during rotation");
                assert_eq!(response.status(), 200);
                sent += 1;
            }
            sent
        })
    };

    // A broken certificate file is not loaded: the old one stays in use.
    std::fs::write(
        dir.join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let waited = Instant::now();
    while !server.log().contains("not reloaded") {
        assert!(
            waited.elapsed() < DEADLINE,
            "a broken certificate is logged:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        serving_serial(&trust_old, &server).await,
        before,
        "the previous certificate stays in use"
    );

    // cert-manager renews: new files, a new CA.
    let renewed = run_with_deadline(gpushare().arg("certs").arg("--out").arg(&dir), None);
    assert!(renewed.status.success());
    let trust_both = client(roots(&[&old_ca, &dir.join("ca.crt")]), None);
    let waited = Instant::now();
    while serving_serial(&trust_both, &server).await == before {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the new certificate is served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = traffic.await.expect("traffic task");
    assert!(sent > 0, "requests were sent during the rotation");
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("gpushare_serving_certificate_expiry_timestamp_seconds"),
        "{metrics}"
    );
}

/// A CA and a client certificate it signed, in `dir`.
fn client_identity(
    dir: &Path,
    name: &str,
) -> (
    std::path::PathBuf,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["kube-apiserver".to_string()]).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca).expect("client certificate");
    let ca_file = dir.join(format!("{name}-ca.crt"));
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).expect("PKCS#8 key");
    (ca_file, vec![cert.der().clone()], key_der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_it_signed_are_served() {
    let certs = Certs::new();
    let dir = certs.dir.path().to_path_buf();
    let (api_ca, api_chain, api_key) = client_identity(&dir, "apiserver");
    let (_, other_chain, other_key) = client_identity(&dir, "other");
    let server_ca = certs.ca();
    let client_ca = api_ca.to_str().expect("UTF-8").to_string();
    let server = tokio::task::spawn_blocking(move || {
        Server::start_with(certs, &["--gpus", "2"], &["--client-ca", &client_ca])
    })
    .await
    .expect("starts");

    let anonymous = get(&client(roots(&[&server_ca]), None), &server, "/healthz").await;
    assert!(
        anonymous.is_err(),
        "no client certificate: refused, got {anonymous:?}"
    );
    let stranger = get(
        &client(roots(&[&server_ca]), Some((other_chain, other_key))),
        &server,
        "/healthz",
    )
    .await;
    assert!(
        stranger.is_err(),
        "a certificate from another CA: refused, got {stranger:?}"
    );
    let apiserver = get(
        &client(roots(&[&server_ca]), Some((api_chain, api_key))),
        &server,
        "/healthz",
    )
    .await;
    assert_eq!(
        apiserver.as_deref(),
        Ok("HTTP/1.1 200 OK"),
        "the API server's certificate is served"
    );
}

/// One HTTP/1.1 POST of an AdmissionReview over a fresh TLS connection, as `get`.
async fn post_review(connector: &TlsConnector, server: &Server) -> Result<String, String> {
    let body = Review::create(web(&[])).to_json().to_string();
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(connector, server, &request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_probes_and_scrapes_need_no_certificate_on_the_health_port() {
    let certs = Certs::new();
    let dir = certs.dir.path().to_path_buf();
    let (api_ca, api_chain, api_key) = client_identity(&dir, "apiserver");
    let server_ca = certs.ca();
    let client_ca = api_ca.to_str().expect("UTF-8").to_string();
    let server = tokio::task::spawn_blocking(move || {
        Server::start_with(certs, &["--gpus", "2"], &["--client-ca", &client_ca])
    })
    .await
    .expect("starts");

    // The kubelet's probes and a plain Prometheus scrape: HTTP, no certificate.
    assert_eq!(server.get_health("/healthz").await, (200, "ok".into()));
    assert_eq!(server.get_health("/readyz").await, (200, "ok".into()));
    let (status, metrics) = server.get_health("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("gpushare_build_info{version=\""),
        "{metrics}"
    );
    // Nothing else is served there.
    assert_eq!(server.get_health("/mutate").await.0, 404);
    assert_eq!(server.get_health("/status").await.0, 404);

    // The webhook port still asks every client for a certificate its CA signed.
    let anonymous = post_review(&client(roots(&[&server_ca]), None), &server).await;
    assert!(
        anonymous.is_err(),
        "/mutate without a client certificate: refused, got {anonymous:?}"
    );
    let apiserver = post_review(
        &client(roots(&[&server_ca]), Some((api_chain, api_key))),
        &server,
    )
    .await;
    assert_eq!(apiserver.as_deref(), Ok("HTTP/1.1 200 OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_on_the_health_port_and_stops_both_listeners() {
    let mut server = tokio::task::spawn_blocking(|| Server::start(&["--drain-delay", "1"]))
        .await
        .expect("starts");
    let (webhook, health) = (server.addr, server.health_addr);
    server.terminate();
    let started = Instant::now();
    while server.get_health("/readyz").await.0 != 503 {
        assert!(
            started.elapsed() < DEADLINE,
            "/readyz on the health port did not turn 503 after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.wait_exit(DEADLINE))
        .await
        .expect("waits");
    assert!(status.success(), "{status:?}");
    for addr in [webhook, health] {
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts connections after exit"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_one_byte_per_second_is_dropped() {
    let server = tokio::task::spawn_blocking(|| Server::start(&["--header-timeout", "1"]))
        .await
        .expect("starts");
    let connector = client(roots(&[&server.certs.ca()]), None);
    let tcp = TcpStream::connect(server.addr).await.expect("connects");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let started = Instant::now();
    let headers = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut dropped = false;
    for byte in headers {
        if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
            dropped = true;
            break;
        }
        let mut buffer = [0u8; 256];
        // A closed connection reads as end-of-file (or a 408 then end-of-file); a live one times out.
        match tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                dropped = true;
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
        assert!(
            started.elapsed() < DEADLINE,
            "still connected after {DEADLINE:?}"
        );
    }
    assert!(dropped, "the slow client was not dropped");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "dropped after {:?}",
        started.elapsed()
    );
    server.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_answers_every_request_already_started() {
    let mut server = tokio::task::spawn_blocking(|| Server::start(&["--drain-delay", "1"]))
        .await
        .expect("starts");
    let signalled: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (client, url, signalled) = (
            server.client().clone(),
            server.url("/mutate"),
            signalled.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut answered_before_signal = 0;
            loop {
                let started = Instant::now();
                let review = Review::create(web(&[(
                    "gpushare.io/gpu",
                    if worker % 2 == 0 { "0" } else { "auto" },
                )]))
                .to_json();
                let result = client.post(&url).json(&review).send().await;
                let before_signal = signalled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none_or(|at| started < at);
                match result {
                    Ok(response) => {
                        assert_eq!(response.status(), 200);
                        let body: serde_json::Value =
                            response.json().await.expect("a complete answer");
                        assert_eq!(body["response"]["allowed"], true);
                        if before_signal {
                            answered_before_signal += 1;
                        }
                    }
                    Err(error) => {
                        assert!(
                            !before_signal,
                            "a request started before SIGTERM failed: {error}"
                        );
                        return answered_before_signal;
                    }
                }
            }
        }));
    }
    // Let the burst get going, then stop the server as the kubelet would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    *signalled.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    server.terminate();
    let probe = Instant::now();
    loop {
        let (status, _) = server.get("/readyz").await;
        if status == 503 {
            break;
        }
        assert!(
            probe.elapsed() < Duration::from_secs(1),
            "/readyz did not turn 503 during the drain delay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answered = 0;
    for worker in workers {
        answered += worker.await.expect("a worker panicked");
    }
    assert!(answered > 0, "requests were answered before the signal");
    let status = tokio::task::spawn_blocking(move || server.wait_exit(DEADLINE))
        .await
        .expect("waits");
    assert!(
        status.success(),
        "gpushare exits cleanly after SIGTERM: {status:?}"
    );
}

/// Sends `head` and then `pieces` of a body over a fresh connection (`Connection: close`), pausing
/// between pieces so that the server sees them arrive apart; returns all it answered.
async fn post_in_pieces(server: &Server, length: usize, pieces: &[&[u8]]) -> String {
    let connector = client(roots(&[&server.certs.ca()]), None);
    let tcp = TcpStream::connect(server.addr).await.expect("connects");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.expect("headers");
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tls.write_all(piece).await.expect("a piece of the body");
        tls.flush().await.expect("flush");
    }
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, tls.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_sent_in_pieces_is_read_whole_and_one_that_stops_halfway_gets_408() {
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("starts");
    let review = Review::create(web(&[("gpushare.io/gpu", "0")])).to_json();
    let uid = review["request"]["uid"]
        .as_str()
        .expect("a uid")
        .to_string();
    let body = serde_json::to_vec(&review).expect("json");
    let (first, second) = body.split_at(body.len() / 2);

    let whole = post_in_pieces(&server, body.len(), &[first, second]).await;
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
    assert!(
        whole.contains(&uid) && whole.contains("\"allowed\":true"),
        "{whole}"
    );

    let stopped = post_in_pieces(&server, body.len(), &[first]).await;
    assert!(stopped.starts_with("HTTP/1.1 408"), "{stopped}");
    server.assert_healthy().await;
}
