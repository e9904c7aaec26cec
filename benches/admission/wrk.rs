//! `BENCH_LOAD_TOOL=wrk` (`make bench-wrk`): the same servers, pinned the same way, driven by wrk
//! instead of this bench's own client, so anyone can rerun the load with a standard HTTP tool. wrk
//! posts one complete managed-mps AdmissionReview over HTTPS keep-alive from a generated Lua
//! script; its output is parsed, and the server's CPU, memory and the targets come from the same
//! code as the in-process run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::cpu::{CpuSample, CpuUse};
use crate::load::{run_levels, run_phase, target_for, Check, LevelResult};
use crate::process::{Server, Workspace};
use crate::requests::{Case, Template};
use crate::{finish, this_build_and_baseline, Budget, Config, Run, Served};

/// The uid every wrk request carries: wrk sends one fixed body.
const WRK_UID: &str = "b3c4d5e6-0000-4000-8000-0000000a0b0c";

/// How wrk is run: the script, whole seconds (wrk takes no fractions), and pinning.
struct Wrk {
    script: PathBuf,
    warmup_seconds: u64,
    seconds: u64,
    pin: bool,
}

/// What one wrk run printed.
#[derive(Debug, Default, PartialEq)]
struct WrkOutput {
    requests: u64,
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    non_2xx: u64,
    /// connect, read, write, timeout.
    socket_errors: [u64; 4],
}

impl WrkOutput {
    fn errors(&self) -> u64 {
        self.non_2xx + self.socket_errors.iter().sum::<u64>()
    }

    fn error_summary(&self) -> Option<String> {
        let [connect, read, write, timeout] = self.socket_errors;
        (self.errors() > 0).then(|| {
            format!(
                "wrk: {} responses not 2xx; socket errors: connect {connect}, read {read}, write {write}, timeout {timeout}",
                self.non_2xx
            )
        })
    }
}

/// The whole comparison with wrk as the load generator; returns the number of failed requests.
pub async fn run(config: &Config, pinned: bool) -> u64 {
    let version = wrk_version();
    let workspace = Workspace::new();
    let template = Template::all()
        .into_iter()
        .find(|t| t.case == Case::Mps)
        .expect("the managed mps case is one of the templates");
    let body = template.body(WRK_UID);
    let script = workspace.path("admission-review.lua");
    std::fs::write(&script, lua_script(&body)).expect("the wrk script is writable");
    let seconds = match config.budget {
        Budget::Seconds(s) => whole_seconds(s).max(1),
        Budget::Requests(_) => {
            eprintln!("bench: wrk runs for a duration, not a number of requests; BENCH_REQUESTS is ignored, 10 s per level");
            10
        }
    };
    let wrk = Wrk {
        script,
        warmup_seconds: whole_seconds(config.warmup.as_secs_f64()),
        seconds,
        pin: pinned,
    };
    let templates = Arc::new(vec![template]);
    eprintln!(
        "bench: {version}; body {} bytes; levels {:?}; warm-up {} s; measured {} s per level",
        body.len(),
        config.levels,
        wrk.warmup_seconds,
        wrk.seconds
    );

    let (gpushare, baseline) =
        this_build_and_baseline(config, &workspace, pinned, |label, server| {
            serve(label, server, &workspace, &templates, &wrk, config)
        })
        .await;
    let (ceiling, ceiling_memory) = if config.ceiling {
        let mut server = workspace.start_ceiling(pinned);
        preflight(&server, &workspace, &templates, Check::Envelope).await;
        let url = server_url(&server);
        let levels = run_levels(
            "ceiling (axum+rustls)",
            &config.levels,
            &mut server,
            config,
            |c, pid| std::future::ready(wrk.level(c, pid, &url)),
        )
        .await;
        (levels, Some(server.memory_kb()))
    } else {
        (Vec::new(), None)
    };

    let method = format!(
        "Load from {version}: `wrk -t1 -c<concurrency> -d{}s --latency -s <script>` against \
         https://127.0.0.1:<port>/mutate after a {} s warm-up run per level (wrk takes whole \
         seconds), one HTTPS keep-alive connection per concurrent request; the script POSTs one \
         managed-mps AdmissionReview ({} bytes, Content-Type application/json) on every request; \
         server {}, wrk {}. Any non-2xx answer or socket error fails the run; before the levels, \
         one request with this body is checked for the right verdict. wrk sends the IP address as SNI, \
         which costs one rustls warning per connection in the server's log.",
        wrk.seconds,
        wrk.warmup_seconds,
        body.len(),
        if pinned { "on core 0" } else { "UNPINNED" },
        if pinned {
            "on core 1 (taskset -c 1)"
        } else {
            "UNPINNED (no taskset)"
        },
    );
    let run = Run {
        method,
        gpushare,
        baseline,
        ceiling,
        ceiling_memory,
        info: Vec::new(),
        info_log_bytes: 0,
        info_total: 0,
        layout: crate::layout::coverage(&crate::process::measured_binary()),
    };
    finish(&run, config, "bench-results-wrk.md")
}

