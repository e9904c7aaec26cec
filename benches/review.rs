//! `make bench`: what one admission costs gpushare itself, without HTTPS. The same bodies as the
//! load benchmark (`benches/admission.rs`) go straight into `AdmissionService::review` on one
//! thread, with the standalone backend, and the figure is the time per review: the part of the
//! server's service time that is gpushare's own, which the load benchmark can only show as the
//! difference to its bare axum + rustls ceiling.
//!
//! Each case runs with logging off and with the `info` log line formatted (into a sink), as
//! `gpushare serve` does by default. Knobs: `REVIEW_BENCH_ITERATIONS` (reviews per batch, default
//! 20000), `REVIEW_BENCH_BATCHES` (7; the median batch is reported).

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt as _;

use gpushare::core::inventory::Inventory;
use gpushare::core::policy::Policy;
use gpushare::webhook::metrics::Metrics;
use gpushare::webhook::service::{AdmissionService, StandaloneBackend};
use serde::Deserialize;

#[path = "shared/requests.rs"]
#[allow(dead_code)]
mod requests;
use requests::{Template, GPUS, POLICY};

/// The standalone backend decides without waiting, so one poll answers.
const READY: &str = "a standalone review completes in one poll";
const UID: &str = "b3c4d5e6-0000-4000-8000-000000000000";

#[derive(Deserialize)]
struct Answer {
    response: AnswerBody,
}

#[derive(Deserialize)]
struct AnswerBody {
    uid: String,
    allowed: bool,
    #[serde(default)]
    patch: Option<String>,
}

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
    let answer: Answer = serde_json::from_slice(&answer).expect("the answer is an AdmissionReview");
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
    let service = service();
    let templates = Template::all();
    let info_log = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let info_log = tracing::Dispatch::new(info_log);

    println!("\ngpushare review benchmark: AdmissionService::review in process, no HTTPS");
    println!("{iterations} reviews per batch, median of {batches} batches, one thread\n");
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
    for template in &templates {
        check(&service, template);
        let off = time(&service, template, iterations, batches);
        let info = tracing::dispatcher::with_default(&info_log, || {
            time(&service, template, iterations, batches)
        });
        sums.0 += off;
        sums.1 += info;
        println!(
            "{:<12}  {:>10}  {:>7.2} us  {:>7.2} us",
            format!("{:?}", template.case),
            template.len(),
            off / 1000.0,
            info / 1000.0
        );
    }
    let n = templates.len() as f64;
    println!(
        "{:<12}  {:>10}  {:>7.2} us  {:>7.2} us",
        "mean",
        "",
        sums.0 / n / 1000.0,
        sums.1 / n / 1000.0
    );
}
