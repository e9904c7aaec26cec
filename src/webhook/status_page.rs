//! The allocation picture: the rows `gpushare status` computes, as one self-contained HTML page
//! (inline CSS; no script, font, image or other request), written by `status -o html` and served
//! read-only by `serve --status-page` at `GET /status`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::core::status::{ModuleShare, StatusRow};

/// Where the served page gets its rows, read on every request.
#[derive(Clone)]
pub struct StatusSource {
    /// Says where the numbers come from, under the title.
    pub label: String,
    pub rows: Arc<dyn Fn() -> Vec<StatusRow> + Send + Sync>,
}

/// The path `serve --status-page` serves the page at.
pub const PATH: &str = "/status";

/// Forbids every load the page does not need: nothing but its own inline styles.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, Clone, Default)]
pub struct PageOptions {
    /// Where the numbers come from, shown under the title (e.g. "cluster", "manifests: a.yaml").
    pub source: String,
    /// Reload the page every so many seconds (the served page).
    pub refresh_seconds: Option<u32>,
}

/// `GET /status` for `serve`; only when `--status-page` is given.
pub fn router(source: StatusSource, refresh_seconds: u32) -> Router {
    Router::new().route(
        PATH,
        get(move || {
            let source = source.clone();
            async move {
                let options = PageOptions {
                    source: source.label.clone(),
                    refresh_seconds: Some(refresh_seconds),
                };
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-store"),
                        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                        (header::REFERRER_POLICY, "no-referrer"),
                    ],
                    render(&(source.rows)(), &options),
                )
                    .into_response()
            }
        }),
    )
}

/// How full a bar is, in percent of its limit (may exceed 100), or `None` without a limit.
fn share_of(used: u32, limit: Option<u32>) -> Option<u32> {
    match limit {
        Some(limit) if limit > 0 => {
            Some(u32::try_from(u64::from(used) * 100 / u64::from(limit)).unwrap_or(u32::MAX))
        }
        _ => None,
    }
}

fn level(percent: Option<u32>) -> &'static str {
    match percent {
        Some(p) if p > 100 => "over",
        Some(100) => "full",
        Some(p) if p >= 80 => "high",
        _ => "ok",
    }
}

/// One bar: `metric` names it for tests and styles, `name` and `text` caption it.
fn bar(out: &mut String, metric: &str, name: &str, used: u32, limit: Option<u32>, text: &str) {
    let percent = share_of(used, limit);
    let width = percent.map_or(0, |p| p.min(100));
    let max = limit
        .map(|l| format!(" aria-valuemax=\"{l}\""))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<div class=\"meter {level}\" role=\"meter\" data-metric=\"{metric}\" data-used=\"{used}\" \
         data-limit=\"{limit}\" aria-label=\"{name}\" aria-valuemin=\"0\"{max} aria-valuenow=\"{used}\">\
         <div class=\"caption\"><span>{name}</span><span class=\"value\">{text}</span></div>\
         <div class=\"track\"><div class=\"fill\" style=\"width: {width}%\"></div></div></div>",
        level = level(percent),
        limit = limit.map(|l| l.to_string()).unwrap_or_default(),
        name = escape(name),
        text = escape(text),
    );
}

fn gpu(out: &mut String, row: &StatusRow) {
    let mps = row.mode == "mps";
    let _ = write!(
        out,
        "<article class=\"gpu{reserved}\" data-node=\"{node}\" data-gpu=\"{gpu}\" data-mode=\"{mode}\" \
         data-reserved=\"{is_reserved}\"><header><h3>GPU {gpu}</h3><span class=\"mode\">{mode}</span>",
        reserved = if row.reserved_for_vm { " reserved" } else { "" },
        node = escape(&row.node),
        gpu = row.gpu,
        mode = escape(&row.mode),
        is_reserved = row.reserved_for_vm,
    );
    if row.reserved_for_vm {
        out.push_str("<span class=\"badge\">reserved for VMs</span>");
    }
    out.push_str("</header>");
    if mps {
        let text = match row.mps_percentage_cap {
            Some(cap) => format!("{}% of {cap}%", row.committed_mps_percentage),
            None => format!("{}% (no cap)", row.committed_mps_percentage),
        };
        bar(
            out,
            "mps-percentage",
            "committed MPS percentage",
            row.committed_mps_percentage,
            row.mps_percentage_cap,
            &text,
        );
    }
    bar(
        out,
        "client-processes",
        "client processes",
        row.client_processes,
        Some(row.max_client_processes),
        &format!("{} of {}", row.client_processes, row.max_client_processes),
    );
    if row.modules.is_empty() {
        let why = if row.reserved_for_vm {
            "never assigned: reserved for VMs"
        } else {
            "no modules"
        };
        let _ = write!(out, "<p class=\"none\">{why}</p>");
    } else {
        if let Some(running) = row.running_pods {
            let _ = write!(
                out,
                "<p class=\"running\" data-running-pods=\"{running}\">{running} pod{} of these modules \
                 running on this node now</p>",
                if running == 1 { "" } else { "s" }
            );
        }
        out.push_str("<ul class=\"modules\">");
        for share in &row.shares {
            module_share(out, row, share);
        }
        out.push_str("</ul>");
    }
    out.push_str("</article>");
}

