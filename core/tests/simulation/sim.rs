//! The simulation: the [`Sim`] struct, construction, stepping virtual time, carrying out
//! an engine's outputs like the runtime does, and views of the ensemble (leader, convergence).

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use guessgame_core::game::Game;
use guessgame_core::{
    split_early, Engine, Entry, Event, Membership, NodeId, Output, Persistent, RoleKind,
    SnapshotPolicy, StorageOp, Timing, Zxid,
};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

use crate::clients::{ReqKind, Request};
use crate::network::{Faults, Packet};
use crate::node::{node_id, MemoryStore, Node};
use crate::rng::Rng;

pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_TIMEOUT_MS: u64 = 1000;
pub const STEP_MS: u64 = 5;

/// Small enough that every seed snapshots, compacts and sends snapshots many times over:
/// a snapshot every 12 committed entries, 4 kept below it, snapshots sent in pieces of 48
/// bytes (several per snapshot) and DIFFs of at most 5 entries.
pub fn snapshot_policy() -> SnapshotPolicy {
    SnapshotPolicy {
        every_entries: 12,
        every_bytes: u64::MAX,
        retain_entries: 4,
        chunk_bytes: 48,
        diff_entries: 5,
        diff_bytes: 1 << 20,
    }
}

pub fn timing() -> Timing {
    Timing {
        heartbeat_ms: HEARTBEAT_MS,
        election_timeout_ms: ELECTION_TIMEOUT_MS,
    }
}

// ---------------------------------------------------------------------------- engine errors

/// Counts `ERROR` events the engine logs on this thread (it logs one only when it detects
/// a broken protocol invariant, e.g. a `Sync` that would truncate committed entries).
struct ErrorCounter(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorCounter {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.fetch_add(1, AtomicOrdering::Relaxed);
    }
}

/// Installs the counter for this thread; with `trace`, the engine's own logs are printed
/// too (interleaved with the simulation trace).
fn count_engine_errors(trace: bool) -> (Arc<AtomicUsize>, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::filter::LevelFilter;
    let count = Arc::new(AtomicUsize::new(0));
    let errors = ErrorCounter(count.clone()).with_filter(LevelFilter::ERROR);
    let logs = trace.then(|| {
        tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .with_filter(LevelFilter::INFO)
    });
    let subscriber = tracing_subscriber::registry().with(errors).with(logs);
    (count, tracing::subscriber::set_default(subscriber))
}

// ---------------------------------------------------------------------------- simulation

#[derive(Debug, Default)]
pub struct Stats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub crashes: u64,
    /// Crashes that also lost the writes not yet fsynced (and did lose some).
    pub power_losses: u64,
    pub partitions: u64,
    pub pauses: u64,
    pub writes_ok: u64,
    pub guesses_ok: u64,
    pub reads_ok: u64,
    pub unknown: u64,
    /// Numbered moves sent again after an unknown outcome, and how many of those the
    /// ensemble no longer remembered.
    pub retries: u64,
    pub retries_ok: u64,
    pub forgotten: u64,
    pub reconfigs_ok: u64,
    /// `PeerLost` events delivered: after a crash (a dead process closes its connections)
    /// and spurious ones (a reset on a live connection).
    pub peer_lost: u64,
    /// Graceful stops (`Shutdown`, then the process exits a little later).
    pub stops: u64,
    /// Snapshots made durable (taken, or installed from a leader).
    pub snapshots: u64,
    /// Leader snapshots installed by followers (SNAP).
    pub installs: u64,
}

