//! Checks on a recorded history and on the nodes' SQLite logs.

use std::path::Path;
use std::time::{Duration, Instant};

use guessgame_client::GameState;
use guessgame_core::game::Game;
use guessgame_core::{Entry, Op as LogOp};

use super::cluster::NetCluster;
use super::{Fault, Kind, Op, Outcome};
use crate::{parse_zxid, read_db};

/// Waits until every node reports the same committed zxid and a leader.
pub async fn wait_converged(c: &NetCluster, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let st =
            guessgame_client::status::ensemble_status(&c.endpoints(), Duration::from_millis(500))
                .await;
        let first = st.nodes[0].last_committed;
        if st.leader.is_some()
            && st
                .nodes
                .iter()
                .all(|n| n.last_committed == first && (n.role == "leader" || n.role == "follower"))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{}", serde_json::to_string(&st)?);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every node's own (local) view of the game.
pub async fn final_states(c: &NetCluster) -> Vec<(String, Option<GameState>)> {
    let mut out = Vec::new();
    for id in c.nodes.ids() {
        let state = match c.nodes.client_of(&id, Duration::from_secs(3)) {
            Ok(mut cl) => cl.read(false).await.ok(),
            Err(_) => None,
        };
        out.push((id, state));
    }
    out
}

pub fn states_agree(states: &[(String, Option<GameState>)]) -> Vec<String> {
    let mut v = Vec::new();
    let key = |s: &GameState| {
        (
            s.round,
            s.target,
            s.guesses,
            s.last_result.clone(),
            s.applied.clone(),
        )
    };
    let Some((first_id, Some(first))) = states.first() else {
        return vec!["no final state from the first node".into()];
    };
    for (id, s) in states {
        match s {
            None => v.push(format!("{id} did not answer a read after healing")),
            Some(s) if key(s) != key(first) => v.push(format!(
                "{id}'s game state {s:?} differs from {first_id}'s {first:?}"
            )),
            _ => {}
        }
    }
    v
}

/// Durability and game rules on the nodes' files. Returns how many committed entries they
/// hold together.
///
/// Nodes compact their logs at different points, so: their committed entries are compared
/// where both hold them and every snapshot's game against the others' files at its zxid
/// ([`crate::committed_history`]); an acknowledged write must be in the committed entries of
/// every node that holds its zxid, and covered by the snapshot of every node that compacted
/// it away (where every node did, the snapshot must agree with it as far as its game shows);
/// the game rules are replayed from the snapshot of the node whose log starts earliest, and
/// the replayed game must equal every snapshot it passes.
pub fn durability(c: &NetCluster, history: &[Op]) -> (usize, Vec<String>) {
    let dbs: Vec<(String, crate::DbLog)> = (1..=c.n())
        .map(|k| (format!("node{k}"), read_db(&c.db_path(k))))
        .collect();
    durability_of(&dbs, history)
}

/// [`durability`] on files already read.
pub fn durability_of(dbs: &[(String, crate::DbLog)], history: &[Op]) -> (usize, Vec<String>) {
    let (h, mut v) = match crate::committed_history(dbs) {
        Ok(h) => (h, Vec::new()),
        Err(v) => return (0, v),
    };
    let entries = crate::decode_entries(&h.entries);
    v.extend(applied_once(&entries));
    let by_zxid: std::collections::BTreeMap<(u64, u64), &Entry> =
        entries.iter().map(|e| (pair(e.zxid), e)).collect();
    for (id, d) in dbs {
        if d.log_start != (0, 0) && d.snapshot_zxid() < d.log_start {
            v.push(format!(
                "{id} compacted its log through {:?} but its snapshot is at {:?}",
                d.log_start,
                d.snapshot_zxid()
            ));
        }
    }
    let held: Vec<std::collections::HashSet<(u64, u64)>> = dbs
        .iter()
        .map(|(_, d)| d.entries.iter().map(|(z, _)| parse_zxid(z)).collect())
        .collect();
    // Every acknowledged write is committed, as what it said.
    for op in history.iter().filter(|o| o.outcome == Outcome::Ok) {
        if !matches!(op.kind, Kind::Write | Kind::Guess) {
            continue;
        }
        let z = parse_zxid(&op.zxid);
        match by_zxid.get(&z) {
            Some(e) if is_entry_of(op, e) => {}
            Some(e) => v.push(format!(
                "acknowledged {:?} {} {} at {} is committed as {:?}",
                op.kind, op.player, op.value, op.zxid, e.op
            )),
            None => {
                // Held by no node: it must have been compacted into a snapshot.
                let covering = dbs
                    .iter()
                    .filter_map(|(id, d)| d.snapshot.as_ref().map(|s| (id, s)))
                    .filter(|(_, s)| pair(s.zxid) >= z)
                    .min_by_key(|(_, s)| s.zxid);
                match covering {
                    Some((id, s)) => {
                        if let Some(why) = snapshot_contradicts(op, &s.game) {
                            v.push(format!(
                                "acknowledged {:?} {} {} at {}: {id}'s snapshot at {} {why}",
                                op.kind, op.player, op.value, op.zxid, s.zxid
                            ));
                        }
                    }
                    None => v.push(format!(
                        "acknowledged {:?} {} {} at {} is in no node's committed log or snapshot",
                        op.kind, op.player, op.value, op.zxid
                    )),
                }
            }
        }
        for ((id, d), held) in dbs.iter().zip(&held) {
            if z > d.log_start && z <= d.committed_zxid() && !held.contains(&z) {
                v.push(format!(
                    "{id}'s committed log lacks acknowledged {} ({:?} {})",
                    op.zxid, op.kind, op.player
                ));
            }
        }
    }
    // The game rules, replayed from the base's snapshot over the entries known without a gap;
    // the replayed game must be every snapshot met on the way.
    let base = &dbs[h.base].1;
    let (mut game, from) = match &base.snapshot {
        Some(s) => (s.game.clone(), pair(s.zxid)),
        None => (Game::default(), (0, 0)),
    };
    if base.log_start != (0, 0) && base.snapshot.is_none() {
        v.push(format!(
            "{} compacted its log but holds no snapshot",
            dbs[h.base].0
        ));
    }
    let after: Vec<Entry> = entries
        .iter()
        .filter(|e| pair(e.zxid) > from && pair(e.zxid) <= h.complete_through)
        .cloned()
        .collect();
    let mut checkpoints: Vec<(&String, &guessgame_core::Snapshot)> = dbs
        .iter()
        .filter_map(|(id, d)| d.snapshot.as_ref().map(|s| (id, s)))
        .filter(|(_, s)| pair(s.zxid) > from && pair(s.zxid) <= h.complete_through)
        .collect();
    checkpoints.sort_by_key(|(_, s)| s.zxid);
    let mut next = 0;
    for e in &after {
        v.extend(game_rules(game.clone(), std::slice::from_ref(e)));
        game.apply(e);
        while let Some((id, s)) = checkpoints.get(next).filter(|(_, s)| s.zxid <= e.zxid) {
            if s.zxid == e.zxid && s.game != game {
                v.push(format!(
                    "{id}'s snapshot at {} holds {:?}; the committed log gives {game:?}",
                    s.zxid, s.game
                ));
            }
            next += 1;
        }
    }
    (entries.len(), v)
}

/// No numbered move (client id and request number: the clients resend a move whose
/// outcome was unknown under its number) is in the committed log twice.
pub fn applied_once(entries: &[Entry]) -> Vec<String> {
    let mut first = std::collections::HashMap::new();
    let mut v = Vec::new();
    for e in entries {
        if let LogOp::Target { client, seq, .. } | LogOp::Guess { client, seq, .. } = &e.op {
            if *seq == 0 {
                continue;
            }
            if let Some(at) = first.insert((client.clone(), *seq), e.zxid) {
                v.push(format!(
                    "request {seq} of {client} applied twice: at {at} and at {}",
                    e.zxid
                ));
            }
        }
    }
    v
}

fn pair(z: guessgame_core::Zxid) -> (u64, u64) {
    crate::pair(z)
}

/// Whether `e` is the entry that acknowledged write or guess `op` says it committed.
fn is_entry_of(op: &Op, e: &Entry) -> bool {
    match (op.kind, &e.op) {
        (
            Kind::Write,
            LogOp::Target {
                round,
                value,
                client,
                ..
            },
        )
        | (
            Kind::Guess,
            LogOp::Guess {
                round,
                value,
                client,
                ..
            },
        ) => *round == op.round && *value == op.value && *client == op.player,
        _ => false,
    }
}

/// What a snapshot taken after acknowledged `op` shows against it, as far as its game tells
/// (it keeps the open round's target and guesses and the last round's result).
fn snapshot_contradicts(op: &Op, game: &Game) -> Option<String> {
    if game.round < op.round {
        return Some(format!(
            "is at round {}, before the op's round {}",
            game.round, op.round
        ));
    }
    let last = game.last_result.as_ref().filter(|r| r.round == op.round);
    match op.kind {
        Kind::Write => {
            let open_with = (game.round == op.round).then_some(game.target).flatten();
            let target = open_with.or(last.map(|r| r.target));
            match target {
                Some(t) if t != op.value => Some(format!("has target {t} for round {}", op.round)),
                _ => None,
            }
        }
        Kind::Guess if game.round == op.round && game.target.is_some() => {
            (!game.guesses.contains(&(op.player.clone(), op.value)))
                .then(|| format!("lacks the guess in the open round: {:?}", game.guesses))
        }
        _ => None,
    }
}

/// Replays the committed log from `game` (the state before its first entry): one guess per client per round, winner = closest guess (ties:
/// earliest), rounds numbered in order.
pub fn game_rules(mut game: Game, entries: &[Entry]) -> Vec<String> {
    let mut v = Vec::new();
    for e in entries {
        match &e.op {
            LogOp::Guess { round, client, .. } => {
                if *round != game.round || game.target.is_none() {
                    v.push(format!(
                        "{}: guess for round {round} while round {} is open",
                        e.zxid, game.round
                    ));
                }
                if game.guesses.iter().any(|(c, _)| c == client) {
                    v.push(format!(
                        "{}: second guess by {client} in round {round}",
                        e.zxid
                    ));
                }
            }
            LogOp::Result(r) => {
                if Some(r) != game.result_of_open_round().as_ref() {
                    v.push(format!(
                        "{}: result {r:?} is not the closest guess of round {}",
                        e.zxid, game.round
                    ));
                }
            }
            LogOp::Target { round, .. } => {
                if *round != game.round + 1 {
                    v.push(format!(
                        "{}: round {round} opened after round {}",
                        e.zxid, game.round
                    ));
                }
            }
            LogOp::NewLeader { .. } | LogOp::Config(_) => {}
        }
        game.apply(e);
    }
    v
}

/// Each client's reads (and its own writes) never go back in zxid order.
pub fn monotonic_reads(history: &[Op]) -> Vec<String> {
    let mut v = Vec::new();
    let clients: std::collections::BTreeSet<usize> = history.iter().map(|o| o.client).collect();
    for c in clients {
        let mut seen = (0, 0);
        let mut ops: Vec<&Op> = history
            .iter()
            .filter(|o| o.client == c && o.outcome == Outcome::Ok)
            .collect();
        ops.sort_by_key(|o| o.invoke_us);
        for o in ops {
            let z = parse_zxid(&o.zxid);
            if matches!(o.kind, Kind::ReadLocal | Kind::ReadLin) && z < seen {
                v.push(format!(
                    "client {c}: {:?} at {} us saw {} after it had seen {}:{}",
                    o.kind, o.invoke_us, o.zxid, seen.0, seen.1
                ));
            }
            seen = seen.max(z);
        }
    }
    v
}

pub fn longest_unavailability(history: &[Op], faults: &[Fault]) -> u64 {
    faults
        .iter()
        .map(|f| {
            history
                .iter()
                .filter(|o| {
                    matches!(o.kind, Kind::Write | Kind::Guess)
                        && o.outcome == Outcome::Ok
                        && o.invoke_us >= f.at_us
                })
                .map(|o| o.complete_us - f.at_us)
                .min()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Runs Porcupine on the writes, guesses and linearizable reads.
pub fn linearizability(
    dir: &Path,
    history: &[Op],
    timeout_s: u64,
) -> anyhow::Result<(String, Vec<String>)> {
    let relevant: Vec<&Op> = history
        .iter()
        .filter(|o| match (o.kind, o.outcome) {
            (Kind::ReadLocal, _) => false,
            (Kind::ReadLin, Outcome::Ok) => true,
            (Kind::ReadLin, _) => false,
            (_, Outcome::Ok | Outcome::Unknown) => true,
            // Definite refusals by the game are observations too; other failures wrote nothing.
            (_, Outcome::Fail) => o.error == "duplicate_guess" || o.error == "no_open_round",
        })
        .collect();
    let path = dir.join("history-linearizable.json");
    std::fs::write(&path, serde_json::to_vec(&relevant)?)?;
    let checker = dir.parent().unwrap_or(dir).join("porcupine-checker");
    let out = std::process::Command::new(&checker)
        .arg(&path)
        .arg(timeout_s.to_string())
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", checker.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(match out.status.code() {
        Some(0) => (text, vec![]),
        Some(1) => (text.clone(), vec![format!("Porcupine: {text}")]),
        _ => (
            text.clone(),
            vec![format!(
                "Porcupine could not decide: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )],
        ),
    })
}

#[cfg(test)]
mod tests;