/// A gpushare build through every level with wrk, then topped up at concurrency 64 until it has
/// served `min_total` requests.
async fn serve(
    label: &str,
    mut server: Server,
    workspace: &Workspace,
    templates: &Arc<Vec<Template>>,
    wrk: &Wrk,
    config: &Config,
) -> Served {
    preflight(&server, workspace, templates, Check::Verdict).await;
    let url = server_url(&server);
    let levels = run_levels(label, &config.levels, &mut server, config, |c, pid| {
        std::future::ready(wrk.level(c, pid, &url))
    })
    .await;
    let total: u64 = levels.iter().map(|r| r.sent).sum();
    let rate = levels.last().map_or(0.0, |r| r.rps).max(1_000.0);
    let top_up = (total < config.min_total).then(|| {
        let seconds = ((config.min_total - total) as f64 / rate).ceil() as u64 + 1;
        eprintln!("bench: {seconds} s more of wrk at c=64 so that {label} has served {} requests before its RSS is read", config.min_total);
        wrk.measure(64, server.pid, &url, seconds)
    });
    Served::finish(&mut server, levels, top_up)
}

/// One request with wrk's body through the in-process client, its answer checked: wrk itself
/// only counts status codes.
async fn preflight(
    server: &Server,
    workspace: &Workspace,
    templates: &Arc<Vec<Template>>,
    check: Check,
) {
    let target = target_for(server, workspace, templates, check);
    let result = run_phase(&target, 1, Duration::ZERO, Budget::Requests(1), server.pid).await;
    assert!(
        result.errors == 0 && result.measured == 1,
        "the answer to wrk's request body is wrong: {:?}",
        result.first_errors
    );
}

fn server_url(server: &Server) -> String {
    format!("https://{}/mutate", server.addr)
}

fn whole_seconds(seconds: f64) -> u64 {
    if seconds <= 0.0 {
        0
    } else {
        seconds.ceil() as u64
    }
}

impl Wrk {
    /// One level: a warm-up run, then the measured run with the server's CPU sampled around it.
    fn level(&self, concurrency: usize, server_pid: u32, url: &str) -> LevelResult {
        let warmup = (self.warmup_seconds > 0)
            .then(|| self.measure(concurrency, server_pid, url, self.warmup_seconds));
        let mut result = self.measure(concurrency, server_pid, url, self.seconds);
        if let Some(warmup) = warmup {
            result.sent += warmup.sent;
            result.errors += warmup.errors;
            result.first_errors.extend(warmup.first_errors);
        }
        result
    }

    /// One wrk run of `seconds`, as a level's result. wrk is this process's child: once it has
    /// been waited for, its CPU counts as the load generator's.
    fn measure(&self, concurrency: usize, server_pid: u32, url: &str, seconds: u64) -> LevelResult {
        let from = CpuSample::take(server_pid);
        let outcome = self.invoke(concurrency, url, seconds);
        let cpu = from.usage_until(&CpuSample::take(server_pid));
        match outcome {
            Ok(out) => LevelResult {
                concurrency,
                rps: out.rps,
                p50: out.p50_us,
                p99: out.p99_us,
                p999: out.p999_us,
                max: out.max_us,
                // wrk counts a non-2xx answer as a request; a socket error is not one.
                measured: out.requests.saturating_sub(out.non_2xx),
                sent: out.requests + out.socket_errors.iter().sum::<u64>(),
                errors: out.errors(),
                first_errors: out.error_summary().into_iter().collect(),
                cpu,
                attempts: 1,
            },
            Err(error) => LevelResult {
                concurrency,
                rps: 0.0,
                p50: 0,
                p99: 0,
                p999: 0,
                max: 0,
                measured: 0,
                sent: 0,
                errors: 1,
                first_errors: vec![error],
                cpu: CpuUse::default(),
                attempts: 1,
            },
        }
    }

    fn invoke(&self, concurrency: usize, url: &str, seconds: u64) -> Result<WrkOutput, String> {
        let mut command = if self.pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "1", "wrk"]);
            c
        } else {
            Command::new("wrk")
        };
        command
            .arg("-t1")
            .arg(format!("-c{concurrency}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .arg("-s")
            .arg(&self.script)
            .arg(url);
        let output = command
            .output()
            .map_err(|e| format!("cannot run wrk: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "wrk exited with {}: {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        parse(&stdout)
    }
}

/// wrk's version line; panics, saying how to install it, when wrk is missing.
fn wrk_version() -> String {
    // `wrk --version` prints the version and the usage, and exits 1.
    match Command::new("wrk").arg("--version").output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&output.stderr).lines())
            .find_map(|l| {
                l.strip_prefix("wrk ")
                    .map(|v| v.split(" Copyright").next().unwrap_or(v).trim().to_string())
            })
            .map(|v| format!("wrk {v}"))
            .unwrap_or_else(|| "wrk (version unknown)".into()),
        Err(e) => panic!(
            "BENCH_LOAD_TOOL=wrk needs wrk on the PATH ({e}); `make bench-wrk` installs Debian's \
             (apt-get install wrk)"
        ),
    }
}

