//! `make bench`: a load benchmark of the real release `gpushare serve` over HTTPS keep-alive, next
//! to a ceiling (a bare axum + rustls endpoint in this same binary) measured in the same run, so
//! the figures say how much of this machine's HTTPS budget the webhook itself spends.
//!
//! The server runs on core 0 and this load generator on core 1 (`taskset`). Each server starts cold,
//! from its own copy of its binary dropped from the page cache, so that peak RSS does not depend on
//! how the file came into the cache. Knobs, all optional:
//! `BENCH_SECONDS` (measured seconds per level, default 10), `BENCH_WARMUP_SECONDS` (2),
//! `BENCH_REQUESTS` (a fixed number of measured requests per level instead of a duration),
//! `BENCH_LEVELS` (`1,16,64`), `BENCH_MIN_TOTAL` (100000 requests to gpushare before its RSS is
//! read), `BENCH_INFO_LOG` (`0` skips the extra run with `RUST_LOG=info`), `BENCH_CEILING` (`0`
//! skips the ceiling), `BENCH_WAIT_QUIET` (seconds to wait, before each level, for other
//! processes on a shared machine to go quiet; default 0), `BENCH_BASELINE_BIN` (another gpushare
//! binary, run beside this build for an A/B comparison).
//!
//! `BENCH_LOAD_TOOL=wrk` (`make bench-wrk`) drives the same servers with wrk instead of the
//! in-process load generator (`admission/wrk.rs`; levels `16,64`); results in
//! `target/bench-results-wrk.md`.
//!
//! Soak mode: `BENCH_SOAK_SECONDS=300 BENCH_RATE=<req/s>` paces requests over
//! `BENCH_SOAK_CONCURRENCY` (16) connections for that long and samples RSS every
//! `BENCH_SOAK_SAMPLE_SECONDS` (30); without `BENCH_RATE` it first measures the maximum at
//! concurrency 64 and takes half.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[path = "admission/ceiling.rs"]
mod ceiling;
#[path = "admission/cpu.rs"]
mod cpu;
#[path = "admission/layout.rs"]
mod layout;
#[path = "admission/load.rs"]
mod load;
#[path = "admission/process.rs"]
mod process;
#[path = "admission/report.rs"]
mod report;
#[path = "shared/requests.rs"]
mod requests;
#[path = "admission/soak.rs"]
mod soak;
#[path = "admission/wrk.rs"]
mod wrk;

use load::{run_levels, run_phase, target_for, Check, LevelResult};
use process::{pin_self_to_core_1, Server, Workspace};
use report::render;
use requests::Template;

const CEILING_ENV: &str = "GPUSHARE_BENCH_CEILING";

// Targets from issue 26.
/// gpushare's requests per server CPU-second at concurrency 64, as a share of the ceiling's.
const TARGET_CPU_RATIO_AT_64: f64 = 0.8;
/// p99 at concurrency 16 when the ceiling's own p99 there is at most `FAST_CEILING_P99_US`...
const TARGET_P99_US_AT_16: u64 = 500;
const FAST_CEILING_P99_US: u64 = 300;
/// ...and otherwise at most this many times the ceiling's (a slower core).
const TARGET_P99_CEILING_FACTOR: f64 = 1.5;
/// Peak RSS (VmHWM), read after at least `TARGET_MIN_REQUESTS` requests.
const TARGET_HWM_KB: u64 = 10 * 1024;
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
    if !benchmark {
        wrk::check_parser();
    }
    let pinned = benchmark && pin_self_to_core_1();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let errors = match (config.soak, config.load_tool) {
        (Some(soak), _) => runtime.block_on(soak::run(&config, soak, pinned)),
        (None, LoadTool::InProcess) => runtime.block_on(run(&config, pinned)),
        (None, LoadTool::Wrk) => runtime.block_on(wrk::run(&config, pinned)),
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

/// What drives the load: this process's own hyper client, or wrk (`BENCH_LOAD_TOOL=wrk`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum LoadTool {
    InProcess,
    Wrk,
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
    load_tool: LoadTool,
    /// Another gpushare binary to run beside this build, with the same arguments.
    baseline: Option<PathBuf>,
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
            load_tool: LoadTool::InProcess,
            baseline: None,
        }
    }

    fn from_env() -> Config {
        let budget = match env_parse::<u64>("BENCH_REQUESTS") {
            Some(n) if n > 0 => Budget::Requests(n),
            _ => Budget::Seconds(env_parse("BENCH_SECONDS").unwrap_or(10.0)),
        };
        let load_tool = match std::env::var("BENCH_LOAD_TOOL").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("inprocess") => LoadTool::InProcess,
            Ok("wrk") => LoadTool::Wrk,
            Ok(other) => panic!("BENCH_LOAD_TOOL={other:?}: use `wrk`, or leave it unset"),
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
            Err(_) if load_tool == LoadTool::Wrk => vec![16, 64],
            Err(_) => vec![1, 16, 64],
        };
        let baseline = std::env::var_os("BENCH_BASELINE_BIN")
            .filter(|v| !v.is_empty())
            .map(|bin| {
                std::fs::canonicalize(&bin).unwrap_or_else(|e| {
                    panic!("BENCH_BASELINE_BIN={}: {e}", PathBuf::from(&bin).display())
                })
            });
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
            load_tool,
            baseline,
        }
    }
}

