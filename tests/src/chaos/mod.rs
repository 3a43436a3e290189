//! Jepsen-style runs against real processes: five `guessgame-node`s on their own test hosts
//! (network namespaces), concurrent clients recording a history, a nemesis that kills,
//! pauses, partitions (whole and bridge) and stops, then checks: linearizability (Porcupine), durability of every
//! acknowledged write, game rules on the replicated log, monotonic local reads.

pub mod bridge;
pub mod checks;
pub mod cluster;
pub mod netns;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use guessgame_client::{Client, ErrorKind};
use serde::Serialize;

use cluster::NetCluster;

/// A small deterministic generator (xorshift64*): the same seed gives the same schedule.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Write,
    Guess,
    ReadLin,
    ReadLocal,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// One operation of the history.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub client: usize,
    pub kind: Kind,
    pub player: String,
    pub value: u32,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    pub error: String,
    pub round: u64,
    pub target: Option<u32>,
    pub guesses: u64,
    /// Reads: zxid applied on the node that answered; writes: zxid of the entry.
    pub zxid: String,
    pub node: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub at_us: u64,
    pub healed_us: u64,
    pub what: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: u64,
    pub ops_ok: usize,
    pub ops_fail: usize,
    pub ops_unknown: usize,
    pub faults: Vec<Fault>,
    /// Longest time from a fault to the next write that was invoked after it and succeeded.
    pub longest_unavailability_ms: u64,
    pub linearizable: String,
    pub violations: Vec<String>,
    /// Committed entries the nodes' files hold together (compaction drops the older ones).
    pub committed_entries: usize,
    /// From the nodes' logs: snapshots taken (each compacts the log), snapshots a leader
    /// started sending to a follower behind its log, and snapshots followers installed.
    pub snapshots_taken: usize,
    pub snapshots_sent: usize,
    pub snapshots_installed: usize,
    pub dir: String,
}

pub struct Settings {
    pub seed: u64,
    pub duration: Duration,
    pub clients: usize,
    pub fault_every: Duration,
    pub out: PathBuf,
    pub checker_timeout_s: u64,
}

fn error_kind(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::InvalidArgument => "invalid_argument",
        ErrorKind::NoOpenRound => "no_open_round",
        ErrorKind::DuplicateGuess => "duplicate_guess",
        ErrorKind::NoLeader => "no_leader",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::OutcomeUnknown => "outcome_unknown",
        ErrorKind::RequestForgotten => "request_forgotten",
        ErrorKind::ReconfigRefused => "reconfig_refused",
        ErrorKind::ReconfigBusy => "reconfig_busy",
        ErrorKind::ReconfigPartial => "reconfig_partial",
        ErrorKind::Internal => "internal",
    }
}

/// Runs one client's closed loop until `stop`, appending to `history`.
async fn client_loop(
    id: usize,
    endpoints: Vec<(String, String)>,
    mut rng: Rng,
    start: Instant,
    stop: Instant,
    history: Arc<Mutex<Vec<Op>>>,
) {
    // Each client starts at a different node; it keeps talking to the one that answers.
    let mut eps = endpoints;
    let rot = id % eps.len();
    eps.rotate_left(rot);
    let mut client = Client::new(&eps, Duration::from_millis(3000)).expect("client");
    let now = |start: Instant| start.elapsed().as_micros() as u64;
    while Instant::now() < stop {
        let roll = rng.below(100);
        let value = rng.below(101) as u32;
        // A handful of players per client, so "one guess per round" gets exercised.
        let player = format!("p{id}-{}", rng.below(3));
        let invoke = now(start);
        let mut op = Op {
            client: id,
            kind: Kind::ReadLocal,
            player: String::new(),
            value,
            invoke_us: invoke,
            complete_us: 0,
            outcome: Outcome::Ok,
            error: String::new(),
            round: 0,
            target: None,
            guesses: 0,
            zxid: String::new(),
            node: String::new(),
        };
        let result: Result<(), guessgame_client::ClientError> = if roll < 12 {
            op.kind = Kind::Write;
            op.player = format!("w{id}");
            client.write(&op.player, value).await.map(|w| {
                op.round = w.round;
                op.target = Some(w.target);
                op.zxid = w.zxid;
                op.node = w.leader;
            })
        } else if roll < 55 {
            op.kind = Kind::Guess;
            op.player = player;
            client.guess(&op.player, value).await.map(|g| {
                op.round = g.round;
                op.zxid = g.zxid;
                op.node = g.leader;
            })
        } else {
            let lin = roll < 80;
            op.kind = if lin { Kind::ReadLin } else { Kind::ReadLocal };
            client.read(lin).await.map(|s| {
                op.round = s.round;
                op.target = s.target;
                op.guesses = s.guesses;
                op.zxid = s.applied;
                op.node = s.node;
            })
        };
        op.complete_us = now(start);
        if let Err(e) = result {
            op.error = error_kind(e.kind).to_string();
            op.outcome = if e.kind == ErrorKind::OutcomeUnknown {
                Outcome::Unknown
            } else {
                Outcome::Fail
            };
        }
        history.lock().expect("history").push(op);
        tokio::time::sleep(Duration::from_millis(2 + rng.below(8))).await;
    }
}

