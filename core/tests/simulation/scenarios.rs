//! Deterministic scenarios: elections, partitions, truncation, message faults, reads, and
//! the harness checking itself.

use guessgame_core::game::Game;
use guessgame_core::{
    ClientError, ClientReply, Entry, Event, Message, Op, Persistent, RoleKind, StorageOp, Zxid,
};

use crate::chaos::Chaos;
use crate::clients::{ReqKind, Request};
use crate::network::Faults;
use crate::node::node_id;
use crate::rng::{env_u64, seeds};
use crate::sim::{summary, Sim, ELECTION_TIMEOUT_MS, HEARTBEAT_MS};

/// Builds a log with, for each `(epoch, last_counter)`, the entries `(epoch, 0..=last)`.
/// Equal zxids get equal entries on every node (as one leader per epoch guarantees).
fn log_of(epochs: &[(u64, u64)]) -> Vec<Entry> {
    // The ops follow the game rules, as a leader would have proposed them: a target, two
    // guesses, the result, the next target, ... (derived from the prefix only).
    let mut game = Game::default();
    let mut log = Vec::new();
    for &(epoch, last) in epochs {
        for counter in 0..=last {
            let zxid = Zxid::new(epoch, counter);
            let value = ((epoch * 31 + counter * 7) % 101) as u32;
            let closed = game.last_result.as_ref().map(|r| r.round) == Some(game.round);
            let op = if counter == 0 {
                Op::NewLeader {
                    leader: format!("node{epoch}"),
                }
            } else if game.target.is_none() || closed {
                Op::Target {
                    round: game.round + 1,
                    value,
                    client: "seed".into(),
                    seq: 0,
                }
            } else if game.guesses.len() < 2 {
                Op::Guess {
                    round: game.round,
                    client: format!("g{}", game.guesses.len()),
                    value,
                    seq: 0,
                }
            } else {
                Op::Result(game.result_of_open_round().expect("open round"))
            };
            let entry = Entry { zxid, op };
            game.apply(&entry);
            log.push(entry);
        }
    }
    log
}

fn state(epochs: &[(u64, u64)], accepted: u64, committed: Zxid) -> Persistent {
    Persistent {
        accepted_epoch: accepted,
        current_epoch: accepted,
        log: log_of(epochs),
        committed,
        ..Persistent::default()
    }
}

#[test]
fn election_picks_highest_epoch_seq_and_id() {
    let c = Zxid::new(1, 5);
    let states = || {
        vec![
            state(&[(1, 5), (2, 3)], 2, c), // node1: last 2:3
            state(&[(1, 5), (2, 4)], 2, c), // node2: last 2:4
            state(&[(1, 5), (2, 4)], 2, c), // node3: last 2:4, higher id than node2
            state(&[(1, 7)], 1, c),         // node4: stale epoch-1 tail, longer counter
            state(&[(1, 5)], 1, c),         // node5: behind
        ]
    };
    // (nodes down from the start, expected winner): node3 (2:4, beats node2 by id); without
    // it node2; without both node1 (2:3 beats node4's longer but older 1:7).
    let cases: [(&[usize], usize); 3] = [(&[], 2), (&[2], 1), (&[1, 2], 0)];
    // Several seeds each: the outcome must not depend on timing jitter.
    let runs = cases
        .into_iter()
        .flat_map(|case| (0..5).map(move |k| (case, k)));
    for (seed, ((down, winner), _)) in runs.enumerate() {
        let mut sim = Sim::with_states(
            "election_picks_highest_epoch_seq_and_id",
            seed as u64,
            states(),
        );
        for &d in down {
            sim.crash(d);
        }
        let ok = sim.run_until(5_000, |s| s.established_leader().is_some());
        if !ok {
            sim.fail("no leader elected");
        }
        let first = sim.leaders.iter().next().map(|(e, id)| (*e, id.clone()));
        if first != Some((3, node_id(winner))) {
            sim.fail(format!(
                "with {:?} down, expected {} to win epoch 3 first, got {first:?}",
                down.iter().map(|&d| node_id(d)).collect::<Vec<_>>(),
                node_id(winner)
            ));
        }
        // Everyone syncs to the winner; node4's uncommitted 1:6..1:7 are truncated.
        for &d in down {
            sim.restart(d);
        }
        let l = sim.run_until_converged(10_000);
        assert_eq!(
            l, winner,
            "seed {seed}: leadership moved after the others joined"
        );
        let expected: Vec<Zxid> = sim.engine(winner).log().iter().map(|e| e.zxid).collect();
        assert!(!expected.contains(&Zxid::new(1, 6)));
        assert!(sim.nodes[3].truncations.contains(&Zxid::new(1, 5)));
        sim.check_final();
    }

    // Equal logs: the highest id wins, fresh or not.
    let equal = [Persistent::default(), state(&[(1, 3)], 1, Zxid::new(1, 3))];
    for (seed, st) in equal.iter().flat_map(|st| [st; 5]).cloned().enumerate() {
        let mut sim = Sim::with_states(
            "election_picks_highest_epoch_seq_and_id",
            10 + seed as u64,
            vec![st; 5],
        );
        let l = sim.wait_for_leader(5_000);
        assert_eq!(l, 4, "seed {}: node5 should win with equal logs", 10 + seed);
        assert_eq!(
            sim.leaders.len(),
            1,
            "one election, no contest: {:?}",
            sim.leaders
        );
        sim.check_final();
    }
}

