//! CPU use over a measured window, read from `/proc`: the server's, the load generator's (this
//! process, or wrk as its reaped child), and every other process's on the machine (which disturb
//! the figures).

use std::process::Command;
use std::time::Instant;

/// CPU time over the measured window, in percent of one core: the server's, this load
/// generator's, and everything else on the machine (other processes disturb the figures).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub server: f64,
    pub loadgen: f64,
    pub other: f64,
    /// The server's CPU time over the window, in seconds: requests divided by it give the
    /// requests per server CPU-second, whatever the length of the window.
    pub server_seconds: f64,
}

pub struct CpuSample {
    at: Instant,
    busy_ticks: u64,
    server_ticks: u64,
    self_ticks: u64,
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), in clock ticks; with `children`, plus those of
/// the children it has reaped (wrk, once it has exited and been waited for).
fn process_ticks(pid: &str, children: bool) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 3, utime 14, stime 15, cutime 16 and cstime 17.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let own = field(14) + field(15);
    if children {
        own + field(16) + field(17)
    } else {
        own
    }
}

impl CpuSample {
    pub fn take(server_pid: u32) -> CpuSample {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let busy_ticks = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .map(|l| {
                // user nice system idle iowait irq softirq steal: all but idle and iowait.
                l.split_whitespace()
                    .skip(1)
                    .take(8)
                    .enumerate()
                    .filter(|(i, _)| *i != 3 && *i != 4)
                    .filter_map(|(_, v)| v.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        CpuSample {
            at: Instant::now(),
            busy_ticks,
            server_ticks: process_ticks(&server_pid.to_string(), false),
            self_ticks: process_ticks("self", true),
        }
    }

    pub fn usage_until(&self, later: &CpuSample) -> CpuUse {
        let ticks_per_second = clock_ticks_per_second();
        let seconds = (later.at - self.at).as_secs_f64() * ticks_per_second / 100.0;
        if seconds <= 0.0 {
            return CpuUse::default();
        }
        let pct = |ticks: u64| ticks as f64 / seconds;
        let server = later.server_ticks.saturating_sub(self.server_ticks);
        let loadgen = later.self_ticks.saturating_sub(self.self_ticks);
        let busy = later.busy_ticks.saturating_sub(self.busy_ticks);
        CpuUse {
            server: pct(server),
            loadgen: pct(loadgen),
            other: pct(busy.saturating_sub(server + loadgen)),
            server_seconds: server as f64 / ticks_per_second,
        }
    }
}
