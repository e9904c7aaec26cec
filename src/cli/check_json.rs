//! `check -o json`: the verdict lines as one JSON object for scripts, with field names that stay
//! stable (CONTRACT section 6): `{"results": [...]}`, or `{"error": "..."}` when nothing could be
//! checked.

use serde_json::{json, Value};

use crate::cli::check::{Detail, Line, Report};
use crate::core::claim::Assigned;

/// `{"results": [...]}`: one entry per verdict line, in the same order.
pub fn results(report: &Report) -> Value {
    json!({ "results": report.lines.iter().map(result).collect::<Vec<_>>() })
}

/// `{"error": "..."}`: why nothing was checked (exit 2).
pub fn error(message: &str) -> Value {
    json!({ "error": message })
}

fn result(line: &Line) -> Value {
    let mut entry = json!({
        "verdict": line.mark.as_str(),
        "namespace": line.object.namespace,
        "kind": line.object.kind,
        "name": line.object.name,
        "warnings": line.warnings,
    });
    match &line.detail {
        Detail::Assigned(assigned) => entry["assignment"] = assignment(assigned),
        // Allowed without a GPU: no assignment, and the line's words for why.
        Detail::Allowed(note) => {
            entry["assignment"] = Value::Null;
            entry["note"] = json!(note);
        }
        Detail::Reason(reason) => entry["reason"] = json!(reason),
    }
    entry
}

fn assignment(assigned: &Assigned) -> Value {
    let mut value = json!({
        "gpu": assigned.gpu.0,
        "mode": assigned.share.mode().as_str(),
    });
    if let Some(percentage) = assigned.share.percentage() {
        value["mpsPercentage"] = json!(percentage.get());
    }
    value
}
