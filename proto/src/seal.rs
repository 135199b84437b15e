//! Sealing the frames that cluster processes send each other: an AEAD per frame,
//! XChaCha20-Poly1305 under the cluster's key (docs/architecture.md, "Who may speak").
//!
//! Every body frame between cluster processes — node ↔ node through the proxies, node ↔
//! broker backend, node ↔ reference, the reference's publications — is sealed: a process
//! without the key can neither read one nor make one that opens. The proxies forward
//! sealed frames as they come and hold no key: the seal is end to end.
//!
//! ```text
//! ┌────────┬────────────┬───────────────┬──────────────────────────────┐
//! │ 0x53 S │ key id: 4  │ nonce: 24     │ ciphertext ‖ Poly1305 tag 16 │
//! └────────┴────────────┴───────────────┴──────────────────────────────┘
//! ```
//!
//! - **Associated data**: the other frames of the message that say where it goes or who
//!   sends it (the topic and the sender's name on the proxy, the client's routing frames
//!   through the broker) and a purpose label. A sealed body moved to another topic,
//!   another sender or another client does not open.
//! - **Nonces** are 192 random bits: no counter to keep across restarts, and no realistic
//!   chance of a repeat under one key.
//! - **Keys**: a [`Keyring`] seals with its first key and opens with any of its keys, so
//!   a key can be rotated with a window in which old and new are both accepted
//!   (docs/operations.md). A key is named by a 4-byte id (a hash of the key), which picks
//!   the key to open with and lets an operator compare keys without showing them.
//! - **Replays** of an authentic frame open: the protocols above tolerate duplicates (Paxos
//!   and the store's session table), which the end-to-end tests show.

use chacha20::cipher::consts::U10;
use rand::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

/// First byte of a sealed frame (a format version: a plain codec frame starts with 1).
pub const SEALED: u8 = 0x53;
/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a key id.
pub const KEY_ID_BYTES: usize = 4;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 24;
/// Bytes of the authentication tag.
pub const TAG_BYTES: usize = 16;
/// Bytes before the ciphertext: the marker, the key id and the nonce.
pub const HEADER_BYTES: usize = 1 + KEY_ID_BYTES + NONCE_BYTES;
/// What sealing adds to a frame.
pub const OVERHEAD_BYTES: usize = 1 + KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES;
/// Most keys a ring holds (the current one and those still accepted during a rotation).
pub const MAX_KEYS: usize = 4;

/// Why a frame does not open. Each is counted apart: `unknown_key` is what a process with
/// a different key sees; `forged` a bit flipped, a frame moved, or a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SealError {
    /// Not a sealed frame (too short, or not starting with [`SEALED`]).
    #[error("not a sealed frame")]
    Malformed,
    /// Sealed under a key this process does not hold.
    #[error("sealed under a key this process does not hold")]
    UnknownKey,
    /// The tag does not check: altered, moved, or forged.
    #[error("the authentication tag does not check")]
    Forged,
}

impl SealError {
    /// A short stable name for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SealError::Malformed => "malformed",
            SealError::UnknownKey => "unknown_key",
            SealError::Forged => "forged",
        }
    }
}

/// Why a key text does not give a keyring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key in the text.
    #[error("no key in it (one key per line: {} hex digits)", 2 * KEY_BYTES)]
    Empty,
    /// A line that is not a key.
    #[error("line {line} is not a key: {} hex digits expected", 2 * KEY_BYTES)]
    BadLine {
        /// The 1-based line number.
        line: usize,
    },
    /// More keys than a ring holds.
    #[error("{count} keys, at most {MAX_KEYS}")]
    TooMany {
        /// How many.
        count: usize,
    },
}

/// One key and its id.
#[derive(Clone)]
struct Key {
    id: [u8; KEY_ID_BYTES],
    key: [u8; KEY_BYTES],
}

impl Key {
    /// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) as its two steps: HChaCha20 of the
    /// key and the nonce's first 16 bytes gives a subkey, which runs the IETF
    /// ChaCha20-Poly1305 of RFC 8439 (ring's assembly) with the nonce's last 8 bytes. The
    /// same bytes as RustCrypto's `XChaCha20Poly1305` (a test compares them), at a
    /// quarter of its cost per frame of our sizes (docs/architecture.md, "Who may
    /// speak").
    fn cipher(&self, nonce: &[u8; NONCE_BYTES]) -> Option<(LessSafeKey, Nonce)> {
        let (head, tail) = nonce.split_at(16);
        let subkey = chacha20::hchacha::<U10>((&self.key).into(), head.into());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &subkey).ok()?;
        let mut inner = [0u8; 12];
        inner[4..].copy_from_slice(tail);
        Some((LessSafeKey::new(key), Nonce::assume_unique_for_key(inner)))
    }
}

