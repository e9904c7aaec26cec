//! `make bench-cluster` (issue 21): the ledger and the commits through the real kube-apiserver and
//! etcd of `make cluster IN_CLUSTER=1` (gpushare's release image, 2 replicas behind its Service).
//! Managed workloads (half Deployments, half suspended Jobs, spread over 100 simulated nodes) are
//! created in steps up to each size; for each size it reports gpushare's commit latency (its own
//! `commit` log lines), conflicts retried per commit, the largest ledger ConfigMap seen, the
//! client-side create latency with gpushare against the same create in a namespace no webhook is
//! called for, gpushare's RSS and its CPU per created workload (every watch event it causes
//! included). Nothing here runs in `make test` or CI.
//!
//! Beside them, what any webhook that records a commitment in the API server before it answers
//! pays on this machine: the latency of a bare write of a small ConfigMap by this
//! bench, under the creators' load and between the serial creates, and what the webhook call alone
//! adds (the same create as a dry run, which gpushare reviews but records nothing for).
//!
//! Knobs: CLUSTER_API_SIZES (default `100,2000,20000`), CLUSTER_API_CONCURRENCY (default 8),
//! CLUSTER_API_OVERHEAD (creates per overhead sample, default 300).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

const NODES: usize = 100;
const NAMESPACE: &str = "bench-cluster";
const OVERHEAD: &str = "bench-overhead";
const BASELINE: &str = "bench-baseline";
/// The bench's own ConfigMap for bare writes, in the baseline namespace.
const PROBE: &str = "bench-write-probe";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cluster_env() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("target/cluster/env"))
        .expect("no cluster: run `make bench-cluster` (it starts `make cluster IN_CLUSTER=1`)");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn kubectl(env: &BTreeMap<String, String>, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new(&env["KUBECTL"])
        .env("KUBECONFIG", &env["KUBECONFIG"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl finishes");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

/// gpushare's serve processes on this machine (in-cluster: in containerd's pods).
fn serve_pids() -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-f", "gpushare serve"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// (RSS in KiB, CPU seconds) summed over gpushare's processes.
fn usage() -> (u64, f64) {
    let ticks = 100.0; // USER_HZ on Linux
    serve_pids().into_iter().fold((0, 0.0), |(rss, cpu), pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let time = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (rss.max(kb), cpu + (time(11) + time(12)) / ticks)
    })
}

fn deployment(i: usize, namespace: &str) -> Deployment {
    let name = format!("d{i:05}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace,
            "annotations": {"gpushare.io/gpu": "auto"}},
        "spec": {"replicas": 0, "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": format!("bench-node-{:03}", i % NODES)},
                    "containers": [{"name": "c", "image": "localhost/gpushare-test:latest"}]}}}
    }))
    .expect("a Deployment")
}

fn job(i: usize) -> Job {
    let name = format!("j{i:05}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE,
            "annotations": {"gpushare.io/gpu": "auto"}},
        "spec": {"suspend": true,
            "template": {"spec": {"restartPolicy": "Never",
                "nodeSelector": {"kubernetes.io/hostname": format!("bench-node-{:03}", i % NODES)},
                "containers": [{"name": "c", "image": "localhost/gpushare-test:latest"}]}}}
    }))
    .expect("a Job")
}

/// One `commit` line: its latency, conflicts retried, and whether a serial create made it.
struct Commit {
    latency: Duration,
    conflicts: u64,
    serial: bool,
}

/// The commit lines gpushare logged since `since` (RFC 3339), from both replicas.
fn commits(env: &BTreeMap<String, String>, since: &str) -> Vec<Commit> {
    let logs = kubectl(
        env,
        &[
            "-n",
            "gpushare-system",
            "logs",
            "-l",
            "app.kubernetes.io/component=webhook",
            "--tail=-1",
            "--max-log-requests=4",
            &format!("--since-time={since}"),
        ],
        None,
    );
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "commit")
        .map(|v| Commit {
            latency: Duration::from_micros(v["commit_us"].as_u64().unwrap_or(0)),
            conflicts: v["conflicts"].as_u64().unwrap_or(0),
            serial: v["object"]
                .as_str()
                .is_some_and(|o| o.starts_with(&format!("{OVERHEAD}/"))),
        })
        .collect()
}