#[test]
fn no_two_leaders_in_one_epoch_under_partitions() {
    for seed in seeds(1_000, 12) {
        let mut sim = Sim::new("no_two_leaders_in_one_epoch_under_partitions", seed, 5);
        sim.faults = Faults {
            drop: 0.02,
            max_delay: 20,
            ..Faults::none()
        };
        let chaos = Chaos {
            partition_every_ms: 600,
            partition_max_ms: 4_000,
            leader_bias: 0.75,
            crash_every_ms: 0,
            pause_every_ms: 0,
            freeze_every_ms: 0,
            client_every_ms: 60,
            reconfig_every_ms: 0,
        };
        sim.chaos_until(&chaos, 30_000);
        sim.heal_and_check();
        if sim.leaders.len() < 3 {
            sim.fail(format!(
                "partitions should have forced several elections: {:?}",
                sim.leaders
            ));
        }
    }
}

#[test]
fn deposed_leader_uncommitted_entry_is_truncated() {
    let seed = env_u64("SIM_SEED").unwrap_or(7);
    let mut sim = Sim::new("deposed_leader_uncommitted_entry_is_truncated", seed, 3);
    let old = sim.wait_for_leader(5_000);
    let w = sim.write(old, "alice", 10);
    sim.run_until(1_000, |s| s.reply(w).is_some());
    assert!(
        matches!(sim.reply(w), Some(Ok(_))),
        "first write: {:?}",
        sim.reply(w)
    );

    // Cut the leader off, then give it a write nobody else will see.
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    sim.partition(&[vec![old], others.clone()]);
    let lost = sim.write(old, "bob", 20);
    let lost_zxid = sim.engine(old).last_zxid();
    assert_eq!(lost_zxid.epoch, sim.engine(old).epoch().unwrap());
    assert!(sim.reply(lost).is_none(), "cannot commit alone");

    // The majority elects a new leader, which commits other entries.
    if !sim.run_until(5_000, |s| {
        others.iter().any(|&i| s.engine(i).is_established_leader())
    }) {
        sim.fail("majority elected no leader");
    }
    let new = *others
        .iter()
        .find(|&&i| sim.engine(i).is_established_leader())
        .unwrap();
    let mut acked = Vec::new();
    for v in [30, 40, 50] {
        let r = sim.write(new, "carol", v);
        if !sim.run_until(1_000, |s| s.reply(r).is_some()) {
            sim.fail("the new leader did not commit");
        }
        match sim.reply(r) {
            Some(Ok(ClientReply::Written { zxid, .. })) => acked.push(*zxid),
            other => sim.fail(format!("write to the new leader: {other:?}")),
        }
    }
    assert!(
        matches!(sim.reply(lost), Some(Err(ClientError::OutcomeUnknown))),
        "the deposed leader's write: {:?}",
        sim.reply(lost)
    );
    assert!(sim.engine(old).log().iter().any(|e| e.zxid == lost_zxid));

    sim.heal();
    let l = sim.run_until_converged(10_000);
    assert_eq!(l, new);
    let old_log = sim.engine(old).log();
    assert!(
        !old_log.iter().any(|e| e.zxid == lost_zxid),
        "uncommitted {lost_zxid} survived on the deposed leader"
    );
    assert!(
        sim.nodes[old].truncations.iter().any(|z| *z < lost_zxid),
        "no TRUNC persisted on the deposed leader: {:?}",
        sim.nodes[old].truncations
    );
    assert_eq!(
        old_log,
        sim.engine(new).log(),
        "logs differ after rejoining"
    );
    for z in acked {
        assert!(sim.committed_entry(z).is_some());
    }
    sim.check_final();
}

