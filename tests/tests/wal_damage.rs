//! A corrupt record in the middle of a node's WAL: the node refuses to start, and its
//! error names the file and the byte offset; with `--rebuild-from-peers` it moves its
//! state aside and catches up from the others. A torn final record: the node cuts it off
//! with a warning and starts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, Load, lost_writes, runtime};

/// The node's WAL segment holding the most records.
fn fullest_segment(cluster: &Cluster, id: u32) -> (PathBuf, Vec<u64>) {
    let wal = cluster.node_dir(id).join("wal");
    fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| {
            let offsets = node::wal::record_offsets(&fs::read(&path).unwrap());
            (path, offsets)
        })
        .max_by_key(|(_, offsets)| offsets.len())
        .unwrap()
}

#[test]
fn corrupt_middle_refuses_torn_tail_starts() {
    let rt = runtime();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 8, "wal");
    load.wait_more_acks(300, Duration::from_secs(60));
    let victim = ids.iter().copied().find(|&id| id != leader).unwrap();
    let name = format!("node-{victim}");
    cluster.kill(&name);

    // A torn tail: the last record cut in its middle, as a crash during a write leaves it.
    let (segment, offsets) = fullest_segment(&cluster, victim);
    assert!(offsets.len() > 20, "only {} records", offsets.len());
    // (The file may be longer: zeros preallocated after the records.)
    let len = node::wal::records_end(&fs::read(&segment).unwrap());
    let last = *offsets.last().unwrap();
    let cut = last + (len - last) / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    cluster.start_node(victim, &[]);
    e2e::wait_for(
        "the node with a torn tail to serve",
        Duration::from_secs(30),
        || cluster.status(victim).map(|_| ()),
    );
    let log = cluster.log(&name);
    assert!(
        log.contains("torn record"),
        "no warning about the torn tail:\n{log}"
    );
    load.wait_more_acks(100, Duration::from_secs(60));
    cluster.kill(&name);

    // A flipped byte in a record in the middle of a segment: refuse to start.
    let (segment, offsets) = fullest_segment(&cluster, victim);
    let middle = offsets[offsets.len() / 2];
    let mut data = fs::read(&segment).unwrap();
    data[middle as usize + 12] ^= 0x5a;
    fs::write(&segment, &data).unwrap();
    cluster.start_node(victim, &[]);
    let status = cluster.wait_exit(&name, Duration::from_secs(30));
    assert!(!status.success());
    let log = cluster.log(&name);
    let file = segment.display().to_string();
    assert!(
        log.contains(&file) && log.contains(&format!("offset {middle}")),
        "the error does not name {file} at offset {middle}:\n{log}"
    );
    assert!(log.contains("corrupt WAL record"), "{log}");

    // The operator's way out: rebuild from the peers.
    let rebuild = Instant::now();
    cluster.start_node(victim, &["--rebuild-from-peers"]);
    load.wait_more_acks(200, Duration::from_secs(60));
    let acked = load.stop(&rt);
    let lost = rt.block_on(lost_writes(
        &client,
        &acked,
        Instant::now() + Duration::from_secs(120),
    ));
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    let (slot, _) = cluster.wait_converged(&ids, 1);
    println!(
        "wal-damage: rebuilt node converged at slot {slot} after {:?}",
        rebuild.elapsed()
    );
    let aside = fs::read_dir(cluster.node_dir(victim))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("corrupt-"));
    assert!(aside, "the damaged state was not kept aside");
}
