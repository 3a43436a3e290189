//! The durability check on made-up files: nodes that compacted different prefixes agree, and
//! what an acknowledged write, a file or a snapshot says wrongly is found.

use super::*;
use crate::DbLog;
use guessgame_core::types::RoundResult;
use guessgame_core::{Membership, Snapshot, Zxid};

fn row(counter: u64, op: LogOp) -> (String, String) {
    (format!("1:{counter}"), serde_json::to_string(&op).unwrap())
}

fn target(round: u64, value: u32) -> LogOp {
    LogOp::Target {
        round,
        value,
        client: "w0".into(),
        seq: 0,
    }
}

fn guess(round: u64, client: &str, value: u32) -> LogOp {
    LogOp::Guess {
        round,
        client: client.into(),
        value,
        seq: 0,
    }
}

/// Round 1 (target 50, guesses a 40 and b 45, b wins), then round 2 (target 70, guesses a 10
/// and c 80): entries 1:1 to 1:7.
fn history() -> Vec<(String, String)> {
    vec![
        row(1, target(1, 50)),
        row(2, guess(1, "a", 40)),
        row(3, guess(1, "b", 45)),
        row(
            4,
            LogOp::Result(RoundResult {
                round: 1,
                target: 50,
                winner: Some(("b".into(), 45)),
            }),
        ),
        row(5, target(2, 70)),
        row(6, guess(2, "a", 10)),
        row(7, guess(2, "c", 80)),
    ]
}

/// A node's file holding `all` up to 1:`committed`, compacted through 1:`log_start` into a
/// snapshot at 1:`snapshot` (0: none).
fn file(all: &[(String, String)], committed: u64, log_start: u64, snapshot: u64) -> DbLog {
    let entries = crate::decode_entries(all);
    let snapshot = (snapshot > 0).then(|| {
        let mut game = Game::default();
        for e in entries.iter().filter(|e| e.zxid.counter <= snapshot) {
            game.apply(e);
        }
        Snapshot {
            zxid: Zxid::new(1, snapshot),
            game,
            config_zxid: Zxid::ZERO,
            config: Membership::default(),
        }
    });
    DbLog {
        entries: all
            .iter()
            .filter(|(z, _)| crate::parse_zxid(z) > (1, log_start) || log_start == 0)
            .cloned()
            .collect(),
        committed: format!("1:{committed}"),
        log_start: if log_start == 0 {
            (0, 0)
        } else {
            (1, log_start)
        },
        snapshot,
    }
}

fn acked(kind: Kind, counter: u64, round: u64, player: &str, value: u32) -> Op {
    Op {
        client: 0,
        kind,
        player: player.into(),
        value,
        invoke_us: counter,
        complete_us: counter + 1,
        outcome: Outcome::Ok,
        error: String::new(),
        round,
        target: None,
        guesses: 0,
        zxid: format!("1:{counter}"),
        node: "node1".into(),
    }
}

fn nodes(files: Vec<DbLog>) -> Vec<(String, DbLog)> {
    files
        .into_iter()
        .enumerate()
        .map(|(k, f)| (format!("node{}", k + 1), f))
        .collect()
}

fn the_acknowledged_moves() -> Vec<Op> {
    vec![
        acked(Kind::Write, 1, 1, "w0", 50),
        acked(Kind::Guess, 2, 1, "a", 40),
        acked(Kind::Write, 5, 2, "w0", 70),
        acked(Kind::Guess, 6, 2, "a", 10),
    ]
}

#[test]
fn files_compacted_at_different_points_agree_and_keep_every_acknowledged_move() {
    let all = history();
    let dbs = nodes(vec![
        file(&all, 7, 3, 4),
        file(&all, 7, 5, 6),
        file(&all, 6, 0, 0),
    ]);
    let (held, v) = durability_of(&dbs, &the_acknowledged_moves());
    assert_eq!(v, Vec::<String>::new());
    assert_eq!(held, 7, "node3 holds everything, node1 the rest");
    // Compacted on every node: the moves of round 1 are covered by node1's snapshot, whose
    // game (round 1 closed at target 50) agrees with them.
    let (held, v) = durability_of(&dbs[..2], &the_acknowledged_moves());
    assert_eq!(v, Vec::<String>::new());
    assert_eq!(held, 4);
}