fn now_rfc3339(env: &BTreeMap<String, String>) -> String {
    let _ = env;
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the serial creates measured, each list in the order of the creates.
struct Serial {
    /// Client-side create latency with gpushare, and the same create where no webhook is called.
    managed: Vec<Duration>,
    baseline: Vec<Duration>,
    /// The same pair as dry runs: gpushare reviews them but records nothing.
    managed_dry_run: Vec<Duration>,
    baseline_dry_run: Vec<Duration>,
    /// A bare write of a small ConfigMap between the creates.
    bare_write: Vec<Duration>,
}

/// Creates `count` managed Deployments one at a time, each followed by the same create where no
/// webhook is called, so both see the same background (the controllers working on the last
/// ones). Before each pair, the same pair as dry runs; after it, one bare write.
async fn serial_creates(
    client: &Client,
    probe: &Api<ConfigMap>,
    base: usize,
    count: usize,
) -> Serial {
    let with: Api<Deployment> = Api::namespaced(client.clone(), OVERHEAD);
    let without: Api<Deployment> = Api::namespaced(client.clone(), BASELINE);
    let mut serial = Serial {
        managed: Vec::with_capacity(count),
        baseline: Vec::with_capacity(count),
        managed_dry_run: Vec::with_capacity(count),
        baseline_dry_run: Vec::with_capacity(count),
        bare_write: Vec::with_capacity(count),
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for i in base..base + count {
        for (params, managed, baseline) in [
            (
                &dry_run,
                &mut serial.managed_dry_run,
                &mut serial.baseline_dry_run,
            ),
            (
                &PostParams::default(),
                &mut serial.managed,
                &mut serial.baseline,
            ),
        ] {
            for (api, namespace, latencies) in
                [(&with, OVERHEAD, managed), (&without, BASELINE, baseline)]
            {
                let started = Instant::now();
                api.create(params, &deployment(i, namespace))
                    .await
                    .expect("create");
                latencies.push(started.elapsed());
            }
        }
        serial.bare_write.push(bare_write(probe, i).await);
    }
    serial
}

/// One merge patch of the bench's own small ConfigMap, with no precondition: the least a
/// synchronous record in the API server costs.
async fn bare_write(probe: &Api<ConfigMap>, n: usize) -> Duration {
    let patch = Patch::Merge(json!({"data": {"n": n.to_string()}}));
    let started = Instant::now();
    probe
        .patch(PROBE, &PatchParams::default(), &patch)
        .await
        .expect("a bare write");
    started.elapsed()
}

/// `with` minus `without` at percentile `p`.
fn added(with: &mut [Duration], without: &mut [Duration], p: f64) -> Duration {
    percentile(with, p).saturating_sub(percentile(without, p))
}

struct Row {
    size: usize,
    commit_p50: Duration,
    commit_p99: Duration,
    /// Of the serial creates' commits only: what one write costs with nothing to batch.
    serial_commit_p50: Duration,
    conflicts_per_commit: f64,
    ledger_max_bytes: u64,
    create_p50: Duration,
    create_p99: Duration,
    overhead_p50: Duration,
    overhead_p99: Duration,
    rss_kb: u64,
    cpu_per_workload: Duration,
    /// Bare writes every 10 ms beside the concurrent creators.
    loaded_write_p50: Duration,
    loaded_write_p99: Duration,
    /// The dry-run pair: the webhook call without a commit.
    call_p50: Duration,
    call_p99: Duration,
    serial_write_p50: Duration,
    serial_write_p99: Duration,
}

#[tokio::main]
async fn main() {
    let env = cluster_env();
    if env.get("GPUSHARE").map(String::as_str) != Some("in-cluster") {
        eprintln!("note: not an IN_CLUSTER cluster: one local gpushare serve answers (make bench-cluster starts IN_CLUSTER=1)");
    }
    let sizes: Vec<usize> = std::env::var("CLUSTER_API_SIZES")
        .unwrap_or_else(|_| "100,2000,20000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let concurrency: usize = std::env::var("CLUSTER_API_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let overhead: usize = std::env::var("CLUSTER_API_OVERHEAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    std::env::set_var("KUBECONFIG", &env["KUBECONFIG"]);
    let client = Client::try_default().await.expect("a client");

    // Commit lines at debug, and a namespace no webhook is called for (the baseline). 20,000
    // modules on 200 GPUs are 100 a GPU: time-slicing (the default mode) with room for them.
    let policy = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: gpushare-policy, namespace: gpushare-system}}\n\
         data:\n  policy.yaml: |\n    maxClientsPerGpu: 1000\n    namespaces: {{exclude: [kube-system, gpushare-system, {BASELINE}]}}\n"
    );
    kubectl(&env, &["apply", "-f", "-"], Some(&policy));
    if env.get("GPUSHARE").map(String::as_str) == Some("in-cluster") {
        kubectl(
            &env,
            &[
                "-n",
                "gpushare-system",
                "set",
                "env",
                "deployment/gpushare",
                "RUST_LOG=info,gpushare::webhook::commit=debug",
            ],
            None,
        );
        kubectl(
            &env,
            &[
                "-n",
                "gpushare-system",
                "rollout",
                "status",
                "deployment/gpushare",
                "--timeout=300s",
            ],
            None,
        );
    }
    let nodes: String = (0..NODES)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: bench-node-{i:03}, labels: \
                 {{kubernetes.io/hostname: bench-node-{i:03}, nvidia.com/gpu.count: \"2\"}}}}\n---\n"
            )
        })
        .collect();
    kubectl(&env, &["apply", "-f", "-"], Some(&nodes));
    for namespace in [NAMESPACE, OVERHEAD, BASELINE] {
        let _ = Command::new(&env["KUBECTL"])
            .env("KUBECONFIG", &env["KUBECONFIG"])
            .args(["create", "namespace", namespace])
            .output();
    }
    // Wait for the baseline namespace to leave the webhooks.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubectl(
        &env,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "gpushare",
            "-o",
            "json",
        ],
        None,
    )
    .contains(BASELINE)
    {
        assert!(
            Instant::now() < deadline,
            "the webhooks never left out {BASELINE}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let probe: Api<ConfigMap> = Api::namespaced(client.clone(), BASELINE);
    let _ = probe
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": PROBE}})).expect("a ConfigMap"),
        )
        .await;

    let ledger_api: Api<ConfigMap> = Api::namespaced(client.clone(), "gpushare-system");
    let ledger_max = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (api, max) = (ledger_api.clone(), ledger_max.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(Some(cm)) = api.get_opt("gpushare-ledger").await {
                    let bytes = serde_json::to_vec(&cm).map_or(0, |v| v.len());
                    max.fetch_max(bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let mut rows = Vec::new();
    let mut created = 0;
    let mut overhead_base = 100_000;
    for size in sizes {
        let since = now_rfc3339(&env);
        ledger_max.store(0, Ordering::Relaxed);
        let (_, cpu_before) = usage();
        let step = size.saturating_sub(created);
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(step)));
        let next = Arc::new(AtomicUsize::new(created));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, latencies, next) = (client.clone(), latencies.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
                let jobs: Api<Job> = Api::namespaced(client, NAMESPACE);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= size {
                        return;
                    }
                    let started = Instant::now();
                    let result = if i % 2 == 0 {
                        deployments
                            .create(&PostParams::default(), &deployment(i, NAMESPACE))
                            .await
                            .map(|_| ())
                    } else {
                        jobs.create(&PostParams::default(), &job(i))
                            .await
                            .map(|_| ())
                    };
                    if let Err(error) = result {
                        panic!("creating workload {i}: {error}");
                    }
                    latencies.lock().unwrap().push(started.elapsed());
                }
            }));
        }
        let writing = Arc::new(AtomicBool::new(true));
        let writer = {
            let (probe, writing) = (probe.clone(), writing.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while writing.load(Ordering::Relaxed) {
                    latencies.push(bare_write(&probe, latencies.len()).await);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                latencies
            })
        };
        for task in tasks {
            task.await.expect("a creator");
        }
        writing.store(false, Ordering::Relaxed);
        let mut loaded_writes = writer.await.expect("the bare writer");
        created = size;
        // Let the watches and the reconcile settle before reading the process figures.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (rss_kb, cpu_after) = usage();
        // The overhead: the same serial creates with gpushare, and where no webhook is called.
        let mut serial = serial_creates(&client, &probe, overhead_base, overhead).await;
        overhead_base += overhead;
        let commits = commits(&env, &since);
        let mut commit_times: Vec<Duration> = commits.iter().map(|c| c.latency).collect();
        let mut serial_times: Vec<Duration> = commits
            .iter()
            .filter(|c| c.serial)
            .map(|c| c.latency)
            .collect();
        let conflicts: u64 = commits.iter().map(|c| c.conflicts).sum();
        let mut latencies = latencies.lock().unwrap().clone();
        let row = Row {
            size,
            commit_p50: percentile(&mut commit_times, 0.5),
            commit_p99: percentile(&mut commit_times, 0.99),
            conflicts_per_commit: conflicts as f64 / commit_times.len().max(1) as f64,
            ledger_max_bytes: ledger_max.load(Ordering::Relaxed) as u64,
            serial_commit_p50: percentile(&mut serial_times, 0.5),
            create_p50: percentile(&mut latencies, 0.5),
            create_p99: percentile(&mut latencies, 0.99),
            overhead_p50: added(&mut serial.managed, &mut serial.baseline, 0.5),
            overhead_p99: added(&mut serial.managed, &mut serial.baseline, 0.99),
            loaded_write_p50: percentile(&mut loaded_writes, 0.5),
            loaded_write_p99: percentile(&mut loaded_writes, 0.99),
            call_p50: added(
                &mut serial.managed_dry_run,
                &mut serial.baseline_dry_run,
                0.5,
            ),
            call_p99: added(
                &mut serial.managed_dry_run,
                &mut serial.baseline_dry_run,
                0.99,
            ),
            serial_write_p50: percentile(&mut serial.bare_write, 0.5),
            serial_write_p99: percentile(&mut serial.bare_write, 0.99),
            rss_kb,
            cpu_per_workload: Duration::from_secs_f64(
                (cpu_after - cpu_before).max(0.0) / step.max(1) as f64,
            ),
        };
        eprintln!(
            "size {size}: {} commits, commit p50 {:?} p99 {:?}, ledger max {} B, RSS {} KiB",
            commit_times.len(),
            row.commit_p50,
            row.commit_p99,
            row.ledger_max_bytes,
            row.rss_kb
        );
        rows.push(row);
    }
    sampler.abort();

    let mut table = String::from(
        "| managed workloads | commit p50 | commit p99 | conflicts / commit | largest ledger | create p50 | create p99 | gpushare adds p50 | gpushare adds p99 | serial commit p50 | RSS (max replica) | CPU per workload |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {:.2} ms | {:.2} ms | {:.3} | {:.1} KiB | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {:.1} MiB | {:.3} ms |\n",
            r.size,
            r.commit_p50.as_secs_f64() * 1e3,
            r.commit_p99.as_secs_f64() * 1e3,
            r.conflicts_per_commit,
            r.ledger_max_bytes as f64 / 1024.0,
            r.create_p50.as_secs_f64() * 1e3,
            r.create_p99.as_secs_f64() * 1e3,
            r.overhead_p50.as_secs_f64() * 1e3,
            r.overhead_p99.as_secs_f64() * 1e3,
            r.serial_commit_p50.as_secs_f64() * 1e3,
            r.rss_kb as f64 / 1024.0,
            r.cpu_per_workload.as_secs_f64() * 1e3,
        ));
    }
    table.push_str(
        "\nWhat a synchronous record costs here: bare writes of a small ConfigMap by the bench (under the creators' load, every 10 ms; and between the serial creates), and the webhook call without a commit (the serial pair as dry runs).\n\n\
         | managed workloads | commit p99 | bare write under load p50 | bare write under load p99 | gpushare adds p50 | gpushare adds p99 | webhook call (dry run) adds p50 | webhook call (dry run) adds p99 | serial commit p50 | serial bare write p50 | serial bare write p99 |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in &rows {
        table.push_str(&format!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            r.size,
            ms(r.commit_p99),
            ms(r.loaded_write_p50),
            ms(r.loaded_write_p99),
            ms(r.overhead_p50),
            ms(r.overhead_p99),
            ms(r.call_p50),
            ms(r.call_p99),
            ms(r.serial_commit_p50),
            ms(r.serial_write_p50),
            ms(r.serial_write_p99),
        ));
    }
    println!("{table}");
    let out = root().join("target/bench-cluster.md");
    std::fs::write(&out, &table).expect("write the table");
    eprintln!("written to {}", out.display());
}
