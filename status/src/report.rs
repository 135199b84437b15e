//! The consistency report as a plain data structure: observations in, rows and a verdict
//! out. No I/O here, so every verdict is unit-tested.
//!
//! The rule (DESIGN.md, invariant 6): equal applied slots mean equal digests. Every
//! `(slot, digest)` pair a node shows — live from `/status`, and from its `store.json` when
//! the file's digest matches its content — is grouped by slot; two different digests at
//! one slot, or a `store.json` whose content does not match its own digest, make the
//! cluster INCONSISTENT. Nodes at lower slots are not wrong, only behind: they are listed
//! with how far.

use std::collections::BTreeMap;

use serde::Serialize;

/// What `/status` of a live node says (the fields the report uses).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct LiveStatus {
    /// Rank from the reference service.
    pub rank: u32,
    /// `leader`, `follower`, `candidate`...
    pub role: String,
    /// Last applied slot.
    pub applied_slot: u64,
    /// Digest of the state at `applied_slot`.
    pub digest: String,
    /// Lamport clock.
    pub lamport: u64,
    /// Berkeley clock offset.
    pub clock_offset_ms: f64,
    /// Peers as this node sees them.
    pub peers: Vec<PeerView>,
    /// Earlier `(slot, digest)` pairs the node still remembers (snapshot points).
    pub checkpoints: Vec<Checkpoint>,
    /// The keys it holds and what it refused (empty from a node before authentication).
    pub auth: proto::report::AuthReport,
}

/// A peer as seen by a node.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct PeerView {
    /// Peer name, if known.
    pub node: String,
    /// Peer rank.
    pub rank: u32,
    /// Milliseconds since its last heartbeat; `None`: never heard.
    pub last_heartbeat_ms_ago: Option<u64>,
}

/// The digest of the state at one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Checkpoint {
    /// Applied slot.
    pub slot: u64,
    /// Digest at that slot.
    pub digest: String,
}

/// What a node's `store.json` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct FileState {
    /// Applied slot of the snapshot.
    pub applied_slot: u64,
    /// Lamport clock of the snapshot.
    pub lamport: u64,
    /// The digest the file claims.
    pub digest: String,
    /// Whether the content hashes to that digest.
    pub digest_ok: bool,
    /// The whole document, to name the first difference.
    pub document: serde_json::Value,
}

/// Everything known about one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Node name, `node-N`.
    pub node: String,
    /// `/status`, when the node answered.
    pub live: Option<LiveStatus>,
    /// Why `/status` did not answer.
    pub live_error: Option<String>,
    /// `store.json`, when it could be read.
    pub file: Option<FileState>,
    /// Why `store.json` could not be read.
    pub file_error: Option<String>,
}

/// The cluster verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every pair of replicas at one applied slot has one digest.
    Consistent,
    /// Some replicas differ (see [`Report::differences`]).
    Inconsistent,
    /// Nothing could be read: no node answered and no `store.json` exists.
    Unreachable,
}

impl Verdict {
    /// The process exit code of `status.sh`.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Consistent => 0,
            Verdict::Inconsistent => 1,
            Verdict::Unreachable => 2,
        }
    }
}

/// One row of the table (and of `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Node name.
    pub node: String,
    /// Rank, when known.
    pub rank: Option<u32>,
    /// `leader`, `follower`, ... or `down`.
    pub role: String,
    /// Whether `/status` answered.
    pub alive: bool,
    /// Milliseconds since the leader last heard it.
    pub last_heartbeat_ms_ago: Option<u64>,
    /// Applied slot (live, else from the file).
    pub applied_slot: Option<u64>,
    /// Slots behind the most advanced replica.
    pub behind: Option<u64>,
    /// Digest at `applied_slot`.
    pub digest: Option<String>,
    /// Lamport clock.
    pub lamport: Option<u64>,
    /// Berkeley clock offset.
    pub clock_offset_ms: Option<f64>,
    /// The ids of the keys it holds, the sealing key first (when it answered and
    /// reports them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_ids: Option<Vec<String>>,
    /// Problems found with this node.
    pub errors: Vec<String>,
}

/// Two replicas that disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// The slot where they disagree (`None`: a file that contradicts its own digest).
    pub slot: Option<u64>,
    /// The nodes involved.
    pub nodes: Vec<String>,
    /// The first key (or section) where their states differ, when both files allow it.
    pub first_key: Option<String>,
    /// A sentence for people.
    pub explanation: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// One row per node, by name.
    pub nodes: Vec<Row>,
    /// Why it is inconsistent (empty when consistent).
    pub differences: Vec<Difference>,
    /// Replicas behind the most advanced one: `(node, slots behind)`.
    pub lagging: Vec<(String, u64)>,
    /// The reference, brokers and proxies (not part of the verdict).
    pub fabric: Vec<crate::fabric::FabricRow>,
    /// A degraded fabric, and other things worth a look that do not change the verdict.
    pub warnings: Vec<String>,
    /// Data folders left out, and why (an earlier, larger cluster's, say).
    pub skipped: Vec<String>,
}

