//! TLS: clients limited to TLS 1.2 or 1.3 both succeed, a TLS 1.1 client is refused.

use std::sync::Arc;

use crate::common::*;

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
