//! `client status` and `client health`.
//!
//! - **status**: `GET http://<addr>/status` of every node (JSON), printed as a table of
//!   the fields operators look at first. A node that does not answer is listed as down.
//! - **health**: a real write through consensus, once per node: puts of one fixed key
//!   ([`HEALTH_KEY`], so repeated checks leave nothing behind) through the broker, whose
//!   round robin spreads them over the live nodes, until every expected node has
//!   answered one or [`HEALTH_ROUNDS`] rounds have passed. Each answer names its node
//!   and took its latency.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use proto::{Consistency, Op};
use serde_json::{Value, json};

use crate::session::{CallOptions, Connection};
use crate::table;

/// How long one node's `/status` may take.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/status` body read; a larger one is an error, not a memory sink.
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// The key `health` writes.
pub const HEALTH_KEY: &str = "_health";
/// Health writes per expected node before giving up on the nodes not seen yet.
pub const HEALTH_ROUNDS: usize = 3;

/// One node's `/status`, or why it could not be read.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The address asked (`host:port` or a URL).
    pub address: String,
    /// The JSON document, or the error.
    pub result: Result<Value, String>,
}

/// `http://<address>/status`, unless `address` already is a URL.
fn status_url(address: &str) -> String {
    let base = if address.starts_with("http://") || address.starts_with("https://") {
        address.trim_end_matches('/').to_owned()
    } else {
        format!("http://{address}")
    };
    if base.ends_with("/status") {
        base
    } else {
        format!("{base}/status")
    }
}