pub struct Sim {
    pub name: &'static str,
    pub seed: u64,
    pub rng: Rng,
    pub now: u64,
    pub nodes: Vec<Node>,
    /// Nodes `0..initial` are the voters of the bootstrap configuration; the others start
    /// outside it.
    pub initial: usize,
    pub net: BinaryHeap<Packet>,
    pub next_seq: u64,
    pub faults: Faults,
    /// Partition: nodes talk only within their group.
    pub group: Vec<u32>,
    /// One-way links cut on top of the partition: `(from, to)`.
    pub cut: Vec<(usize, usize)>,
    /// Message kinds (`Message::kind`) the network loses.
    pub lose_kinds: Vec<&'static str>,
    pub requests: Vec<Request>,
    /// The last request number a client move got (every move is numbered).
    pub request_seq: u64,
    /// Numbered moves whose outcome was unknown: a client may send them again.
    pub unknown_moves: Vec<ReqKind>,
    /// Every numbered move in the global committed sequence: none may be there twice.
    pub applied_requests: HashSet<(String, u64)>,
    pub floor: Zxid,
    /// Invariant 1: epoch -> the node that led it.
    pub leaders: BTreeMap<u64, NodeId>,
    /// Invariants 2 and 3: everything any node ever committed, in order.
    pub committed: Vec<Entry>,
    /// Invariant 4: game state after applying up to a zxid.
    pub games: HashMap<Zxid, Game>,
    /// Invariant 6: the game after the whole global committed sequence.
    pub referee: Game,
    /// Invariant 7: the latest configuration in the global committed sequence.
    pub referee_config: Option<Membership>,
    /// Connection-loss notices due: `(at, to, peer)`: `to` learns `peer`'s connection closed.
    pub lost: Vec<(u64, usize, usize)>,
    /// Chance that a peer notices a crashed process's connection close.
    pub lost_notice: f64,
    pub steps: u64,
    pub next_full_check: u64,
    /// What every engine snapshots and syncs by (`snapshot_policy()` unless a test changes it).
    pub snapshots: SnapshotPolicy,
    pub trace: bool,
    pub stats: Stats,
    pub engine_errors: Arc<AtomicUsize>,
    _error_guard: tracing::subscriber::DefaultGuard,
}

impl Sim {
    pub fn new(name: &'static str, seed: u64, n: usize) -> Sim {
        Sim::with_states(name, seed, vec![Persistent::default(); n])
    }

    /// `total` nodes, of which the first `initial` bootstrap the ensemble.
    pub fn with_spares(name: &'static str, seed: u64, total: usize, initial: usize) -> Sim {
        Sim::build(name, seed, vec![Persistent::default(); total], initial)
    }

    /// Nodes start from the given durable images (pre-seeded logs).
    pub fn with_states(name: &'static str, seed: u64, states: Vec<Persistent>) -> Sim {
        let n = states.len();
        Sim::build(name, seed, states, n)
    }

