//! Issue 26's targets for the stand-in bench, each with its measured figure, met or not: RSS after
//! sync at 1,000 x 10,000 and at 5,000 x 50,000, and at 5,000 x 50,000 the CPU per watch event and
//! the growth of server CPU per admission from the smallest size measured.

use crate::Figures;

struct Target {
    size: &'static str,
    rss_mib: f64,
}

const RSS: [Target; 2] = [
    Target {
        size: "1000 x 10000",
        rss_mib: 32.0,
    },
    Target {
        size: "5000 x 50000",
        rss_mib: 64.0,
    },
];
const LARGEST: &str = "5000 x 50000";
const CPU_PER_EVENT_MS: f64 = 0.05;
const GROWTH: f64 = 1.25;

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// A markdown table of the targets whose sizes were measured (`CLUSTER_BENCH_SIZES`).
pub fn render(rows: &[Figures]) -> String {
    let find = |size: &str| rows.iter().find(|r| r.size == size);
    let mut lines = Vec::new();
    for target in &RSS {
        if let Some(row) = find(target.size) {
            let mib = row.rss_kb as f64 / 1024.0;
            lines.push(format!(
                "| RSS after sync at {} <= {} MiB | {mib:.1} MiB | {} |",
                target.size,
                target.rss_mib,
                verdict(mib <= target.rss_mib)
            ));
        }
    }
    if let Some(row) = find(LARGEST) {
        let ms = row.cpu_per_event.as_secs_f64() * 1e3;
        lines.push(format!(
            "| server CPU per watch event at {LARGEST} <= {CPU_PER_EVENT_MS} ms | {ms:.3} ms | {} |",
            verdict(ms <= CPU_PER_EVENT_MS)
        ));
        if let Some(smallest) = rows.first().filter(|first| first.size != LARGEST) {
            let per = |r: &Figures| r.admissions.cpu_per_admission.as_secs_f64();
            let growth = per(row) / per(smallest).max(1e-9);
            lines.push(format!(
                "| server CPU per admission at {LARGEST} <= {GROWTH} x at {} | {growth:.2} x ({:.1} / {:.1} us) | {} |",
                smallest.size,
                per(row) * 1e6,
                per(smallest) * 1e6,
                verdict(growth <= GROWTH)
            ));
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n| target | measured | result |\n|---|---|---|\n{}\n",
        lines.join("\n")
    )
}
