//! Membership: growing and shrinking the ensemble, learners, removed nodes.

use guessgame_core::{ClientError, ClientReply, NodeId, RoleKind};

use crate::clients::ReqKind;
use crate::node::node_id;
use crate::rng::{env_u64, seeds};
use crate::sim::{same_log, Sim, ELECTION_TIMEOUT_MS, STEP_MS};

impl Sim {
    /// Sends a membership change to node `via` and runs until it is answered.
    pub fn reconfig_and_wait(
        &mut self,
        via: usize,
        kind: ReqKind,
        ms: u64,
    ) -> Result<ClientReply, ClientError> {
        let req = self.request(via, kind.clone());
        if !self.run_until(ms, |s| s.reply(req).is_some()) {
            self.fail(format!(
                "{kind:?} via {} not answered within {ms}ms",
                node_id(via)
            ));
        }
        self.reply(req).cloned().expect("answered")
    }

    fn voters_of(&self, i: usize) -> Vec<NodeId> {
        self.engine(i).membership().voter_ids().cloned().collect()
    }

    /// Clients keep writing and guessing through the leader for `ms`.
    fn traffic(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            if self.every(80) {
                self.random_request();
            }
            self.step();
        }
    }
}

/// 3 → 5 → 3 → 1 → 3 voters, one member at a time, with writes and guesses throughout and
/// the leader itself among the removed; every acknowledged write survives (checked by the
/// harness's invariants and final check).
#[test]
fn ensemble_grows_and_shrinks_one_member_at_a_time() {
    for seed in seeds(7_100, 6) {
        let mut sim = Sim::with_spares(
            "ensemble_grows_and_shrinks_one_member_at_a_time",
            seed,
            5,
            3,
        );
        sim.faults.drop = 0.02;
        sim.faults.max_delay = 10;
        sim.wait_for_leader(5_000);
        sim.traffic(500);
        let mut steps: Vec<ReqKind> = vec![ReqKind::Add(3), ReqKind::Add(4)];
        steps.extend([ReqKind::Remove(0), ReqKind::Remove(1)]);
        steps.extend([ReqKind::Remove(2), ReqKind::Remove(3)]);
        steps.extend([ReqKind::Add(0), ReqKind::Add(1)]);
        for kind in steps {
            let l = sim.wait_for_leader(5_000);
            match sim.reconfig_and_wait(l, kind.clone(), 15_000) {
                Ok(ClientReply::Reconfigured { .. }) => {}
                other => sim.fail(format!("{kind:?}: {other:?}")),
            }
            sim.traffic(300);
        }
        let l = sim.heal_and_check();
        let mut voters = sim.voters_of(l);
        voters.sort();
        assert_eq!(
            voters,
            vec![node_id(0), node_id(1), node_id(4)],
            "seed {seed}"
        );
        assert!(
            sim.stats.writes_ok > 0 && sim.stats.guesses_ok > 0,
            "seed {seed}: no traffic"
        );
    }
}

/// The leader removes itself: it answers once the new configuration committed, tells its
/// followers, and they elect a new leader without waiting for the election timeout.
#[test]
fn leader_that_removes_itself_hands_over_without_an_election_timeout() {
    for seed in seeds(7_200, 6) {
        let mut sim = Sim::new(
            "leader_that_removes_itself_hands_over_without_an_election_timeout",
            seed,
            3,
        );
        let l = sim.wait_for_leader(5_000);
        sim.run_for(300);
        match sim.reconfig_and_wait(l, ReqKind::Remove(l), 3_000) {
            Ok(ClientReply::Reconfigured { membership, .. })
                if !membership.contains(&node_id(l)) => {}
            other => sim.fail(format!("removing the leader: {other:?}")),
        }
        let removed_at = sim.now;
        if !sim.run_until(ELECTION_TIMEOUT_MS, |s| {
            s.established_leader().is_some_and(|n| n != l)
        }) {
            sim.fail("no new leader within an election timeout of the old one leaving");
        }
        let took = sim.now - removed_at;
        assert!(
            took < ELECTION_TIMEOUT_MS,
            "seed {seed}: handover took {took}ms"
        );
        assert!(
            sim.engine(l).is_removed(),
            "seed {seed}: the old leader does not know it left"
        );
        assert_ne!(sim.engine(l).role(), RoleKind::Leading);
        let l2 = sim.heal_and_check();
        assert_eq!(sim.voters_of(l2).len(), 2);
    }
}

/// A member removed while cut off never learns of it. Restarted with its stale log (in which
/// it is still a voter), it must not start an election that counts, nor disturb the leader.
#[test]
fn removed_node_with_a_stale_log_does_not_disturb_the_ensemble() {
    for seed in seeds(7_300, 6) {
        let mut sim = Sim::new(
            "removed_node_with_a_stale_log_does_not_disturb_the_ensemble",
            seed,
            5,
        );
        let l = sim.wait_for_leader(5_000);
        sim.run_for(300);
        let victim = (l + 1) % 5;
        let rest: Vec<usize> = (0..5).filter(|&i| i != victim).collect();
        sim.partition(&[vec![victim], rest]);
        match sim.reconfig_and_wait(l, ReqKind::Remove(victim), 3_000) {
            Ok(ClientReply::Reconfigured { .. }) => {}
            other => sim.fail(format!("remove: {other:?}")),
        }
        sim.traffic(2_000);
        // Its stale log says it is a voter of the old five.
        assert!(sim.engine(victim).membership().is_voter(&node_id(victim)));
        sim.crash(victim);
        sim.restart(victim);
        sim.heal();
        let epochs_before = sim.leaders.len();
        for _ in 0..(5 * ELECTION_TIMEOUT_MS / STEP_MS) {
            sim.step();
            let e = sim.engine(victim);
            if matches!(e.role(), RoleKind::Candidate | RoleKind::Leading) {
                sim.fail(format!("removed {} stood for election", node_id(victim)));
            }
        }
        assert_eq!(
            sim.leaders.len(),
            epochs_before,
            "seed {seed}: an election happened"
        );
        assert!(
            sim.engine(victim).is_removed(),
            "seed {seed}: it was never told"
        );
        sim.heal_and_check();
    }
}

