//! Moves sent to a follower are forwarded to the leader inside the protocol.

use guessgame_core::{ClientError, ClientReply};

use crate::rng::seeds;
use crate::sim::Sim;

#[test]
fn a_move_through_a_follower_is_answered_once_that_follower_committed_it() {
    for seed in seeds(8_000, 10) {
        let mut sim = Sim::new(
            "a_move_through_a_follower_is_answered_once_that_follower_committed_it",
            seed,
            5,
        );
        let leader = sim.wait_for_leader(5_000);
        let f = (leader + 2) % 5;
        let w = sim.write(f, "kim", 50);
        sim.run_until(1_000, |s| s.reply(w).is_some());
        let Some(Ok(ClientReply::Written { zxid, round: 1, .. })) = sim.reply(w).cloned() else {
            sim.fail(format!("write through a follower: {:?}", sim.reply(w)));
        };
        // The reply came out of `f` only after it committed the entry (checked when the
        // reply was made, by the harness, as for every Ok reply); here: `f` serves it.
        if sim.engine(f).committed() < zxid || sim.engine(f).game().target != Some(50) {
            sim.fail("the follower answered before it committed its client's write");
        }
        let g = sim.guess((leader + 1) % 5, "lee", 49);
        sim.run_until(1_000, |s| s.reply(g).is_some());
        match sim.reply(g) {
            Some(Ok(ClientReply::Guessed { round: 1, .. })) => {}
            other => sim.fail(format!("guess through a follower: {other:?}")),
        }
        // A refusal is forwarded back as such, and writes nothing.
        let again = sim.guess((leader + 1) % 5, "lee", 10);
        sim.run_until(1_000, |s| s.reply(again).is_some());
        if !matches!(sim.reply(again), Some(Err(ClientError::Game(_)))) {
            sim.fail(format!("a second guess: {:?}", sim.reply(again)));
        }
        sim.run_until_converged(5_000);
        sim.check_final();
    }
}

#[test]
fn a_forwarded_move_whose_leader_dies_ends_unknown_never_unanswered() {
    for seed in seeds(8_100, 10) {
        let mut sim = Sim::new(
            "a_forwarded_move_whose_leader_dies_ends_unknown_never_unanswered",
            seed,
            5,
        );
        let leader = sim.wait_for_leader(5_000);
        let f = (leader + 1) % 5;
        // Lose every answer the leader gives: the move may commit, but `f` cannot know.
        sim.lose_kinds.push("forward_reply");
        let w = sim.write(f, "max", 70);
        sim.run_for(20);
        sim.crash(leader);
        sim.run_until(5_000, |s| s.reply(w).is_some());
        match sim.reply(w) {
            Some(Err(ClientError::OutcomeUnknown)) => {}
            other => sim.fail(format!("a move forwarded to a dead leader: {other:?}")),
        }
        sim.lose_kinds.clear();
        sim.restart(leader);
        sim.run_until_converged(5_000);
        sim.check_final();
    }
}