#[test]
fn commits_are_applied_in_zxid_order() {
    for seed in seeds(2_000, 4) {
        let mut sim = Sim::new("commits_are_applied_in_zxid_order", seed, 5);
        sim.faults = Faults {
            drop: 0.05,
            dup: 0.05,
            max_delay: 30,
            slow: 0.02,
            slow_max: 800,
            ..Faults::none()
        };
        let chaos = Chaos {
            partition_every_ms: 4_000,
            partition_max_ms: 2_000,
            leader_bias: 0.5,
            crash_every_ms: 4_000,
            pause_every_ms: 0,
            freeze_every_ms: 0,
            client_every_ms: 25,
            reconfig_every_ms: 0,
        };
        sim.chaos_until(&chaos, 15_000);
        sim.heal_and_check();
        // The harness checked every Apply against the global sequence and zxid order; make
        // sure there was plenty to check, on every node.
        for node in &sim.nodes {
            let e = node.engine.as_ref().unwrap();
            let zs: Vec<Zxid> = e.committed_entries().iter().map(|e| e.zxid).collect();
            assert!(zs.windows(2).all(|w| w[0] < w[1]), "seed {seed}");
            assert_eq!(node.applied, *e.game(), "seed {seed}");
        }
        if sim.committed.len() < 30 || sim.nodes.iter().all(|n| n.applies == 0) {
            sim.fail(format!("too little committed: {}", summary(&sim)));
        }
    }
}

#[test]
fn leader_cut_off_from_majority_steps_down() {
    for seed in seeds(3_000, 4) {
        let mut sim = Sim::new("leader_cut_off_from_majority_steps_down", seed, 5);
        let l = sim.wait_for_leader(5_000);
        sim.run_for(500);
        // Leader plus one follower in the minority.
        let buddy = (l + 1) % 5;
        let rest: Vec<usize> = (0..5).filter(|&i| i != l && i != buddy).collect();
        sim.partition(&[vec![l, buddy], rest]);
        let cut_at = sim.now;
        let w = sim.write(l, "dave", 77);
        if !sim.run_until(ELECTION_TIMEOUT_MS + 3 * HEARTBEAT_MS, |s| {
            s.engine(l).role() != RoleKind::Leading
        }) {
            sim.fail("the cut-off leader is still leading");
        }
        let took = sim.now - cut_at;
        assert!(
            took <= ELECTION_TIMEOUT_MS + 2 * HEARTBEAT_MS,
            "seed {seed}: stepping down took {took}ms"
        );
        match sim.reply(w) {
            Some(Err(ClientError::OutcomeUnknown)) => {}
            other => sim.fail(format!("pending write after stepping down: {other:?}")),
        }
        sim.heal_and_check();
    }
}

#[test]
fn survives_message_drop_duplication_and_reorder() {
    for seed in seeds(4_000, 6) {
        let mut sim = Sim::new("survives_message_drop_duplication_and_reorder", seed, 5);
        sim.faults = Faults {
            drop: 0.2,
            dup: 0.2,
            min_delay: 1,
            max_delay: 60,
            slow: 0.05,
            slow_max: 1_500,
        };
        let chaos = Chaos {
            partition_every_ms: 0,
            partition_max_ms: 1_000,
            leader_bias: 0.5,
            crash_every_ms: 0,
            pause_every_ms: 0,
            freeze_every_ms: 0,
            client_every_ms: 30,
            reconfig_every_ms: 0,
        };
        sim.chaos_until(&chaos, 20_000);
        let acked = sim.stats.writes_ok + sim.stats.guesses_ok;
        if acked < 20 {
            sim.fail(format!(
                "too little progress under message faults: {}",
                summary(&sim)
            ));
        }
        sim.heal_and_check();
    }
}

