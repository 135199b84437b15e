//! The report as a table for people and as JSON for programs.

use serde_json::json;

use crate::report::{Report, Verdict, short};

/// The etcdctl-style table and the verdict lines.
pub fn table(report: &Report) -> String {
    let header = [
        "NODE",
        "RANK",
        "ROLE",
        "ALIVE",
        "LAST HEARTBEAT",
        "APPLIED SLOT",
        "BEHIND LEADER",
        "DIGEST",
        "LAMPORT",
        "CLOCK OFFSET",
        "ERRORS",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.rank.map_or_else(dash, |v| v.to_string()),
                r.role.clone(),
                if r.alive { "yes".into() } else { "no".into() },
                r.last_heartbeat_ms_ago
                    .map_or_else(dash, |ms| format!("{ms} ms ago")),
                r.applied_slot.map_or_else(dash, |v| v.to_string()),
                r.behind.map_or_else(dash, |v| v.to_string()),
                r.digest
                    .as_deref()
                    .map_or_else(dash, |d| short(d).to_owned()),
                r.lamport.map_or_else(dash, |v| v.to_string()),
                r.clock_offset_ms
                    .map_or_else(dash, |v| format!("{v:+.1} ms")),
                if r.errors.is_empty() {
                    dash()
                } else {
                    r.errors.join("; ")
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out += &line(row);
    }
    out.push('\n');
    match report.verdict {
        Verdict::Consistent => {
            out += "CONSISTENT: replicas at the same applied slot have the same digest\n";
        }
        Verdict::Inconsistent => {
            out += "INCONSISTENT\n";
            for difference in &report.differences {
                out += &format!(
                    "  nodes {}: {}{}\n",
                    difference.nodes.join(", "),
                    difference.explanation,
                    difference
                        .first_key
                        .as_ref()
                        .map(|k| format!(" (first differing key: {k})"))
                        .unwrap_or_default()
                );
            }
        }
        Verdict::Unreachable => {
            out += "UNREACHABLE: no node answered and no store.json was found (is the cluster on? ./on.sh)\n";
        }
    }
    for (node, behind) in &report.lagging {
        out += &format!("  lagging: {node} is {behind} slot(s) behind\n");
    }
    if !report.fabric.is_empty() {
        out.push('\n');
        out += &fabric_table(report);
    }
    for warning in &report.warnings {
        out += &format!("WARNING: {warning}\n");
    }
    for skipped in &report.skipped {
        out += &format!("note: {skipped}\n");
    }
    out
}

/// The fabric: each process up or down, and what it carries.
fn fabric_table(report: &Report) -> String {
    let header = ["FABRIC", "UP", "CARRIES", "ERRORS"];
    let rows: Vec<Vec<String>> = report
        .fabric
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                if r.up { "yes".into() } else { "no".into() },
                r.carries.clone(),
                if r.errors.is_empty() {
                    "-".into()
                } else {
                    r.errors.join("; ")
                },
            ]
        })
        .collect();
    aligned(&header, &rows)
}

/// Left-aligned columns two spaces apart.
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in rows {
        out += &line(row);
    }
    out
}

/// `{"verdict": .., "nodes": [..], "differences": [..]}`.
pub fn json(report: &Report) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = report
        .nodes
        .iter()
        .map(|r| {
            json!({
                "node": r.node,
                "rank": r.rank,
                "role": r.role,
                "alive": r.alive,
                "last_heartbeat_ms_ago": r.last_heartbeat_ms_ago,
                "applied_slot": r.applied_slot,
                "digest": r.digest,
                "lamport": r.lamport,
                "clock_offset_ms": r.clock_offset_ms,
                "behind": r.behind,
                "errors": r.errors,
            })
        })
        .collect();
    json!({
        "verdict": report.verdict,
        "nodes": nodes,
        "differences": report.differences,
        "lagging": report.lagging,
        "fabric": report.fabric,
        "warnings": report.warnings,
        "skipped": report.skipped,
    })
}
