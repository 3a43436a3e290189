//! Failover without the election timeout: a stopping leader hands over (`Shutdown` →
//! `StepDown`), and followers whose connection from the leader closed (`PeerLost`) elect at
//! once. Neither may disturb a healthy leader.

use guessgame_core::ClientReply;

use crate::rng::seeds;
use crate::sim::{Sim, ELECTION_TIMEOUT_MS, HEARTBEAT_MS};

/// Runs until a leader other than `old` is established; the virtual ms that took.
fn new_leader_after(sim: &mut Sim, old: usize, within: u64) -> (usize, u64) {
    let t0 = sim.now;
    let ok = sim.run_until(within, |s| s.established_leader().is_some_and(|l| l != old));
    if !ok {
        sim.fail(format!("no new leader within {within}ms"));
    }
    (sim.established_leader().expect("checked"), sim.now - t0)
}

fn write_commits(sim: &mut Sim, at: usize, client: &str, value: u32) {
    let w = sim.write(at, client, value);
    sim.run_until(1_000, |s| s.reply(w).is_some());
    if !matches!(sim.reply(w), Some(Ok(ClientReply::Written { .. }))) {
        sim.fail(format!("write through {at}: {:?}", sim.reply(w)));
    }
}

#[test]
fn a_stopping_leader_hands_over_within_a_heartbeat() {
    for seed in seeds(7_000, 20) {
        let mut sim = Sim::new("a_stopping_leader_hands_over_within_a_heartbeat", seed, 5);
        let old = sim.wait_for_leader(5_000);
        write_commits(&mut sim, old, "ann", 40);
        // A write in flight when the stop begins is answered (it commits), not dropped.
        let w = sim.write(old, "bob", 41);
        sim.stop(old, 10_000);
        let (new, took) = new_leader_after(&mut sim, old, ELECTION_TIMEOUT_MS);
        if took >= HEARTBEAT_MS {
            sim.fail(format!(
                "hand-over took {took}ms (the gathering window alone is {}ms)",
                2 * HEARTBEAT_MS
            ));
        }
        match sim.reply(w) {
            Some(Ok(ClientReply::Written { .. })) => {}
            other => sim.fail(format!("write in flight during the hand-over: {other:?}")),
        }
        // Requests to the stopping node are refused, not taken.
        let refused = sim.write(old, "cat", 42);
        if !matches!(
            sim.reply(refused),
            Some(Err(guessgame_core::ClientError::NotLeader { .. }))
        ) {
            sim.fail(format!("a stopping node answered {:?}", sim.reply(refused)));
        }
        write_commits(&mut sim, new, "dan", 43);
        sim.crash(old);
        sim.restart(old);
        sim.run_until_converged(5_000);
        sim.check_final();
    }
}

#[test]
fn followers_elect_within_a_heartbeat_when_the_dead_leaders_connections_close() {
    for seed in seeds(7_100, 20) {
        let mut sim = Sim::new(
            "followers_elect_within_a_heartbeat_when_the_dead_leaders_connections_close",
            seed,
            5,
        );
        sim.lost_notice = 1.0;
        let old = sim.wait_for_leader(5_000);
        write_commits(&mut sim, old, "eve", 30);
        sim.crash(old);
        let (new, took) = new_leader_after(&mut sim, old, 3 * ELECTION_TIMEOUT_MS);
        if took >= HEARTBEAT_MS {
            sim.fail(format!("election after the leader died took {took}ms"));
        }
        write_commits(&mut sim, new, "fay", 31);
        sim.restart(old);
        sim.run_until_converged(5_000);
        sim.check_final();
    }
}

#[test]
fn a_follower_that_misses_the_connection_loss_only_brings_back_the_gathering_window() {
    for seed in seeds(7_150, 20) {
        let mut sim = Sim::new(
            "a_follower_that_misses_the_connection_loss_only_brings_back_the_gathering_window",
            seed,
            5,
        );
        sim.lost_notice = 1.0;
        let old = sim.wait_for_leader(5_000);
        write_commits(&mut sim, old, "ivy", 30);
        let deaf = (old + 1) % 5;
        sim.crash(old);
        // `deaf` never hears of it: it keeps following until the election timeout.
        sim.lost.retain(|(_, to, _)| *to != deaf);
        let (new, took) = new_leader_after(&mut sim, old, 3 * ELECTION_TIMEOUT_MS);
        if took >= ELECTION_TIMEOUT_MS / 2 {
            sim.fail(format!("election after the leader died took {took}ms"));
        }
        write_commits(&mut sim, new, "jon", 31);
        sim.restart(old);
        sim.run_until_converged(5_000);
        sim.check_final();
    }
}

#[test]
fn a_connection_loss_from_a_live_leader_changes_no_leadership() {
    for seed in seeds(7_200, 20) {
        let mut sim = Sim::new(
            "a_connection_loss_from_a_live_leader_changes_no_leadership",
            seed,
            5,
        );
        let leader = sim.wait_for_leader(5_000);
        let epochs = sim.leaders.len();
        // One follower, then two (a minority) see the leader's connection reset.
        let f1 = (leader + 1) % 5;
        let f2 = (leader + 2) % 5;
        sim.peer_lost(f1, leader);
        sim.run_for(500);
        sim.peer_lost(f1, leader);
        sim.peer_lost(f2, leader);
        sim.run_for(2_000);
        if sim.leaders.len() != epochs || sim.established_leader() != Some(leader) {
            sim.fail(format!(
                "a spurious connection loss changed the leadership: {:?}",
                sim.leaders
            ));
        }
        write_commits(&mut sim, leader, "gus", 20);
        sim.run_until_converged(5_000);
        sim.check_final();
    }
}

#[test]
fn a_stopping_follower_changes_no_leadership() {
    for seed in seeds(7_300, 10) {
        let mut sim = Sim::new("a_stopping_follower_changes_no_leadership", seed, 5);
        let leader = sim.wait_for_leader(5_000);
        let epochs = sim.leaders.len();
        let f = (leader + 3) % 5;
        sim.stop(f, 300);
        sim.run_for(2_000);
        if sim.leaders.len() != epochs || sim.established_leader() != Some(leader) {
            sim.fail(format!(
                "stopping a follower changed the leadership: {:?}",
                sim.leaders
            ));
        }
        write_commits(&mut sim, leader, "hal", 10);
        sim.restart(f);
        sim.run_until_converged(5_000);
        sim.check_final();
    }
}