#[test]
fn single_node_ensemble_elects_itself_and_commits() {
    let seed = env_u64("SIM_SEED").unwrap_or(5);
    let mut sim = Sim::new("single_node_ensemble_elects_itself_and_commits", seed, 1);
    let l = sim.wait_for_leader(1_000);
    assert_eq!(l, 0);
    let w = sim.write(0, "solo", 60);
    let Some(Ok(ClientReply::Written { zxid, round: 1, .. })) = sim.reply(w).cloned() else {
        sim.fail(format!("write not committed at once: {:?}", sim.reply(w)));
    };
    let g = sim.guess(0, "solo", 61);
    assert!(matches!(
        sim.reply(g),
        Some(Ok(ClientReply::Guessed { round: 1, .. }))
    ));
    let r = sim.read(0);
    match sim.reply(r) {
        Some(Ok(ClientReply::ReadIndex { index })) if *index > zxid => {}
        other => sim.fail(format!("read: {other:?}")),
    }
    assert_eq!(sim.engine(0).game().guesses, vec![("solo".to_string(), 61)]);

    // Restart: same log, a new epoch.
    sim.crash(0);
    sim.restart(0);
    let l = sim.wait_for_leader(1_000);
    assert_eq!(l, 0);
    assert_eq!(sim.engine(0).current_epoch(), 2);
    assert_eq!(sim.engine(0).game().target, Some(60));
    let w2 = sim.write(0, "solo", 70);
    assert!(matches!(
        sim.reply(w2),
        Some(Ok(ClientReply::Written {
            round: 2,
            closed: Some(_),
            ..
        }))
    ));
    sim.check_final();
}

#[test]
fn linearizable_read_on_partitioned_old_leader_does_not_succeed() {
    for seed in seeds(5_000, 4) {
        let mut sim = Sim::new(
            "linearizable_read_on_partitioned_old_leader_does_not_succeed",
            seed,
            5,
        );
        let old = sim.wait_for_leader(5_000);
        let w = sim.write(old, "erin", 5);
        sim.run_until(1_000, |s| s.reply(w).is_some());
        assert!(matches!(sim.reply(w), Some(Ok(_))));

        // The old leader's clock stops (a long GC pause, a stopped VM): it keeps thinking it
        // leads, and still answers requests, while the majority moves on.
        sim.set_frozen(old, true);
        let buddy = (old + 1) % 5;
        let majority: Vec<usize> = (0..5).filter(|&i| i != old && i != buddy).collect();
        sim.partition(&[vec![old, buddy], majority.clone()]);
        if !sim.run_until(6_000, |s| {
            majority
                .iter()
                .any(|&i| s.engine(i).is_established_leader())
        }) {
            sim.fail("majority elected no leader");
        }
        let new = *majority
            .iter()
            .find(|&&i| sim.engine(i).is_established_leader())
            .unwrap();
        let w2 = sim.write(new, "erin", 6);
        sim.run_until(1_000, |s| s.reply(w2).is_some());
        let Some(Ok(ClientReply::Written { zxid: newer, .. })) = sim.reply(w2).cloned() else {
            sim.fail(format!("write to the new leader: {:?}", sim.reply(w2)));
        };
        assert_eq!(
            sim.engine(old).role(),
            RoleKind::Leading,
            "old leader still thinks it leads"
        );
        assert!(sim.engine(old).is_established_leader());

        let r = sim.read(old);
        sim.run_for(3_000);
        match sim.reply(r) {
            None | Some(Err(_)) => {}
            Some(Ok(reply)) => sim.fail(format!(
                "old leader answered a read with {reply:?} after {newer} committed elsewhere"
            )),
        }
        // Its clock resumes: it notices it lost its quorum and gives up the read.
        sim.set_frozen(old, false);
        sim.run_for(ELECTION_TIMEOUT_MS + 2 * HEARTBEAT_MS);
        assert_ne!(sim.engine(old).role(), RoleKind::Leading);
        assert!(
            matches!(sim.reply(r), Some(Err(ClientError::NotLeader { .. }))),
            "seed {seed}: {:?}",
            sim.reply(r)
        );
        sim.heal_and_check();
    }
}

