//! Nodes: an engine plus its durable image, and their lifecycle (start, crash, restart,
//! pause, clock freeze and drift).

use guessgame_core::game::Game;
use guessgame_core::{Engine, Event, Member, Membership, NodeId, Persistent, StorageOp, Zxid};

use crate::sim::{timing, Sim};

/// A node's durable image: what a crash keeps.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    pub state: Persistent,
    /// The image as of the last fsync, while batches written without one (those that only
    /// move the commit point, as the SQLite store writes them) sit on top of it: what a
    /// power loss leaves (None: everything is synced).
    pub synced: Option<Persistent>,
}

impl MemoryStore {
    /// Carries out one batch as the SQLite store does: a batch that only moves the commit
    /// point is written without an fsync; any other batch syncs it and all before it.
    pub fn persist(&mut self, ops: &[StorageOp]) {
        let unsynced = ops
            .iter()
            .all(|op| matches!(op, StorageOp::SetCommitted(_)));
        if !unsynced {
            self.synced = None;
        } else if self.synced.is_none() {
            self.synced = Some(self.state.clone());
        }
        self.state.apply(ops);
    }
}

pub struct Node {
    pub id: NodeId,
    pub engine: Option<Engine>,
    pub store: MemoryStore,
    /// Global time at which this incarnation started (its clock reads 0 then).
    pub boot: u64,
    pub incarnation: u32,
    /// Game rebuilt from this incarnation's `Apply` outputs (what the runtime serves).
    pub applied: Game,
    pub applied_len: usize,
    pub last_checked_applied: Option<Zxid>,
    /// Committed entries of this incarnation already compared in full.
    pub verified: usize,
    /// Paused process: no ticks, inbound messages held until then.
    pub paused_until: Option<u64>,
    /// Clock stopped, but messages and requests are still handled.
    pub frozen_clock: bool,
    pub unfreeze_at: Option<u64>,
    /// Clock speed in percent of real time (drift; safety must not depend on it).
    pub clock_pct: u64,
    /// Local clock reading when the clock was last (un)frozen or started, and when.
    pub clock_base: (u64, u64),
    /// Crash in the middle of carrying out the next batch.
    pub crash_armed: bool,
    pub restart_at: Option<u64>,
    /// A stopping node (told `Shutdown`) exits then.
    pub stop_at: Option<u64>,
    /// The highest commit point at which this node served local reads, in any incarnation:
    /// the game it serves must never go back (not even after a power loss).
    pub served: Zxid,
    /// Every `TruncateAfter` this node persisted.
    pub truncations: Vec<Zxid>,
    pub applies: usize,
}

impl Node {
    pub fn up(&self) -> bool {
        self.engine.is_some()
    }
}

pub fn node_id(i: usize) -> NodeId {
    format!("node{}", i + 1)
}

impl Sim {
    pub fn member(i: usize) -> Member {
        Member {
            id: node_id(i),
            address: format!("sim-{}", i + 1),
        }
    }

    /// What node `i` starts with before its log holds a configuration.
    pub fn bootstrap(&self, i: usize) -> Membership {
        if i < self.initial {
            Membership::of_voters((0..self.initial).map(Sim::member).collect())
        } else {
            Membership::default()
        }
    }

    // ------------------------------------------------------------------ lifecycle

    pub fn start(&mut self, i: usize) {
        let seed = self.rng.next_u64();
        let bootstrap = self.bootstrap(i);
        let policy = self.snapshots.clone();
        let node = &mut self.nodes[i];
        let engine = Engine::with_membership(
            node.id.clone(),
            bootstrap,
            timing(),
            node.store.state.clone(),
            seed,
        )
        .with_snapshot_policy(policy);
        node.boot = self.now;
        node.clock_base = (0, self.now);
        node.applied = engine.game().clone();
        node.last_checked_applied = None;
        node.verified = 0;
        node.paused_until = None;
        node.frozen_clock = false;
        node.crash_armed = false;
        node.restart_at = None;
        node.engine = Some(engine);
        if self.trace {
            eprintln!("[{:>7}] {} starts", self.now, node_id(i));
        }
        self.check_node(i, &[], &[]);
        // The engine rebuilds its game from its snapshot and committed log: it must equal a
        // replay of the committed sequence.
        let Some(len) = self.global_len(self.engine(i).committed()) else {
            self.fail(format!(
                "{} restarted with a commit point that was never committed",
                node_id(i)
            ));
        };
        self.nodes[i].applied_len = len;
        let mut replay = Game::default();
        for e in &self.committed[..len] {
            replay.apply(e);
        }
        if &replay != self.engine(i).game() {
            self.fail(format!(
                "{} restarted with a game unlike its log",
                node_id(i)
            ));
        }
    }

