//! The server under test: the release `gpushare serve` in cluster mode, pinned to core 0 when
//! `taskset` exists, and what /proc says of its CPU time and memory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn have_taskset() -> bool {
    Command::new("taskset")
        .args(["-c", "0", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins this process (the fake API server and the load) to core 1, away from the server.
pub fn pin_self_to_core_1() {
    let _ = Command::new("taskset")
        .args(["-a", "-cp", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
}

pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(program: &Path, kubeconfig: &Path, certs: &Path, pin: bool) -> Server {
        let log = certs.join("server.log");
        let mut command = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn,gpushare=info")
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the server log is writable"));
        let started = Instant::now();
        let child = command.spawn().expect("gpushare serve starts");
        // Killed and reaped on drop, whatever happens below.
        let mut server = Server {
            pid: child.id(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = started + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(listening_address) {
                server.addr = addr;
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "gpushare serve did not listen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// User plus system CPU time so far.
    pub fn cpu(&self) -> Duration {
        cpu_of(self.pid)
    }

    /// Resident set size in KiB.
    pub fn rss_kb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU time of process `pid` (all its threads) so far.
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on https://")? + "listening on https://".len()..];
    rest.split(|c: char| c.is_whitespace() || c == '\u{1b}')
        .next()?
        .parse()
        .ok()
}