/// The checker itself: injected violations must be caught, with the seed in the message.
/// (The caught panics are still printed by the panic hook: those FAILED lines are expected.)
#[test]
fn harness_detects_injected_violations() {
    fn fails_with(what: &str, f: impl FnOnce() + std::panic::UnwindSafe) {
        let err = std::panic::catch_unwind(f).expect_err(what);
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(what), "expected {what:?}, got: {msg}");
        assert!(msg.contains("SIM_SEED="), "no replay hint in: {msg}");
    }
    let name = "harness_detects_injected_violations";

    // Two nodes that committed different entries under the same zxid.
    fails_with("was committed there before", || {
        let a = state(&[(1, 3)], 1, Zxid::new(1, 3));
        let mut b = a.clone();
        b.log[2].op = Op::Guess {
            round: 1,
            client: "x".into(),
            value: 1,
            seq: 0,
        };
        Sim::with_states(name, 1, vec![a, b]);
    });

    // A committed history that breaks the game rules (a second guess by one client).
    fails_with("breaks the game", || {
        let mut st = state(&[(1, 4)], 1, Zxid::new(1, 4)); // target, g0, g1, result
        st.log[3].op = st.log[2].op.clone();
        Sim::with_states(name, 6, vec![st]);
    });

    // The engine's own alarm: a Sync that would truncate committed entries.
    fails_with("logged an error", || {
        let mut sim = Sim::with_states(
            name,
            2,
            vec![
                state(&[(1, 5)], 1, Zxid::new(1, 5)),
                state(&[(1, 2), (2, 0)], 2, Zxid::new(1, 2)),
            ],
        );
        let msg = Message::Sync {
            epoch: 2,
            truncate_to: Zxid::new(1, 2),
            entries: log_of(&[(2, 0)]),
            commit: Zxid::new(1, 2),
        };
        sim.deliver(
            0,
            Event::Message {
                from: node_id(1),
                msg,
            },
        );
    });

    // A second leader claiming an epoch.
    fails_with("two leaders in epoch", || {
        let mut sim = Sim::new(name, 3, 3);
        let l = sim.wait_for_leader(5_000);
        let epoch = sim.engine(l).epoch().unwrap();
        let other = (l + 1) % 3;
        let marker = Entry {
            zxid: Zxid::new(epoch, 0),
            op: Op::NewLeader {
                leader: node_id(other),
            },
        };
        sim.check_node(other, &[StorageOp::Append(vec![marker])], &[]);
    });

    // A read answered with an index older than an acknowledged write.
    fails_with("stale linearizable read", || {
        let mut sim = Sim::new(name, 4, 1);
        sim.wait_for_leader(1_000);
        sim.write(0, "c1", 1);
        let req = sim.requests.len() as u64 + 1;
        sim.requests.push(Request {
            node: 0,
            incarnation: sim.nodes[0].incarnation,
            kind: ReqKind::Read,
            floor: sim.floor,
            reply: None,
            retry: false,
        });
        sim.on_reply(0, req, Ok(ClientReply::ReadIndex { index: Zxid::ZERO }));
    });

    // An acknowledged write that is not committed.
    fails_with("which is not committed", || {
        let mut sim = Sim::new(name, 5, 1);
        sim.wait_for_leader(1_000);
        let req = sim.requests.len() as u64 + 1;
        sim.requests.push(Request {
            node: 0,
            incarnation: sim.nodes[0].incarnation,
            kind: ReqKind::Write {
                client: "c1".into(),
                value: 9,
                seq: 0,
            },
            floor: sim.floor,
            reply: None,
            retry: false,
        });
        sim.on_reply(
            0,
            req,
            Ok(ClientReply::Written {
                zxid: Zxid::new(1, 7),
                round: 1,
                target: 9,
                closed: None,
            }),
        );
    });
}