/// A learner receives the log but does not count: with the voters cut off, the leader and a
/// learner are no quorum.
#[test]
fn learner_does_not_count_towards_a_quorum() {
    let seed = env_u64("SIM_SEED").unwrap_or(7_400);
    let mut sim = Sim::with_spares("learner_does_not_count_towards_a_quorum", seed, 4, 3);
    let l = sim.wait_for_leader(5_000);
    let voters: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    // node4 joins as a learner only: its promotion never happens while its acks are lost.
    sim.cut_link(3, l);
    let add = sim.request(l, ReqKind::Add(3));
    sim.run_until(1_000, |s| s.engine(l).membership().is_learner(&node_id(3)));
    assert!(sim.engine(l).membership().is_learner(&node_id(3)));
    sim.heal();
    sim.run_for(100);
    sim.partition(&[vec![l, 3], voters.clone()]);
    let w = sim.write(l, "lonely", 5);
    sim.run_for(ELECTION_TIMEOUT_MS / 2);
    if let Some(Ok(_)) = sim.reply(w) {
        sim.fail("a write committed with the leader and a learner only");
    }
    let _ = add;
    sim.heal_and_check();
}

/// Adding a voter whose link is down: it stays a learner (never promoted before holding the
/// log), and the request fails with a retryable refusal.
#[test]
fn learner_that_cannot_catch_up_is_not_promoted() {
    let seed = env_u64("SIM_SEED").unwrap_or(7_500);
    let mut sim = Sim::with_spares("learner_that_cannot_catch_up_is_not_promoted", seed, 4, 3);
    let l = sim.wait_for_leader(5_000);
    for k in 0..20 {
        sim.write(l, "w", k);
        sim.run_for(20);
    }
    sim.partition(&[vec![0, 1, 2], vec![3]]);
    match sim.reconfig_and_wait(l, ReqKind::Add(3), 20 * ELECTION_TIMEOUT_MS) {
        Err(ClientError::LeftAsLearner { id }) if id == node_id(3) => {}
        other => sim.fail(format!("adding a node that cannot catch up: {other:?}")),
    }
    assert!(sim.engine(l).membership().is_learner(&node_id(3)));
    // Once it can catch up, the same request promotes it.
    sim.heal();
    match sim.reconfig_and_wait(l, ReqKind::Add(3), 5_000) {
        Ok(ClientReply::Reconfigured { membership, .. }) if membership.is_voter(&node_id(3)) => {}
        other => sim.fail(format!("adding it again: {other:?}")),
    }
    let l = sim.heal_and_check();
    assert!(
        same_log(sim.engine(3), sim.engine(l)),
        "the promoted learner holds the leader's log"
    );
}

/// One change at a time; never zero voters; repeating a done change is not an error.
#[test]
fn membership_changes_are_one_at_a_time_and_keep_a_voter() {
    let seed = env_u64("SIM_SEED").unwrap_or(7_600);
    let mut sim = Sim::with_spares(
        "membership_changes_are_one_at_a_time_and_keep_a_voter",
        seed,
        3,
        1,
    );
    let l = sim.wait_for_leader(2_000);
    assert_eq!(l, 0);
    // node2 is down: its addition cannot finish, so a second change must wait.
    sim.crash(1);
    let first = sim.request(0, ReqKind::Add(1));
    sim.run_for(50);
    let second = sim.request(0, ReqKind::Add(2));
    match sim.reply(second) {
        Some(Err(ClientError::Reconfig {
            retryable: true, ..
        })) => {}
        other => sim.fail(format!("a second change while one is in flight: {other:?}")),
    }
    sim.restart(1);
    if !sim.run_until(5_000, |s| s.reply(first).is_some()) {
        sim.fail("the first change never finished");
    }
    assert!(matches!(
        sim.reply(first),
        Some(Ok(ClientReply::Reconfigured { .. }))
    ));
    // Repeating it: already done.
    match sim.reconfig_and_wait(0, ReqKind::Add(1), 1_000) {
        Ok(ClientReply::Reconfigured { membership, .. }) if membership.voters.len() == 2 => {}
        other => sim.fail(format!("repeating an add: {other:?}")),
    }
    // Remove node2, then the last voter cannot go.
    let l = sim.wait_for_leader(3_000);
    let other = 1 - l;
    match sim.reconfig_and_wait(l, ReqKind::Remove(other), 3_000) {
        Ok(_) => {}
        e => sim.fail(format!("remove: {e:?}")),
    }
    let l = sim.wait_for_leader(3_000);
    match sim.reconfig_and_wait(l, ReqKind::Remove(l), 1_000) {
        Err(ClientError::Reconfig {
            retryable: false, ..
        }) => {}
        e => sim.fail(format!("removing the last voter: {e:?}")),
    }
    sim.heal_and_check();
}