// ---- the main run -------------------------------------------------------------------------------

/// The servers' `RUST_LOG` for the measured runs: the per-admission line off, the `listening on`
/// line (which gives the port) on.
const QUIET_LOG: &str = "warn,gpushare::cli::commands=info";

/// One gpushare build under load: its levels, the requests that topped it up to
/// `min_total`, and its memory and log after all of them.
struct Served {
    levels: Vec<LevelResult>,
    top_up: Option<LevelResult>,
    total: u64,
    hwm_kb: u64,
    rss_kb: u64,
    log_bytes: u64,
}

impl Served {
    /// Reads memory and log once every request has been served.
    fn finish(
        server: &mut Server,
        levels: Vec<LevelResult>,
        top_up: Option<LevelResult>,
    ) -> Served {
        server.assert_running();
        let (hwm_kb, rss_kb) = server.memory_kb();
        let total = levels.iter().chain(&top_up).map(|r| r.sent).sum();
        Served {
            levels,
            top_up,
            total,
            hwm_kb,
            rss_kb,
            log_bytes: server.log_bytes(),
        }
    }
}

struct Run {
    /// How the load was made, for the report's first paragraph.
    method: String,
    gpushare: Served,
    baseline: Option<Served>,
    ceiling: Vec<LevelResult>,
    ceiling_memory: Option<(u64, u64)>,
    info: Vec<LevelResult>,
    info_log_bytes: u64,
    info_total: u64,
    /// How much of the code layout the measured binary matches (`layout::coverage`).
    layout: Option<(usize, usize)>,
}

impl Run {
    fn errors(&self) -> u64 {
        let served =
            |s: &Served| -> u64 { s.levels.iter().chain(&s.top_up).map(|r| r.errors).sum() };
        served(&self.gpushare)
            + self.baseline.as_ref().map_or(0, served)
            + self
                .ceiling
                .iter()
                .chain(&self.info)
                .map(|r| r.errors)
                .sum::<u64>()
    }
}