async fn current_leader(c: &NetCluster) -> Option<usize> {
    let st =
        guessgame_client::status::ensemble_status(&c.endpoints(), Duration::from_millis(300)).await;
    st.leader.and_then(|l| c.index_of(&l))
}

/// Injects one fault, waits, heals it. Returns its description and when it took effect.
async fn fault(
    c: &mut NetCluster,
    rng: &mut Rng,
    hold: Duration,
    start: Instant,
) -> anyhow::Result<(String, u64)> {
    let n = c.n();
    let mut at = 0;
    let injected = |at: &mut u64| *at = start.elapsed().as_micros() as u64;
    let leader = current_leader(c).await;
    let pick = |rng: &mut Rng| 1 + rng.below(n as u64) as usize;
    let what = match rng.below(9) {
        0 | 1 => {
            let k = leader.unwrap_or_else(|| pick(rng));
            c.kill(k);
            injected(&mut at);
            tokio::time::sleep(hold).await;
            c.start(k)?;
            format!(
                "kill -9 node{k}{}",
                if Some(k) == leader { " (leader)" } else { "" }
            )
        }
        2 => {
            let k = pick(rng);
            c.kill(k);
            injected(&mut at);
            tokio::time::sleep(hold).await;
            c.start(k)?;
            format!("kill -9 node{k}")
        }
        7 => {
            // A graceful stop (what `kubectl delete pod` sends): a leader hands over first.
            let k = leader.unwrap_or_else(|| pick(rng));
            injected(&mut at);
            c.terminate(k);
            tokio::time::sleep(hold).await;
            c.start(k)?;
            format!(
                "kill -TERM node{k}{}",
                if Some(k) == leader { " (leader)" } else { "" }
            )
        }
        3 => {
            let k = leader.unwrap_or_else(|| pick(rng));
            c.pause(k);
            injected(&mut at);
            tokio::time::sleep(hold).await;
            c.resume(k);
            format!("SIGSTOP/SIGCONT node{k}")
        }
        4 => {
            // The leader and one other node in the minority.
            let l = leader.unwrap_or_else(|| pick(rng));
            let other = (l % n) + 1;
            c.net.partition(&[l, other])?;
            injected(&mut at);
            tokio::time::sleep(hold).await;
            c.net.heal()?;
            format!("partition {{node{l}, node{other}}} | rest (leader in minority)")
        }
        5 => {
            // Membership: remove a member (the leader half of the time) through the log; it
            // stops; then it asks to join again with its old log (learner, catch up, voter).
            let k = if rng.below(2) == 0 {
                leader.unwrap_or_else(|| pick(rng))
            } else {
                pick(rng)
            };
            let mut admin = guessgame_client::Client::new(&c.endpoints(), Duration::from_secs(15))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            injected(&mut at);
            let removal = admin
                .reconfig(guessgame_client::Reconfig::Remove {
                    id: format!("node{k}"),
                })
                .await
                .map(|_| "committed".to_string())
                .unwrap_or_else(|e| format!("{:?}", e.kind));
            tokio::time::sleep(hold).await;
            let via = (k % n) + 1;
            c.kill(k);
            c.rejoin(k, via)?;
            format!(
                "reconfig remove node{k}{} ({removal}), then node{k} rejoins via node{via}",
                if Some(k) == leader { " (leader)" } else { "" }
            )
        }
        8 => {
            // A bridge (non-transitive) partition: the leader keeps one follower, the four
            // followers still reach each other, so a connected majority must elect.
            let l = leader.unwrap_or_else(|| pick(rng));
            let bridge = (l + rng.below(n as u64 - 1) as usize) % n + 1;
            for k in (1..=n).filter(|&k| k != l && k != bridge) {
                c.net.cut(l, k)?;
            }
            injected(&mut at);
            tokio::time::sleep(hold).await;
            c.net.heal()?;
            format!("bridge: node{l} cut from all but node{bridge}")
        }
        _ => {
            let a = pick(rng);
            let b = (a + rng.below(n as u64 - 1) as usize) % n + 1;
            let side = if a == b { vec![a] } else { vec![a, b] };
            c.net.partition(&side)?;
            injected(&mut at);
            tokio::time::sleep(hold).await;
            c.net.heal()?;
            format!("partition {side:?} | rest")
        }
    };
    Ok((what, at))
}