/// The script wrk runs: every request a POST of `body`, and at the end the p99.9 wrk's own
/// summary leaves out.
fn lua_script(body: &[u8]) -> String {
    let body = std::str::from_utf8(body).expect("the review is UTF-8 JSON");
    // A Lua long string needs a closing bracket that does not occur in the body.
    let level = (0..)
        .find(|&n| !body.contains(&format!("]{}]", "=".repeat(n))))
        .expect("some bracket level is free");
    let eq = "=".repeat(level);
    format!(
        r#"-- Written by benches/admission/wrk.rs: one managed-mps AdmissionReview per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = [{eq}[{body}]{eq}]

function done(summary, latency, requests)
  io.write(string.format("gpushare-bench p99.9_us %.0f max_us %.0f\n",
    latency:percentile(99.9), latency.max))
end
"#
    )
}

/// A wrk duration as microseconds: `285.12us`, `1.66ms`, `2.00s`, `1.00m`.
fn micros(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number * scale)
}

/// The figures of wrk's `--latency` output (and of the script's `done` line).
fn parse(stdout: &str) -> Result<WrkOutput, String> {
    let mut out = WrkOutput::default();
    let (mut rps, mut p50, mut p99, mut requests) = (None, None, None, None);
    let bad = |line: &str| format!("cannot read wrk's line {line:?}:\n{stdout}");
    for line in stdout.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            rps = Some(rest.trim().parse::<f64>().map_err(|_| bad(line))?);
        } else if let Some(rest) = line.strip_prefix("50%") {
            p50 = Some(micros(rest.trim()).ok_or_else(|| bad(line))?);
        } else if let Some(rest) = line.strip_prefix("99%") {
            p99 = Some(micros(rest.trim()).ok_or_else(|| bad(line))?);
        } else if words.get(1) == Some(&"requests") && words.get(2) == Some(&"in") {
            requests = Some(words[0].parse::<u64>().map_err(|_| bad(line))?);
        } else if words.first() == Some(&"Latency") && words.len() == 5 {
            out.max_us = micros(words[3]).ok_or_else(|| bad(line))?.round() as u64;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for (slot, part) in out.socket_errors.iter_mut().zip(rest.split(',')) {
                *slot = part
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| bad(line))?;
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            out.non_2xx = rest.trim().parse().map_err(|_| bad(line))?;
        } else if let Some(rest) = line.strip_prefix("gpushare-bench ") {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            for pair in fields.chunks(2) {
                if let [key, value] = pair {
                    let value: f64 = value.parse().map_err(|_| bad(line))?;
                    match *key {
                        "p99.9_us" => out.p999_us = value.round() as u64,
                        "max_us" => out.max_us = value.round() as u64,
                        _ => {}
                    }
                }
            }
        }
    }
    let missing = |what: &str| format!("wrk's output has no {what}:\n{stdout}");
    out.rps = rps.ok_or_else(|| missing("Requests/sec"))?;
    out.p50_us = p50.ok_or_else(|| missing("50% latency"))?.round() as u64;
    out.p99_us = p99.ok_or_else(|| missing("99% latency"))?.round() as u64;
    out.requests = requests.ok_or_else(|| missing("request count"))?;
    if out.requests == 0 {
        return Err(format!("wrk completed no requests:\n{stdout}"));
    }
    Ok(out)
}

/// A recorded `wrk --latency` output with errors, read back: the smoke run under `cargo test`
/// checks the parser this way, since wrk itself may be missing there.
pub fn check_parser() {
    const OUTPUT: &str = "Running 10s test @ https://127.0.0.1:40123/mutate
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   285.12us  120.33us   5.12ms   90.12%
    Req/Sec    56.12k     1.23k   58.00k    70.00%
  Latency Distribution
     50%  270.00us
     75%  300.00us
     90%  350.00us
     99%    1.54ms
  561234 requests in 10.00s, 1.23GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  56123.40
Transfer/sec:    123.45MB
gpushare-bench p99.9_us 2210 max_us 5121
";
    let out = parse(OUTPUT).expect("the recorded wrk output parses");
    let want = WrkOutput {
        requests: 561_234,
        rps: 56_123.4,
        p50_us: 270,
        p99_us: 1_540,
        p999_us: 2_210,
        max_us: 5_121,
        non_2xx: 12,
        socket_errors: [0, 2, 0, 1],
    };
    assert_eq!(out, want, "wrk's output read back");
    assert_eq!(out.errors(), 15);
    assert!(parse("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
    let script = lua_script(br#"{"a":[[1]]}"#);
    assert!(
        script.contains("wrk.body = [=[{\"a\":[[1]]}]=]"),
        "{script}"
    );
}
