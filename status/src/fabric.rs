//! The fabric around the replicas — the reference, the brokers and the proxies — as the
//! report shows it: each one up or down, and what it carries (the nodes a broker routes
//! to, the publishers and subscribers a proxy forwards between, the members the
//! reference knows).
//!
//! A degraded fabric (one of a pair down, the reference unreachable) is a warning, never
//! part of the verdict: the verdict and the exit code stay about the replicas. Only
//! [`observe`] does I/O; [`FabricRow::build`] and [`warnings`] are pure.

use std::time::Duration;

use proto::report::{BrokerReport, ProxyReport, ReferenceReport};
use serde::Serialize;

use crate::gather::http_get;

/// The HTTP status port of the reference in a local cluster.
pub const REFERENCE_STATUS_PORT: u16 = 7090;
/// The HTTP status port of `broker-1`; `broker-2` is the next.
pub const BROKER_STATUS_PORT: u16 = 7091;
/// The HTTP status port of `proxy-1`; `proxy-2` is the next.
pub const PROXY_STATUS_PORT: u16 = 7093;
/// Most brokers (and most proxies) a report looks at.
pub const MAX_FABRIC_PAIR: usize = 8;

/// What a fabric process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The reference service.
    Reference,
    /// A broker.
    Broker,
    /// A proxy.
    Proxy,
}

impl Kind {
    /// The kind of process `name` (`broker-2` is a broker).
    pub fn of(name: &str) -> Option<Kind> {
        match name.split('-').next()? {
            "reference" => Some(Kind::Reference),
            "broker" => Some(Kind::Broker),
            "proxy" => Some(Kind::Proxy),
            _ => None,
        }
    }
}

/// A fabric process to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricTarget {
    /// `reference`, `broker-1`, `proxy-2`...
    pub name: String,
    /// `host:port` of its HTTP status port.
    pub status_addr: String,
}

/// The local fabric of `size` brokers and proxies on `host`, at the ports `./on.sh`
/// gives them, unless `named` (`broker-2=10.0.0.5:7092`) says otherwise.
pub fn targets(size: usize, host: &str, named: &[String]) -> Vec<FabricTarget> {
    let size = size.min(MAX_FABRIC_PAIR);
    let mut list = vec![("reference".to_owned(), REFERENCE_STATUS_PORT)];
    for i in 0..size {
        let offset = u16::try_from(i).unwrap_or(0);
        list.push((format!("broker-{}", i + 1), BROKER_STATUS_PORT + offset));
    }
    for i in 0..size {
        let offset = u16::try_from(i).unwrap_or(0);
        list.push((format!("proxy-{}", i + 1), PROXY_STATUS_PORT + offset));
    }
    let mut targets: Vec<FabricTarget> = list
        .into_iter()
        .map(|(name, port)| FabricTarget {
            status_addr: format!("{host}:{port}"),
            name,
        })
        .collect();
    for entry in named {
        let Some((name, addr)) = entry.split_once('=') else {
            continue;
        };
        if Kind::of(name).is_none() {
            continue;
        }
        match targets.iter_mut().find(|t| t.name == name) {
            Some(target) => target.status_addr = addr.to_owned(),
            None => targets.push(FabricTarget {
                name: name.to_owned(),
                status_addr: addr.to_owned(),
            }),
        }
    }
    targets
}

/// What a fabric process's `/status` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A broker's report.
    Broker(BrokerReport),
    /// A proxy's report.
    Proxy(ProxyReport),
    /// The reference's report.
    Reference(ReferenceReport),
    /// It did not answer, or not with its report: why.
    Down(String),
}

/// Asks one fabric process for its `/status`.
pub fn observe(target: &FabricTarget, timeout: Duration) -> (String, Seen) {
    let seen = match (
        Kind::of(&target.name),
        http_get(&target.status_addr, "/status", timeout),
    ) {
        (_, Err(e)) => Seen::Down(format!("{} unreachable: {e}", target.status_addr)),
        (None, Ok(_)) => Seen::Down("not a fabric process".to_owned()),
        (Some(kind), Ok(body)) => {
            let parsed = match kind {
                Kind::Broker => serde_json::from_slice(&body).map(Seen::Broker),
                Kind::Proxy => serde_json::from_slice(&body).map(Seen::Proxy),
                Kind::Reference => serde_json::from_slice(&body).map(Seen::Reference),
            };
            parsed.unwrap_or_else(|e| Seen::Down(format!("/status is not its report: {e}")))
        }
    };
    (target.name.clone(), seen)
}

/// One row of the fabric table (and of `--json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FabricRow {
    /// `reference`, `broker-1`, ...
    pub name: String,
    /// What it is.
    pub kind: Option<Kind>,
    /// Whether it answered.
    pub up: bool,
    /// What it carries, in words.
    pub carries: String,
    /// The broker's live nodes (brokers only).
    pub live_nodes: Option<Vec<String>>,
    /// The proxy's connected publishers and subscribers (proxies only).
    pub publishers: Option<u64>,
    /// See `publishers`.
    pub subscribers: Option<u64>,
    /// The ids of the keys it holds, the sealing key first (brokers and the reference;
    /// proxies hold none).
    pub key_ids: Option<Vec<String>>,
    /// Problems found with it.
    pub errors: Vec<String>,
}