    pub fn build(name: &'static str, seed: u64, states: Vec<Persistent>, initial: usize) -> Sim {
        let n = states.len();
        assert!(
            (1..=9).contains(&n),
            "node ids must sort like their numbers"
        );
        let trace = std::env::var("SIM_TRACE").is_ok_and(|v| !v.is_empty() && v != "0");
        let (engine_errors, error_guard) = count_engine_errors(trace);
        let mut sim = Sim {
            name,
            seed,
            rng: Rng::new(seed),
            now: 0,
            nodes: Vec::new(),
            initial,
            net: BinaryHeap::new(),
            next_seq: 0,
            faults: Faults::none(),
            group: vec![0; n],
            cut: Vec::new(),
            lose_kinds: Vec::new(),
            requests: Vec::new(),
            request_seq: 0,
            unknown_moves: Vec::new(),
            applied_requests: HashSet::new(),
            floor: Zxid::ZERO,
            leaders: BTreeMap::new(),
            committed: Vec::new(),
            games: HashMap::new(),
            referee: Game::default(),
            referee_config: None,
            lost: Vec::new(),
            lost_notice: 0.9,
            steps: 0,
            next_full_check: 0,
            snapshots: snapshot_policy(),
            trace,
            stats: Stats::default(),
            engine_errors,
            _error_guard: error_guard,
        };
        for (i, state) in states.into_iter().enumerate() {
            sim.nodes.push(Node {
                id: node_id(i),
                engine: None,
                store: MemoryStore {
                    state,
                    synced: None,
                },
                boot: 0,
                incarnation: 0,
                applied: Game::default(),
                applied_len: 0,
                last_checked_applied: None,
                verified: 0,
                paused_until: None,
                frozen_clock: false,
                unfreeze_at: None,
                clock_pct: 100,
                clock_base: (0, 0),
                crash_armed: false,
                restart_at: None,
                stop_at: None,
                served: Zxid::ZERO,
                truncations: Vec::new(),
                applies: 0,
            });
        }
        // Pre-seeded committed prefixes must agree with each other as well.
        for i in 0..n {
            sim.start(i);
        }
        sim
    }

    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| self.fail(format!("unknown node {id}")))
    }

    pub fn engine(&self, i: usize) -> &Engine {
        self.nodes[i]
            .engine
            .as_ref()
            .unwrap_or_else(|| self.fail(format!("{} is down", node_id(i))))
    }

    #[track_caller]
    pub fn fail(&self, what: impl AsRef<str>) -> ! {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n[{}] seed {} FAILED at t={}ms (step {}): {}",
            self.name,
            self.seed,
            self.now,
            self.steps,
            what.as_ref()
        );
        for node in &self.nodes {
            match &node.engine {
                Some(e) => {
                    let _ = writeln!(
                        s,
                        "  {}: {:?} leader={:?} accepted={} current={} last={} committed={} log_len={} config {} at {}{}",
                        node.id,
                        e.role(),
                        e.leader(),
                        e.accepted_epoch(),
                        e.current_epoch(),
                        e.last_zxid(),
                        e.committed(),
                        e.log().len(),
                        e.membership(),
                        e.config_zxid(),
                        if e.is_removed() { " (removed)" } else { "" }
                    );
                }
                None => {
                    let _ = writeln!(s, "  {}: down", node.id);
                }
            }
        }
        let _ = writeln!(s, "  leaders per epoch: {:?}", self.leaders);
        let _ = writeln!(
            s,
            "replay: SIM_SEED={} SIM_TRACE=1 cargo test -p guessgame-core --test simulation {} -- --nocapture",
            self.seed, self.name
        );
        panic!("{s}");
    }

    // ------------------------------------------------------------------ stepping

    /// Advance virtual time by one step: tick every running node, then deliver what is due.
    pub fn step(&mut self) {
        self.now += STEP_MS;
        self.steps += 1;
        for i in 0..self.n() {
            if let Some(at) = self.nodes[i].restart_at {
                if at <= self.now {
                    self.restart(i);
                }
            }
            if self.nodes[i].paused_until.is_some_and(|t| t <= self.now) {
                self.nodes[i].paused_until = None;
            }
            if self.nodes[i].unfreeze_at.is_some_and(|t| t <= self.now) {
                self.nodes[i].unfreeze_at = None;
                self.set_frozen(i, false);
            }
            if self.nodes[i].stop_at.is_some_and(|t| t <= self.now) {
                self.crash(i); // the stopping process exits
            }
        }
        // Tick in a random rotation so that no node is always first.
        let n = self.n();
        let first = self.rng.below(n as u64) as usize;
        for k in 0..n {
            let i = (first + k) % n;
            let node = &self.nodes[i];
            if node.up() && node.paused_until.is_none() && !node.frozen_clock {
                let now_ms = self.local_clock(i);
                self.deliver(i, Event::Tick { now_ms });
            }
        }
        while self.net.peek().is_some_and(|p| p.at <= self.now) {
            let mut p = self.net.pop().expect("peeked");
            let to = &self.nodes[p.to];
            if !to.up() || !self.connected(p.from, p.to) {
                continue;
            }
            if let Some(until) = to.paused_until {
                p.at = until;
                self.net.push(p);
                continue;
            }
            let from = node_id(p.from);
            self.deliver(p.to, Event::Message { from, msg: p.msg });
        }
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.lost.drain(..).partition(|(at, _, _)| *at <= now);
        self.lost = later;
        for (at, to, peer) in due {
            match self.nodes[to].paused_until {
                // A paused process reads the closed connection once it runs again.
                Some(until) => self.lost.push((until.max(at), to, peer)),
                None => self.peer_lost(to, peer),
            }
        }
        // Full durable-versus-memory comparison once a virtual second (cheap checks run
        // after every event).
        if self.now >= self.next_full_check {
            self.next_full_check = self.now + 1_000;
            for i in 0..n {
                if self.nodes[i].up() {
                    self.check_durable_full(i);
                }
            }
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    /// Steps until `pred` holds; false if `ms` pass first.
    pub fn run_until(&mut self, ms: u64, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + ms;
        loop {
            if pred(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            self.step();
        }
    }

    /// Feeds one event to node `i` and carries out its outputs like the runtime does.
    pub fn deliver(&mut self, i: usize, ev: Event) {
        let trace = self.trace;
        let now = self.now;
        let node = &mut self.nodes[i];
        let Some(engine) = node.engine.as_mut() else {
            return;
        };
        if trace && !matches!(ev, Event::Tick { .. }) {
            eprintln!("[{now:>7}] {} <- {ev:?}", node.id);
        }
        let errors = self.engine_errors.load(AtomicOrdering::Relaxed);
        let outs = engine.step(ev);
        if self.engine_errors.load(AtomicOrdering::Relaxed) != errors {
            self.fail(format!(
                "{} logged an error: it detected a broken invariant (SIM_TRACE=1 shows its logs)",
                node_id(i)
            ));
        }
        if trace {
            for o in &outs {
                eprintln!("[{now:>7}] {} -> {o:?}", node.id);
            }
        }
        // 0. Early sends (a leader's proposals, commits, heartbeats) may leave before the
        //    persists, as the runtime sends them: each one not behind a `Send` to the same
        //    peer. A crash may come after some of them and before the persist.
        let (early, rest) = split_early(outs);
        let ops: Vec<StorageOp> = rest
            .iter()
            .filter_map(|o| match o {
                Output::Persist(op) => Some(op.clone()),
                _ => None,
            })
            .collect();
        let visible = rest.len() - ops.len();
        // Crash points: after k early sends (before the persist), or after the persist and
        // k of the rest.
        let crash_at = if self.nodes[i].crash_armed {
            Some(self.rng.below((early.len() + 1 + visible + 1) as u64) as usize)
        } else {
            None
        };
        let n_early = early.len();
        for (k, (to, msg)) in early.into_iter().enumerate() {
            if crash_at == Some(k) {
                self.crash(i);
                return;
            }
            self.send(i, &to, msg);
        }
        if crash_at == Some(n_early) {
            self.crash(i);
            return;
        }
        // 1. Durable, atomically.
        if !ops.is_empty() {
            self.nodes[i].store.persist(&ops);
            self.stats.snapshots += ops
                .iter()
                .filter(|op| matches!(op, StorageOp::SaveSnapshot { .. }))
                .count() as u64;
        }
        self.check_node(i, &ops, &rest);
        // 2. Then sends, applies and replies, in order; a crash may cut them short.
        let crash_after = crash_at.map(|k| k - n_early - 1);
        let mut done = 0;
        for o in rest {
            if matches!(o, Output::Persist(_)) {
                continue;
            }
            if crash_after == Some(done) {
                break;
            }
            done += 1;
            match o {
                Output::Send { to, msg } => self.send(i, &to, msg),
                Output::Apply(entry) => self.on_apply(i, entry),
                Output::Restore(snapshot) => self.on_restore(i, snapshot),
                Output::Reply { req, result } => self.on_reply(i, req, result),
                Output::Persist(_) | Output::SendEarly { .. } => unreachable!(),
            }
        }
        if crash_after.is_some() {
            self.crash(i);
            return;
        }
        // 3. The log is on disk: tell the engine (a leader counts its own copy from now on).
        let log_changed = ops.iter().any(StorageOp::changes_log);
        let node = &self.nodes[i];
        let engine = node.engine.as_ref().expect("up");
        let committed_len = self.global_len(engine.committed());
        if node.applied != *engine.game() || Some(node.applied_len) != committed_len {
            self.fail(format!(
                "{}: the applied game ({} entries, applied {}) differs from the engine's ({committed_len:?} committed, applied {})",
                node.id,
                node.applied_len,
                node.applied.applied,
                engine.game().applied
            ));
        }
        // The game a node serves never goes back, across crashes and power losses.
        if engine.serves_local_reads() {
            let committed = engine.committed();
            if committed < node.served {
                self.fail(format!(
                    "{} serves local reads at commit point {committed}, older than the {} it served before",
                    node.id, node.served
                ));
            }
            self.nodes[i].served = committed;
        }
        if log_changed {
            self.deliver(i, Event::Persisted);
        }
    }

    // ------------------------------------------------------------------ views

    /// The single established leader that every other node follows, with equal committed
    /// logs covering the leader's whole log; otherwise why not.
    pub fn converged(&self) -> Result<usize, String> {
        let mut leaders = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(e) = &node.engine else {
                return Err(format!("{} is down", node.id));
            };
            if node.paused_until.is_some() || node.frozen_clock {
                return Err(format!("{} is paused", node.id));
            }
            if e.role() == RoleKind::Leading {
                leaders.push(i);
            }
        }
        let [l] = leaders[..] else {
            return Err(format!("{} leaders", leaders.len()));
        };
        let le = self.engine(l);
        if !le.is_established_leader() {
            return Err(format!("{} leads but is not established", node_id(l)));
        }
        if le.committed() != le.last_zxid() {
            return Err(format!(
                "leader {} has uncommitted entries after {}",
                node_id(l),
                le.committed()
            ));
        }
        let config = le.membership().clone();
        for (i, node) in self.nodes.iter().enumerate() {
            // Nodes outside the leader's configuration (never added, or removed) only have
            // to keep out of the way (no leadership: checked above).
            if i == l || !config.contains(&node.id) {
                continue;
            }
            let e = node.engine.as_ref().expect("up");
            if e.role() != RoleKind::Following || e.leader() != Some(&node_id(l)) {
                return Err(format!(
                    "{} is {:?} (leader {:?}), not following {}",
                    node.id,
                    e.role(),
                    e.leader(),
                    node_id(l)
                ));
            }
            if !same_log(e, le) {
                return Err(format!(
                    "{} has committed {} / last {}, leader {}",
                    node.id,
                    e.committed(),
                    e.last_zxid(),
                    le.committed()
                ));
            }
        }
        Ok(l)
    }

    pub fn run_until_converged(&mut self, ms: u64) -> usize {
        if !self.run_until(ms, |s| s.converged().is_ok()) {
            let why = self.converged().unwrap_err();
            self.fail(format!("no convergence within {ms}ms after healing: {why}"));
        }
        self.converged().expect("checked")
    }

    /// Any node currently in the leading role (the one with the highest epoch).
    pub fn current_leader(&self) -> Option<usize> {
        (0..self.n())
            .filter(|&i| {
                self.nodes[i]
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.role() == RoleKind::Leading)
            })
            .max_by_key(|&i| self.engine(i).epoch())
    }

    pub fn established_leader(&self) -> Option<usize> {
        (0..self.n()).find(|&i| {
            self.nodes[i]
                .engine
                .as_ref()
                .is_some_and(|e| e.is_established_leader())
        })
    }

    pub fn wait_for_leader(&mut self, ms: u64) -> usize {
        if !self.run_until(ms, |s| s.converged().is_ok()) {
            let why = self.converged().unwrap_err();
            self.fail(format!("no leader within {ms}ms: {why}"));
        }
        self.converged().expect("checked")
    }
}