#[test]
fn an_acknowledged_move_that_the_files_contradict_or_lack_is_reported() {
    let all = history();
    let full = nodes(vec![file(&all, 7, 3, 4), file(&all, 7, 0, 0)]);
    let compacted = nodes(vec![file(&all, 7, 3, 4), file(&all, 7, 5, 6)]);
    // The write of round 1 acknowledged with another target: held as target 50 in one case,
    // compacted into a snapshot whose closed round 1 had target 50 in the other.
    let wrong = vec![acked(Kind::Write, 1, 1, "w0", 55)];
    let (_, v) = durability_of(&full, &wrong);
    assert!(
        v.len() == 1 && v[0].contains("is committed as Target"),
        "{v:?}"
    );
    let (_, v) = durability_of(&compacted, &wrong);
    assert!(
        v.len() == 1 && v[0].contains("snapshot at 1:4 has target 50"),
        "{v:?}"
    );
    // A guess of the open round that the snapshot of that round does not hold.
    let snapshot_only = nodes(vec![file(&all, 7, 6, 7)]);
    let (_, v) = durability_of(&snapshot_only, &[acked(Kind::Guess, 6, 2, "d", 10)]);
    assert!(v.len() == 1 && v[0].contains("lacks the guess"), "{v:?}");
    // Past every file's commit point: nowhere.
    let (_, v) = durability_of(&full, &[acked(Kind::Guess, 9, 2, "e", 1)]);
    assert!(
        v.len() == 1 && v[0].contains("in no node's committed log or snapshot"),
        "{v:?}"
    );
}

#[test]
fn files_that_differ_where_both_hold_entries_or_a_wrong_snapshot_are_reported() {
    let all = history();
    let mut other = all.clone();
    other[5] = row(6, guess(2, "z", 10));
    let (_, v) = durability_of(
        &nodes(vec![file(&all, 7, 3, 4), file(&other, 7, 5, 6)]),
        &[],
    );
    assert!(
        v.iter()
            .any(|m| m.contains("hold different committed entries")),
        "{v:?}"
    );
    // A snapshot whose game is not what the log gives at its zxid.
    let mut bad = file(&all, 7, 3, 4);
    bad.snapshot.as_mut().unwrap().game.last_result = None;
    let (_, v) = durability_of(&nodes(vec![bad, file(&all, 7, 0, 0)]), &[]);
    assert!(
        v.iter()
            .any(|m| m.contains("node1's snapshot at 1:4 holds")),
        "{v:?}"
    );
    // A file that compacted its log without a snapshot.
    let mut lost = file(&all, 7, 3, 4);
    lost.snapshot = None;
    let (_, v) = durability_of(&nodes(vec![lost]), &[]);
    assert!(!v.is_empty(), "a compacted log without a snapshot passed");
}

#[test]
fn a_numbered_move_committed_twice_is_found() {
    let numbered = |counter: u64, round: u64, client: &str, seq: u64| Entry {
        zxid: Zxid::new(1, counter),
        op: LogOp::Guess {
            round,
            client: client.into(),
            value: 5,
            seq,
        },
    };
    let once = [
        numbered(1, 1, "a", 7),
        numbered(2, 1, "b", 7),
        numbered(3, 1, "c", 0),
        numbered(4, 1, "c", 0),
    ];
    assert!(applied_once(&once).is_empty(), "{:?}", applied_once(&once));
    let twice = [numbered(1, 1, "a", 7), numbered(5, 2, "a", 7)];
    let v = applied_once(&twice);
    assert_eq!(v.len(), 1);
    assert!(v[0].contains("request 7 of a applied twice"), "{v:?}");
}
