//! Unit tests of `registry.rs`.

use super::*;

/// A stamp newer than every one before it.
fn next() -> Stamp {
    Stamp::next_of_process()
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn alive(registry: &Registry, now: Now) -> Vec<(String, Rank, bool)> {
    registry
        .members(now)
        .into_iter()
        .map(|m| (m.node, m.rank, m.alive))
        .collect()
}

#[test]
fn the_report_says_how_long_ago_each_member_spoke() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    registry.register("node-2", "", next(), t0).unwrap();
    registry
        .register("node-1", "", next(), t0.after(ms(1000)))
        .unwrap();
    let report = registry.report(t0.after(ms(5500)));
    let seen: Vec<_> = report
        .iter()
        .map(|m| (m.node.as_str(), m.rank, m.alive, m.last_heartbeat_ms_ago))
        .collect();
    assert_eq!(
        seen,
        [
            ("node-2", 1, false, Some(5500)),
            ("node-1", 2, true, Some(4500))
        ]
    );
    let restored = Registry::restore(&registry.persisted(), TIMEOUT).unwrap();
    let report = restored.report(t0.after(ms(6000)));
    assert!(
        report
            .iter()
            .all(|m| !m.alive && m.last_heartbeat_ms_ago.is_none())
    );
}

#[test]
fn a_new_name_is_unsaved_until_saved_and_can_be_taken_back() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    assert_eq!(registry.register("node-1", "", next(), t0), Ok(1));
    assert!(!registry.is_saved("node-1"));
    registry.mark_saved(&registry.persisted());
    assert!(registry.is_saved("node-1"));
    assert_eq!(registry.register("node-2", "", next(), t0), Ok(2));
    assert_eq!(registry.register("node-3", "", next(), t0), Ok(3));
    // The save of node-2 and node-3 failed: they are taken back, node-1 stays.
    let epoch = registry.epoch();
    assert_eq!(registry.forget_unsaved(), ["node-2", "node-3"]);
    assert!(registry.epoch() > epoch);
    assert_eq!(alive(&registry, t0), vec![("node-1".into(), 1, true)]);
    assert!(registry.forget_unsaved().is_empty());
    // Their ranks were never on disk, so never given: the next name takes rank 2.
    assert_eq!(registry.register("node-9", "", next(), t0), Ok(2));
    // A restored registry is all on disk.
    registry.mark_saved(&registry.persisted());
    let restored = Registry::restore(&registry.persisted(), TIMEOUT).unwrap();
    assert!(restored.is_saved("node-1") && restored.is_saved("node-9"));
    assert!(!restored.is_saved("node-2"));
}

#[test]
fn new_names_get_the_next_free_rank_and_keep_it() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    assert_eq!(registry.register("node-1", "", next(), t0), Ok(1));
    assert_eq!(registry.register("node-2", "", next(), t0), Ok(2));
    assert_eq!(registry.register("node-3", "", next(), t0), Ok(3));
    assert_eq!(
        registry.register("node-2", "", next(), t0.after(ms(10))),
        Ok(2)
    );
    assert_eq!(registry.register("node-9", "", next(), t0), Ok(4));
}

#[test]
fn an_expired_member_is_reported_as_gone_but_keeps_its_rank() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    registry.register("node-1", "", next(), t0).unwrap();
    registry.register("node-2", "", next(), t0).unwrap();
    let t1 = t0.after(ms(4000));
    assert!(registry.heartbeat("node-1", next(), t1).unwrap());
    assert_eq!(registry.expire(t1), 0, "nobody is silent for 5 s yet");
    let t2 = t0.after(ms(5001));
    // Reported gone as soon as the timeout passed, before `expire` ran.
    assert_eq!(
        alive(&registry, t2),
        vec![("node-1".into(), 1, true), ("node-2".into(), 2, false)]
    );
    let epoch = registry.epoch();
    assert_eq!(registry.expire(t2), 1);
    assert_eq!(registry.epoch(), epoch + 1);
    assert_eq!(registry.expire(t2), 0, "gone once, not again");
    // A newcomer does not get the gone member's rank.
    assert_eq!(registry.register("node-3", "", next(), t2), Ok(3));
    // The gone member comes back with its rank.
    assert_eq!(registry.register("node-2", "", next(), t2), Ok(2));
    assert!(alive(&registry, t2).iter().all(|(_, _, alive)| *alive));
}

