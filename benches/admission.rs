//! `make bench`: a load benchmark of the real release `gpushare serve` over HTTPS keep-alive, next
//! to a ceiling (a bare axum + rustls endpoint in this same binary) measured in the same run, so
//! the figures say how much of this machine's HTTPS budget the webhook itself spends.
//!
//! The server runs on core 0 and this load generator on core 1 (`taskset`). Knobs, all optional:
//! `BENCH_SECONDS` (measured seconds per level, default 10), `BENCH_WARMUP_SECONDS` (2),
//! `BENCH_REQUESTS` (a fixed number of measured requests per level instead of a duration),
//! `BENCH_LEVELS` (`1,16,64`), `BENCH_MIN_TOTAL` (100000 requests to gpushare before its RSS is
//! read), `BENCH_INFO_LOG` (`0` skips the extra run with `RUST_LOG=info`), `BENCH_CEILING` (`0`
//! skips the ceiling), `BENCH_WAIT_QUIET` (seconds to wait, before each level, for other
//! processes on a shared machine to go quiet; default 0).
//!
//! Soak mode: `BENCH_SOAK_SECONDS=300 BENCH_RATE=<req/s>` paces requests over
//! `BENCH_SOAK_CONCURRENCY` (16) connections for that long and samples RSS every
//! `BENCH_SOAK_SAMPLE_SECONDS` (30); without `BENCH_RATE` it first measures the maximum at
//! concurrency 64 and takes half.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_rustls::TlsConnector;

#[path = "shared/requests.rs"]
mod requests;
use requests::{Case, ReviewAnswer, Template, POLICY};

const CEILING_ENV: &str = "GPUSHARE_BENCH_CEILING";

// Targets from the issue.
const TARGET_P99_US_AT_16: u64 = 1_000;
const TARGET_RATIO_AT_64: f64 = 0.5;
const TARGET_RSS_KB: u64 = 30 * 1024;
const TARGET_MIN_REQUESTS: u64 = 100_000;

fn main() {
    if std::env::var_os(CEILING_ENV).is_some_and(|v| v == "1") {
        ceiling::run();
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and
    // then a short smoke run checks that every answer is still right, without pinning.
    let benchmark = std::env::args().any(|a| a == "--bench");
    let config = if benchmark {
        Config::from_env()
    } else {
        Config::smoke()
    };
    let pinned = benchmark && pin_self_to_core_1();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let errors = if let Some(soak) = config.soak {
        runtime.block_on(soak::run(&config, soak, pinned))
    } else {
        runtime.block_on(run(&config, pinned))
    };
    if errors > 0 {
        eprintln!("bench: {errors} requests failed");
        std::process::exit(1);
    }
}

// ---- configuration ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Budget {
    Seconds(f64),
    Requests(u64),
}

#[derive(Debug, Clone, Copy)]
struct SoakConfig {
    seconds: f64,
    rate: Option<f64>,
    concurrency: usize,
    sample_seconds: f64,
}

#[derive(Debug, Clone)]
struct Config {
    warmup: Duration,
    budget: Budget,
    levels: Vec<usize>,
    min_total: u64,
    info_log: bool,
    ceiling: bool,
    soak: Option<SoakConfig>,
    /// Up to this long before each level, wait for the rest of the machine to go quiet.
    wait_quiet: Duration,
    /// Under `cargo test`: report, but leave `target/bench-results.md` alone.
    smoke: bool,
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => panic!("{name}={value:?} is not a valid value"),
    }
}

fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name) {
        Ok(value) => !matches!(value.trim(), "0" | "false" | "no" | "off" | ""),
        Err(_) => default,
    }
}

impl Config {
    /// A few seconds in all, for `cargo test`.
    fn smoke() -> Config {
        Config {
            warmup: Duration::from_millis(200),
            budget: Budget::Seconds(0.5),
            levels: vec![1, 4],
            min_total: 0,
            info_log: false,
            ceiling: true,
            soak: None,
            wait_quiet: Duration::ZERO,
            smoke: true,
        }
    }

    fn from_env() -> Config {
        let budget = match env_parse::<u64>("BENCH_REQUESTS") {
            Some(n) if n > 0 => Budget::Requests(n),
            _ => Budget::Seconds(env_parse("BENCH_SECONDS").unwrap_or(10.0)),
        };
        let levels = match std::env::var("BENCH_LEVELS") {
            Ok(text) => text
                .split(',')
                .map(|l| {
                    l.trim()
                        .parse()
                        .expect("BENCH_LEVELS is a comma-separated list")
                })
                .collect(),
            Err(_) => vec![1, 16, 64],
        };
        let soak = env_parse::<f64>("BENCH_SOAK_SECONDS")
            .filter(|s| *s > 0.0)
            .map(|seconds| SoakConfig {
                seconds,
                rate: env_parse("BENCH_RATE"),
                concurrency: env_parse("BENCH_SOAK_CONCURRENCY").unwrap_or(16),
                sample_seconds: env_parse("BENCH_SOAK_SAMPLE_SECONDS").unwrap_or(30.0),
            });
        Config {
            warmup: Duration::from_secs_f64(env_parse("BENCH_WARMUP_SECONDS").unwrap_or(2.0)),
            budget,
            levels,
            min_total: env_parse("BENCH_MIN_TOTAL").unwrap_or(TARGET_MIN_REQUESTS),
            info_log: env_flag("BENCH_INFO_LOG", true),
            ceiling: env_flag("BENCH_CEILING", true),
            soak,
            wait_quiet: Duration::from_secs_f64(env_parse("BENCH_WAIT_QUIET").unwrap_or(0.0)),
            smoke: false,
        }
    }
}