/// `a` and `b` hold the same log and commit point: equal where both hold entries (each may
/// have compacted a different prefix away) and ending at the same zxid.
pub fn same_log(a: &Engine, b: &Engine) -> bool {
    if a.committed() != b.committed() || a.last_zxid() != b.last_zxid() {
        return false;
    }
    let from = a.log_start().max(b.log_start());
    let held =
        |e: &Engine| -> Vec<Entry> { e.log().iter().filter(|x| x.zxid > from).cloned().collect() };
    held(a) == held(b)
}

pub fn summary(sim: &Sim) -> String {
    let s = &sim.stats;
    format!(
        "seed {} n={} t={}s epochs={} committed={} writes_ok={} guesses_ok={} reads_ok={} reconfigs_ok={} unknown={} retries={} retries_ok={} forgotten={} crashes={} power_losses={} stops={} peer_lost={} snapshots={} installs={} partitions={} pauses={} sent={} dropped={} dup={}",
        sim.seed,
        sim.n(),
        sim.now / 1000,
        sim.leaders.len(),
        sim.committed.len(),
        s.writes_ok,
        s.guesses_ok,
        s.reads_ok,
        s.reconfigs_ok,
        s.unknown,
        s.retries,
        s.retries_ok,
        s.forgotten,
        s.crashes,
        s.power_losses,
        s.stops,
        s.peer_lost,
        s.snapshots,
        s.installs,
        s.partitions,
        s.pauses,
        s.sent,
        s.dropped,
        s.duplicated
    )
}
