//! Collects [`Observation`]s: `/status` over HTTP and `store.json` from disk.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::report::{FileState, LiveStatus, Observation};

/// Largest `/status` answer read (a status document is a few KiB).
const MAX_STATUS_BYTES: u64 = 4 * 1024 * 1024;
/// Largest `store.json` read into memory for the report.
const MAX_STORE_JSON_BYTES: u64 = 512 * 1024 * 1024;
/// First status port: node N serves on `STATUS_PORT_BASE + N`.
pub const STATUS_PORT_BASE: u16 = 7000;

/// A node to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `node-N`.
    pub node: String,
    /// `host:port` of its status endpoint.
    pub status_addr: String,
    /// Its data folder (holding `store.json`).
    pub dir: PathBuf,
}

/// The size of the cluster that runs (or last ran) from `data_dir`, as `./on.sh` wrote
/// it (`run/cluster-size`); `None` without that file.
pub fn cluster_size(data_dir: &Path) -> Option<u32> {
    read_number(&data_dir.join("run").join("cluster-size"))
}

/// How many brokers and proxies the cluster that runs (or last ran) has, as `./on.sh`
/// wrote it (`run/fabric-size`); `None` without that file.
pub fn fabric_size(data_dir: &Path) -> Option<u32> {
    read_number(&data_dir.join("run").join("fabric-size"))
}

fn read_number(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The nodes to look at: every `node-*` folder under `data_dir` — those up to the cluster
/// size `./on.sh` recorded, when it did (the folders of an earlier, larger cluster are
/// left out and listed in the second value, with why) — plus `node-1..=count` when
/// `count` is given, with status address `host:7000+N` unless `addresses` names them
/// (`node-2=10.0.0.2:7002` or, in order, `host:port`).
pub fn targets(
    data_dir: &Path,
    count: Option<u32>,
    host: &str,
    addresses: &[String],
) -> (Vec<Target>, Vec<String>) {
    let mut numbers: Vec<u32> = std::fs::read_dir(data_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("node-"))
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut skipped = Vec::new();
    if let Some(size) = cluster_size(data_dir) {
        numbers.sort_unstable();
        let (kept, left): (Vec<u32>, Vec<u32>) = numbers.into_iter().partition(|&n| n <= size);
        numbers = kept;
        if !left.is_empty() {
            let folders: Vec<String> = left
                .iter()
                .map(|n| data_dir.join(format!("node-{n}")).display().to_string())
                .collect();
            skipped.push(format!(
                "skipped {}: not part of the cluster that runs (size {size}, from {})",
                folders.join(", "),
                data_dir.join("run").join("cluster-size").display()
            ));
        }
    }
    if let Some(count) = count {
        numbers.extend(1..=count);
    }
    for (i, address) in addresses.iter().enumerate() {
        match address.split_once('=') {
            Some((name, _)) => numbers.extend(
                name.strip_prefix("node-")
                    .and_then(|n| n.parse::<u32>().ok()),
            ),
            None => numbers.push(u32::try_from(i + 1).unwrap_or(u32::MAX)),
        }
    }
    numbers.sort_unstable();
    numbers.dedup();
    let targets = numbers
        .into_iter()
        .map(|n| {
            let node = format!("node-{n}");
            let named = addresses
                .iter()
                .find_map(|a| a.strip_prefix(&format!("{node}=")).map(str::to_owned));
            let positional = addresses
                .get(usize::try_from(n).unwrap_or(usize::MAX).wrapping_sub(1))
                .filter(|a| !a.contains('='));
            let port = STATUS_PORT_BASE.saturating_add(u16::try_from(n).unwrap_or(u16::MAX));
            let status_addr = named
                .or_else(|| positional.cloned())
                .unwrap_or_else(|| format!("{host}:{port}"));
            Target {
                dir: data_dir.join(&node),
                node,
                status_addr,
            }
        })
        .collect();
    (targets, skipped)
}

/// Observes one node.
pub fn observe(target: &Target, timeout: Duration) -> Observation {
    let (live, live_error) = match http_get(&target.status_addr, "/status", timeout) {
        Ok(body) => match serde_json::from_slice::<LiveStatus>(&body) {
            Ok(status) => (Some(status), None),
            Err(e) => (None, Some(format!("/status is not valid JSON: {e}"))),
        },
        Err(e) => (
            None,
            Some(format!("{} unreachable: {e}", target.status_addr)),
        ),
    };
    let (file, file_error) = match read_store(&target.dir.join("store.json")) {
        Ok(file) => (file, None),
        Err(e) => (None, Some(e)),
    };
    Observation {
        node: target.node.clone(),
        live,
        live_error,
        file,
        file_error,
    }
}

/// Reads and verifies a `store.json`; `Ok(None)` when there is none yet.
pub fn read_store(path: &Path) -> Result<Option<FileState>, String> {
    let bytes = match std::fs::File::open(path) {
        Ok(file) => {
            let mut bytes = Vec::new();
            file.take(MAX_STORE_JSON_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let document: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let digest_ok = match store::Store::from_json(&bytes, store::StoreConfig::default()) {
        Ok(_) => true,
        Err(store::SnapshotError::DigestMismatch { .. }) => false,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let number = |field: &str| {
        document
            .get(field)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Some(FileState {
        applied_slot: number("applied_slot"),
        lamport: number("lamport"),
        digest: document
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        digest_ok,
        document,
    }))
}

/// A minimal HTTP/1.0 GET (our own status endpoints on loopback or a private network):
/// the body of a `200` answer.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let socket = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .take(MAX_STATUS_BYTES)
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP answer")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP answer {status_line:?}"));
    }
    Ok(response[split + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folders_of_an_earlier_larger_cluster_are_skipped_and_said_so() {
        let dir = std::env::temp_dir().join(format!("status-skip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for n in 1..=5 {
            std::fs::create_dir_all(dir.join(format!("node-{n}"))).unwrap();
        }
        // Without a record of what runs, every folder counts.
        let (all, skipped) = targets(&dir, None, "127.0.0.1", &[]);
        assert_eq!(all.len(), 5);
        assert!(skipped.is_empty());
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::write(dir.join("run").join("cluster-size"), "3\n").unwrap();
        let (three, skipped) = targets(&dir, None, "127.0.0.1", &[]);
        let names: Vec<&str> = three.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(names, ["node-1", "node-2", "node-3"]);
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].contains("node-4") && skipped[0].contains("node-5"),
            "{skipped:?}"
        );
        assert!(skipped[0].contains("size 3"), "{skipped:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