impl FabricRow {
    /// The row of process `name` from what was seen.
    pub fn build(name: &str, seen: &Seen) -> FabricRow {
        let mut row = FabricRow {
            name: name.to_owned(),
            kind: Kind::of(name),
            up: true,
            carries: String::new(),
            live_nodes: None,
            publishers: None,
            subscribers: None,
            key_ids: None,
            errors: Vec::new(),
        };
        match seen {
            Seen::Broker(report) => {
                row.carries = if report.live_nodes.is_empty() {
                    "routes to no node".to_owned()
                } else {
                    format!("routes to {}", report.live_nodes.join(", "))
                };
                if report.live_nodes.is_empty() {
                    row.errors.push("no live node".to_owned());
                }
                row.live_nodes = Some(report.live_nodes.clone());
                row.key_ids = Some(report.auth.key_ids.clone());
            }
            Seen::Proxy(report) => {
                row.carries = format!(
                    "{} publishers, {} subscribers, {} messages",
                    report.publishers, report.subscribers, report.messages
                );
                row.publishers = Some(report.publishers);
                row.subscribers = Some(report.subscribers);
            }
            Seen::Reference(report) => {
                let alive = report.members.iter().filter(|m| m.alive).count();
                row.carries = format!("{} members, {alive} alive", report.members.len());
                row.key_ids = Some(report.auth.key_ids.clone());
                if !report.registry_saved {
                    let reason = report.last_save_error.as_deref().unwrap_or("unknown");
                    row.errors.push(format!("registry not saved: {reason}"));
                }
            }
            Seen::Down(reason) => {
                row.up = false;
                row.carries = "-".to_owned();
                row.errors.push(reason.clone());
            }
        }
        row
    }
}

/// The warnings a fabric deserves: a broker or proxy down (and whether its pair still
/// carries the traffic), the reference down, a broker with no node to route to.
pub fn warnings(rows: &[FabricRow]) -> Vec<String> {
    let mut out = Vec::new();
    for kind in [Kind::Broker, Kind::Proxy] {
        let of_kind: Vec<&FabricRow> = rows.iter().filter(|r| r.kind == Some(kind)).collect();
        let down: Vec<&str> = of_kind
            .iter()
            .filter(|r| !r.up)
            .map(|r| r.name.as_str())
            .collect();
        let up = of_kind.len() - down.len();
        let what = match kind {
            Kind::Broker => "brokers",
            _ => "proxies",
        };
        if down.is_empty() {
            continue;
        }
        if up == 0 {
            out.push(format!(
                "fabric DOWN: no {what} answer ({}): clients cannot be served",
                down.join(", ")
            ));
        } else {
            out.push(format!(
                "fabric degraded: {} down; {up} of {} {what} carry the traffic",
                down.join(", "),
                of_kind.len()
            ));
        }
    }
    for row in rows.iter().filter(|r| r.up && r.kind == Some(Kind::Broker)) {
        if row.live_nodes.as_ref().is_some_and(Vec::is_empty) {
            out.push(format!("{} routes to no node", row.name));
        }
    }
    if let Some(reference) = rows.iter().find(|r| r.kind == Some(Kind::Reference)) {
        if !reference.up {
            out.push(
                "the reference is down: the nodes serve with the membership they last knew"
                    .to_owned(),
            );
        }
        for error in reference
            .errors
            .iter()
            .filter(|e| e.starts_with("registry"))
        {
            out.push(format!("reference: {error}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(name: &str, live: &[&str]) -> Seen {
        Seen::Broker(BrokerReport {
            name: name.to_owned(),
            frontend: String::new(),
            backend: String::new(),
            live_nodes: live.iter().map(|s| (*s).to_owned()).collect(),
            requests: 0,
            replies: 0,
            unavailable: 0,
            malformed: 0,
            auth: Default::default(),
            uptime_ms: 0,
        })
    }

    #[test]
    fn local_targets_follow_the_port_plan_unless_named() {
        let targets = targets(2, "127.0.0.1", &["broker-2=10.0.0.9:80".to_owned()]);
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["reference", "broker-1", "broker-2", "proxy-1", "proxy-2"]
        );
        assert_eq!(targets[1].status_addr, "127.0.0.1:7091");
        assert_eq!(targets[2].status_addr, "10.0.0.9:80");
        assert_eq!(targets[4].status_addr, "127.0.0.1:7094");
    }

    #[test]
    fn one_of_a_pair_down_is_degraded_both_down_is_down() {
        let up = FabricRow::build("broker-1", &broker("broker-1", &["node-1", "node-2"]));
        assert_eq!(up.carries, "routes to node-1, node-2");
        let down = FabricRow::build("broker-2", &Seen::Down("refused".into()));
        let warned = warnings(&[up.clone(), down.clone()]);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("degraded: broker-2 down; 1 of 2 brokers"),
            "{warned:?}"
        );
        let both = warnings(&[
            down.clone(),
            FabricRow::build("broker-1", &Seen::Down("x".into())),
        ]);
        assert!(
            both[0].starts_with("fabric DOWN: no brokers answer"),
            "{both:?}"
        );
        assert!(warnings(&[up]).is_empty());
    }

    #[test]
    fn a_broker_without_nodes_and_an_unsaved_registry_are_warnings() {
        let lonely = FabricRow::build("broker-1", &broker("broker-1", &[]));
        let reference = FabricRow::build(
            "reference",
            &Seen::Reference(ReferenceReport {
                endpoint: String::new(),
                members: vec![],
                epoch: 1,
                registry_saved: false,
                last_save_error: Some("No space left on device".into()),
                auth: Default::default(),
                uptime_ms: 0,
            }),
        );
        let warned = warnings(&[lonely, reference]);
        assert!(
            warned.iter().any(|w| w == "broker-1 routes to no node"),
            "{warned:?}"
        );
        assert!(
            warned
                .iter()
                .any(|w| w.contains("registry not saved: No space left")),
            "{warned:?}"
        );
    }
}
