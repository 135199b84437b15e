//! Whether every process holds the cluster's key: each node, broker and reference shows
//! the ids of the keys it holds in `/status` (`auth.key_ids`, the sealing key first).
//! A process that cannot open what another seals is cut off from it, and says so only
//! in its refusal counters; this puts it under the table as a warning, naming both.
//! (During a rotation the rings differ, but every ring holds every sealing key: no
//! warning.)

use std::collections::BTreeMap;

/// A warning for every sealing key some process that reported its ring does not hold:
/// `rings` are `(process, key ids)`, the sealing key first. Processes that reported no
/// ring (down, or from before authentication) are left out.
pub fn warnings(rings: &[(String, Vec<String>)]) -> Vec<String> {
    // Sealing key id -> the processes that seal with it.
    let mut sealers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, ring) in rings {
        if let Some(first) = ring.first() {
            sealers.entry(first).or_default().push(name);
        }
    }
    let mut warnings = Vec::new();
    for (key, names) in &sealers {
        let deaf: Vec<&str> = rings
            .iter()
            .filter(|(_, ring)| !ring.is_empty() && !ring.iter().any(|k| k == key))
            .map(|(name, _)| name.as_str())
            .collect();
        if !deaf.is_empty() {
            warnings.push(format!(
                "cluster keys differ: {} seal with key {key}, which {} do not hold \
                 (compare auth.key_ids in /status; docs/operations.md, \"The cluster key\")",
                names.join(", "),
                deaf.join(", ")
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(name: &str, ids: &[&str]) -> (String, Vec<String>) {
        (
            name.to_owned(),
            ids.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    #[test]
    fn one_key_everywhere_is_quiet() {
        let rings = [ring("node-1", &["aa"]), ring("broker-1", &["aa"])];
        assert!(warnings(&rings).is_empty());
    }

    #[test]
    fn a_rotation_window_is_quiet() {
        // Mid-rotation: some seal with the new key, every ring opens both.
        let rings = [
            ring("node-1", &["bb", "aa"]),
            ring("node-2", &["aa", "bb"]),
            ring("reference", &["aa", "bb"]),
        ];
        assert!(warnings(&rings).is_empty());
    }

    #[test]
    fn a_process_with_another_key_is_named() {
        let rings = [
            ring("node-1", &["aa"]),
            ring("node-2", &["cc"]),
            ring("broker-1", &["aa"]),
            ring("proxy-1", &[]),
        ];
        let warnings = warnings(&rings);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "cluster keys differ: node-1, broker-1 seal with key aa, which node-2 do not hold"
            ),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("node-2 seal with key cc, which node-1, broker-1 do not hold")
        );
    }
}
