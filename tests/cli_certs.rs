//! `gpushare certs` (CONTRACT section 6): a CA and a serving certificate for the webhook Service's
//! DNS names and localhost, private keys mode 0600, and the caBundle on stdout; checked with a
//! certificate verifier and with real TLS handshakes against `gpushare serve`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use common::*;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The names the API server (and a developer) use to reach the webhook.
const SERVICE_NAMES: [&str; 3] = [
    "gpushare.gpushare-system.svc",
    "gpushare.gpushare-system.svc.cluster.local",
    "localhost",
];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{} is not PEM: {e}", path.display()));
    assert!(!certs.is_empty(), "{} holds no certificate", path.display());
    certs
}

fn assert_private_key(path: &Path) {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .unwrap_or_else(|e| panic!("{} is not PEM: {e}", path.display()));
    assert!(key.is_some(), "{} holds no private key", path.display());
    assert_eq!(
        mode(path),
        0o600,
        "{} must be readable by its owner only",
        path.display()
    );
}

#[test]
fn certs_writes_a_ca_and_a_serving_certificate_with_keys_mode_0600() {
    let certs = Certs::new();
    let dir = certs.dir.path();
    pem_certs(&dir.join("ca.crt"));
    pem_certs(&dir.join("tls.crt"));
    assert_private_key(&dir.join("tls.key"));
    // The CA key is optional, but when written it is a key too.
    if dir.join("ca.key").exists() {
        assert_private_key(&dir.join("ca.key"));
    }
    // Certificates are public; no other file (a leftover temporary, say) is left behind.
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("UTF-8 name");
        assert!(
            ["ca.crt", "ca.key", "tls.crt", "tls.key"].contains(&name.as_str()),
            "unexpected file {name}"
        );
    }
}

#[test]
fn certs_prints_the_ca_bundle_as_base64_of_ca_crt() {
    let certs = Certs::new();
    let bundle = certs.stdout.trim();
    assert!(!bundle.is_empty(), "no caBundle on stdout");
    assert_eq!(
        bundle.lines().count(),
        1,
        "the caBundle is one line: {bundle}"
    );
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .expect("the caBundle is standard base64");
    assert_eq!(decoded, certs.ca_pem(), "the caBundle is ca.crt's PEM");
}

#[test]
fn certs_writes_into_certs_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run_with_deadline(gpushare().arg("certs").current_dir(dir.path()), None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(
            dir.path().join("certs").join(name).is_file(),
            "certs/{name}"
        );
    }
    assert_eq!(mode(&dir.path().join("certs/tls.key")), 0o600);
}

#[test]
fn the_serving_certificate_verifies_against_the_ca_for_the_webhook_names() {
    let certs = Certs::new();
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(&certs.ca()) {
        roots.add(ca).expect("ca.crt is a valid certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
    let chain = pem_certs(&certs.cert());
    let (leaf, intermediates) = chain.split_first().expect("a leaf certificate");
    let verify = |name: &str| {
        let server_name = ServerName::try_from(name.to_string()).expect("valid server name");
        verifier.verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
    };
    for name in SERVICE_NAMES.iter().copied().chain(["127.0.0.1"]) {
        if let Err(error) = verify(name) {
            panic!("the serving certificate is not valid for {name}: {error}");
        }
    }
    for wrong in ["gpushare.default.svc", "example.com", "10.0.0.1"] {
        assert!(
            verify(wrong).is_err(),
            "the certificate must not be valid for {wrong}"
        );
    }
}

#[tokio::test]
async fn a_real_handshake_succeeds_for_every_name() {
    let server = Server::start(&[]);
    let ca = server.certs.ca_pem();
    for name in SERVICE_NAMES {
        let client = client_trusting(&ca)
            .resolve(name, server.addr)
            .build()
            .expect("client");
        let url = format!("https://{name}:{}/healthz", server.port());
        let response = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}; server log:\n{}", server.log()));
        assert_eq!(response.status().as_u16(), 200, "{url}");
    }
    let client = client_trusting(&ca).build().expect("client");
    let url = format!("https://127.0.0.1:{}/healthz", server.port());
    let response = client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:?}"));
    assert_eq!(response.status().as_u16(), 200, "{url}");

    // A name the certificate does not cover is refused by the client.
    let client = client_trusting(&ca)
        .resolve("gpushare.default.svc", server.addr)
        .build()
        .expect("client");
    let url = format!("https://gpushare.default.svc:{}/healthz", server.port());
    assert!(
        client.get(&url).send().await.is_err(),
        "{url} must not verify"
    );
}