impl Report {
    /// Builds the report from what was observed.
    pub fn build(mut observations: Vec<Observation>) -> Report {
        observations.sort_by_key(|o| natural_key(&o.node));
        if observations
            .iter()
            .all(|o| o.live.is_none() && o.file.is_none())
        {
            let nodes = observations.iter().map(|o| down_row(o, None)).collect();
            return Report {
                verdict: Verdict::Unreachable,
                nodes,
                differences: Vec::new(),
                lagging: Vec::new(),
                fabric: Vec::new(),
                warnings: Vec::new(),
                skipped: Vec::new(),
            };
        }
        let differences = find_differences(&observations);
        let top = observations
            .iter()
            .filter_map(|o| o.live.as_ref().map(|l| l.applied_slot))
            .max()
            .or_else(|| {
                observations
                    .iter()
                    .filter_map(|o| o.file.as_ref().map(|f| f.applied_slot))
                    .max()
            });
        let heard = leader_view(&observations);
        let nodes: Vec<Row> = observations.iter().map(|o| row(o, top, &heard)).collect();
        let lagging = nodes
            .iter()
            .filter_map(|r| r.behind.filter(|b| *b > 0).map(|b| (r.node.clone(), b)))
            .collect();
        let verdict = if differences.is_empty() {
            Verdict::Consistent
        } else {
            Verdict::Inconsistent
        };
        Report {
            verdict,
            nodes,
            differences,
            lagging,
            fabric: Vec::new(),
            warnings: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Adds the fabric's rows and their warnings (the verdict does not change).
    pub fn with_fabric(mut self, fabric: Vec<crate::fabric::FabricRow>) -> Report {
        self.warnings.extend(crate::fabric::warnings(&fabric));
        // Every node's and fabric process's key ring, to find one that cannot open
        // what another seals.
        let rings: Vec<(String, Vec<String>)> = self
            .nodes
            .iter()
            .filter_map(|n| Some((n.node.clone(), n.key_ids.clone()?)))
            .chain(
                fabric
                    .iter()
                    .filter_map(|f| Some((f.name.clone(), f.key_ids.clone()?))),
            )
            .collect();
        self.warnings.extend(crate::keys::warnings(&rings));
        self.fabric = fabric;
        self
    }

    /// Notes the data folders that were left out.
    pub fn with_skipped(mut self, skipped: Vec<String>) -> Report {
        self.skipped = skipped;
        self
    }
}

/// `node-10` after `node-9`.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let number = digits.parse().unwrap_or(u64::MAX);
    (
        name.trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned(),
        number,
    )
}

/// Milliseconds since the leader heard each peer, by name and by rank.
fn leader_view(observations: &[Observation]) -> BTreeMap<String, u64> {
    let mut heard = BTreeMap::new();
    let leader = observations
        .iter()
        .filter_map(|o| o.live.as_ref())
        .find(|l| l.role == "leader");
    if let Some(leader) = leader {
        for peer in &leader.peers {
            if let Some(ago) = peer.last_heartbeat_ms_ago {
                if !peer.node.is_empty() {
                    heard.insert(peer.node.clone(), ago);
                }
                heard.insert(format!("#{}", peer.rank), ago);
            }
        }
    }
    heard
}

fn down_row(observation: &Observation, top: Option<u64>) -> Row {
    let file = observation.file.as_ref();
    let mut errors = Vec::new();
    if let Some(error) = &observation.live_error {
        errors.push(error.clone());
    }
    if let Some(error) = &observation.file_error {
        errors.push(error.clone());
    }
    if let Some(file) = file
        && !file.digest_ok
    {
        errors.push("store.json does not match its digest (edited or corrupt)".into());
    }
    Row {
        node: observation.node.clone(),
        rank: None,
        role: "down".into(),
        alive: false,
        last_heartbeat_ms_ago: None,
        applied_slot: file.map(|f| f.applied_slot),
        behind: match (top, file) {
            (Some(top), Some(file)) => Some(top.saturating_sub(file.applied_slot)),
            _ => None,
        },
        digest: file.map(|f| f.digest.clone()),
        lamport: file.map(|f| f.lamport),
        clock_offset_ms: None,
        key_ids: None,
        errors,
    }
}

fn row(observation: &Observation, top: Option<u64>, heard: &BTreeMap<String, u64>) -> Row {
    let Some(live) = &observation.live else {
        return down_row(observation, top);
    };
    let mut errors = Vec::new();
    if let Some(error) = &observation.file_error {
        errors.push(error.clone());
    }
    if let Some(file) = &observation.file
        && !file.digest_ok
    {
        errors.push("store.json does not match its digest (edited or corrupt)".into());
    }
    let last_heartbeat_ms_ago = if live.role == "leader" {
        Some(0)
    } else {
        heard
            .get(&observation.node)
            .or_else(|| heard.get(&format!("#{}", live.rank)))
            .copied()
    };
    Row {
        node: observation.node.clone(),
        rank: Some(live.rank),
        role: if live.role.is_empty() {
            "unknown".into()
        } else {
            live.role.clone()
        },
        alive: true,
        last_heartbeat_ms_ago,
        applied_slot: Some(live.applied_slot),
        behind: top.map(|top| top.saturating_sub(live.applied_slot)),
        digest: Some(live.digest.clone()),
        lamport: Some(live.lamport),
        clock_offset_ms: Some(live.clock_offset_ms),
        key_ids: (!live.auth.key_ids.is_empty()).then(|| live.auth.key_ids.clone()),
        errors,
    }
}

fn find_differences(observations: &[Observation]) -> Vec<Difference> {
    let mut differences = Vec::new();
    // slot -> digest -> nodes that showed it
    let mut by_slot: BTreeMap<u64, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut add = |slot: u64, digest: &str, node: &str| {
        if digest.is_empty() {
            return;
        }
        let nodes = by_slot
            .entry(slot)
            .or_default()
            .entry(digest.to_owned())
            .or_default();
        if !nodes.iter().any(|n| n == node) {
            nodes.push(node.to_owned());
        }
    };
    for observation in observations {
        if let Some(live) = &observation.live {
            add(live.applied_slot, &live.digest, &observation.node);
            for checkpoint in &live.checkpoints {
                add(checkpoint.slot, &checkpoint.digest, &observation.node);
            }
        }
        if let Some(file) = &observation.file {
            if file.digest_ok {
                add(file.applied_slot, &file.digest, &observation.node);
            } else {
                let others: Vec<&Observation> = observations
                    .iter()
                    .filter(|o| o.node != observation.node)
                    .filter(|o| {
                        o.file
                            .as_ref()
                            .is_some_and(|f| f.digest_ok && f.applied_slot == file.applied_slot)
                    })
                    .collect();
                let first_key = others
                    .first()
                    .and_then(|o| o.file.as_ref())
                    .and_then(|other| first_difference(&file.document, &other.document));
                let mut nodes = vec![observation.node.clone()];
                nodes.extend(others.iter().map(|o| o.node.clone()));
                differences.push(Difference {
                    slot: Some(file.applied_slot),
                    explanation: format!(
                        "{}'s store.json does not match its own digest {} (edited or corrupt){}",
                        observation.node,
                        file.digest,
                        first_key
                            .as_ref()
                            .map(|k| format!("; first difference at {k}"))
                            .unwrap_or_default()
                    ),
                    nodes,
                    first_key,
                });
            }
        }
    }
    for (slot, digests) in &by_slot {
        if digests.len() < 2 {
            continue;
        }
        let nodes: Vec<String> = digests.values().flatten().cloned().collect();
        let files: Vec<&FileState> = nodes
            .iter()
            .filter_map(|n| observations.iter().find(|o| &o.node == n))
            .filter_map(|o| o.file.as_ref())
            .filter(|f| f.applied_slot == *slot)
            .collect();
        let first_key = files
            .windows(2)
            .find_map(|w| first_difference(&w[0].document, &w[1].document));
        let groups: Vec<String> = digests
            .iter()
            .map(|(digest, nodes)| format!("{} on {}", short(digest), nodes.join(", ")))
            .collect();
        differences.push(Difference {
            slot: Some(*slot),
            explanation: format!("at slot {slot} the digests differ: {}", groups.join(" vs ")),
            nodes,
            first_key,
        });
    }
    differences
}

/// The first 12 hex digits of a digest, for tables.
pub fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// The sections of `store.json` that hold replicated state, in the order they are compared.
const SECTIONS: [&str; 6] = [
    "keys", "users", "channels", "inboxes", "sessions", "lamport",
];

/// The first place where two `store.json` documents differ, as `section/key`.
pub fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    for section in SECTIONS {
        let (left, right) = (a.get(section), b.get(section));
        if left == right {
            continue;
        }
        match (left, right) {
            (Some(Value::Object(l)), Some(Value::Object(r))) => {
                let mut names: Vec<&String> = l.keys().chain(r.keys()).collect();
                names.sort();
                names.dedup();
                if let Some(name) = names.into_iter().find(|name| l.get(*name) != r.get(*name)) {
                    return Some(format!("{section}/{name}"));
                }
            }
            (Some(Value::Array(l)), Some(Value::Array(r))) => {
                let index = l
                    .iter()
                    .zip(r)
                    .position(|(x, y)| x != y)
                    .unwrap_or(l.len().min(r.len()));
                let item = l.get(index).or_else(|| r.get(index));
                return Some(match item {
                    Some(Value::String(name)) => format!("{section}/{name}"),
                    _ => format!("{section}[{index}]"),
                });
            }
            _ => return Some(section.to_owned()),
        }
    }
    None
}

#[cfg(test)]
mod tests;
