//! Cluster-scale benchmark (issue 10): the release `gpushare serve` in cluster mode (pinned to core
//! 0 with `taskset` when available) against the in-process fake API server (core 1) holding N nodes
//! with 2 GPUs each and M Deployments, half of them managed and pinned to one node each. For each
//! size it reports, side by side: server CPU per Deployment watch event (status churn), admission
//! req/s at concurrency 1 and 16 (dry-run managed request over HTTPS), p50 and p99 at 16, server
//! CPU per admission, RSS after sync and the time from the last list page to /readyz 200. Every
//! size's cluster stays up until the end: the admission rounds visit the sizes in turn.
//!
//! Knobs: CLUSTER_BENCH_SIZES (default `10x100,100x1000,1000x10000,5000x50000`), CLUSTER_BENCH_SECONDS (per
//! load level, default 3), CLUSTER_BENCH_ROUNDS (admission rounds, default 3; medians are shown),
//! CLUSTER_BENCH_CPU_SECONDS (server CPU the churn aims to spend, default 2), CLUSTER_BENCH_BIN
//! (another `gpushare` binary, e.g. an older build, instead of this release build).

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "cluster_scale/load.rs"]
mod load;
#[path = "cluster_scale/objects.rs"]
mod objects;
#[path = "cluster_scale/process.rs"]
mod process;
#[path = "cluster_scale/targets.rs"]
mod targets;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fake_apiserver::FakeApiServer;
use process::Server;

struct Figures {
    size: String,
    cpu_per_event: Duration,
    events: usize,
    rss_kb: u64,
    ready_after_lists: Duration,
    /// The median of the admission rounds.
    admissions: Admissions,
}

/// One round of admission load on one size.
#[derive(Clone, Copy, Default)]
struct Admissions {
    c1: f64,
    c16: f64,
    p50: Duration,
    p99: Duration,
    /// Server CPU per admission at concurrency 16, the share of its core it kept busy, and the
    /// share of the other core this process (load generator and fake API server) used.
    cpu_per_admission: Duration,
    busy_at_c16: f64,
    load_busy_at_c16: f64,
}

impl Admissions {
    /// Each figure's median over the rounds.
    fn median(rounds: &[Admissions]) -> Admissions {
        fn mid<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
            values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
            values[values.len() / 2]
        }
        let of = |f: fn(&Admissions) -> f64| mid(rounds.iter().map(f).collect());
        let of_time = |f: fn(&Admissions) -> Duration| mid(rounds.iter().map(f).collect());
        Admissions {
            c1: of(|a| a.c1),
            c16: of(|a| a.c16),
            p50: of_time(|a| a.p50),
            p99: of_time(|a| a.p99),
            cpu_per_admission: of_time(|a| a.cpu_per_admission),
            busy_at_c16: of(|a| a.busy_at_c16),
            load_busy_at_c16: of(|a| a.load_busy_at_c16),
        }
    }
}

