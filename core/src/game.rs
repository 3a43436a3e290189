//! The replicated state machine: a number-guessing game.
//!
//! Pure and deterministic: every node applies the same committed entries in the same order
//! and ends in the same state. The leader also uses it speculatively (over its uncommitted
//! tail) to validate requests and to decide a round's winner before proposing.

use std::collections::BTreeMap;

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
    /// What the recent numbered requests did, so that a retry is answered, not applied again.
    #[serde(default, skip_serializing_if = "Requests::is_empty")]
    pub requests: Requests,
    /// The last entry applied was a round's result: a target right after it is the write
    /// that closed that round. (A log may end between the two, and a new epoch's first
    /// entry comes between them then: that target closed nothing.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub result_just_applied: bool,
}

/// How many clients the game remembers requests of (the least recently active is forgotten
/// first), and how many of each client's latest requests.
pub const REMEMBERED_CLIENTS: usize = 1024;
pub const REMEMBERED_PER_CLIENT: usize = 4;

/// What an applied request did: what its client was, or would have been, told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Applied {
    Wrote {
        round: u64,
        target: u32,
        closed: Option<RoundResult>,
    },
    Guessed {
        round: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequest {
    pub seq: u64,
    /// The entry that applied it.
    pub zxid: Zxid,
    pub applied: Applied,
}

/// A request's number, as the game knows it ([`Requests::seen`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Not applied: apply it.
    New,
    /// Applied already (by `zxid`, perhaps not yet committed): answer this, write nothing.
    Applied(&'a AppliedRequest),
    /// Older than every request of its client the game still remembers: whether it was
    /// applied is no longer known, so it is neither applied nor answered as done.
    Forgotten { oldest: u64 },
}

/// The latest numbered requests of recently active clients (Raft's client sessions,
/// ZooKeeper's session table): part of the replicated state, so every node and every
/// snapshot answers a retry the same way. A client numbers its requests (`seq`, increasing;
/// 0 means unnumbered and is never remembered).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    /// Per client, its latest requests in increasing `seq`, at most
    /// [`REMEMBERED_PER_CLIENT`]. Only the smallest are dropped, so every applied request
    /// with a `seq` at or above a full list's first is in it.
    clients: BTreeMap<String, Vec<AppliedRequest>>,
}

impl Requests {
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether request `seq` of `client` was applied.
    pub fn seen(&self, client: &str, seq: u64) -> Seen<'_> {
        let Some(list) = self.clients.get(client).filter(|_| seq != 0) else {
            return Seen::New;
        };
        if let Some(r) = list.iter().find(|r| r.seq == seq) {
            return Seen::Applied(r);
        }
        match list.first() {
            Some(first) if list.len() >= REMEMBERED_PER_CLIENT && seq < first.seq => {
                Seen::Forgotten { oldest: first.seq }
            }
            _ => Seen::New,
        }
    }

    /// `client`'s request `seq` was applied by entry `zxid` and did `applied`.
    fn record(&mut self, client: &str, seq: u64, zxid: Zxid, applied: Applied) {
        if seq == 0 {
            return;
        }
        let request = AppliedRequest { seq, zxid, applied };
        let list = self.clients.entry(client.to_string()).or_default();
        let at = list.partition_point(|r| r.seq < request.seq);
        if list.get(at).is_some_and(|r| r.seq == request.seq) {
            return; // the leader never proposes a request twice
        }
        list.insert(at, request);
        if list.len() > REMEMBERED_PER_CLIENT {
            list.remove(0);
        }
        if self.clients.len() > REMEMBERED_CLIENTS {
            // The client whose latest request is oldest (a linear scan: this happens once
            // per new client, and every node picks the same one).
            let idle = self
                .clients
                .iter()
                .min_by_key(|(_, list)| list.iter().map(|r| r.zxid).max())
                .map(|(c, _)| c.clone())
                .expect("more than REMEMBERED_CLIENTS clients");
            self.clients.remove(&idle);
        }
    }
}

