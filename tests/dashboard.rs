//! The Grafana dashboard (`charts/gpushare/dashboards/gpushare.json`) only asks for metrics the
//! server exports: every `gpushare_*` name in its PromQL (panels and variables) is a sample name of
//! a family that the real `gpushare serve` lists at `/metrics`, standalone (with dev certificates
//! in a temp dir) or, for the cluster-only families, in cluster mode against the test API server.
//! A family appears with its first sample, so both servers are made to record one of each.

mod common;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{web, Review, Server, DEADLINE, GPU};
use fake_apiserver::FakeApiServer;
use serde_json::{json, Value};

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/gpushare/dashboards/gpushare.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The sample names a scrape can contain, from the `# TYPE` lines (a family with no samples yet,
/// such as the per-GPU gauges of a server that admitted nothing, still has its `# TYPE`).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some(family), Some(kind)) = (fields.next(), fields.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

/// `gpushare_...` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("gpushare_") {
                names.push(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        out.push(panel);
    }
    out
}

/// (where, PromQL) for every query of the dashboard.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((format!("panel {:?}", panel["title"]), expr.to_owned()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["definition"].as_str());
        if variable["type"] == "query" {
            if let Some(query) = query {
                out.push((format!("variable {}", variable["name"]), query.to_owned()));
            }
        }
    }
    out
}

#[test]
fn metric_names_are_extracted_from_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(gpushare_admission_duration_seconds_bucket[5m]))) / gpushare_x"
        ),
        ["gpushare_admission_duration_seconds_bucket", "gpushare_x"]
    );
    assert!(metric_names("sum(rate(not_gpushare_total[1m]))").is_empty());
}

#[test]
fn every_panel_queries_gpushare_metrics_through_the_datasource_variable() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "gpushare");
    let has_datasource_variable = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| {
            v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus"
        });
    assert!(
        has_datasource_variable,
        "the dashboard needs a Prometheus datasource variable"
    );
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel has a numeric id")),
            "panel ids must be unique ({title})"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title} must use the datasource variable"
        );
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a target has a PromQL expr");
            assert!(
                !metric_names(expr).is_empty(),
                "panel {title}: {expr} queries no gpushare metric"
            );
        }
    }
}

/// Polls `/metrics` until every name in `wanted` is exported (families appear with their first
/// sample), returning the exported names.
async fn scrape_until(server: &Server, wanted: &[&str]) -> BTreeSet<String> {
    let started = Instant::now();
    loop {
        let (status, exposition) = server.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {exposition}");
        let exported = exported_names(&exposition);
        if wanted.iter().all(|w| exported.contains(*w)) {
            return exported;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "/metrics did not list {wanted:?} within {DEADLINE:?}; it lists {exported:?}; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a standalone server exports once it has answered a review and reloaded its policy file.
async fn standalone_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "defaultMode: time-slicing\n").expect("write policy");
    let policy_arg = policy.to_str().expect("UTF-8 temp path");
    let server = Server::start(&["--policy", policy_arg]);
    server
        .review(&Review::create(web(&[(GPU, "0")])).to_json())
        .await;
    // The file is polled by modification time: rewrite it until the reload is counted.
    let started = Instant::now();
    loop {
        std::fs::write(&policy, "defaultMode: time-slicing\nstrategy: pack\n")
            .expect("write policy");
        let (_, exposition) = server.get("/metrics").await;
        if exported_names(&exposition).contains("gpushare_policy_reloads_total") {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the policy file reload was not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scrape_until(
        &server,
        &[
            "gpushare_admission_requests_total",
            "gpushare_policy_reloads_total",
        ],
    )
    .await
}

/// What a cluster-mode server exports once its caches synced (per-GPU gauges, cache state).
async fn cluster_names() -> BTreeSet<String> {
    let api = FakeApiServer::start().await;
    api.apply(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "edge-1", "labels": {"nvidia.com/gpu.count": "2"}},
        "status": {"allocatable": {"nvidia.com/gpu": "2"}}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gpushare-policy", "namespace": "gpushare-system"},
        "data": {"policy.yaml": "gpuModes: {\"1\": mps}\n"}
    }));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let server = tokio::task::spawn_blocking(move || Server::start_cluster(&kubeconfig, &[]))
        .await
        .expect("server starts");
    scrape_until(
        &server,
        &[
            "gpushare_cache_synced",
            "gpushare_gpu_client_processes",
            "gpushare_gpu_committed_mps_percentage",
            "gpushare_policy_reloads_total",
        ],
    )
    .await
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let mut exported = standalone_names().await;
    exported.extend(cluster_names().await);
    let mut missing = Vec::new();
    for (place, expr) in queries(&dashboard()) {
        for name in metric_names(&expr) {
            if !exported.contains(&name) {
                missing.push(format!("{place}: {name} (in {expr})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the server does not export:\n{}\nexported: {exported:?}",
        missing.join("\n")
    );
}

/// The GPU panels draw the limit of the policy in force (exported by the server), not a constant
/// that is right only for the default policy.
#[test]
fn the_gpu_panels_draw_the_policys_limits() {
    let dashboard = dashboard();
    for (title, limit) in [
        (
            "Committed MPS percentage",
            "gpushare_policy_max_mps_percentage_per_gpu",
        ),
        ("Client processes", "gpushare_policy_max_clients_per_gpu"),
        (
            "Committed MPS percentage over time",
            "gpushare_policy_max_mps_percentage_per_gpu",
        ),
        (
            "Client processes over time",
            "gpushare_policy_max_clients_per_gpu",
        ),
    ] {
        let panel = panels(&dashboard)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("a panel {title:?}"));
        let limit_query = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| {
                t["expr"]
                    .as_str()
                    .is_some_and(|e| metric_names(e).contains(&limit.to_string()))
            })
            .unwrap_or_else(|| panic!("panel {title:?} must query {limit}"));
        if panel["type"] == "bargauge" {
            let defaults = &panel["fieldConfig"]["defaults"];
            assert_eq!(
                defaults["thresholds"]["mode"], "percentage",
                "{title}: thresholds are shares of the limit"
            );
            let maps_max = panel["transformations"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| {
                    t["id"] == "configFromData"
                        && t["options"]["configRefId"] == limit_query["refId"]
                        && t["options"]["mappings"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|m| m["handlerKey"] == "max")
                });
            assert!(
                maps_max,
                "{title}: the limit query must set the gauge's max"
            );
        }
    }
}
