//! The report of a run: aligned tables for the terminal and the same tables as markdown for
//! `target/bench-results.md`: levels, the ratio to the ceiling, the info log's cost, memory, and
//! each target passed or failed.

use std::fmt::Write as _;

use crate::load::LevelResult;
use crate::requests::Template;
use crate::{
    Budget, Config, Run, TARGET_MIN_REQUESTS, TARGET_P99_US_AT_16, TARGET_RATIO_AT_64,
    TARGET_RSS_KB,
};

pub struct Report {
    pub text: String,
    pub markdown: String,
}

/// A table kept as rows of cells, rendered both aligned for the terminal and as markdown.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn text(&self) -> String {
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

    pub fn markdown(&self) -> String {
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

pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

pub fn render(run: &Run, config: &Config, pinned: bool, templates: &[Template]) -> Report {
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