impl Game {
    pub fn apply(&mut self, entry: &Entry) {
        match &entry.op {
            Op::NewLeader { .. } | Op::Config(_) => {}
            Op::Target {
                round,
                value,
                client,
                seq,
            } => {
                // What this write closed: the result just before it, if any (a write's
                // result and target are consecutive entries of one proposal).
                let closed = self
                    .last_result
                    .clone()
                    .filter(|r| self.result_just_applied && r.round + 1 == *round);
                self.round = *round;
                self.target = Some(*value);
                self.guesses.clear();
                let applied = Applied::Wrote {
                    round: *round,
                    target: *value,
                    closed,
                };
                self.requests.record(client, *seq, entry.zxid, applied);
            }
            Op::Guess {
                round,
                client,
                value,
                seq,
            } => {
                // Only a guess for the open round counts; the leader never proposes others.
                if *round == self.round && !self.guesses.iter().any(|(c, _)| c == client) {
                    self.guesses.push((client.clone(), *value));
                    let applied = Applied::Guessed { round: *round };
                    self.requests.record(client, *seq, entry.zxid, applied);
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
        self.result_just_applied = matches!(entry.op, Op::Result(_));
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
    pub fn ops_for_write(&self, client: &str, value: u32, seq: u64) -> Vec<Op> {
        let mut ops = Vec::with_capacity(2);
        if let Some(result) = self.result_of_open_round() {
            ops.push(Op::Result(result));
        }
        ops.push(Op::Target {
            round: self.round + 1,
            value,
            client: client.to_string(),
            seq,
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
        let ops = g.ops_for_write("c1", 50, 0);
        assert_eq!(ops.len(), 1);
        apply_ops(&mut g, ops);
        assert_eq!((g.round, g.target), (1, Some(50)));
        assert!(g.last_result.is_none());
    }

    #[test]
    fn closest_guess_wins_and_ties_go_to_the_earliest() {
        let mut g = Game::default();
        let ops = g.ops_for_write("c1", 50, 0);
        apply_ops(&mut g, ops);
        for (c, v) in [("c3", 45), ("c4", 55), ("c5", 60)] {
            g.check_guess(c).unwrap();
            apply_ops(
                &mut g,
                vec![Op::Guess {
                    round: 1,
                    client: c.into(),
                    value: v,
                    seq: 0,
                }],
            );
        }
        let ops = g.ops_for_write("c1", 75, 0);
        apply_ops(&mut g, ops);
        let r = g.last_result.clone().unwrap();
        assert_eq!(r.winner, Some(("c3".into(), 45)));
        assert_eq!((g.round, g.target, g.guesses.len()), (2, Some(75), 0));
    }

    #[test]
    fn second_guess_in_a_round_is_refused() {
        let mut g = Game::default();
        assert_eq!(g.check_guess("c1"), Err(GameError::NoOpenRound));
        let ops = g.ops_for_write("c1", 10, 0);
        apply_ops(&mut g, ops);
        apply_ops(
            &mut g,
            vec![Op::Guess {
                round: 1,
                client: "c2".into(),
                value: 3,
                seq: 0,
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

    fn write(game: &mut Game, client: &str, value: u32, seq: u64) {
        let ops = game.ops_for_write(client, value, seq);
        apply_ops(game, ops);
    }

    fn guess(game: &mut Game, client: &str, value: u32, seq: u64) {
        let op = Op::Guess {
            round: game.round,
            client: client.into(),
            value,
            seq,
        };
        apply_ops(game, vec![op]);
    }

    #[test]
    fn an_applied_request_is_remembered_with_what_it_did() {
        let mut g = Game::default();
        assert_eq!(g.requests.seen("alice", 7), Seen::New);
        write(&mut g, "alice", 50, 7);
        guess(&mut g, "bob", 45, 3);
        write(&mut g, "alice", 60, 8);
        let Seen::Applied(first) = g.requests.seen("alice", 7) else {
            panic!("request 7 forgotten");
        };
        assert_eq!(first.zxid, Zxid::new(1, 1));
        assert_eq!(
            first.applied,
            Applied::Wrote {
                round: 1,
                target: 50,
                closed: None
            }
        );
        let Seen::Applied(second) = g.requests.seen("alice", 8) else {
            panic!("request 8 forgotten");
        };
        let closed = RoundResult {
            round: 1,
            target: 50,
            winner: Some(("bob".into(), 45)),
        };
        assert_eq!(
            second.applied,
            Applied::Wrote {
                round: 2,
                target: 60,
                closed: Some(closed)
            }
        );
        assert!(matches!(
            g.requests.seen("bob", 3),
            Seen::Applied(AppliedRequest {
                applied: Applied::Guessed { round: 1 },
                ..
            })
        ));
        // Another client's numbers are its own; an unnumbered request is never remembered.
        assert_eq!(g.requests.seen("bob", 7), Seen::New);
        write(&mut g, "carol", 10, 0);
        assert_eq!(g.requests.seen("carol", 0), Seen::New);
    }

    #[test]
    fn a_request_older_than_a_full_window_is_forgotten_not_new() {
        let mut g = Game::default();
        for seq in [10, 20, 30, 40, 50] {
            write(&mut g, "alice", 1, seq);
        }
        assert_eq!(g.requests.seen("alice", 10), Seen::Forgotten { oldest: 20 });
        assert_eq!(g.requests.seen("alice", 5), Seen::Forgotten { oldest: 20 });
        assert!(matches!(g.requests.seen("alice", 20), Seen::Applied(_)));
        // Within the window and not remembered: certainly never applied.
        assert_eq!(g.requests.seen("alice", 25), Seen::New);
        assert_eq!(g.requests.seen("alice", 60), Seen::New);
    }

    #[test]
    fn the_least_recently_active_client_is_forgotten_first() {
        let mut g = Game::default();
        for c in 0..=REMEMBERED_CLIENTS {
            write(&mut g, &format!("c{c}"), 1, 1);
            if c == 0 {
                write(&mut g, "c0", 1, 2); // c0 stays active
            }
            if c == 1 {
                write(&mut g, "c0", 1, 3);
            }
        }
        assert_eq!(g.requests.len(), REMEMBERED_CLIENTS);
        assert!(matches!(g.requests.seen("c0", 3), Seen::Applied(_)));
        assert_eq!(g.requests.seen("c1", 1), Seen::New, "c1 was the idlest");
        assert!(matches!(g.requests.seen("c2", 1), Seen::Applied(_)));
    }

    #[test]
    fn the_request_table_survives_a_json_round_trip_and_old_snapshots_have_none() {
        let mut g = Game::default();
        write(&mut g, "alice", 50, 7);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Game>(&json).unwrap(), g);
        let old = r#"{"round":0,"target":null,"guesses":[],"last_result":null,"applied":{"epoch":0,"counter":0}}"#;
        assert!(serde_json::from_str::<Game>(old)
            .unwrap()
            .requests
            .is_empty());
    }

    #[test]
    fn a_target_after_a_new_epoch_began_closed_nothing_even_if_a_result_came_before() {
        // A log that ended between a write's result and its target: the next leader's
        // write (after its NEWLEADER entry) opens the next round and closes nothing.
        let mut g = Game::default();
        write(&mut g, "alice", 50, 1);
        let result = g.result_of_open_round().unwrap();
        apply_ops(
            &mut g,
            vec![
                Op::Result(result),
                Op::NewLeader {
                    leader: "n2".into(),
                },
            ],
        );
        write(&mut g, "bob", 60, 2);
        let Seen::Applied(done) = g.requests.seen("bob", 2) else {
            panic!("bob's write forgotten");
        };
        assert_eq!(
            done.applied,
            Applied::Wrote {
                round: 2,
                target: 60,
                closed: None
            }
        );
    }
}