/// The id of a key: the first bytes of a hash of it (shown to people, never the key).
pub fn key_id(key: &[u8; KEY_BYTES]) -> [u8; KEY_ID_BYTES] {
    let mut hasher = Sha256::new();
    hasher.update(b"paxos-zmq key id\0");
    hasher.update(key);
    let digest = hasher.finalize();
    let mut id = [0; KEY_ID_BYTES];
    id.copy_from_slice(&digest[..KEY_ID_BYTES]);
    id
}

/// The cluster's keys: the first seals, every one opens.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material: ids only.
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl Keyring {
    /// A ring of these keys; the first seals.
    pub fn new(keys: &[[u8; KEY_BYTES]]) -> Result<Keyring, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyError::TooMany { count: keys.len() });
        }
        let keys = keys
            .iter()
            .map(|key| Key {
                id: key_id(key),
                key: *key,
            })
            .collect();
        Ok(Keyring { keys })
    }

    /// Reads a key file's text: one key per line as 64 hex digits, the first the one
    /// that seals; empty lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(parse_hex_key(line).ok_or(KeyError::BadLine { line: n + 1 })?);
        }
        Keyring::new(&keys)
    }

    /// A new random key, as a key file line.
    pub fn generate_line() -> String {
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        hex(&key)
    }

    /// The ids of the keys, the sealing one first (hex), to show and compare.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| hex(&k.id)).collect()
    }

    /// Seals `plaintext` bound to the associated data `aad` (its parts, in order).
    #[cfg(not(paxos_insecure_unsealed))]
    pub fn seal(&self, aad: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(aad);
        let mut frame = Vec::with_capacity(OVERHEAD_BYTES + plaintext.len());
        frame.push(SEALED);
        frame.extend_from_slice(&key.id);
        frame.extend_from_slice(&nonce);
        frame.extend_from_slice(plaintext);
        // Sealing with a 32-byte key cannot fail for frames of our sizes (the cipher's
        // limit is 256 GiB); were it to, a zero tag only makes the frame fail to open
        // at the receiver — the plaintext never leaves: it is zeroed.
        let body = &mut frame[HEADER_BYTES..];
        let tag = key.cipher(&nonce).and_then(|(cipher, nonce)| {
            cipher
                .seal_in_place_separate_tag(nonce, Aad::from(&aad[..]), body)
                .ok()
        });
        match tag {
            Some(tag) => frame.extend_from_slice(tag.as_ref()),
            None => {
                frame[HEADER_BYTES..].fill(0);
                frame.extend_from_slice(&[0; TAG_BYTES]);
            }
        }
        frame
    }

    /// The cost benchmark's build only (`RUSTFLAGS="--cfg paxos_insecure_unsealed"`, a
    /// cfg no cargo feature can turn on): frames travel in clear with the same framing,
    /// and nothing is checked.
    #[cfg(paxos_insecure_unsealed)]
    pub fn seal(&self, _aad: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(OVERHEAD_BYTES + plaintext.len());
        frame.push(SEALED);
        frame.extend_from_slice(&self.keys[0].id);
        frame.extend_from_slice(&[0; NONCE_BYTES]);
        frame.extend_from_slice(plaintext);
        frame.extend_from_slice(&[0; TAG_BYTES]);
        frame
    }

    /// See the other `seal`: the payload, unchecked.
    #[cfg(paxos_insecure_unsealed)]
    pub fn open(&self, _aad: &[&[u8]], frame: &[u8]) -> Result<Vec<u8>, SealError> {
        if frame.len() < OVERHEAD_BYTES || frame[0] != SEALED {
            return Err(SealError::Malformed);
        }
        Ok(frame[1 + KEY_ID_BYTES + NONCE_BYTES..frame.len() - TAG_BYTES].to_vec())
    }

    /// Opens a frame sealed with [`Keyring::seal`] and the same associated data.
    #[cfg(not(paxos_insecure_unsealed))]
    pub fn open(&self, aad: &[&[u8]], frame: &[u8]) -> Result<Vec<u8>, SealError> {
        if frame.len() < OVERHEAD_BYTES || frame[0] != SEALED {
            return Err(SealError::Malformed);
        }
        let id = &frame[1..1 + KEY_ID_BYTES];
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&frame[1 + KEY_ID_BYTES..HEADER_BYTES]);
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(SealError::UnknownKey)?;
        let aad = associated_data(aad);
        let (cipher, nonce) = key.cipher(&nonce).ok_or(SealError::Forged)?;
        let mut body = frame[HEADER_BYTES..].to_vec();
        let len = cipher
            .open_in_place(nonce, Aad::from(&aad[..]), &mut body)
            .map_err(|_| SealError::Forged)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// The parts of the associated data, each with its length, so that no two lists of parts
