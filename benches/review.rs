//! `make bench`: what one admission costs gpushare itself, without HTTPS. The same bodies as the
//! load benchmark (`benches/admission.rs`) go straight into `AdmissionService::review` on one
//! thread, with the standalone backend, and the figure is the time per review: the part of the
//! server's service time that is gpushare's own, which the load benchmark can only show as the
//! difference to its bare axum + rustls ceiling.
//!
//! Each case runs twice, each time in a child process set up as `serve` logs: `RUST_LOG=warn`
//! (no line per admission) and `RUST_LOG=info` (the default: one text line per admission).
//!
//! Knobs: `REVIEW_BENCH_ITERATIONS` (reviews per batch, default 20000), `REVIEW_BENCH_BATCHES`
//! (7; the median batch is reported), `REVIEW_BENCH_CASE` (time only this case, e.g. `Denied`,
//! for a profile of one path).

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt as _;

use gpushare::core::inventory::Inventory;
use gpushare::core::policy::Policy;
use gpushare::webhook::metrics::Metrics;
use gpushare::webhook::service::{AdmissionService, StandaloneBackend};

#[path = "shared/requests.rs"]
#[allow(dead_code)]
mod requests;
use requests::{ReviewAnswer, Template, GPUS, POLICY};

/// The standalone backend decides without waiting, so one poll answers.
const READY: &str = "a standalone review completes in one poll";
const UID: &str = "b3c4d5e6-0000-4000-8000-000000000000";

fn env_or(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn service() -> AdmissionService {
    let policy = Policy::from_yaml(POLICY).expect("the bench policy is valid");
    AdmissionService {
        backend: Arc::new(StandaloneBackend::new(
            policy,
            Inventory::standalone(Some(GPUS)),
        )),
        metrics: Arc::new(Metrics::new()),
    }
}

/// Fails loudly if the service answers a case wrongly: a fast wrong answer is no figure.
fn check(service: &AdmissionService, template: &Template) {
    let body = template.body(UID);
    let answer = service
        .review(&body)
        .now_or_never()
        .expect(READY)
        .expect("the body is valid");
    let answer: ReviewAnswer =
        serde_json::from_slice(&answer).expect("the answer is an AdmissionReview");
    let case = template.case;
    assert_eq!(answer.response.uid, UID);
    assert_eq!(answer.response.allowed, case.allowed(), "{case:?}: allowed");
    assert_eq!(
        answer.response.patch.is_some(),
        case.patched(),
        "{case:?}: patched"
    );
}

/// Nanoseconds per review: the median of `batches` batches of `iterations` reviews.
fn time(service: &AdmissionService, template: &Template, iterations: usize, batches: usize) -> f64 {
    let body = template.body(UID);
    let mut per_review: Vec<f64> = (0..batches)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                let answer = service
                    .review(std::hint::black_box(&body))
                    .now_or_never()
                    .expect(READY);
                std::hint::black_box(answer.expect("the body is valid"));
            }
            started.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    per_review.sort_by(f64::total_cmp);
    per_review[per_review.len() / 2]
}

/// The env var that makes this binary a child timing one log level: its value is `RUST_LOG`.
const CHILD_ENV: &str = "REVIEW_BENCH_CHILD";

/// Times every case with `serve`'s own logging (`RUST_LOG` as given, text to stderr through the
/// log buffer) and prints one `case nanoseconds` line per case.
fn child(iterations: usize, batches: usize) {
    let _logs = gpushare::cli::commands::init_logging(gpushare::cli::args::LogFormat::Text);
    let service = service();
    let only = std::env::var("REVIEW_BENCH_CASE").ok();
    for template in &Template::all() {
        if only
            .as_ref()
            .is_some_and(|c| *c != format!("{:?}", template.case))
        {
            continue;
        }
        check(&service, template);
        let ns = time(&service, template, iterations, batches);
        println!("{:?} {ns}", template.case);
    }
}

/// Runs a child at `rust_log`: nanoseconds per review by case, and the bytes it logged.
fn run_child(rust_log: &str, benchmark: bool) -> (Vec<(String, f64)>, usize) {
    let exe = std::env::current_exe().expect("the bench knows its own path");
    let mut command = std::process::Command::new(exe);
    if benchmark {
        command.arg("--bench");
    }
    let output = command
        .env(CHILD_ENV, rust_log)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .output()
        .expect("the bench runs itself");
    assert!(
        output.status.success(),
        "the RUST_LOG={rust_log} run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let times = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (case, ns) = line.split_once(' ')?;
            Some((case.to_string(), ns.parse().ok()?))
        })
        .collect();
    (times, output.stderr.len())
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: check the answers, time nothing much.
    let benchmark = std::env::args().any(|a| a == "--bench");
    let (iterations, batches) = if benchmark {
        (
            env_or("REVIEW_BENCH_ITERATIONS", 20_000),
            env_or("REVIEW_BENCH_BATCHES", 7).max(1),
        )
    } else {
        (10, 1)
    };
    if std::env::var_os(CHILD_ENV).is_some() {
        child(iterations, batches);
        return;
    }
    let (off, _) = run_child("warn", benchmark);
    let (info, logged) = run_child("info", benchmark);
    let cases = match std::env::var("REVIEW_BENCH_CASE") {
        Ok(_) => 1,
        Err(_) => Template::all().len(),
    };
    let reviews = cases * (iterations * batches + 1);
    // One line per admission: a run that logged less did not measure the log line.
    assert!(
        logged >= reviews * 100,
        "the info run logged {logged} bytes for {reviews} reviews"
    );
    let bodies: Vec<(String, usize)> = Template::all()
        .iter()
        .map(|t| (format!("{:?}", t.case), t.len()))
        .collect();

    println!("\ngpushare review benchmark: AdmissionService::review in process, no HTTPS");
    println!(
        "{iterations} reviews per batch, median of {batches} batches, one thread; log info: \
         RUST_LOG=info, text, as `serve` writes it ({} bytes a review)\n",
        logged / reviews
    );
    println!(
        "{:<12}  {:>10}  {:>10}  {:>10}",
        "case", "body bytes", "log off", "log info"
    );
    println!(
        "{:<12}  {:>10}  {:>10}  {:>10}",
        "-".repeat(12),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(10)
    );
    let mut sums = (0.0, 0.0);
    for ((case, off), (_, info)) in off.iter().zip(&info) {
        let body = bodies
            .iter()
            .find(|(c, _)| c == case)
            .map_or(0, |(_, len)| *len);
        sums.0 += off;
        sums.1 += info;
        println!(
            "{case:<12}  {body:>10}  {:>7.2} us  {:>7.2} us",
            off / 1000.0,
            info / 1000.0
        );
    }
    let n = off.len() as f64;
    println!(
        "{:<12}  {:>10}  {:>7.2} us  {:>7.2} us",
        "mean",
        "",
        sums.0 / n / 1000.0,
        sums.1 / n / 1000.0
    );
}
