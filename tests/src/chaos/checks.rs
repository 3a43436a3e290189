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

/// Durability and game rules on the committed logs. Returns the committed length.
pub fn durability(c: &NetCluster, history: &[Op]) -> (usize, Vec<String>) {
    let mut v = Vec::new();
    let logs: Vec<Vec<(String, String)>> = (1..=c.n())
        .map(|k| read_db(&c.db_path(k)).committed_entries())
        .collect();
    for (k, log) in logs.iter().enumerate() {
        if *log != logs[0] {
            let common = log.iter().zip(&logs[0]).take_while(|(a, b)| a == b).count();
            v.push(format!(
                "node{}'s committed log ({} entries) differs from node1's ({} entries) at position {common}",
                k + 1,
                log.len(),
                logs[0].len()
            ));
        }
    }
    let log = logs
        .iter()
        .max_by_key(|l| l.len())
        .cloned()
        .unwrap_or_default();
    let entries: Vec<Entry> = log
        .iter()
        .filter_map(|(z, op)| {
            let (epoch, counter) = parse_zxid(z);
            let op: LogOp = serde_json::from_str(op).ok()?;
            Some(Entry {
                zxid: guessgame_core::Zxid::new(epoch, counter),
                op,
            })
        })
        .collect();
    if entries.len() != log.len() {
        v.push("a committed entry could not be decoded".into());
    }
    // Every acknowledged write is committed, as what it said.
    for op in history.iter().filter(|o| o.outcome == Outcome::Ok) {
        if !matches!(op.kind, Kind::Write | Kind::Guess) {
            continue;
        }
        let (e, c) = parse_zxid(&op.zxid);
        let found = entries
            .iter()
            .find(|en| en.zxid == guessgame_core::Zxid::new(e, c));
        let matches = match (op.kind, found.map(|e| &e.op)) {
            (
                Kind::Write,
                Some(LogOp::Target {
                    round,
                    value,
                    client,
                }),
            ) => *round == op.round && *value == op.value && *client == op.player,
            (
                Kind::Guess,
                Some(LogOp::Guess {
                    round,
                    value,
                    client,
                }),
            ) => *round == op.round && *value == op.value && *client == op.player,
            _ => false,
        };
        if !matches {
            v.push(format!(
                "acknowledged {:?} {} {} at {} is not in the committed log: {found:?}",
                op.kind, op.player, op.value, op.zxid
            ));
        }
    }
    v.extend(game_rules(&entries));
    (entries.len(), v)
}

/// Replays the committed log: one guess per client per round, winner = closest guess (ties:
/// earliest), rounds numbered in order.
pub fn game_rules(entries: &[Entry]) -> Vec<String> {
    let mut v = Vec::new();
    let mut game = Game::default();
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