fn pods(n: u32) -> String {
    format!("{n} pod{}", if n == 1 { "" } else { "s" })
}

/// One module's share of the GPU: what it holds, and a small bar of its part of the limit.
fn module_share(out: &mut String, row: &StatusRow, share: &ModuleShare) {
    let (used, limit, text) = match (row.mode.as_str(), share.mps_percentage) {
        ("mps", Some(p)) => (
            share.committed_mps_percentage,
            row.mps_percentage_cap,
            format!(
                "{} x {p}% = {}%",
                pods(share.pods),
                share.committed_mps_percentage
            ),
        ),
        _ => (
            share.client_processes,
            Some(row.max_client_processes),
            format!(
                "{}, {} client processes",
                pods(share.pods),
                share.client_processes
            ),
        ),
    };
    let running = share
        .running_pods
        .map(|n| format!(", {n} running"))
        .unwrap_or_default();
    let width = share_of(used, limit).map_or(0, |p| p.min(100));
    let _ = write!(
        out,
        "<li class=\"share\" data-module=\"{module}\" data-namespace=\"{namespace}\" data-kind=\"{kind}\" \
         data-name=\"{name}\" data-pods=\"{pods}\" data-used=\"{used}\" data-running=\"{running_attr}\">\
         <span class=\"who\">{module}</span><span class=\"what\">{text}{running}</span>\
         <span class=\"mini\"><span style=\"width: {width}%\"></span></span></li>",
        module = escape(&share.module()),
        namespace = escape(&share.namespace),
        kind = escape(&share.kind),
        name = escape(&share.name),
        pods = share.pods,
        running_attr = share.running_pods.map(|n| n.to_string()).unwrap_or_default(),
        text = escape(&text),
        running = escape(&running),
    );
}

/// The whole page. Rows of one node are grouped in its section, in the order given.
pub fn render(rows: &[StatusRow], options: &PageOptions) -> String {
    let mut out = String::with_capacity(4096 + rows.len() * 512);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(seconds) = options.refresh_seconds {
        let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{seconds}\">");
    }
    out.push_str("<title>gpushare: GPU allocation</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body><header class=\"page\"><h1>GPU allocation</h1>");
    let _ = write!(
        out,
        "<p class=\"meta\">{source}{sep}generated {time}</p></header><main>",
        source = escape(&options.source),
        sep = if options.source.is_empty() {
            ""
        } else {
            " · "
        },
        time = utc_now(),
    );
    if rows.is_empty() {
        out.push_str(
            "<p class=\"empty\">No GPUs: no node offers GPUs to Kubernetes. GPUs passed through to \
             VMs are not available to containers.</p>",
        );
    }
    let mut i = 0;
    while i < rows.len() {
        let node = &rows[i].node;
        let end = rows[i..]
            .iter()
            .position(|r| &r.node != node)
            .map_or(rows.len(), |n| i + n);
        let _ = write!(
            out,
            "<section class=\"node\" data-node=\"{name}\"><h2>{name}</h2><div class=\"gpus\">",
            name = escape(node)
        );
        for row in &rows[i..end] {
            gpu(&mut out, row);
        }
        out.push_str("</div></section>");
        i = end;
    }
    out.push_str(
        "</main><footer>Bars: committed MPS percentage of the cap (mps GPUs) and client processes \
         of the limit, counted on every node a module may land on.</footer></body></html>\n",
    );
    out
}

