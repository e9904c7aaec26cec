//! Soak mode (`BENCH_SOAK_SECONDS`): paced load on the same connections for a long time, the
//! server's RSS sampled every window, to show memory stays flat.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cpu::{CpuSample, CpuUse};
use crate::load::{percentile, run_phase, target_for, worker, Check, Pace, Stop, Tally};
use crate::process::Workspace;
use crate::report::{mib, Table};
use crate::requests::Template;
use crate::{results_path, Budget, Config, SoakConfig};

/// Paced load for a long time, sampling the server's RSS, to show memory stays flat.
pub async fn run(config: &Config, soak: SoakConfig, pinned: bool) -> u64 {
    let workspace = Workspace::new();
    let templates = Arc::new(Template::all());
    let mut server = workspace.start_gpushare("warn,gpushare::cli::commands=info", pinned);
    let target = target_for(&server, &workspace, &templates, Check::Verdict);
    let rate = match soak.rate {
        Some(rate) => rate,
        None => {
            let max = run_phase(&target, 64, config.warmup, Budget::Seconds(5.0), server.pid).await;
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