fn fetch_one(address: &str, timeout: Duration) -> Result<Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut response = agent
        .get(&status_url(address))
        .call()
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    response
        .body_mut()
        .as_reader()
        .take(MAX_STATUS_BYTES + 1)
        .read_to_string(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    if body.len() as u64 > MAX_STATUS_BYTES {
        return Err(format!("status over {MAX_STATUS_BYTES} bytes"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON: {e}"))
}

/// Reads every node's `/status` in parallel.
pub async fn fetch_all(addresses: &[String], timeout: Duration) -> Vec<NodeStatus> {
    let tasks: Vec<_> = addresses
        .iter()
        .map(|address| {
            let address = address.clone();
            tokio::task::spawn_blocking(move || NodeStatus {
                result: fetch_one(&address, timeout),
                address,
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(tasks.len());
    for (task, address) in tasks.into_iter().zip(addresses) {
        statuses.push(task.await.unwrap_or_else(|e| NodeStatus {
            address: address.clone(),
            result: Err(format!("status task failed: {e}")),
        }));
    }
    statuses
}

/// A field of a status document as text: the first of `names` present, `-` if none.
fn field(status: &Value, names: &[&str]) -> String {
    names.iter().find_map(|name| status.get(*name)).map_or_else(
        || "-".to_owned(),
        |value| match value {
            Value::String(text) => text.clone(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        },
    )
}

/// The status table.
pub fn status_table(statuses: &[NodeStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|status| match &status.result {
            Ok(doc) => {
                let mut digest = field(doc, &["digest"]);
                digest.truncate(16);
                vec![
                    status.address.clone(),
                    field(doc, &["node", "id"]),
                    field(doc, &["rank"]),
                    field(doc, &["role"]),
                    field(doc, &["leader_node", "leader"]),
                    field(doc, &["applied_slot"]),
                    digest,
                    field(doc, &["lamport"]),
                    field(doc, &["clock_offset_ms"]),
                    String::new(),
                ]
            }
            Err(error) => {
                let mut row = vec![
                    status.address.clone(),
                    "-".into(),
                    "-".into(),
                    "down".into(),
                ];
                row.extend(std::iter::repeat_n("-".to_owned(), 5));
                row.push(error.clone());
                row
            }
        })
        .collect();
    table::render(
        &[
            "ADDRESS",
            "NODE",
            "RANK",
            "ROLE",
            "LEADER",
            "APPLIED SLOT",
            "DIGEST",
            "LAMPORT",
            "CLOCK OFFSET MS",
            "ERROR",
        ],
        &rows,
    )
}

/// The statuses as one JSON document: `{"nodes": [{"address", "reachable", "status",
/// "error"}]}`.
pub fn status_json(statuses: &[NodeStatus]) -> Value {
    let nodes: Vec<Value> = statuses
        .iter()
        .map(|status| match &status.result {
            Ok(doc) => json!({"address": status.address, "reachable": true, "status": doc}),
            Err(error) => json!({"address": status.address, "reachable": false, "error": error}),
        })
        .collect();
    json!({ "nodes": nodes })
}

/// One node that wrote the health key.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthProbe {
    /// The node that answered.
    pub node: String,
    /// Round trip of its write, retries included.
    pub latency: Duration,
    /// Its applied slot when it answered.
    pub applied_slot: u64,
}

/// What `health` found.
#[derive(Debug, Clone, Default)]
pub struct HealthReport {
    /// Nodes that should answer.
    pub expected_nodes: usize,
    /// The first write answered by each node, in the order they answered.
    pub probes: Vec<HealthProbe>,
    /// Writes that failed, with the reason.
    pub failures: Vec<String>,
}

impl HealthReport {
    /// Whether every expected node wrote through consensus.
    pub fn healthy(&self) -> bool {
        self.probes.len() >= self.expected_nodes && self.expected_nodes > 0
    }

    /// The table for people, with a verdict line.
    pub fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .probes
            .iter()
            .map(|probe| {
                vec![
                    probe.node.clone(),
                    format!("{:.2}", probe.latency.as_secs_f64() * 1000.0),
                    probe.applied_slot.to_string(),
                ]
            })
            .collect();
        let mut out = table::render(&["NODE", "WRITE LATENCY MS", "APPLIED SLOT"], &rows);
        for failure in &self.failures {
            out.push_str(&format!("failed write: {failure}\n"));
        }
        out.push_str(&format!(
            "{}: {}/{} nodes wrote through consensus\n",
            if self.healthy() {
                "HEALTHY"
            } else {
                "UNHEALTHY"
            },
            self.probes.len(),
            self.expected_nodes
        ));
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        let nodes: Vec<Value> = self
            .probes
            .iter()
            .map(|probe| {
                json!({
                    "node": probe.node,
                    "latency_ms": probe.latency.as_secs_f64() * 1000.0,
                    "applied_slot": probe.applied_slot,
                })
            })
            .collect();
        json!({
            "ok": self.healthy(),
            "expected": self.expected_nodes,
            "nodes": nodes,
            "failures": self.failures,
        })
    }
}

/// Writes [`HEALTH_KEY`] through the broker until `expected_nodes` distinct nodes have
/// answered one write each, or [`HEALTH_ROUNDS`] × `expected_nodes` writes were made.
pub async fn health(
    connection: &Connection,
    expected_nodes: usize,
    options: &CallOptions,
) -> HealthReport {
    let mut session = connection.session();
    let mut report = HealthReport {
        expected_nodes,
        ..HealthReport::default()
    };
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for attempt in 0..expected_nodes.max(1) * HEALTH_ROUNDS {
        if seen.len() >= expected_nodes {
            break;
        }
        let op = Op::Put {
            key: HEALTH_KEY.to_owned(),
            value: format!("client {:016x} probe {attempt}", session.client_id()),
        };
        let started = Instant::now();
        match session.call(op, Consistency::Linearizable, options).await {
            Ok(answer) => {
                if seen.insert(answer.node.clone(), ()).is_none() {
                    report.probes.push(HealthProbe {
                        node: answer.node,
                        latency: started.elapsed(),
                        applied_slot: answer.applied_slot,
                    });
                }
            }
            Err(error) => report.failures.push(error.to_string()),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(status_url("127.0.0.1:7001"), "http://127.0.0.1:7001/status");
        assert_eq!(status_url("http://h:1/"), "http://h:1/status");
        assert_eq!(status_url("http://h:1/status"), "http://h:1/status");
    }

    #[test]
    fn tables_show_down_nodes() {
        let statuses = vec![
            NodeStatus {
                address: "a:1".into(),
                result: Ok(json!({"node": "node-1", "rank": 1, "role": "leader",
                    "applied_slot": 42, "digest": "0123456789abcdef0123", "lamport": 7})),
            },
            NodeStatus {
                address: "b:2".into(),
                result: Err("connection refused".into()),
            },
        ];
        let table = status_table(&statuses);
        assert!(table.contains("node-1"), "{table}");
        assert!(table.contains("0123456789abcdef "), "{table}");
        assert!(!table.contains("0123456789abcdef0"), "{table}");
        assert!(table.contains("down"), "{table}");
        assert!(table.contains("connection refused"), "{table}");
        let doc = status_json(&statuses);
        assert_eq!(doc["nodes"][1]["reachable"], json!(false));
    }
}