/// A size's cluster, kept running between admission rounds.
struct Running {
    _api: FakeApiServer,
    server: Server,
    ca: Vec<u8>,
    figures: Figures,
    rounds: Vec<Admissions>,
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let sizes = std::env::var("CLUSTER_BENCH_SIZES")
        .unwrap_or_else(|_| "10x100,100x1000,1000x10000,5000x50000".into());
    let seconds = Duration::from_secs_f64(env_parse("CLUSTER_BENCH_SECONDS").unwrap_or(3.0));
    let cpu_budget = Duration::from_secs_f64(env_parse("CLUSTER_BENCH_CPU_SECONDS").unwrap_or(2.0));
    let rounds: usize = env_parse("CLUSTER_BENCH_ROUNDS").unwrap_or(3).max(1);
    let pin = process::have_taskset();
    if pin {
        process::pin_self_to_core_1();
    } else {
        eprintln!("cluster_scale: no taskset; the server runs unpinned");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // One thread on the load's one core: two would preempt each other mid-request.
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let built = std::path::PathBuf::from(env!("CARGO_BIN_EXE_gpushare"));
    let program = std::env::var_os("CLUSTER_BENCH_BIN").map_or(built, Into::into);
    let program = program.as_path();
    let certs = std::process::Command::new(program)
        .arg("certs")
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("gpushare certs runs");
    assert!(certs.status.success(), "gpushare certs failed");
    let mut running = Vec::new();
    for size in sizes.split(',') {
        let (nodes, deployments) = size
            .split_once('x')
            .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)))
            .unwrap_or_else(|| panic!("CLUSTER_BENCH_SIZES: {size:?} is not NODESxDEPLOYMENTS"));
        running.push(runtime.block_on(prepare(
            program,
            dir.path(),
            nodes,
            deployments,
            cpu_budget,
            pin,
        )));
    }
    // Admission rounds go size by size in turn, so a shared machine's drift (it runs at
    // different speeds from minute to minute) falls on every size alike; medians are shown.
    for round in 1..=rounds {
        for size in &mut running {
            let admissions = runtime.block_on(admissions(size, seconds));
            size.rounds.push(admissions);
        }
        eprintln!("cluster_scale: admission round {round} of {rounds} done");
    }
    let rows: Vec<Figures> = running
        .into_iter()
        .map(|size| Figures {
            admissions: Admissions::median(&size.rounds),
            ..size.figures
        })
        .collect();
    let table = render(&rows, pin, rounds);
    println!("{table}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-cluster-scale.md");
    let _ = std::fs::write(&out, &table);
    println!("(written to {})", out.display());
}

/// Starts a size's cluster and server, and measures what needs no admission load.
async fn prepare(
    program: &Path,
    dir: &Path,
    nodes: usize,
    deployments: usize,
    cpu_budget: Duration,
    pin: bool,
) -> Running {
    // Each size has its own kubeconfig (its own fake API server); the certificates are shared.
    let dir_for_size = dir.join(format!("{nodes}x{deployments}"));
    std::fs::create_dir_all(&dir_for_size).expect("a directory per size");
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::copy(dir.join(file), dir_for_size.join(file)).expect("the certificates copy");
    }
    let dir = dir_for_size.as_path();
    let api = FakeApiServer::start().await;
    for i in 0..nodes {
        api.apply(objects::node(i));
    }
    for i in 0..deployments {
        api.apply(objects::deployment(i, nodes, 1));
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    api.apply(objects::ledger(deployments, nodes, now_ms));
    let kubeconfig = api.kubeconfig(dir);
    let server = Server::start(program, &kubeconfig, dir, pin);
    let ca = std::fs::read(dir.join("ca.crt")).expect("ca.crt");
    let client = load::client(&ca, server.addr);
    let readyz = format!("https://localhost:{}/readyz", server.addr.port());

    // Ready after the lists: from the last Deployment list page the server asked for to /readyz 200.
    let list_path = "/apis/apps/v1/deployments";
    let (mut pages, mut last_page) = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = api.list_request_count(list_path);
        if now != pages {
            pages = now;
            last_page = Instant::now();
        }
        let ready = client
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if ready && pages > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready within 120 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready_after_lists = last_page.elapsed();
    // Let the first reconcile pass run, then read memory.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rss_kb = server.rss_kb();

    // CPU per watch event: status churn of every Deployment in turn, less the idle rate.
    let idle = {
        let (c0, t0) = (server.cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        (server.cpu() - c0).as_secs_f64() / t0.elapsed().as_secs_f64()
    };
    let mut generation = 1;
    let mut next = 0;
    let mut churn = |api: &FakeApiServer, count: usize| {
        generation += 1;
        for _ in 0..count {
            api.apply(objects::deployment(next % deployments, nodes, generation));
            next += 1;
            if next.is_multiple_of(deployments) {
                generation += 1;
            }
        }
    };
    let mut spend = |count: usize| {
        let (c0, t0) = (server.cpu(), Instant::now());
        churn(&api, count);
        let server = &server;
        async move {
            // Done when the server's CPU time stops growing faster than idle.
            let mut last = server.cpu();
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let now = server.cpu();
                if (now - last).as_secs_f64() <= idle * 0.3 + 0.011 {
                    break;
                }
                last = now;
            }
            let busy = (server.cpu() - c0).as_secs_f64() - idle * t0.elapsed().as_secs_f64();
            busy.max(0.0)
        }
    };
    let probe = 50.min(deployments);
    let probe_cpu = spend(probe).await;
    let per_event = (probe_cpu / probe as f64).max(1e-6);
    let events = ((cpu_budget.as_secs_f64() / per_event) as usize).clamp(50, 20_000);
    let cpu = spend(events).await;
    let cpu_per_event = Duration::from_secs_f64(cpu / events as f64);

    let figures = Figures {
        size: format!("{nodes} x {deployments}"),
        cpu_per_event,
        events,
        rss_kb,
        ready_after_lists,
        admissions: Admissions::default(),
    };
    eprintln!("cluster_scale: {} ready", figures.size);
    Running {
        _api: api,
        server,
        ca,
        figures,
        rounds: Vec::new(),
    }
}

