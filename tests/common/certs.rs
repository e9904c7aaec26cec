//! Development certificates, made by the real `gpushare certs`.

use std::path::PathBuf;

use super::binary::{gpushare, run_with_deadline};

/// Certificates made by `gpushare certs --out <tempdir>`.
pub struct Certs {
    pub dir: tempfile::TempDir,
    /// What `certs` printed on stdout (the caBundle).
    pub stdout: String,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = run_with_deadline(gpushare().arg("certs").arg("--out").arg(dir.path()), None);
        assert!(
            output.status.success(),
            "gpushare certs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Certs {
            dir,
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca()).expect("ca.crt is readable")
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}
