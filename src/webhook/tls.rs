//! TLS for the webhook (rustls, TLS 1.2+): the serving certificate is re-read when its files
//! change, so a rotated cert-manager Secret is picked up without a restart; a certificate that
//! fails to load leaves the previous one in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The crypto provider every TLS user in the process shares.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs the process-wide default provider (the kube client looks it up); harmless if set.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .ok_or_else(|| TlsError::NoKey(path.to_path_buf()))
}

/// Loads a certificate chain and its key into a signing-ready pair, checking they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let certified =
        CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| TlsError::Invalid {
            path: key.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(certified)
}

/// Expiry (Unix seconds) of the first certificate of a chain, for the expiry gauge.
pub fn not_after(key: &CertifiedKey) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(key.cert.first()?.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Serves the current certificate; `reload` swaps it.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ReloadingCert, TlsError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            stamp: RwLock::new(modified(cert_path).zip(modified(key_path))),
        })
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files if their modification times changed. `Ok(true)` when a new certificate
    /// is in use; on error the previous one stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = modified(&self.cert_path).zip(modified(&self.key_path));
        if stamp == *self.stamp.read().unwrap_or_else(|e| e.into_inner()) {
            return Ok(false);
        }
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        let changed = key.cert != self.current().cert;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = stamp;
        Ok(changed)
    }

    /// Polls the files every `interval` until the process ends, reporting each outcome.
    pub fn watch(
        self: Arc<Self>,
        interval: Duration,
        on_change: impl Fn(&CertifiedKey) + Send + 'static,
    ) {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                match self.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                        on_change(&self.current());
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "serving certificate not reloaded; the previous one stays in use")
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS 1.2+ server configuration over a reloading certificate, requiring client certificates
/// signed by `client_ca` when given (mTLS with the API server).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in load_certs(path)? {
                roots.add(ca).map_err(|e| TlsError::Invalid {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Invalid {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether a client trusting only `ca_bundle` (PEM, as a webhook's `caBundle`) accepts `chain`
/// (PEM, the serving certificate first) for `host`: the check the API server makes when it calls
/// the webhook. The error says why not.
pub fn verify_served(ca_bundle: &[u8], chain: &[u8], host: &str) -> Result<(), String> {
    let parse = |pem: &[u8], what: &str| {
        let certs = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what} is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{what} holds no PEM certificate"));
        }
        Ok(certs)
    };
    let mut roots = RootCertStore::empty();
    for ca in parse(ca_bundle, "the caBundle")? {
        roots
            .add(ca)
            .map_err(|e| format!("the caBundle holds an unusable certificate: {e}"))?;
    }
    let chain = parse(chain, "the serving certificate")?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA's PEM and a serving chain (PEM) it signed for `host`.
    fn issued(host: &str) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec![host.to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("leaf");
        (ca.pem(), leaf.pem())
    }

    #[test]
    fn a_ca_bundle_verifies_only_what_it_signed_for_the_service_name() {
        let host = "gpushare.gpushare-system.svc";
        let (ca, chain) = issued(host);
        let (other_ca, _) = issued(host);
        assert_eq!(verify_served(ca.as_bytes(), chain.as_bytes(), host), Ok(()));
        assert!(verify_served(other_ca.as_bytes(), chain.as_bytes(), host).is_err());
        assert!(
            verify_served(ca.as_bytes(), chain.as_bytes(), "other.gpushare-system.svc").is_err()
        );
        assert!(verify_served(b"not PEM", chain.as_bytes(), host)
            .is_err_and(|e| e.contains("caBundle")));
    }
}
