//! Regressions: deterministic scenarios for the engine bugs the campaign found (see the
//! engine's comments).

use guessgame_core::{RoleKind, Zxid};

use crate::node::node_id;
use crate::rng::{env_u64, seeds};
use crate::sim::{Sim, HEARTBEAT_MS};

/// Bug 1: a follower kept its `synced` flag when the *same* leader came back in a new epoch,
/// so it never received the new epoch's entries (and committed its own log against them).
#[test]
fn same_leader_in_a_new_epoch_resyncs_its_followers() {
    for seed in seeds(6_000, 3) {
        let mut sim = Sim::new("same_leader_in_a_new_epoch_resyncs_its_followers", seed, 5);
        let l = sim.wait_for_leader(5_000);
        for v in [1, 2, 3] {
            sim.write(l, "frank", v);
        }
        sim.run_for(500);
        let epoch = sim.engine(l).epoch().unwrap();
        // The leader keeps one follower; everyone else is alone, so nobody else can win.
        let buddy = (l + 1) % 5;
        let mut groups = vec![vec![l, buddy]];
        groups.extend((0..5).filter(|&i| i != l && i != buddy).map(|i| vec![i]));
        sim.partition(&groups);
        if !sim.run_until(3_000, |s| s.engine(l).role() != RoleKind::Leading) {
            sim.fail("the leader kept leading without a quorum");
        }
        sim.heal();
        if !sim.run_until(3_000, |s| s.leaders.contains_key(&(epoch + 1))) {
            sim.fail("no new epoch");
        }
        if sim.leaders[&(epoch + 1)] != node_id(l) {
            sim.fail("scenario needs the same leader re-elected");
        }
        // The buddy never noticed the leader stepping down: still following it in `epoch`.
        let b = sim.engine(buddy);
        assert_eq!(
            (b.role(), b.leader(), b.accepted_epoch()),
            (RoleKind::Following, Some(&node_id(l)), epoch),
            "seed {seed}: scenario"
        );
        sim.run_until_converged(5_000);
        assert!(
            sim.engine(buddy)
                .log()
                .iter()
                .any(|e| e.zxid == Zxid::new(epoch + 1, 0)),
            "seed {seed}: the buddy never synced with the new epoch"
        );
        sim.heal_and_check();
    }
}

/// Bug 2: a follower that misses proposals (and an entry that no follower got) stayed behind
/// until the next write; in an idle ensemble, forever.
#[test]
fn follower_that_missed_proposals_catches_up_while_idle() {
    let seed = env_u64("SIM_SEED").unwrap_or(7_000);
    let name = "follower_that_missed_proposals_catches_up_while_idle";

    // One follower misses a burst of proposals (and heartbeats), shorter than a timeout.
    let mut sim = Sim::new(name, seed, 5);
    let l = sim.wait_for_leader(5_000);
    let f = (l + 1) % 5;
    sim.cut_link(l, f);
    let reqs: Vec<u64> = (0..5).map(|v| sim.write(l, "gina", v)).collect();
    sim.run_for(300);
    assert!(reqs.iter().all(|&r| matches!(sim.reply(r), Some(Ok(_)))));
    sim.heal();
    // No more writes: it must catch up within a few heartbeats anyway.
    if !sim.run_until(5 * HEARTBEAT_MS, |s| {
        s.engine(f).committed_entries() == s.engine(l).committed_entries()
    }) {
        sim.fail(format!(
            "{} stayed at {} while the leader committed {}",
            node_id(f),
            sim.engine(f).last_zxid(),
            sim.engine(l).committed()
        ));
    }
    sim.heal_and_check();

    // Every proposal is lost: the entry only commits through catch-up.
    let mut sim = Sim::new(name, seed + 1, 3);
    let l = sim.wait_for_leader(5_000);
    sim.lose_kinds = vec!["proposal"];
    let w = sim.write(l, "gina", 42);
    if !sim.run_until(5 * HEARTBEAT_MS, |s| s.reply(w).is_some()) {
        sim.fail("a write whose proposals were all lost never committed");
    }
    assert!(matches!(sim.reply(w), Some(Ok(_))), "{:?}", sim.reply(w));
    sim.heal_and_check();
}

/// Bug 3: every follower held the entry but all `Ack`s were lost; the leader ignored the
/// `last_zxid` their heartbeat answers carry, so the entry never committed.
#[test]
fn entry_commits_although_every_ack_is_lost() {
    let seed = env_u64("SIM_SEED").unwrap_or(8_000);
    let mut sim = Sim::new("entry_commits_although_every_ack_is_lost", seed, 3);
    let l = sim.wait_for_leader(5_000);
    sim.lose_kinds = vec!["ack"];
    let w = sim.write(l, "hank", 7);
    if !sim.run_until(5 * HEARTBEAT_MS, |s| s.reply(w).is_some()) {
        sim.fail("a write whose acks were all lost never committed");
    }
    assert!(matches!(sim.reply(w), Some(Ok(_))), "{:?}", sim.reply(w));
    sim.heal_and_check();
}

/// Bug 4: a node that had only *accepted* a candidate's epoch advertised it as the live
/// leader; a looking node then sent that candidate a `FollowerInfo`, which counted as a
/// vote although it never promised the epoch. It could then promise the same epoch to
/// another candidate: two leaders in one epoch.
#[test]
fn looking_node_never_votes_for_a_candidate_whose_epoch_it_did_not_accept() {
    let seed = env_u64("SIM_SEED").unwrap_or(9_000);
    let mut sim = Sim::new(
        "looking_node_never_votes_for_a_candidate_whose_epoch_it_did_not_accept",
        seed,
        5,
    );
    let (b, w, d, y, x) = (0, 1, 2, 3, 4); // node1 .. node5; x ranks highest
    let only = |sim: &mut Sim, links: &[(usize, usize)]| {
        sim.heal();
        for from in 0..5 {
            for to in 0..5 {
                if from != to && !links.contains(&(from, to)) {
                    sim.cut_link(from, to);
                }
            }
        }
    };
    // x hears b and w, stands; b accepts; x's own messages never reach w. w hears from b
    // only (b answers its hellos).
    only(&mut sim, &[(x, b), (b, x), (w, x), (b, w), (w, b)]);
    sim.run_for(1_500);
    assert!(
        sim.leaders.is_empty(),
        "x won with one promise and a vote w never cast: {:?}",
        sim.leaders
    );
    // Now y can reach w and d, which have promised nothing (w never did): y's epoch may be
    // x's. With the bug, both led it.
    only(
        &mut sim,
        &[
            (x, b),
            (b, x),
            (w, x),
            (b, w),
            (w, b),
            (y, w),
            (w, y),
            (y, d),
            (d, y),
            (w, d),
            (d, w),
        ],
    );
    sim.run_for(3_000);
    sim.heal_and_check();
}