// ---- processes ----------------------------------------------------------------------------------

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
fn pin_self_to_core_1() -> bool {
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
struct Server {
    name: String,
    child: Child,
    pid: u32,
    addr: SocketAddr,
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
    fn memory_kb(&self) -> (u64, u64) {
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

    fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    fn assert_running(&mut self) {
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

struct Workspace {
    dir: tempfile::TempDir,
    gpushare: PathBuf,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let gpushare = PathBuf::from(env!("CARGO_BIN_EXE_gpushare"));
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cert(&self) -> PathBuf {
        self.path("certs/tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.path("certs/tls.key")
    }

    fn start_gpushare(&self, rust_log: &str, pin: bool) -> Server {
        let cert = self.cert();
        let key = self.key();
        let policy = self.path("policy.yaml");
        let log = self.path(&format!(
            "gpushare-{}.log",
            rust_log.replace([',', ':', '='], "_")
        ));
        Server::start(
            "gpushare",
            &self.gpushare,
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

    fn start_ceiling(&self, pin: bool) -> Server {
        let exe = std::env::current_exe().expect("the bench knows its own path");
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

    fn tls_connector(&self) -> TlsConnector {
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

/// What a response is checked against: gpushare must answer each case correctly; the ceiling
/// only has to answer 200 with an AdmissionReview.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    Verdict,
    Envelope,
}

fn check_answer(
    check: Check,
    case: Case,
    uid: &str,
    status: u16,
    body: &[u8],
) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    }
    let answer: ReviewAnswer =
        serde_json::from_slice(body).map_err(|e| format!("body is not an AdmissionReview: {e}"))?;
    if answer.api_version != "admission.k8s.io/v1" {
        return Err(format!("apiVersion {}", answer.api_version));
    }
    if check == Check::Envelope {
        return Ok(());
    }
    let response = answer.response;
    if response.uid != uid {
        return Err(format!("uid {} answered for {uid}", response.uid));
    }
    if response.allowed != case.allowed() {
        return Err(format!("{case:?}: allowed={}", response.allowed));
    }
    if response.patch.is_some() != case.patched() {
        return Err(format!(
            "{case:?}: patch present={}",
            response.patch.is_some()
        ));
    }
    Ok(())
}

// ---- the load generator -------------------------------------------------------------------------

struct Target {
    addr: SocketAddr,
    connector: TlsConnector,
    templates: Arc<Vec<Template>>,
    check: Check,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a valid DNS name");
    let tls = target
        .connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

fn new_uid() -> String {
    let n = NEXT_UID.fetch_add(1, Ordering::Relaxed);
    format!("b3c4d5e6-0000-4000-8000-{n:012x}")
}

/// Sends one review on `sender` and checks the answer; `Err(message, connection_broken)`.
async fn exchange(
    target: &Target,
    sender: &mut Sender,
    template: &Template,
) -> Result<(), (String, bool)> {
    let uid = new_uid();
    let request = hyper::Request::post("/mutate")
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(template.body(&uid)))
        .expect("a valid request");
    sender
        .ready()
        .await
        .map_err(|e| (format!("connection not ready: {e}"), true))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| (format!("send: {e}"), true))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| (format!("response body: {e}"), true))?
        .to_bytes();
    check_answer(target.check, template.case, &uid, status, &body).map_err(|e| (e, false))
}

/// What the workers of one phase record together (the bench is single-threaded, so the lock is
/// never contended).
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// Requests completed and answered correctly inside the measured window.
    measured: u64,
    /// Every request sent in the phase, warm-up and failures included.
    sent: u64,
    errors: u64,
    first_errors: Vec<String>,
    last_completion: Option<Instant>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(message);
        }
    }
}

/// When a worker stops: at a deadline, or when a shared budget of measured requests runs out.
/// Before `measure_from` (the warm-up) every worker keeps sending either way.
#[derive(Clone)]
enum Stop {
    At(Instant),
    Budget(Arc<AtomicI64>),
}

impl Stop {
    fn take(&self, measure_from: Instant) -> bool {
        let now = Instant::now();
        if now < measure_from {
            return true;
        }
        match self {
            Stop::At(deadline) => now < *deadline,
            Stop::Budget(left) => left.fetch_sub(1, Ordering::Relaxed) > 0,
        }
    }
}

/// How far behind its schedule a paced worker may fall and still catch up.
const MAX_PACE_DEBT: Duration = Duration::from_millis(20);

/// Paces a worker to one request per `interval` (soak); `None` sends back to back.
#[derive(Clone, Copy)]
struct Pace {
    interval: Duration,
    offset: Duration,
}

async fn worker(
    id: usize,
    target: Arc<Target>,
    measure_from: Instant,
    stop: Stop,
    pace: Option<Pace>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut sender: Option<Sender> = None;
    let mut next_send = pace.map(|p| Instant::now() + p.offset);
    let mut turn = id;
    loop {
        if let (Some(at), Some(p)) = (next_send, pace) {
            // The timer has millisecond resolution, so a worker paced faster than that wakes
            // late and catches up by sending back to back; after a longer stall it resumes the
            // pace instead of bursting.
            if at > Instant::now() {
                tokio::time::sleep_until(at.into()).await;
            }
            next_send = Some((at + p.interval).max(Instant::now() - MAX_PACE_DEBT));
        }
        if !stop.take(measure_from) {
            break;
        }
        let template = &target.templates[turn % target.templates.len()];
        turn += 1;
        let live = match sender.as_mut() {
            Some(live) => live,
            None => match connect(&target).await {
                Ok(fresh) => sender.insert(fresh),
                Err(error) => {
                    tally.lock().expect("tally").error(error);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let outcome = exchange(&target, live, template).await;
        let done = Instant::now();
        let mut tally = tally.lock().expect("tally");
        tally.sent += 1;
        match outcome {
            Ok(()) => {
                if started >= measure_from {
                    let us = (done - started).as_micros().min(u128::from(u32::MAX)) as u32;
                    tally.latencies_us.push(us);
                    tally.measured += 1;
                    tally.last_completion = Some(done);
                }
            }
            Err((error, broken)) => {
                tally.error(error);
                if broken {
                    sender = None;
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct LevelResult {
    concurrency: usize,
    rps: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    measured: u64,
    sent: u64,
    errors: u64,
    first_errors: Vec<String>,
    cpu: CpuUse,
    /// How many times the level ran (more than once when other processes disturbed it).
    attempts: u32,
}

/// CPU time over the measured window, in percent of one core: the server's, this load
/// generator's, and everything else on the machine (other processes disturb the figures).
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    server: f64,
    loadgen: f64,
    other: f64,
}

struct CpuSample {
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

/// utime + stime of a process (all its threads), in clock ticks.
fn process_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 3, utime 14 and stime 15.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

impl CpuSample {
    fn take(server_pid: u32) -> CpuSample {
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
            server_ticks: process_ticks(&server_pid.to_string()),
            self_ticks: process_ticks("self"),
        }
    }

    fn usage_until(&self, later: &CpuSample) -> CpuUse {
        let seconds = (later.at - self.at).as_secs_f64() * clock_ticks_per_second() / 100.0;
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
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    u64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One concurrency level: `concurrency` connections, each sending back to back (or paced), a
/// warm-up, then the measured budget.
async fn run_phase(
    target: &Arc<Target>,
    concurrency: usize,
    warmup: Duration,
    budget: Budget,
    server_pid: u32,
) -> LevelResult {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop = match budget {
        Budget::Seconds(s) => Stop::At(measure_from + Duration::from_secs_f64(s)),
        Budget::Requests(n) => Stop::Budget(Arc::new(AtomicI64::new(
            i64::try_from(n).unwrap_or(i64::MAX),
        ))),
    };
    let handles: Vec<_> = (0..concurrency)
        .map(|id| {
            tokio::spawn(worker(
                id,
                target.clone(),
                measure_from,
                stop.clone(),
                None,
                tally.clone(),
            ))
        })
        .collect();
    let cpu_from = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        CpuSample::take(server_pid)
    });
    for handle in handles {
        handle.await.expect("worker");
    }
    let cpu = cpu_from
        .await
        .expect("sampler")
        .usage_until(&CpuSample::take(server_pid));
    let mut tally = std::mem::take(&mut *tally.lock().expect("tally"));
    tally.latencies_us.sort_unstable();
    let elapsed = tally
        .last_completion
        .map(|t| t.saturating_duration_since(measure_from))
        .unwrap_or_default()
        .as_secs_f64();
    LevelResult {
        concurrency,
        rps: if elapsed > 0.0 {
            tally.measured as f64 / elapsed
        } else {
            0.0
        },
        p50: percentile(&tally.latencies_us, 50.0),
        p99: percentile(&tally.latencies_us, 99.0),
        p999: percentile(&tally.latencies_us, 99.9),
        max: tally
            .latencies_us
            .last()
            .copied()
            .map(u64::from)
            .unwrap_or(0),
        measured: tally.measured,
        sent: tally.sent,
        errors: tally.errors,
        first_errors: tally.first_errors,
        cpu,
        attempts: 1,
    }
}

/// Percent of a core that other processes may use during a level before, with
/// `BENCH_WAIT_QUIET`, the level is repeated (at most `MAX_ATTEMPTS` times in all).
const QUIET_OTHER_CPU: f64 = 10.0;
const MAX_ATTEMPTS: u32 = 4;

/// On a shared machine, waits (at most `limit`) for one second in which other processes use
/// under 10% of a core, so a level does not start in the middle of someone's build.
async fn wait_quiet(limit: Duration, server_pid: u32) {
    if limit.is_zero() {
        return;
    }
    // A level just run leaves connections closing; let them settle before judging the machine.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deadline = Instant::now() + limit;
    loop {
        let from = CpuSample::take(server_pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let other = from.usage_until(&CpuSample::take(server_pid)).other;
        if other < QUIET_OTHER_CPU {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("bench: the machine is still busy ({other:.0}% of a core used by other processes); going ahead");
            return;
        }
    }
}

/// Every level against one server, printing each row as it completes.
async fn run_levels(
    label: &str,
    target: &Arc<Target>,
    server: &mut Server,
    config: &Config,
) -> Vec<LevelResult> {
    let mut results = Vec::new();
    for &concurrency in &config.levels {
        let mut earlier: Option<LevelResult> = None;
        let result = loop {
            wait_quiet(config.wait_quiet, server.pid).await;
            let mut result = run_phase(
                target,
                concurrency,
                config.warmup,
                config.budget,
                server.pid,
            )
            .await;
            server.assert_running();
            eprintln!(
                "bench: {label:<24} c={concurrency:<3} {:>6.0} req/s  p50 {:>5} us  p99 {:>5} us  p99.9 {:>5} us  errors {}  cpu% server {:.0} loadgen {:.0} other {:.0}",
                result.rps, result.p50, result.p99, result.p999, result.errors,
                result.cpu.server, result.cpu.loadgen, result.cpu.other
            );
            for error in &result.first_errors {
                eprintln!("bench:   error: {error}");
            }
            // Requests and errors of a repeated attempt still count.
            if let Some(before) = earlier.take() {
                result.sent += before.sent;
                result.errors += before.errors;
                result.first_errors.extend(before.first_errors);
                result.attempts += before.attempts;
            }
            let disturbed = result.cpu.other > QUIET_OTHER_CPU;
            if disturbed && !config.wait_quiet.is_zero() && result.attempts < MAX_ATTEMPTS {
                eprintln!(
                    "bench: other processes used {:.0}% of a core during that level; repeating it",
                    result.cpu.other
                );
                earlier = Some(result);
                continue;
            }
            break result;
        };
        results.push(result);
    }
    results
}

fn target_for(
    server: &Server,
    workspace: &Workspace,
    templates: &Arc<Vec<Template>>,
    check: Check,
) -> Arc<Target> {
    Arc::new(Target {
        addr: server.addr,
        connector: workspace.tls_connector(),
        templates: templates.clone(),
        check,
    })
}

// ---- the main run -------------------------------------------------------------------------------

impl Run {
    fn errors(&self) -> u64 {
        self.gpushare
            .iter()
            .chain(&self.top_up)
            .chain(&self.ceiling)
            .chain(&self.info)
            .map(|r| r.errors)
            .sum()
    }
}

struct Run {
    gpushare: Vec<LevelResult>,
    top_up: Option<LevelResult>,
    gpushare_total: u64,
    hwm_kb: u64,
    rss_kb: u64,
    gpushare_log_bytes: u64,
    ceiling: Vec<LevelResult>,
    ceiling_memory: Option<(u64, u64)>,
    info: Vec<LevelResult>,
    info_log_bytes: u64,
    info_total: u64,
}

/// The whole comparison; returns the number of failed requests.
async fn run(config: &Config, pinned: bool) -> u64 {
    let workspace = Workspace::new();
    let templates = Arc::new(Template::all());
    eprintln!(
        "bench: bodies {} bytes; levels {:?}; warm-up {:?}; measured {:?} per level",
        templates
            .iter()
            .map(|t| t.len().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        config.levels,
        config.warmup,
        config.budget
    );

    let mut server = workspace.start_gpushare("warn,gpushare::cli::commands=info", pinned);
    let target = target_for(&server, &workspace, &templates, Check::Verdict);
    let gpushare = run_levels("gpushare RUST_LOG=warn", &target, &mut server, config).await;
    let mut total: u64 = gpushare.iter().map(|r| r.sent).sum();
    let top_up = if total < config.min_total {
        let missing = config.min_total - total;
        eprintln!("bench: {missing} more requests at c=64 so that gpushare has served {} before its RSS is read", config.min_total);
        let result = run_phase(
            &target,
            64,
            Duration::ZERO,
            Budget::Requests(missing),
            server.pid,
        )
        .await;
        total += result.sent;
        Some(result)
    } else {
        None
    };
    server.assert_running();
    let (hwm_kb, rss_kb) = server.memory_kb();
    let gpushare_log_bytes = server.log_bytes();
    drop(server);

    let (ceiling, ceiling_memory) = if config.ceiling {
        let mut server = workspace.start_ceiling(pinned);
        let target = target_for(&server, &workspace, &templates, Check::Envelope);
        let results = run_levels("ceiling (axum+rustls)", &target, &mut server, config).await;
        (results, Some(server.memory_kb()))
    } else {
        (Vec::new(), None)
    };

    let (info, info_log_bytes, info_total) = if config.info_log {
        let mut server = workspace.start_gpushare("info", pinned);
        let target = target_for(&server, &workspace, &templates, Check::Verdict);
        let results = run_levels("gpushare RUST_LOG=info", &target, &mut server, config).await;
        let total = results.iter().map(|r| r.sent).sum();
        (results, server.log_bytes(), total)
    } else {
        (Vec::new(), 0, 0)
    };

    let run = Run {
        gpushare,
        top_up,
        gpushare_total: total,
        hwm_kb,
        rss_kb,
        gpushare_log_bytes,
        ceiling,
        ceiling_memory,
        info,
        info_log_bytes,
        info_total,
    };
    let report = render(&run, config, pinned, &templates);
    println!("{}", report.text);
    if !config.smoke {
        let path = results_path("bench-results.md");
        match std::fs::write(&path, &report.markdown) {
            Ok(()) => println!("(also written as markdown to {})", path.display()),
            Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
        }
    }
    run.errors()
}

fn results_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let _ = std::fs::create_dir_all(&target);
    target.join(name)
}

// ---- the report ---------------------------------------------------------------------------------

struct Report {
    text: String,
    markdown: String,
}

/// A table kept as rows of cells, rendered both aligned for the terminal and as markdown.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i == 0 {
                    let _ = write!(out, "{cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(out, "  {}{cell}", " ".repeat(pad));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(&self.header);
        out += &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
        for row in &self.rows {
            out += &line(row);
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.header.join(" | "));
        out += &format!(
            "|{}\n",
            self.header
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                .collect::<String>()
        );
        for row in &self.rows {
            out += &format!("| {} |\n", row.join(" | "));
        }
        out
    }
}

fn level_row(server: &str, r: &LevelResult) -> Vec<String> {
    vec![
        server.to_string(),
        r.concurrency.to_string(),
        format!("{:.0}", r.rps),
        r.p50.to_string(),
        r.p99.to_string(),
        r.p999.to_string(),
        r.max.to_string(),
        r.measured.to_string(),
        r.errors.to_string(),
        format!("{:.0}", r.cpu.server),
        format!("{:.0}", r.cpu.loadgen),
        format!("{:.0}", r.cpu.other),
    ]
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

fn render(run: &Run, config: &Config, pinned: bool, templates: &[Template]) -> Report {
    let mut sections: Vec<(String, Table, String)> = Vec::new();
    let header = [
        "server",
        "concurrency",
        "req/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "measured",
        "errors",
        "server cpu %",
        "loadgen cpu %",
        "other cpu %",
    ];

    let mut levels = Table::new(&header);
    for r in &run.gpushare {
        levels.row(level_row("gpushare", r));
    }
    for r in &run.ceiling {
        levels.row(level_row("ceiling", r));
    }
    let repeated: Vec<String> = run
        .gpushare
        .iter()
        .map(|r| ("gpushare", r))
        .chain(run.ceiling.iter().map(|r| ("ceiling", r)))
        .chain(run.info.iter().map(|r| ("gpushare with info logs", r)))
        .filter(|(_, r)| r.attempts > 1)
        .map(|(name, r)| format!("{name} at {} ({} attempts)", r.concurrency, r.attempts))
        .collect();
    let note = if repeated.is_empty() {
        String::new()
    } else {
        format!(
            "Repeated because other processes were busy during the level (the last attempt \
             is shown; requests and errors of every attempt are counted): {}.",
            repeated.join(", ")
        )
    };
    sections.push(("Throughput and latency".into(), levels, note));

    if !run.ceiling.is_empty() {
        let mut ratio = Table::new(&[
            "concurrency",
            "gpushare req/s",
            "ceiling req/s",
            "gpushare / ceiling",
            "gpushare req per server CPU-s",
            "ceiling req per server CPU-s",
            "ratio per server CPU-s",
        ]);
        let per_cpu = |r: &LevelResult| r.rps / (r.cpu.server / 100.0).max(f64::MIN_POSITIVE);
        for (g, c) in run.gpushare.iter().zip(&run.ceiling) {
            ratio.row(vec![
                g.concurrency.to_string(),
                format!("{:.0}", g.rps),
                format!("{:.0}", c.rps),
                format!("{:.2}", g.rps / c.rps.max(f64::MIN_POSITIVE)),
                format!("{:.0}", per_cpu(g)),
                format!("{:.0}", per_cpu(c)),
                format!("{:.2}", per_cpu(g) / per_cpu(c).max(f64::MIN_POSITIVE)),
            ]);
        }
        let saturated: Vec<String> = run
            .gpushare
            .iter()
            .map(|r| ("gpushare", r))
            .chain(run.ceiling.iter().map(|r| ("ceiling", r)))
            .filter(|(_, r)| r.cpu.loadgen >= 95.0)
            .map(|(name, r)| format!("{name} at {}", r.concurrency))
            .collect();
        let note = if saturated.is_empty() {
            String::new()
        } else {
            format!(
                "The load generator used its whole core for {}: there the client, not the server, \
                 set the pace, so that throughput is a lower bound for the server, and a ratio \
                 against it overstates gpushare's share; the per-CPU-second ratio does not depend \
                 on which side was the bottleneck.",
                saturated.join(", ")
            )
        };
        sections.push(("Ratio to the ceiling".into(), ratio, note));
    }

    if !run.info.is_empty() {
        let mut info = Table::new(&[
            "concurrency",
            "req/s warn",
            "req/s info",
            "info / warn",
            "p99 us warn",
            "p99 us info",
        ]);
        for (w, i) in run.gpushare.iter().zip(&run.info) {
            info.row(vec![
                w.concurrency.to_string(),
                format!("{:.0}", w.rps),
                format!("{:.0}", i.rps),
                format!("{:.2}", i.rps / w.rps.max(f64::MIN_POSITIVE)),
                w.p99.to_string(),
                i.p99.to_string(),
            ]);
        }
        sections.push((
            format!(
                "Cost of the per-admission info log (RUST_LOG=info; {:.0} bytes of log per request, written to a file)",
                run.info_log_bytes as f64 / run.info_total.max(1) as f64
            ),
            info,
            "Here the log goes to a file; in a cluster it goes through a pipe to the container \
             runtime, which can cost more."
                .to_string(),
        ));
    }

    let mut memory = Table::new(&[
        "server",
        "requests served",
        "peak RSS (VmHWM)",
        "RSS now (VmRSS)",
    ]);
    memory.row(vec![
        "gpushare".into(),
        run.gpushare_total.to_string(),
        mib(run.hwm_kb),
        mib(run.rss_kb),
    ]);
    if let Some((hwm, rss)) = run.ceiling_memory {
        memory.row(vec![
            "ceiling".into(),
            run.ceiling.iter().map(|r| r.sent).sum::<u64>().to_string(),
            mib(hwm),
            mib(rss),
        ]);
    }
    sections.push(("Memory".into(), memory, String::new()));

    let at =
        |results: &[LevelResult], c: usize| results.iter().find(|r| r.concurrency == c).cloned();
    let mut targets = Table::new(&["target", "measured", "result"]);
    match at(&run.gpushare, 16) {
        Some(r) => targets.row(vec![
            format!("p99 <= {TARGET_P99_US_AT_16} us at concurrency 16"),
            format!("{} us", r.p99),
            verdict(r.p99 <= TARGET_P99_US_AT_16).into(),
        ]),
        None => targets.row(vec![
            "p99 <= 1 ms at concurrency 16".into(),
            "level not run".into(),
            "n/a".into(),
        ]),
    }
    match (at(&run.gpushare, 64), at(&run.ceiling, 64)) {
        (Some(g), Some(c)) => {
            let ratio = g.rps / c.rps.max(f64::MIN_POSITIVE);
            targets.row(vec![
                format!("throughput >= {TARGET_RATIO_AT_64} x ceiling at concurrency 64"),
                format!("{ratio:.2} x ({:.0} / {:.0} req/s)", g.rps, c.rps),
                verdict(ratio >= TARGET_RATIO_AT_64).into(),
            ]);
        }
        _ => targets.row(vec![
            "throughput >= 0.5 x ceiling at concurrency 64".into(),
            "level or ceiling not run".into(),
            "n/a".into(),
        ]),
    }
    targets.row(vec![
        format!("RSS <= 30 MiB after >= {TARGET_MIN_REQUESTS} requests"),
        format!(
            "peak {} / now {} after {} requests",
            mib(run.hwm_kb),
            mib(run.rss_kb),
            run.gpushare_total
        ),
        if run.gpushare_total < TARGET_MIN_REQUESTS {
            "n/a (too few requests)".into()
        } else {
            verdict(run.hwm_kb <= TARGET_RSS_KB).into()
        },
    ]);
    let errors = run.errors();
    targets.row(vec![
        "zero errors".into(),
        errors.to_string(),
        verdict(errors == 0).into(),
    ]);
    sections.push(("Targets".into(), targets, String::new()));

    let budget = match config.budget {
        Budget::Seconds(s) => format!("{s} s measured"),
        Budget::Requests(n) => format!("{n} requests measured"),
    };
    let preamble = format!(
        "{} warm-up + {budget} per level; one HTTPS keep-alive connection per concurrent worker; \
         requests rotate managed mps / managed time-slicing / unmanaged / denied \
         (bodies {} bytes); server {}, load generator {}.{}",
        format_args!("{:?}", config.warmup),
        templates
            .iter()
            .map(|t| t.len().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        if pinned { "on core 0" } else { "UNPINNED" },
        if pinned {
            "on core 1"
        } else {
            "UNPINNED (no taskset)"
        },
        match &run.top_up {
            Some(t) => format!(
                " Then {} more requests at concurrency 64 so RSS is read after >= {}.",
                t.sent, config.min_total
            ),
            None => String::new(),
        }
    );
    let log_note = format!(
        "gpushare ran with RUST_LOG=warn,gpushare::cli::commands=info ({} bytes of log in total). \
         Latencies are per request as the load generator sees them (send to complete answer). \
         CPU columns are percent of one core over the measured window: the server, the load \
         generator, and every other process on the machine (above a few percent, other \
         processes disturbed that row). Load average at the end: {}.",
        run.gpushare_log_bytes,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let title = if config.smoke {
        "gpushare admission benchmark: smoke run under `cargo test` (debug build, unpinned; run `make bench` for figures)"
    } else {
        "gpushare admission benchmark"
    };
    let mut text = format!("\n{title}\n{preamble}\n{log_note}\n");
    let mut markdown = format!("# gpushare admission benchmark\n\n{preamble}\n\n{log_note}\n");
    for (title, table, note) in &sections {
        text += &format!("\n{title}\n{}", table.text());
        markdown += &format!("\n## {title}\n\n{}", table.markdown());
        if !note.is_empty() {
            text += &format!("{note}\n");
            markdown += &format!("\n{note}\n");
        }
    }
    Report { text, markdown }
}

// ---- soak ---------------------------------------------------------------------------------------

mod soak {
    use super::*;

    /// Paced load for a long time, sampling the server's RSS, to show memory stays flat.
    pub async fn run(config: &Config, soak: SoakConfig, pinned: bool) -> u64 {
        let workspace = Workspace::new();
        let templates = Arc::new(Template::all());
        let mut server = workspace.start_gpushare("warn,gpushare::cli::commands=info", pinned);
        let target = target_for(&server, &workspace, &templates, Check::Verdict);
        let rate = match soak.rate {
            Some(rate) => rate,
            None => {
                let max =
                    run_phase(&target, 64, config.warmup, Budget::Seconds(5.0), server.pid).await;
                eprintln!(
                    "bench: maximum at c=64 is {:.0} req/s; soaking at half",
                    max.rps
                );
                max.rps / 2.0
            }
        };
        let interval = Duration::from_secs_f64(soak.concurrency as f64 / rate);
        eprintln!(
            "bench: soak at {rate:.0} req/s over {} connections for {} s, RSS every {} s",
            soak.concurrency, soak.seconds, soak.sample_seconds
        );
        let (hwm0, rss0) = server.memory_kb();
        let mut samples = vec![(0.0, hwm0, rss0, 0u64, 0u64, 0u64, CpuUse::default())];
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(soak.seconds);
        let tally = Arc::new(Mutex::new(Tally::default()));
        // The same connections for the whole soak; the sampler empties the tally every window.
        let workers: Vec<_> = (0..soak.concurrency)
            .map(|id| {
                let pace = Pace {
                    interval,
                    offset: interval.mul_f64(id as f64 / soak.concurrency as f64),
                };
                tokio::spawn(worker(
                    id,
                    target.clone(),
                    started,
                    Stop::At(end),
                    Some(pace),
                    tally.clone(),
                ))
            })
            .collect();
        let mut total = 0u64;
        let mut errors = 0u64;
        let mut first_errors = Vec::new();
        let mut next_sample = started;
        let mut cpu_from = CpuSample::take(server.pid);
        while next_sample < end {
            next_sample = (next_sample + Duration::from_secs_f64(soak.sample_seconds)).min(end);
            tokio::time::sleep_until(next_sample.into()).await;
            let mut window = std::mem::take(&mut *tally.lock().expect("tally"));
            server.assert_running();
            window.latencies_us.sort_unstable();
            total += window.sent;
            errors += window.errors;
            first_errors.extend(window.first_errors);
            let (hwm, rss) = server.memory_kb();
            let t = started.elapsed().as_secs_f64();
            let p99 = percentile(&window.latencies_us, 99.0);
            let cpu_to = CpuSample::take(server.pid);
            let cpu = cpu_from.usage_until(&cpu_to);
            cpu_from = cpu_to;
            eprintln!(
                "bench: t={t:>5.0} s  {:>6} requests  p99 {p99:>6} us  errors {}  VmRSS {}  VmHWM {}  cpu% server {:.0} other {:.0}",
                window.sent, window.errors, mib(rss), mib(hwm), cpu.server, cpu.other
            );
            samples.push((t, hwm, rss, total, p99, window.errors, cpu));
        }
        for handle in workers {
            handle.await.expect("worker");
        }
        // Requests that finished after the last sample.
        let rest = std::mem::take(&mut *tally.lock().expect("tally"));
        total += rest.sent;
        errors += rest.errors;
        let mut table = Table::new(&[
            "t (s)",
            "requests so far",
            "p99 us (window)",
            "errors (window)",
            "VmRSS kB",
            "VmHWM kB",
            "server cpu %",
            "other cpu %",
        ]);
        for (t, hwm, rss, sent, p99, errs, cpu) in &samples {
            table.row(vec![
                format!("{t:.0}"),
                sent.to_string(),
                p99.to_string(),
                errs.to_string(),
                rss.to_string(),
                hwm.to_string(),
                format!("{:.0}", cpu.server),
                format!("{:.0}", cpu.other),
            ]);
        }
        // From the first sample under load: the step before it is the server warming up.
        let loaded = samples.get(1).map(|s| s.2).unwrap_or(0);
        let last = samples.last().map(|s| s.2).unwrap_or(0);
        let summary = format!(
            "Soak: {:.0} s at {rate:.0} req/s (paced) over {} connections: {total} requests, {errors} errors; \
             RSS {} idle at start, {loaded} kB after the first window, {last} kB at the end \
             ({:+} kB), peak {}.",
            started.elapsed().as_secs_f64(),
            soak.concurrency,
            mib(samples.first().map(|s| s.2).unwrap_or(0)),
            last as i64 - loaded as i64,
            mib(samples.last().map(|s| s.1).unwrap_or(0)),
        );
        for error in first_errors.iter().take(5) {
            eprintln!("bench:   error: {error}");
        }
        println!("\n{summary}\n{}", table.text());
        let path = results_path("bench-soak.md");
        let markdown = format!("# gpushare soak\n\n{summary}\n\n{}", table.markdown());
        match std::fs::write(&path, markdown) {
            Ok(()) => println!("(also written as markdown to {})", path.display()),
            Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
        }
        errors
    }
}

// ---- the ceiling ----------------------------------------------------------------------------------

mod ceiling {
    use super::*;
    use axum::routing::post;

    /// A fixed, realistic answer: an allowed AdmissionReview with a JSON Patch of the size
    /// gpushare writes for an mps module.
    fn fixed_answer() -> Bytes {
        use base64::Engine as _;
        let patch = json!([
            { "op": "add", "path": "/metadata/annotations/gpushare.io~1assigned-gpu", "value": "1" },
            { "op": "add", "path": "/metadata/annotations/gpushare.io~1assigned-mode", "value": "mps" },
            { "op": "add", "path": "/metadata/annotations/gpushare.io~1assigned-mps-percentage", "value": "20" },
            { "op": "add", "path": "/spec/template/metadata/annotations", "value": {
                "gpushare.io/assigned-gpu": "1", "gpushare.io/assigned-mode": "mps", "gpushare.io/assigned-mps-percentage": "20" } },
            { "op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": { "name": "NVIDIA_VISIBLE_DEVICES", "value": "1" } },
            { "op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": { "name": "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "value": "20" } }
        ]);
        let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": "b3c4d5e6-0000-4000-8000-000000000000",
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": patch
            }
        });
        Bytes::from(review.to_string())
    }

    /// Serves only the ceiling, on the same accept loop, TLS configuration and runtime shape as
    /// `gpushare serve`, until killed.
    pub fn run() {
        let cert =
            PathBuf::from(std::env::var_os("GPUSHARE_BENCH_CERT").expect("GPUSHARE_BENCH_CERT"));
        let key =
            PathBuf::from(std::env::var_os("GPUSHARE_BENCH_KEY").expect("GPUSHARE_BENCH_KEY"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the tokio runtime starts");
        runtime.block_on(async move {
            gpushare::webhook::tls::install_default_provider();
            let cert = gpushare::webhook::tls::ReloadingCert::load(&cert, &key)
                .expect("the certificate loads");
            let tls = gpushare::webhook::tls::server_config(Arc::new(cert), None)
                .expect("TLS configuration");
            let answer = fixed_answer();
            let app = axum::Router::new().route(
                "/mutate",
                post(move |body: axum::body::Bytes| {
                    let answer = answer.clone();
                    async move {
                        std::hint::black_box(body.len());
                        ([(hyper::header::CONTENT_TYPE, "application/json")], answer)
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("a local address");
            eprintln!("listening on https://{addr}");
            gpushare::webhook::server::serve_app(
                listener,
                tls,
                app,
                Arc::new(gpushare::webhook::metrics::Metrics::new()),
                gpushare::webhook::server::Limits::default(),
                std::future::pending::<()>(),
            )
            .await;
        });
    }
}