/// One schedule: cluster up, clients + nemesis for `duration`, heal, check.
pub async fn run_schedule(s: &Settings) -> anyhow::Result<Report> {
    let dir = s.out.join(format!("seed-{}", s.seed));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cluster = NetCluster::new(5, dir.clone())?;
    cluster.start_all()?;
    let start = Instant::now();
    wait_for_leader(&cluster, Duration::from_secs(20)).await?;

    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Instant::now() + s.duration;
    let mut rng = Rng::new(s.seed);
    let mut tasks = Vec::new();
    for id in 0..s.clients {
        tasks.push(tokio::spawn(client_loop(
            id,
            cluster.endpoints(),
            Rng::new(rng.next_u64()),
            start,
            stop,
            history.clone(),
        )));
    }
    let mut faults = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while Instant::now() + s.fault_every < stop {
        let hold = Duration::from_millis(800 + rng.below(2200));
        let (what, at) = fault(&mut cluster, &mut rng, hold, start).await?;
        faults.push(Fault {
            at_us: at,
            healed_us: start.elapsed().as_micros() as u64,
            what,
        });
        let rest = s
            .fault_every
            .saturating_sub(hold)
            .max(Duration::from_millis(500));
        tokio::time::sleep(rest).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    // Heal everything, let it settle, and compare all nodes.
    cluster.net.heal()?;
    cluster.resume_all();
    cluster.start_all()?;
    wait_for_leader(&cluster, Duration::from_secs(30)).await?;
    let settled = checks::wait_converged(&cluster, Duration::from_secs(30)).await;
    let history = history.lock().expect("history").clone();
    let mut report = Report {
        seed: s.seed,
        duration_s: s.duration.as_secs(),
        ops_ok: history.iter().filter(|o| o.outcome == Outcome::Ok).count(),
        ops_fail: history
            .iter()
            .filter(|o| o.outcome == Outcome::Fail)
            .count(),
        ops_unknown: history
            .iter()
            .filter(|o| o.outcome == Outcome::Unknown)
            .count(),
        longest_unavailability_ms: checks::longest_unavailability(&history, &faults) / 1000,
        faults,
        dir: dir.display().to_string(),
        ..Default::default()
    };
    if let Err(e) = settled {
        report
            .violations
            .push(format!("nodes did not converge after healing: {e}"));
    }
    let final_states = checks::final_states(&cluster).await;
    cluster.stop_all();
    let count = |what: &str| -> usize {
        cluster
            .nodes
            .ids()
            .iter()
            .map(|id| {
                std::fs::read_to_string(cluster.nodes.log_path(id))
                    .map_or(0, |log| log.matches(what).count())
            })
            .sum()
    };
    report.snapshots_taken = count("snapshot taken; log compacted");
    report.snapshots_sent = count("sending the snapshot");
    report.snapshots_installed = count("installing the leader's snapshot");

    std::fs::write(
        dir.join("history.json"),
        serde_json::to_vec_pretty(&history)?,
    )?;
    report
        .violations
        .extend(checks::states_agree(&final_states));
    let (committed, mut v) = checks::durability(&cluster, &history);
    report.committed_entries = committed;
    report.violations.append(&mut v);
    report.violations.extend(checks::monotonic_reads(&history));
    let (verdict, v) = checks::linearizability(&dir, &history, s.checker_timeout_s)?;
    report.linearizable = verdict;
    report.violations.extend(v);
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

async fn wait_for_leader(c: &NetCluster, timeout: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = current_leader(c).await {
            return Ok(l);
        }
        if Instant::now() > deadline {
            anyhow::bail!("no leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds the Porcupine checker once (Go module in `tests/checker`).
pub fn build_checker(out: &Path) -> anyhow::Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("checker");
    let bin = out.join("porcupine-checker");
    let status = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .status()
        .context("running `go build` for the Porcupine checker (Go is needed)")?;
    anyhow::ensure!(status.success(), "building the Porcupine checker failed");
    Ok(bin)
}
