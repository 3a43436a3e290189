//! The replicated state machine: a number-guessing game.
//!
//! Pure and deterministic: every node applies the same committed entries in the same order
//! and ends in the same state. The leader also uses it speculatively (over its uncommitted
//! tail) to validate requests and to decide a round's winner before proposing.

use crate::types::{Entry, Op, RoundResult, Zxid};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Smallest and largest value a target or a guess may take.
pub const MIN_VALUE: u32 = 0;
pub const MAX_VALUE: u32 = 100;

/// Why a game request is refused. Nothing is written when one of these is returned.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum GameError {
    #[error("value {0} is out of range: it must be an integer between 0 and 100")]
    OutOfRange(i64),
    #[error("client id must be 1-64 characters of letters, digits, '-', '_' or '.'")]
    BadClientId,
    #[error("no round is open: a client must `write` a target first")]
    NoOpenRound,
    #[error("client {client} already guessed in round {round}")]
    DuplicateGuess { client: String, round: u64 },
}

/// Checks a value a user typed or sent.
pub fn check_value(value: i64) -> Result<u32, GameError> {
    if (MIN_VALUE as i64..=MAX_VALUE as i64).contains(&value) {
        Ok(value as u32)
    } else {
        Err(GameError::OutOfRange(value))
    }
}

pub fn check_client_id(client: &str) -> Result<(), GameError> {
    let ok = !client.is_empty()
        && client.len() <= 64
        && client
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(GameError::BadClientId)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Game {
    /// Current round; 0 until the first `write`.
    pub round: u64,
    pub target: Option<u32>,
    /// Guesses of the open round in commit order.
    pub guesses: Vec<(String, u32)>,
    pub last_result: Option<RoundResult>,
    /// Last zxid applied.
    pub applied: Zxid,
}

impl Game {
    pub fn apply(&mut self, entry: &Entry) {
        match &entry.op {
            Op::NewLeader { .. } | Op::Config(_) => {}
            Op::Target { round, value, .. } => {
                self.round = *round;
                self.target = Some(*value);
                self.guesses.clear();
            }
            Op::Guess {
                round,
                client,
                value,
            } => {
                // Only a guess for the open round counts; the leader never proposes others.
                if *round == self.round && !self.guesses.iter().any(|(c, _)| c == client) {
                    self.guesses.push((client.clone(), *value));
                }
            }
            Op::Result(result) => {
                // The round is closed from here on, even where the next round's target does
                // not follow at once (a DIFF piece, or a log, may end between the two).
                if result.round == self.round {
                    self.target = None;
                }
                self.last_result = Some(result.clone());
            }
        }
        self.applied = entry.zxid;
    }

    /// Checks that `client` may guess now.
    pub fn check_guess(&self, client: &str) -> Result<(), GameError> {
        if self.target.is_none() {
            return Err(GameError::NoOpenRound);
        }
        if self.guesses.iter().any(|(c, _)| c == client) {
            return Err(GameError::DuplicateGuess {
                client: client.to_string(),
                round: self.round,
            });
        }
        Ok(())
    }

    /// The result of closing the open round now: closest guess, ties to the earliest.
    pub fn result_of_open_round(&self) -> Option<RoundResult> {
        let target = self.target?;
        let mut best: Option<&(String, u32)> = None;
        for g in &self.guesses {
            let d = g.1.abs_diff(target);
            // Strictly closer only: on a tie the earlier guess stays.
            if best.is_none_or(|b| d < b.1.abs_diff(target)) {
                best = Some(g);
            }
        }
        Some(RoundResult {
            round: self.round,
            target,
            winner: best.cloned(),
        })
    }

    /// The operations a `write value` turns into: the closed round's result (if a round is
    /// open), then the new round's target.
    pub fn ops_for_write(&self, client: &str, value: u32) -> Vec<Op> {
        let mut ops = Vec::with_capacity(2);
        if let Some(result) = self.result_of_open_round() {
            ops.push(Op::Result(result));
        }
        ops.push(Op::Target {
            round: self.round + 1,
            value,
            client: client.to_string(),
        });
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_ops(game: &mut Game, ops: Vec<Op>) {
        for op in ops {
            let zxid = Zxid::new(1, game.applied.counter + 1);
            game.apply(&Entry { zxid, op });
        }
    }

    #[test]
    fn first_write_opens_round_one_without_result() {
        let mut g = Game::default();
        let ops = g.ops_for_write("c1", 50);
        assert_eq!(ops.len(), 1);
        apply_ops(&mut g, ops);
        assert_eq!((g.round, g.target), (1, Some(50)));
        assert!(g.last_result.is_none());
    }

    #[test]
    fn closest_guess_wins_and_ties_go_to_the_earliest() {
        let mut g = Game::default();
        let ops = g.ops_for_write("c1", 50);
        apply_ops(&mut g, ops);
        for (c, v) in [("c3", 45), ("c4", 55), ("c5", 60)] {
            g.check_guess(c).unwrap();
            apply_ops(
                &mut g,
                vec![Op::Guess {
                    round: 1,
                    client: c.into(),
                    value: v,
                }],
            );
        }
        let ops = g.ops_for_write("c1", 75);
        apply_ops(&mut g, ops);
        let r = g.last_result.clone().unwrap();
        assert_eq!(r.winner, Some(("c3".into(), 45)));
        assert_eq!((g.round, g.target, g.guesses.len()), (2, Some(75), 0));
    }

    #[test]
    fn second_guess_in_a_round_is_refused() {
        let mut g = Game::default();
        assert_eq!(g.check_guess("c1"), Err(GameError::NoOpenRound));
        let ops = g.ops_for_write("c1", 10);
        apply_ops(&mut g, ops);
        apply_ops(
            &mut g,
            vec![Op::Guess {
                round: 1,
                client: "c2".into(),
                value: 3,
            }],
        );
        assert!(matches!(
            g.check_guess("c2"),
            Err(GameError::DuplicateGuess { round: 1, .. })
        ));
    }

    #[test]
    fn values_outside_0_to_100_are_refused() {
        assert_eq!(check_value(-1), Err(GameError::OutOfRange(-1)));
        assert_eq!(check_value(101), Err(GameError::OutOfRange(101)));
        assert_eq!(check_value(0), Ok(0));
        assert_eq!(check_value(100), Ok(100));
        assert!(check_client_id("").is_err());
        assert!(check_client_id("bad id").is_err());
        assert!(check_client_id("client-1").is_ok());
    }
}