/// One round of admission load: concurrency 1, then 16.
async fn admissions(size: &Running, seconds: Duration) -> Admissions {
    let (server, ca) = (&size.server, &size.ca);
    let c1 = load::run(ca, server.addr, 1, seconds).await;
    let own_pid = std::process::id();
    let (cpu_before, load_cpu_before) = (server.cpu(), process::cpu_of(own_pid));
    let started = Instant::now();
    let c16 = load::run(ca, server.addr, 16, seconds).await;
    let c16_cpu = (server.cpu() - cpu_before).as_secs_f64();
    let elapsed = started.elapsed().as_secs_f64();
    Admissions {
        c1: c1.per_second,
        c16: c16.per_second,
        p50: c16.p50,
        p99: c16.p99,
        cpu_per_admission: Duration::from_secs_f64(c16_cpu / c16.requests.max(1) as f64),
        busy_at_c16: c16_cpu / elapsed,
        load_busy_at_c16: (process::cpu_of(own_pid) - load_cpu_before).as_secs_f64() / elapsed,
    }
}

fn render(rows: &[Figures], pin: bool, rounds: usize) -> String {
    let mut out = String::new();
    let header: Vec<String> = rows.iter().map(|r| r.size.clone()).collect();
    out.push_str(&format!(
        "| nodes x Deployments | {} |\n",
        header.join(" | ")
    ));
    out.push_str(&format!("|---|{}\n", "---|".repeat(rows.len())));
    let line = |name: &str, cell: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = rows.iter().map(cell).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    out.push_str(&line("server CPU per Deployment watch event", &|r| {
        format!(
            "{:.3} ms ({} events)",
            r.cpu_per_event.as_secs_f64() * 1e3,
            r.events
        )
    }));
    out.push_str(&line("admission req/s, concurrency 1 / 16", &|r| {
        format!("{:.0} / {:.0}", r.admissions.c1, r.admissions.c16)
    }));
    out.push_str(&line("p99 at concurrency 16 (p50)", &|r| {
        format!(
            "{:.2} ms ({:.2} ms)",
            r.admissions.p99.as_secs_f64() * 1e3,
            r.admissions.p50.as_secs_f64() * 1e3
        )
    }));
    out.push_str(&line(
        "server CPU per admission at 16 (server / load core busy)",
        &|r| {
            format!(
                "{:.1} us ({:.0}% / {:.0}%)",
                r.admissions.cpu_per_admission.as_secs_f64() * 1e6,
                r.admissions.busy_at_c16 * 100.0,
                r.admissions.load_busy_at_c16 * 100.0
            )
        },
    ));
    out.push_str(&line("RSS after sync", &|r| {
        format!("{:.1} MiB", r.rss_kb as f64 / 1024.0)
    }));
    out.push_str(&line("ready after the last list page", &|r| {
        format!("{:.2} s", r.ready_after_lists.as_secs_f64())
    }));
    out.push_str(if pin {
        "\nservers pinned to core 0, fake API servers and load on core 1 (taskset)"
    } else {
        "\nUNPINNED (no taskset): figures are not comparable"
    });
    out.push_str(&format!(
        "; admission rows: median of {rounds} rounds, the sizes taking turns\n"
    ));
    out.push_str(&targets::render(rows));
    out
}
