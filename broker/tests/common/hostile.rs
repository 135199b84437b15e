//! Hostile input for the integration tests of the broker, the proxy and the reference
//! service (the other two include this file with `#[path]`, so that all three are attacked
//! the same way): random and mutated frames, a ZMTP frame header claiming 1 TiB, and the
//! memory measure that shows the attack left memory flat.

#![allow(dead_code)] // each test file uses a different part of this module

/// Resident memory of this process, from /proc/self/status.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Seed of the random frames: `FUZZ_SEED` to replay a failure, else from the clock.
pub(crate) fn fuzz_seed() -> u64 {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("FUZZ_SEED={seed}");
    seed
}

/// One hostile multipart message: a random number of frames, each random bytes, empty,
/// oversized for a routing frame, a valid body, or a mutated valid body.
pub(crate) fn hostile_message(rng: &mut impl rand::Rng, valid: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let count = match rng.random_range(0..20) {
        0 => rng.random_range(7..=32),
        1..=8 => 1,
        n => n % 6 + 1,
    };
    (0..count).map(|_| hostile_frame(rng, valid)).collect()
}

fn hostile_frame(rng: &mut impl rand::Rng, valid: &[Vec<u8>]) -> Vec<u8> {
    let pick = |rng: &mut dyn rand::RngCore| {
        let index = rand::Rng::random_range(rng, 0..valid.len());
        valid[index].clone()
    };
    match rng.random_range(0..10) {
        0 => Vec::new(),
        1 => random_bytes(rng, 0..=64),
        2 => random_bytes(rng, 256..=4096),
        3 => {
            // Our version byte, then garbage: passes the broker's light checks.
            let mut frame = random_bytes(rng, 0..=128);
            frame.insert(0, proto::codec::PROTOCOL_VERSION);
            frame
        }
        4 => pick(rng),
        _ => {
            let mut frame = pick(rng);
            for _ in 0..rng.random_range(1..=4) {
                mutate(rng, &mut frame);
            }
            frame
        }
    }
}

fn random_bytes(rng: &mut impl rand::Rng, len: std::ops::RangeInclusive<usize>) -> Vec<u8> {
    let mut bytes = vec![0u8; rng.random_range(len)];
    rng.fill(&mut bytes[..]);
    bytes
}

fn mutate(rng: &mut impl rand::Rng, frame: &mut Vec<u8>) {
    if frame.is_empty() {
        frame.push(rng.random());
        return;
    }
    let at = rng.random_range(0..frame.len());
    match rng.random_range(0..6) {
        0 => frame[at] ^= 1 << rng.random_range(0..8),
        1 => frame[at] = rng.random(),
        2 => frame.truncate(at),
        3 => frame.insert(at, rng.random()),
        4 => {
            let tail = frame[at..].to_vec();
            frame.extend(tail);
        }
        _ => {
            // A MessagePack length prefix that claims far more than the frame holds.
            frame.insert(at, 0xdb);
            frame.splice(at + 1..at + 1, [0xff, 0xff, 0xff, 0x7f]);
        }
    }
}

/// A ZMTP 3.0 greeting (NULL mechanism) and READY command of a DEALER, then the 9-byte
/// header of a frame that claims to be 1 TiB long (as in transport/tests/hostile.rs).
pub(crate) fn one_tebibyte_frame_header() -> Vec<u8> {
    let mut bytes = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 0];
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    bytes.extend(mechanism);
    bytes.push(0); // as-server
    bytes.extend([0u8; 31]); // filler
    let mut ready = vec![5];
    ready.extend(b"READY");
    ready.push(11);
    ready.extend(b"Socket-Type");
    ready.extend(6u32.to_be_bytes());
    ready.extend(b"DEALER");
    bytes.push(0x04); // command, short
    bytes.push(u8::try_from(ready.len()).unwrap());
    bytes.extend(ready);
    bytes.push(0x02); // message frame, long size, last
    bytes.extend((1u64 << 40).to_be_bytes());
    bytes
}

/// `tcp://127.0.0.1:1234` → `127.0.0.1:1234`.
pub(crate) fn tcp_address(endpoint: &str) -> String {
    endpoint.trim_start_matches("tcp://").to_owned()
}