    /// Drops the engine and whatever it had not carried out; the store survives.
    pub fn crash(&mut self, i: usize) {
        if self.trace {
            eprintln!("[{:>7}] {} CRASHES", self.now, node_id(i));
        }
        let node = &mut self.nodes[i];
        node.engine = None;
        node.incarnation += 1;
        node.crash_armed = false;
        node.stop_at = None;
        node.paused_until = None;
        node.frozen_clock = false;
        node.unfreeze_at = None;
        self.stats.crashes += 1;
        // The dead process's connections close: most peers it was connected to notice soon
        // (one that does not must fall back on the election timeout).
        for j in 0..self.n() {
            if j != i
                && self.nodes[j].up()
                && self.connected(i, j)
                && self.rng.chance(self.lost_notice)
            {
                let at = self.now + self.rng.range(0, 20);
                self.lost.push((at, j, i));
            }
        }
    }

    /// An OS crash or power loss: the process dies and every write not yet fsynced is lost
    /// (LazyFS-style): the store goes back to its last synced image.
    pub fn power_loss(&mut self, i: usize) {
        self.crash(i);
        if let Some(synced) = self.nodes[i].store.synced.take() {
            if self.trace {
                eprintln!(
                    "[{:>7}] {} LOSES POWER: commit point {} -> {}",
                    self.now,
                    node_id(i),
                    self.nodes[i].store.state.committed,
                    synced.committed
                );
            }
            self.nodes[i].store.state = synced;
            self.stats.power_losses += 1;
        }
    }

    /// `to` learns that `peer`'s connection to it closed (after a crash, or spuriously).
    pub fn peer_lost(&mut self, to: usize, peer: usize) {
        if self.trace {
            eprintln!(
                "[{:>7}] {} lost its connection from {}",
                self.now,
                node_id(to),
                node_id(peer)
            );
        }
        self.stats.peer_lost += 1;
        self.deliver(
            to,
            Event::PeerLost {
                peer: node_id(peer),
            },
        );
    }

    /// Graceful stop (SIGTERM): `Shutdown` now, the process exits within `exit_within_ms`
    /// (perhaps before its leader has handed over).
    pub fn stop(&mut self, i: usize, exit_within_ms: u64) {
        if self.trace {
            eprintln!("[{:>7}] {} STOPS", self.now, node_id(i));
        }
        self.stats.stops += 1;
        self.deliver(i, Event::Shutdown);
        if self.nodes[i].up() {
            let at = self.now + self.rng.range(0, exit_within_ms);
            self.nodes[i].stop_at = Some(at);
        }
    }

    pub fn restart(&mut self, i: usize) {
        if !self.nodes[i].up() {
            self.start(i);
        }
    }

    pub fn pause(&mut self, i: usize, ms: u64) {
        if self.trace {
            eprintln!("[{:>7}] {} paused for {ms}ms", self.now, node_id(i));
        }
        self.nodes[i].paused_until = Some(self.now + ms);
        self.stats.pauses += 1;
    }

    /// What node `i`'s clock reads now (0 when its incarnation started).
    pub fn local_clock(&self, i: usize) -> u64 {
        let node = &self.nodes[i];
        let (base, since) = node.clock_base;
        if node.frozen_clock {
            base
        } else {
            base + (self.now - since) * node.clock_pct / 100
        }
    }

    /// Stops or restarts node `i`'s clock (it keeps handling messages and requests).
    pub fn set_frozen(&mut self, i: usize, frozen: bool) {
        if self.nodes[i].frozen_clock != frozen {
            let reading = self.local_clock(i);
            let node = &mut self.nodes[i];
            node.clock_base = (reading, self.now);
            node.frozen_clock = frozen;
        }
    }
}
