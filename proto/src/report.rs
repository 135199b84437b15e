//! What the fabric's processes — broker, proxy, reference — show on their status port
//! (`GET /status`, JSON).
//!
//! The documents live here, beside the wire types, so that the services that write them
//! and the tools that read them (`status`, the client) share one definition without
//! depending on each other's crates. They are plain data: no I/O, no clock; each service
//! fills its own from its loop. Field names are the JSON keys; units are last in the name
//! (`uptime_ms`).

use serde::{Deserialize, Serialize};

/// `/status` of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerReport {
    /// `--name`: which broker of a pair this is (`broker-1`).
    pub name: String,
    /// The ROUTER endpoint clients connect to, as bound.
    pub frontend: String,
    /// The ROUTER endpoint nodes connect to, as bound.
    pub backend: String,
    /// The nodes that get requests now, in the order of the round-robin ring.
    pub live_nodes: Vec<String>,
    /// Requests forwarded to a node since start.
    pub requests: u64,
    /// Replies returned to a client since start.
    pub replies: u64,
    /// Requests answered `unavailable` (no live node) since start.
    pub unavailable: u64,
    /// Malformed messages on either socket since start.
    pub malformed: u64,
    /// The cluster key and the backend frames that did not open under it.
    #[serde(default)]
    pub auth: AuthReport,
    /// Milliseconds since the broker started.
    pub uptime_ms: u64,
}

/// The cluster key as a process holds it, and what did not open under it: a process with
/// the wrong key shows it here (different `key_ids` from its peers', or refusals).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthReport {
    /// The ids of the keys held ([`crate::seal::Keyring::key_ids`]), the sealing one
    /// first: compare them across processes; never the keys.
    pub key_ids: Vec<String>,
    /// Frames refused since start (did not open under any key held).
    pub rejected: u64,
    /// The last refusal: what kind of frame, from whom, why.
    pub last_rejected: Option<String>,
}

/// `/status` of a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyReport {
    /// `--name`: which proxy of a pair this is (`proxy-1`).
    pub name: String,
    /// The XSUB endpoint publishers connect to, as bound.
    pub frontend: String,
    /// The XPUB endpoint subscribers connect to, as bound.
    pub backend: String,
    /// Publishers connected to the frontend now (TCP connections, counted from accept to
    /// disconnect; 0 with a transport backend that cannot count them).
    pub publishers: u64,
    /// Subscribers connected to the backend now (as `publishers`).
    pub subscribers: u64,
    /// Messages forwarded from publishers to subscribers since start.
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
    /// Subscription messages forwarded upstream since start.
    pub subscriptions: u64,
    /// Milliseconds since the proxy started.
    pub uptime_ms: u64,
}

/// `/status` of the reference service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceReport {
    /// The ROUTER endpoint nodes register at, as bound.
    pub endpoint: String,
    /// Every name that holds a rank, by rank, alive or gone.
    pub members: Vec<MemberReport>,
    /// The membership epoch (increases with every change of the member list or of
    /// anyone's liveness).
    pub epoch: u64,
    /// Whether the registry on disk holds what the reference serves: `false` while the
    /// registry file cannot be written (a full disk, say), during which new names are
    /// refused.
    pub registry_saved: bool,
    /// Why the last save failed, while the registry is not saved; `None` once a save
    /// succeeds again.
    pub last_save_error: Option<String>,
    /// The cluster key and the requests that did not open under it.
    #[serde(default)]
    pub auth: AuthReport,
    /// Milliseconds since the reference started.
    pub uptime_ms: u64,
}

/// One member in a [`ReferenceReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Node name.
    pub node: String,
    /// Its stable rank.
    pub rank: u32,
    /// Whether it heartbeated within the expiry timeout.
    pub alive: bool,
    /// Milliseconds since its last registration or heartbeat; `None` if it has not
    /// spoken since the reference started.
    pub last_heartbeat_ms_ago: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_through_json() {
        let broker = BrokerReport {
            name: "broker-1".into(),
            frontend: "tcp://127.0.0.1:5555".into(),
            backend: "tcp://127.0.0.1:5556".into(),
            live_nodes: vec!["node-1".into(), "node-2".into()],
            requests: 10,
            replies: 9,
            unavailable: 1,
            malformed: 0,
            auth: AuthReport {
                key_ids: vec!["0a1b2c3d".into()],
                rejected: 2,
                last_rejected: Some("control from 10.0.0.9: forged".into()),
            },
            uptime_ms: 1234,
        };
        let text = serde_json::to_string(&broker).unwrap();
        assert_eq!(serde_json::from_str::<BrokerReport>(&text).unwrap(), broker);
        let reference = ReferenceReport {
            endpoint: "tcp://127.0.0.1:5559".into(),
            members: vec![MemberReport {
                node: "node-1".into(),
                rank: 1,
                alive: true,
                last_heartbeat_ms_ago: Some(12),
            }],
            epoch: 3,
            registry_saved: false,
            last_save_error: Some("No space left on device".into()),
            auth: AuthReport::default(),
            uptime_ms: 5,
        };
        let text = serde_json::to_string(&reference).unwrap();
        assert!(text.contains(r#""registry_saved":false"#), "{text}");
        assert_eq!(
            serde_json::from_str::<ReferenceReport>(&text).unwrap(),
            reference
        );
    }

    #[test]
    fn a_report_from_before_authentication_still_reads() {
        let old = r#"{"endpoint":"e","members":[],"epoch":1,"registry_saved":true,
            "last_save_error":null,"uptime_ms":5}"#;
        let report: ReferenceReport = serde_json::from_str(old).unwrap();
        assert_eq!(report.auth, AuthReport::default());
    }
}