#[test]
fn heartbeats_keep_members_alive_and_never_revive_them() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    assert!(
        !registry.heartbeat("stranger", next(), t0).unwrap(),
        "unknown"
    );
    registry.register("node-1", "", next(), t0).unwrap();
    let mut now = t0;
    for _ in 0..10 {
        now = now.after(ms(3000));
        assert!(registry.heartbeat("node-1", next(), now).unwrap());
        assert_eq!(registry.expire(now), 0);
    }
    let late = now.after(ms(6000));
    assert!(
        !registry.heartbeat("node-1", next(), late).unwrap(),
        "silent too long: register again"
    );
    registry.expire(late);
    assert!(!registry.heartbeat("node-1", next(), late).unwrap());
    assert_eq!(registry.register("node-1", "", next(), late), Ok(1));
    assert!(
        registry
            .heartbeat("node-1", next(), late.after(ms(1)))
            .unwrap()
    );
}

#[test]
fn members_report_heartbeat_times() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    registry
        .register("node-1", "127.0.0.1:7001", next(), t0)
        .unwrap();
    registry
        .heartbeat("node-1", next(), t0.after(ms(1500)))
        .unwrap();
    let members = registry.members(t0.after(ms(1600)));
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].last_heartbeat_unix_ms, t0.unix_ms + 1500);
    assert_eq!(members[0].status_addr, "127.0.0.1:7001");
    assert!(members[0].alive);
}

#[test]
fn the_registry_is_bounded() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    for i in 0..MAX_MEMBERS {
        assert_eq!(
            registry.register(&format!("n{i}"), "", next(), t0),
            Ok(i as Rank + 1)
        );
    }
    assert_eq!(
        registry.register("one-too-many", "", next(), t0),
        Err(RegistryError::Full)
    );
    // Gone members still hold their ranks.
    let late = t0.after(ms(60_000));
    registry.expire(late);
    assert_eq!(
        registry.register("one-too-many", "", next(), late),
        Err(RegistryError::Full)
    );
    assert_eq!(registry.register("n7", "", next(), late), Ok(8));
}

#[test]
fn bad_names_are_refused() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    for name in ["", "has space", "slash/y", &"x".repeat(65)] {
        assert!(
            matches!(
                registry.register(name, "", next(), t0),
                Err(RegistryError::Invalid(_))
            ),
            "{name:?}"
        );
    }
    assert!(
        registry
            .register("ok", &"a".repeat(257), next(), t0)
            .is_err()
    );
    assert!(registry.members(t0).is_empty());
}

#[test]
fn every_change_bumps_the_epoch_and_marks_dirty() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    assert!(!registry.take_dirty());
    registry.register("node-1", "a", next(), t0).unwrap();
    assert_eq!(registry.epoch(), 1);
    assert!(registry.take_dirty());
    assert!(!registry.take_dirty(), "cleared");
    // Registering again unchanged changes no epoch (its stamp is saved); heartbeats
    // change nothing.
    registry.register("node-1", "a", next(), t0).unwrap();
    assert_eq!(registry.epoch(), 1);
    assert!(
        registry.take_dirty(),
        "the new registration's stamp is to be saved"
    );
    registry.heartbeat("node-1", next(), t0).unwrap();
    assert_eq!(registry.epoch(), 1);
    assert!(!registry.take_dirty());
    // A new status address is a change.
    registry.register("node-1", "b", next(), t0).unwrap();
    assert_eq!(registry.epoch(), 2);
    assert!(registry.take_dirty());
    assert_eq!(registry.event(t0).epoch, 2);
}

#[test]
fn coming_back_before_expire_ran_is_still_a_change() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    registry.register("node-1", "", next(), t0).unwrap();
    let epoch = registry.epoch();
    // Silent past the timeout, registering again before anyone called `expire`.
    registry
        .register("node-1", "", next(), t0.after(ms(6000)))
        .unwrap();
    assert_eq!(registry.epoch(), epoch + 1);
}