/// give the same bytes.
fn associated_data(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for part in parts {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn parse_hex_key(text: &str) -> Option<[u8; KEY_BYTES]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * KEY_BYTES {
        return None;
    }
    let mut key = [0u8; KEY_BYTES];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        key[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(all(test, not(paxos_insecure_unsealed)))]
#[allow(clippy::unwrap_used)] // a test (clippy's test allowance sees only `cfg(test)`)
mod tests {
    use super::*;

    fn ring(lines: &str) -> Keyring {
        Keyring::parse(lines).unwrap()
    }

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_sealed_frame_opens_with_the_same_key_and_associated_data_only() {
        let ring = ring(A);
        let frame = ring.seal(&[b"paxos", b"paxos.accept.3", b"node-3"], b"envelope");
        assert_eq!(frame.len(), OVERHEAD_BYTES + 8);
        assert!(!frame.windows(8).any(|w| w == b"envelope"), "encrypted");
        let aad: [&[u8]; 3] = [b"paxos", b"paxos.accept.3", b"node-3"];
        assert_eq!(ring.open(&aad, &frame).unwrap(), b"envelope");
        // Moved to another topic or sender: refused.
        let moved: [&[u8]; 3] = [b"paxos", b"paxos.accept.3", b"node-9"];
        assert_eq!(ring.open(&moved, &frame), Err(SealError::Forged));
        // The length prefixes keep part boundaries: "ab"+"c" is not "a"+"bc".
        let frame = ring.seal(&[b"ab", b"c"], b"x");
        assert_eq!(ring.open(&[b"a", b"bc"], &frame), Err(SealError::Forged));
    }

    #[test]
    fn the_frames_are_xchacha20_poly1305_as_rustcrypto_makes_it() {
        // Our two-step construction (HChaCha20, then ring's RFC 8439 AEAD) must give the
        // bytes of the reference implementation, both ways.
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let keys = ring(A);
        let key = parse_hex_key(A).unwrap();
        let reference = XChaCha20Poly1305::new((&key).into());
        let parts: [&[u8]; 2] = [b"peer frame", b"paxos.accept.2"];
        for len in [0, 1, 63, 64, 65, 300, 4096] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let frame = keys.seal(&parts, &plaintext);
            let nonce = XNonce::from_slice(&frame[1 + KEY_ID_BYTES..HEADER_BYTES]);
            let aad = associated_data(&parts);
            let theirs = reference
                .encrypt(
                    nonce,
                    Payload {
                        msg: &plaintext,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(&frame[HEADER_BYTES..], &theirs[..], "{len} bytes");
            let mut made = frame[..HEADER_BYTES].to_vec();
            made.extend_from_slice(&theirs);
            assert_eq!(keys.open(&parts, &made).unwrap(), plaintext);
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let ring = ring(A);
        let frame = ring.seal(&[b"t"], b"some body");
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            assert!(ring.open(&[b"t"], &bad).is_err(), "byte {i}");
        }
        assert_eq!(ring.open(&[b"t"], &frame[..10]), Err(SealError::Malformed));
        assert_eq!(ring.open(&[b"t"], b"\x01plain"), Err(SealError::Malformed));
    }

    #[test]
    fn another_key_cannot_open_and_says_so() {
        let frame = ring(A).seal(&[b"t"], b"body");
        assert_eq!(ring(B).open(&[b"t"], &frame), Err(SealError::UnknownKey));
    }

    #[test]
    fn rotation_a_window_where_both_keys_open() {
        let old = ring(A);
        // Step 1: every process learns B but still seals with A.
        let both_old_first = ring(&format!("{A}\n{B}\n"));
        // Step 2: every process seals with B, still accepting A.
        let both_new_first = ring(&format!("# rotated\n{B}\n\n{A}\n"));
        let sealed_old = old.seal(&[b"t"], b"x");
        let sealed_new = both_new_first.seal(&[b"t"], b"y");
        assert_eq!(both_old_first.open(&[b"t"], &sealed_new).unwrap(), b"y");
        assert_eq!(both_new_first.open(&[b"t"], &sealed_old).unwrap(), b"x");
        assert_eq!(both_new_first.key_ids()[0], ring(B).key_ids()[0]);
        // Step 3: A is dropped; its frames no longer open.
        assert_eq!(
            ring(B).open(&[b"t"], &sealed_old),
            Err(SealError::UnknownKey)
        );
    }

    #[test]
    fn key_files_are_checked() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeyError::Empty);
        assert_eq!(
            Keyring::parse("# only a comment").unwrap_err(),
            KeyError::Empty
        );
        assert_eq!(
            Keyring::parse(&format!("{A}\nnot a key")).unwrap_err(),
            KeyError::BadLine { line: 2 }
        );
        assert_eq!(
            Keyring::parse(&A[..60]).unwrap_err(),
            KeyError::BadLine { line: 1 }
        );
        let five = [A; 5].join("\n");
        assert_eq!(
            Keyring::parse(&five).unwrap_err(),
            KeyError::TooMany { count: 5 }
        );
        let line = Keyring::generate_line();
        assert_eq!(line.len(), 64);
        assert_ne!(line, Keyring::generate_line());
        let ring = Keyring::parse(&line).unwrap();
        let debug = format!("{ring:?}");
        assert!(
            !debug.contains(&line[..8]),
            "no key material in logs: {debug}"
        );
    }
}