const STYLE: &str = "\
:root{color-scheme:light;--ok:#2e7d32;--high:#ef6c00;--full:#c62828;--over:#b71c1c;--line:#d0d4da}\
*{box-sizing:border-box}\
body{margin:0;padding:24px;font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2329;background:#f5f6f8}\
h1{margin:0;font-size:24px}h2{margin:0 0 12px;font-size:18px}h3{margin:0;font-size:16px}\
.meta{margin:4px 0 20px;color:#5b6570}\
.node{margin:0 0 24px;padding:16px;border:1px solid var(--line);border-radius:8px;background:#fff}\
.gpus{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}\
.gpu{padding:12px;border:1px solid var(--line);border-radius:6px;background:#fff}\
.gpu header{display:flex;gap:8px;align-items:center;margin-bottom:8px}\
.mode{padding:1px 8px;border-radius:10px;background:#e3e8ef;font-size:13px}\
.gpu[data-mode=mps] .mode{background:#dbe9ff}\
.badge{padding:1px 8px;border-radius:10px;background:#5b6570;color:#fff;font-size:13px}\
.gpu.reserved{background:repeating-linear-gradient(135deg,#fff 0 10px,#f0f1f3 10px 20px)}\
.meter{margin:8px 0}\
.caption{display:flex;justify-content:space-between;font-size:13px;color:#39424c}\
.meter.over .value,.meter.full .value{color:var(--full);font-weight:600}\
.track{height:14px;margin-top:2px;border-radius:4px;background:#e9ecef;overflow:hidden}\
.fill{height:100%;background:var(--ok)}\
.meter.high .fill{background:var(--high)}.meter.full .fill{background:var(--full)}.meter.over .fill{background:var(--over)}\
.modules{margin:8px 0 0;padding:0;list-style:none;max-height:420px;overflow-y:auto}\
.share{display:grid;grid-template-columns:1fr auto;gap:0 8px;padding:3px 0;border-top:1px solid #eef0f3;font-size:13px}\
.share .who{overflow-wrap:anywhere}.share .what{color:#39424c;white-space:nowrap}\
.share .mini{grid-column:1/3;height:4px;border-radius:2px;background:#e9ecef;overflow:hidden}\
.share .mini span{display:block;height:100%;background:#5c6bc0}\
.running{margin:8px 0 0;font-size:13px;color:#39424c}\
.none,.empty{margin:8px 0 0;color:#5b6570}\
footer{color:#5b6570;font-size:13px}";

/// Text and attribute values, escaped for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The current time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, gpu: u32, mode: &str) -> StatusRow {
        StatusRow {
            node: node.into(),
            gpu,
            mode: mode.into(),
            reserved_for_vm: false,
            modules: vec![],
            client_processes: 0,
            max_client_processes: 48,
            committed_mps_percentage: 0,
            mps_percentage_cap: Some(100),
            running_pods: None,
            shares: vec![],
        }
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn shares_and_levels() {
        assert_eq!(share_of(50, Some(100)), Some(50));
        assert_eq!(share_of(120, Some(100)), Some(120));
        assert_eq!(share_of(3, Some(0)), None);
        assert_eq!(share_of(3, None), None);
        assert_eq!(level(Some(79)), "ok");
        assert_eq!(level(Some(80)), "high");
        assert_eq!(level(Some(100)), "full");
        assert_eq!(level(Some(101)), "over");
    }

    #[test]
    fn nodes_group_their_gpus_and_text_is_escaped() {
        let mut mps = row("edge-1", 1, "mps");
        mps.modules = vec!["default/Deployment/<script>".into()];
        mps.shares = vec![ModuleShare {
            namespace: "default".into(),
            kind: "Deployment".into(),
            name: "<script>".into(),
            pods: 3,
            client_processes: 3,
            mps_percentage: Some(40),
            committed_mps_percentage: 120,
            running_pods: Some(2),
        }];
        mps.committed_mps_percentage = 120;
        let rows = [
            row("edge-1", 0, "time-slicing"),
            mps,
            row("edge-2", 0, "time-slicing"),
        ];
        let page = render(&rows, &PageOptions::default());
        assert_eq!(page.matches("<section class=\"node\"").count(), 2);
        assert_eq!(page.matches("<article class=\"gpu").count(), 3);
        assert!(page.contains("default/Deployment/&lt;script&gt;"));
        assert!(page.contains("3 pods x 40% = 120%, 2 running"));
        assert!(!page.contains("<script"));
        assert!(
            page.contains("class=\"meter over\""),
            "120% of 100% is over the cap"
        );
        assert!(
            page.contains("style=\"width: 100%\""),
            "an over-full bar is drawn full"
        );
        assert_eq!(page.matches("data-metric=\"mps-percentage\"").count(), 1);
        assert!(!page.contains("http-equiv"));
    }

    #[test]
    fn no_rows_says_gpus_may_be_assigned_to_vms() {
        let page = render(&[], &PageOptions::default());
        assert!(page.contains("No GPUs"));
        assert!(page.contains("VMs"));
    }
}