#[test]
fn a_restored_registry_gives_old_names_their_ranks_and_moves_the_epoch_on() {
    let t0 = Now::system();
    let mut before = Registry::new(TIMEOUT);
    for name in ["node-1", "node-2", "node-3"] {
        before.register(name, "", next(), t0).unwrap();
    }
    before.expire(t0.after(ms(10_000)));
    let persisted = before.persisted();
    let t1 = Now::system();
    let mut after = Registry::restore(&persisted, TIMEOUT).unwrap();
    assert!(after.epoch() > before.epoch());
    // Nobody is alive until they register again; heartbeats are told to register.
    assert!(after.members(t1).iter().all(|m| !m.alive));
    assert!(!after.heartbeat("node-2", next(), t1).unwrap());
    assert_eq!(after.register("node-2", "", next(), t1), Ok(2));
    assert_eq!(after.register("node-4", "", next(), t1), Ok(4));
    assert_eq!(after.register("node-1", "", next(), t1), Ok(1));
}

#[test]
fn a_damaged_persisted_state_is_refused() {
    let member = |node: &str, rank| PersistedMember {
        node: node.into(),
        rank,
        status_addr: String::new(),
        stamp: Stamp::default(),
    };
    let state = |members| Persisted {
        format: PERSISTED_FORMAT,
        epoch: 1,
        members,
    };
    for bad in [
        state(vec![member("a", 1), member("b", 1)]),
        state(vec![member("a", 1), member("a", 2)]),
        state(vec![member("a", 0)]),
        state(vec![member("a", MAX_MEMBERS as Rank + 1)]),
        state(vec![member("bad name", 1)]),
        Persisted {
            format: 99,
            epoch: 1,
            members: vec![],
        },
    ] {
        assert!(Registry::restore(&bad, TIMEOUT).is_err(), "{bad:?}");
    }
    assert!(Registry::restore(&state(vec![member("a", 3), member("b", 1)]), TIMEOUT).is_ok());
}

#[test]
fn a_replayed_registration_or_heartbeat_changes_nothing() {
    let t0 = Now::system();
    let mut registry = Registry::new(TIMEOUT);
    let (first, second) = (next(), next());
    assert_eq!(registry.register("node-1", "a:1", first, t0), Ok(1));
    assert_eq!(registry.heartbeat("node-1", second, t0), Ok(true));
    // A recorded registration (with an old address) and heartbeat, replayed: refused.
    assert_eq!(
        registry.register("node-1", "old:1", first, t0),
        Err(RegistryError::Stale)
    );
    assert_eq!(
        registry.heartbeat("node-1", second, t0),
        Err(RegistryError::Stale)
    );
    assert_eq!(registry.members(t0)[0].status_addr, "a:1");
    // Once node-1 falls silent, replays do not keep it alive nor bring it back.
    let late = t0.after(TIMEOUT + ms(1));
    registry.expire(late);
    assert_eq!(
        registry.heartbeat("node-1", second, late),
        Err(RegistryError::Stale)
    );
    assert_eq!(
        registry.register("node-1", "a:1", first, late),
        Err(RegistryError::Stale)
    );
    assert!(!registry.members(late)[0].alive);
    // The node itself, with a newer stamp, comes back.
    assert_eq!(registry.register("node-1", "a:1", next(), late), Ok(1));
    assert!(registry.members(late)[0].alive);
}

#[test]
fn the_stale_refusal_says_so_in_the_words_nodes_recognise() {
    assert!(
        RegistryError::Stale
            .to_string()
            .starts_with(proto::fabric::STALE_REQUEST)
    );
}

#[test]
fn after_a_restart_a_recorded_registration_is_still_refused() {
    let t0 = Now::system();
    let mut before = Registry::new(TIMEOUT);
    let (old, taken) = (next(), next());
    assert_eq!(before.register("node-1", "a:1", old, t0), Ok(1));
    before.take_dirty();
    assert_eq!(before.register("node-1", "a:1", taken, t0), Ok(1));
    assert!(before.take_dirty(), "a registration's stamp is saved");
    let mut after = Registry::restore(&before.persisted(), TIMEOUT).unwrap();
    assert_eq!(
        after.register("node-1", "old:1", old, t0),
        Err(RegistryError::Stale)
    );
    // A recorded heartbeat does not bring it back either.
    assert_eq!(after.heartbeat("node-1", next(), t0), Ok(false));
    assert!(!after.members(t0)[0].alive);
    assert_eq!(after.register("node-1", "a:1", next(), t0), Ok(1));
}
