//! The processes of a run: the server under test (gpushare or the ceiling) pinned to core 0 and
//! killed on drop, this load generator pinned to core 1, and the workspace with their
//! certificates and policy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::TlsConnector;

use crate::requests::{self, POLICY};
use crate::CEILING_ENV;

fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins every thread of this process to core 1 before the runtime starts any. Returns whether
/// pinning worked; without taskset the run continues unpinned and says so.
pub fn pin_self_to_core_1() -> bool {
    if !have_taskset() {
        eprintln!("bench: taskset not found; server and load generator run UNPINNED, figures are not comparable");
        return false;
    }
    let status = Command::new("taskset")
        .args(["-a", "-cp", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => true,
        _ => {
            eprintln!("bench: `taskset -a -cp 1` failed; the load generator runs unpinned");
            false
        }
    }
}

/// A server child on core 0, killed (and reaped) on drop.
pub struct Server {
    name: String,
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts `program args` under `taskset -c 0` with `envs`, its stderr going to `log`, and
    /// waits for its `listening on https://ADDR` line.
    fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log: PathBuf,
        pin: bool,
    ) -> Server {
        let mut command = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("KUBECONFIG")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the server log file is writable"));
        // taskset execs the program, so the child's pid is the server's.
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let pid = child.id();
        let mut server = Server {
            name: name.to_string(),
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(listening_address) {
                server.addr = addr;
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{name} exited ({status}) before listening:\n{text}");
            }
            if Instant::now() > deadline {
                panic!("{name} did not print `listening on https://...` within 30 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (VmHWM, VmRSS) in KiB.
    pub fn memory_kb(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_else(|e| {
                panic!(
                    "cannot read /proc/{}/status of {}: {e}",
                    self.pid, self.name
                )
            });
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{} exited during the run ({status}):\n{text}", self.name);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on https://")? + "listening on https://".len()..];
    rest.split(|c: char| c.is_whitespace() || c == '\u{1b}')
        .next()?
        .parse()
        .ok()
}

/// The gpushare binary measured: `make bench` passes the build users install (`cargo build
/// --release`, copied aside) as BENCH_GPUSHARE_BIN, since the bench's own build has the
/// dev-dependencies' features unified in and so other symbols than the code layout names.
pub fn measured_binary() -> PathBuf {
    std::env::var_os("BENCH_GPUSHARE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gpushare")))
}

pub struct Workspace {
    dir: tempfile::TempDir,
    gpushare: PathBuf,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let gpushare = measured_binary();
        let certs = dir.path().join("certs");
        let output = Command::new(&gpushare)
            .arg("certs")
            .arg("--out")
            .arg(&certs)
            .output()
            .expect("gpushare certs runs");
        assert!(
            output.status.success(),
            "gpushare certs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(dir.path().join("policy.yaml"), POLICY).expect("the policy is writable");
        Workspace { dir, gpushare }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cert(&self) -> PathBuf {
        self.path("certs/tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.path("certs/tls.key")
    }

    /// This build's `gpushare serve`, standalone on the bench's policy and certificates.
    pub fn start_gpushare(&self, rust_log: &str, pin: bool) -> Server {
        self.start_build("gpushare", &self.gpushare, rust_log, pin)
    }

    /// Another build of gpushare (`BENCH_BASELINE_BIN`) with the same arguments, for an A/B
    /// comparison in one run.
    pub fn start_baseline(&self, bin: &Path, rust_log: &str, pin: bool) -> Server {
        self.start_build("baseline", bin, rust_log, pin)
    }

    fn start_build(&self, name: &str, bin: &Path, rust_log: &str, pin: bool) -> Server {
        let bin = &self.cold_copy(name, bin);
        let cert = self.cert();
        let key = self.key();
        let policy = self.path("policy.yaml");
        let log = self.path(&format!(
            "{name}-{}.log",
            rust_log.replace([',', ':', '='], "_")
        ));
        Server::start(
            name,
            bin,
            &[
                "serve",
                "--standalone",
                "--gpus",
                &requests::GPUS.to_string(),
                "--listen",
                "127.0.0.1:0",
                "--health-listen",
                "127.0.0.1:0",
                "--tls-cert",
                path_str(&cert),
                "--tls-key",
                path_str(&key),
                "--policy",
                path_str(&policy),
            ],
            &[("RUST_LOG", rust_log)],
            log,
            pin,
        )
    }

    pub fn start_ceiling(&self, pin: bool) -> Server {
        let exe = self.cold_copy(
            "ceiling",
            &std::env::current_exe().expect("the bench knows its own path"),
        );
        let cert = self.cert();
        let key = self.key();
        Server::start(
            "ceiling",
            &exe,
            &[],
            &[
                (CEILING_ENV, "1"),
                ("GPUSHARE_BENCH_CERT", path_str(&cert)),
                ("GPUSHARE_BENCH_KEY", path_str(&key)),
            ],
            self.path("ceiling.log"),
            pin,
        )
    }

    /// A copy of `bin` for the server `name`, out of the page cache, so that every server starts
    /// cold, as after a node restarts. Peak RSS depends on it: the kernel maps a cached file in
    /// whole folios on the first touch, and how large those are depends on how the file came
    /// into the cache (the linker's writes, a copy, read-ahead). The ceiling needs a copy most:
    /// it is this bench's own executable, which the running bench keeps mapped.
    fn cold_copy(&self, name: &str, bin: &Path) -> PathBuf {
        let copy = self.path(&format!("{name}.bin"));
        if !copy.exists() {
            std::fs::copy(bin, &copy)
                .unwrap_or_else(|e| panic!("cannot copy {} for {name}: {e}", bin.display()));
        }
        let file = std::fs::File::open(&copy).expect("the copy opens");
        // Written back first: the kernel drops only clean pages.
        file.sync_all().expect("the copy is written back");
        use std::os::fd::AsRawFd as _;
        // SAFETY: a plain syscall on a file descriptor this function owns.
        let status =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(status, 0, "posix_fadvise(DONTNEED) of {}", copy.display());
        copy
    }

    pub fn tls_connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for ca in
            gpushare::webhook::tls::load_certs(&self.path("certs/ca.crt")).expect("ca.crt loads")
        {
            roots.add(ca).expect("the CA is a valid trust anchor");
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(gpushare::webhook::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}
