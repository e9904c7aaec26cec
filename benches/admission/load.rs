//! The load generator: workers on keep-alive HTTPS connections sending reviews back to back (or
//! paced, for the soak), each answer checked; one concurrency level at a time, with latency
//! percentiles and CPU use.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;

use crate::cpu::{CpuSample, CpuUse};
use crate::process::{Server, Workspace};
use crate::requests::{Case, ReviewAnswer, Template};
use crate::{Budget, Config};

/// What a response is checked against: gpushare must answer each case correctly; the ceiling
/// only has to answer 200 with an AdmissionReview.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
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

pub struct Target {
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
pub struct Tally {
    pub latencies_us: Vec<u32>,
    /// Requests completed and answered correctly inside the measured window.
    measured: u64,
    /// Every request sent in the phase, warm-up and failures included.
    pub sent: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
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
pub enum Stop {
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
pub struct Pace {
    pub interval: Duration,
    pub offset: Duration,
}

pub async fn worker(
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
pub struct LevelResult {
    pub concurrency: usize,
    pub rps: f64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub measured: u64,
    pub sent: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub cpu: CpuUse,
    /// How many times the level ran (more than once when other processes disturbed it).
    pub attempts: u32,
}

impl LevelResult {
    /// Requests answered per second of the server's own CPU time: unlike req/s, it does not
    /// depend on whether the server or the load generator set the pace.
    pub fn per_server_cpu_second(&self) -> f64 {
        self.measured as f64 / self.cpu.server_seconds.max(f64::MIN_POSITIVE)
    }

    /// The server's CPU time per request, in microseconds.
    pub fn server_cpu_us_per_request(&self) -> f64 {
        self.cpu.server_seconds * 1e6 / self.measured.max(1) as f64
    }
}

pub fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    u64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One concurrency level: `concurrency` connections, each sending back to back (or paced), a
/// warm-up, then the measured budget.
pub async fn run_phase(
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

/// Every level against one server, printing each row as it completes; `phase` runs one level
/// (concurrency, server pid) with whichever load generator the run uses.
pub async fn run_levels<F, Fut>(
    label: &str,
    levels: &[usize],
    server: &mut Server,
    config: &Config,
    mut phase: F,
) -> Vec<LevelResult>
where
    F: FnMut(usize, u32) -> Fut,
    Fut: Future<Output = LevelResult>,
{
    let mut results = Vec::new();
    for &concurrency in levels {
        let mut earlier: Option<LevelResult> = None;
        let result = loop {
            wait_quiet(config.wait_quiet, server.pid).await;
            let mut result = phase(concurrency, server.pid).await;
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

pub fn target_for(
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