/// A gpushare build through every level with the in-process load generator, then topped up at
/// concurrency 64 until it has served `min_total` requests.
/// This build, then the baseline build when `BENCH_BASELINE_BIN` names one, each started with the
/// quiet log and served through every level by `serve` (this bench's client, or wrk).
async fn this_build_and_baseline<F, Fut>(
    config: &Config,
    workspace: &Workspace,
    pinned: bool,
    serve: F,
) -> (Served, Option<Served>)
where
    F: Fn(&'static str, Server) -> Fut,
    Fut: std::future::Future<Output = Served>,
{
    let this_build = serve(
        "gpushare RUST_LOG=warn",
        workspace.start_gpushare(QUIET_LOG, pinned),
    )
    .await;
    let baseline = match &config.baseline {
        Some(bin) => Some(
            serve(
                "baseline RUST_LOG=warn",
                workspace.start_baseline(bin, QUIET_LOG, pinned),
            )
            .await,
        ),
        None => None,
    };
    (this_build, baseline)
}

async fn serve_in_process(
    label: &str,
    mut server: Server,
    workspace: &Workspace,
    templates: &Arc<Vec<Template>>,
    config: &Config,
) -> Served {
    let target = target_for(&server, workspace, templates, Check::Verdict);
    let levels = run_levels(label, &config.levels, &mut server, config, |c, pid| {
        run_phase(&target, c, config.warmup, config.budget, pid)
    })
    .await;
    let total: u64 = levels.iter().map(|r| r.sent).sum();
    let top_up = if total < config.min_total {
        let missing = config.min_total - total;
        eprintln!("bench: {missing} more requests at c=64 so that {label} has served {} before its RSS is read", config.min_total);
        Some(
            run_phase(
                &target,
                64,
                Duration::ZERO,
                Budget::Requests(missing),
                server.pid,
            )
            .await,
        )
    } else {
        None
    };
    Served::finish(&mut server, levels, top_up)
}

/// The whole comparison; returns the number of failed requests.
async fn run(config: &Config, pinned: bool) -> u64 {
    let workspace = Workspace::new();
    let templates = Arc::new(Template::all());
    let bodies = templates
        .iter()
        .map(|t| t.len().to_string())
        .collect::<Vec<_>>()
        .join("/");
    eprintln!(
        "bench: bodies {bodies} bytes; levels {:?}; warm-up {:?}; measured {:?} per level",
        config.levels, config.warmup, config.budget
    );

    let (gpushare, baseline) =
        this_build_and_baseline(config, &workspace, pinned, |label, server| {
            serve_in_process(label, server, &workspace, &templates, config)
        })
        .await;

    let (ceiling, ceiling_memory) = if config.ceiling {
        let mut server = workspace.start_ceiling(pinned);
        let target = target_for(&server, &workspace, &templates, Check::Envelope);
        let results = run_levels(
            "ceiling (axum+rustls)",
            &config.levels,
            &mut server,
            config,
            |c, pid| run_phase(&target, c, config.warmup, config.budget, pid),
        )
        .await;
        (results, Some(server.memory_kb()))
    } else {
        (Vec::new(), None)
    };

    let (info, info_log_bytes, info_total) = if config.info_log {
        let mut server = workspace.start_gpushare("info", pinned);
        let target = target_for(&server, &workspace, &templates, Check::Verdict);
        let results = run_levels(
            "gpushare RUST_LOG=info",
            &config.levels,
            &mut server,
            config,
            |c, pid| run_phase(&target, c, config.warmup, config.budget, pid),
        )
        .await;
        let total = results.iter().map(|r| r.sent).sum();
        (results, server.log_bytes(), total)
    } else {
        (Vec::new(), 0, 0)
    };

    let budget = match config.budget {
        Budget::Seconds(s) => format!("{s} s measured"),
        Budget::Requests(n) => format!("{n} requests measured"),
    };
    let method = format!(
        "Load from this bench's own client (hyper 1 over tokio-rustls): {:?} warm-up + {budget} per \
         level; one HTTPS keep-alive connection per concurrent worker; requests rotate managed mps / \
         managed time-slicing / unmanaged / denied (bodies {bodies} bytes); server {}, load \
         generator {}.",
        config.warmup,
        if pinned { "on core 0" } else { "UNPINNED" },
        if pinned { "on core 1" } else { "UNPINNED (no taskset)" },
    );
    let run = Run {
        method,
        gpushare,
        baseline,
        ceiling,
        ceiling_memory,
        info,
        info_log_bytes,
        info_total,
        layout: layout::coverage(&process::measured_binary()),
    };
    finish(&run, config, "bench-results.md")
}

/// Prints the report, writes it as markdown to `target/<file>` (not under `cargo test`), and
/// returns the number of failed requests.
fn finish(run: &Run, config: &Config, file: &str) -> u64 {
    let report = render(run, config);
    println!("{}", report.text);
    if !config.smoke {
        let path = results_path(file);
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
