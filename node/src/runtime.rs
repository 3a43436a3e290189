//! Drives one [`Engine`]: feeds it events, carries out its outputs.
//!
//! The engine and its storage live on one dedicated thread. Each turn takes every event
//! that is waiting (up to a bound), steps the engine through all of them, sends a leader's
//! proposals (`SendEarly`), writes all the persists in **one** SQLite transaction (group
//! commit), and only then sends the other messages, applies committed entries and answers
//! clients; then it tells the engine its log is durable (`Event::Persisted`). A read view ([`NodeView`]) is published
//! after every turn for the gRPC handlers.
//!
//! The messages of a turn are coalesced per peer before they are handed to the transport
//! ([`Outbox`]): consecutive proposals to one follower become one proposal carrying all their
//! entries (and the latest commit point), and consecutive ACKs to the leader become the last
//! one. A follower then persists, and acknowledges, a whole turn of the leader's proposals at
//! once, and the leader counts one ACK per follower per turn instead of one per entry.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use crate::storage::{LogStore, StorageWatch};
use crate::transport::Transport;
use guessgame_core::game::Game;
use guessgame_core::{
    split_early, ClientError, ClientOp, ClientReply, Engine, Event, Membership, Message, NodeId,
    Output, RoleKind, StorageOp, Zxid,
};

const MAX_EVENTS_PER_TURN: usize = 512;

pub type ClientResult = Result<ClientReply, ClientError>;

pub enum Command {
    Tick,
    Peer {
        from: NodeId,
        /// Where the sender says it is reached (learned when it is not in our configuration).
        from_address: Option<String>,
        msg: guessgame_core::Message,
    },
    Propose {
        op: ClientOp,
        reply: oneshot::Sender<ClientResult>,
    },
    LinearizableRead {
        reply: oneshot::Sender<ClientResult>,
    },
    /// The stream `peer` held open to us ended (see [`Event::PeerLost`]).
    PeerLost {
        peer: NodeId,
    },
    /// Hand leadership over before stopping; `done` fires once this node no longer leads
    /// (at once when it does not).
    HandOff {
        done: oneshot::Sender<()>,
    },
    Stop,
}

/// What the gRPC side may read without asking the engine thread.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub node_id: NodeId,
    pub role: RoleKind,
    pub leader: Option<NodeId>,
    pub accepted_epoch: u64,
    pub current_epoch: u64,
    pub last_zxid: Zxid,
    pub committed: Zxid,
    /// The zxid of this node's latest snapshot (ZERO: none taken or installed yet).
    pub snapshot: Zxid,
    /// The last zxid compacted away: the log holds the entries after it (ZERO: nothing
    /// compacted, the log holds the whole history).
    pub log_start: Zxid,
    /// The first entry the log holds (ZERO: the log is empty).
    pub first_zxid: Zxid,
    /// Voters in the configuration in use.
    pub members: usize,
    pub quorum: usize,
    /// The configuration in use and the zxid of its entry (ZERO: bootstrap). Shared like the
    /// game, and only rebuilt when the configuration changes (a view is published every turn).
    pub membership: Arc<Membership>,
    pub config_zxid: Zxid,
    /// The latest committed configuration and its zxid.
    pub committed_membership: Arc<Membership>,
    pub committed_config_zxid: Zxid,
    /// A leader told us (or we committed) that the configuration leaves us out.
    pub removed: bool,
    /// This node is stopping (SIGTERM): it takes no requests.
    pub stopping: bool,
    /// [`Engine::serves_local_reads`]: in a working quorum and caught up with the
    /// leadership's first commit.
    pub serves_reads: bool,
    /// Applied game state (committed entries only). Shared: the gRPC handlers take a copy
    /// of the view for every request, which must not copy the game.
    pub game: Arc<Game>,
}

impl NodeView {
    /// Why this node's game may lag the ensemble's without bound: it is in no working
    /// quorum. `None` while it leads or follows a leader of its configuration — then its game
    /// lags the committed one only by what its leader has yet to send, and a node cut off
    /// from its leader goes looking within the election timeout (as a leader that lost its
    /// quorum steps down), so that is the bound ZooKeeper gives too.
    pub fn stale_because(&self) -> Option<&'static str> {
        if self.stopping {
            Some("stopping")
        } else if self.removed {
            Some("removed from the configuration")
        } else {
            match self.role {
                RoleKind::Leading | RoleKind::Following if self.serves_reads => None,
                RoleKind::Leading | RoleKind::Following => {
                    Some("catching up with its leader (it may lack what it served before a crash)")
                }
                RoleKind::Looking | RoleKind::Candidate => {
                    Some("looking for a leader (in no quorum)")
                }
            }
        }
    }

    /// Where `id` is reached, as far as this node knows.
    pub fn address_of(&self, id: &str) -> Option<&str> {
        self.membership
            .member(id)
            .or_else(|| self.committed_membership.member(id))
            .map(|m| m.address.as_str())
            .filter(|a| !a.is_empty())
    }

    /// "voter", "learner" or "none".
    pub fn membership_role(&self) -> &'static str {
        if self.membership.is_voter(&self.node_id) {
            "voter"
        } else if self.membership.is_learner(&self.node_id) {
            "learner"
        } else {
            "none"
        }
    }

    /// The view after a turn; the configurations are taken over from `previous` while their
    /// zxids are unchanged.
    fn of(engine: &Engine, game: Arc<Game>, previous: Option<&NodeView>) -> NodeView {
        let config_zxid = engine.config_zxid();
        let (committed_config_zxid, committed) = engine.committed_membership();
        let membership = match previous {
            Some(p) if p.config_zxid == config_zxid => p.membership.clone(),
            _ => Arc::new(engine.membership().clone()),
        };
        let committed_membership = match previous {
            Some(p) if p.committed_config_zxid == committed_config_zxid => {
                p.committed_membership.clone()
            }
            _ => Arc::new(committed.clone()),
        };
        NodeView {
            node_id: engine.id().clone(),
            role: engine.role(),
            leader: engine.leader().cloned(),
            accepted_epoch: engine.accepted_epoch(),
            current_epoch: engine.current_epoch(),
            last_zxid: engine.last_zxid(),
            committed: engine.committed(),
            snapshot: engine.snapshot().map_or(Zxid::ZERO, |s| s.zxid),
            log_start: engine.log_start(),
            first_zxid: engine.log().first().map_or(Zxid::ZERO, |e| e.zxid),
            members: engine.membership().voters.len(),
            quorum: engine.quorum(),
            membership,
            config_zxid,
            committed_membership,
            committed_config_zxid,
            removed: engine.is_removed(),
            serves_reads: engine.serves_local_reads(),
            stopping: engine.is_stopping(),
            game,
        }
    }
}

pub type SharedView = Arc<RwLock<NodeView>>;

/// Where this node stands in the ensemble, published on a watch channel whenever it changes
/// (health reporting and the stop-on-removal wait on it instead of polling the view).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Leading, or following a leader: this node serves (the health services say SERVING).
    pub in_ensemble: bool,
    /// A leader told us (or we committed) that the configuration leaves us out.
    pub removed: bool,
}

impl Standing {
    fn of(view: &NodeView) -> Standing {
        Standing {
            in_ensemble: matches!(view.role, RoleKind::Leading | RoleKind::Following)
                && view.leader.is_some(),
            removed: view.removed,
        }
    }
}

/// A running engine thread and the handles to it.
pub struct EngineHandle {
    /// Where events for the engine go.
    pub commands: mpsc::UnboundedSender<Command>,
    /// The view published after every turn.
    pub view: SharedView,
    /// Changes of [`Standing`].
    pub standing: watch::Receiver<Standing>,
    /// How long the storage write the engine thread is blocked in has been running.
    pub storage: Arc<StorageWatch>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Spawns the engine thread.
pub fn spawn(
    engine: Engine,
    store: Box<dyn LogStore>,
    transport: Box<dyn Transport>,
) -> EngineHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let first = NodeView::of(&engine, Arc::new(engine.game().clone()), None);
    let (standing_tx, standing) = watch::channel(Standing::of(&first));
    let view = Arc::new(RwLock::new(first));
    let shared = view.clone();
    let storage = StorageWatch::new();
    let storage_watch = storage.clone();
    let handle = std::thread::Builder::new()
        .name(format!("engine-{}", engine.id()))
        .spawn(move || {
            let id = engine.id().clone();
            // Fail-stop: a node whose engine died must not keep serving (it would answer
            // nothing and hold its port); exiting lets a supervisor restart it from its log.
            let driver = Driver {
                engine,
                store,
                watch: storage_watch,
                transport,
                view: shared,
                standing: standing_tx,
                replies: HashMap::new(),
                next_req: 1,
                started: Instant::now(),
                known: HashMap::new(),
                config_seen: None,
                handoff: None,
            };
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.run(rx)));
            if run.is_err() {
                eprintln!("guessgame-node {id}: the engine thread panicked; exiting");
                std::process::exit(70);
            }
        })
        .expect("spawn engine thread");
    EngineHandle {
        commands: tx,
        view,
        standing,
        storage,
        thread: handle,
    }
}

struct Driver {
    engine: Engine,
    store: Box<dyn LogStore>,
    watch: Arc<StorageWatch>,
    transport: Box<dyn Transport>,
    view: SharedView,
    standing: watch::Sender<Standing>,
    replies: HashMap<u64, oneshot::Sender<ClientResult>>,
    next_req: u64,
    started: Instant,
    /// Peer addresses handed to the transport.
    known: HashMap<NodeId, String>,
    /// (configuration in use, committed one) when addresses were last refreshed.
    config_seen: Option<(Zxid, Zxid)>,
    /// Told once the engine no longer leads, after a [`Command::HandOff`].
    handoff: Option<oneshot::Sender<()>>,
}

impl Driver {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut outputs = Vec::new();
        'turns: while let Some(cmd) = rx.blocking_recv() {
            let mut stop = self.handle(cmd, &mut outputs);
            let mut n = 1;
            while !stop && n < MAX_EVENTS_PER_TURN {
                match rx.try_recv() {
                    Ok(cmd) => stop = self.handle(cmd, &mut outputs),
                    Err(_) => break,
                }
                n += 1;
            }
            let mut batch = std::mem::take(&mut outputs);
            // A batch that changed the log is followed by `Persisted` (a leader counts its
            // own copy from then on); what that step decides is carried out at once.
            while self.execute(batch) {
                batch = self.engine.step(Event::Persisted);
            }
            if self.handoff.is_some() && self.engine.role() != RoleKind::Leading {
                let _ = self.handoff.take().map(|done| done.send(()));
            }
            if stop {
                break 'turns;
            }
        }
        tracing::info!(node = %self.engine.id(), "engine stopped");
    }

    /// Steps the engine; returns true on `Stop`.
    fn handle(&mut self, cmd: Command, outputs: &mut Vec<Output>) -> bool {
        let event = match cmd {
            Command::Stop => return true,
            Command::Tick => Event::Tick {
                now_ms: self.started.elapsed().as_millis() as u64,
            },
            Command::Peer {
                from,
                from_address,
                msg,
            } => {
                if let Some(address) = from_address {
                    if !self.known.contains_key(&from) {
                        self.known.insert(from.clone(), address.clone());
                        self.transport.learn(&from, &address);
                    }
                }
                Event::Message { from, msg }
            }
            Command::Propose { op, reply } => {
                let req = self.next_req;
                self.next_req += 1;
                self.replies.insert(req, reply);
                Event::Propose { req, op }
            }
            Command::LinearizableRead { reply } => {
                let req = self.next_req;
                self.next_req += 1;
                self.replies.insert(req, reply);
                Event::LinearizableRead { req }
            }
            Command::PeerLost { peer } => Event::PeerLost { peer },
            Command::HandOff { done } => {
                self.handoff = Some(done);
                Event::Shutdown
            }
        };
        outputs.extend(self.engine.step(event));
        false
    }

    /// Carries out one batch; true when it changed the log on disk.
    fn execute(&mut self, outputs: Vec<Output>) -> bool {
        if outputs.is_empty() {
            return false;
        }
        self.refresh_addresses();
        // 0. A leader's proposals, commits and heartbeats leave before its own write, so
        //    that the followers' fsyncs overlap ours — each one not behind a plain `Send` to
        //    the same peer in this batch (a peer's messages stay in order).
        let (early_msgs, outputs) = split_early(outputs);
        let mut early = Outbox::default();
        for (to, msg) in early_msgs {
            early.push(to, msg);
        }
        early.send(self.transport.as_mut());
        // 1. Everything durable, in one transaction.
        let ops: Vec<StorageOp> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Persist(op) => Some(op.clone()),
                _ => None,
            })
            .collect();
        let log_changed = ops.iter().any(StorageOp::changes_log);
        self.watch.begin();
        let persisted = self.store.persist(&ops);
        self.watch.end();
        if let Err(e) = persisted {
            // Continuing would acknowledge what is not on disk.
            tracing::error!(node = %self.engine.id(), "storage failed, stopping: {e}");
            eprintln!("guessgame-node {}: storage failed: {e}", self.engine.id());
            std::process::exit(3);
        }
        // 2. Then what others may observe. Replies go last, after the view shows the
        //    applied entries, so a client reads its own write on this node.
        let old_game = self.view.read().expect("view lock").game.clone();
        let mut game: Option<Game> = None;
        let mut outbox = Outbox::default();
        let mut replies = Vec::new();
        for o in outputs {
            match o {
                Output::Persist(_) => {}
                Output::Send { to, msg } => outbox.push(to, msg),
                Output::SendEarly { .. } => unreachable!("split off above"),
                Output::Apply(entry) => game
                    .get_or_insert_with(|| (*old_game).clone())
                    .apply(&entry),
                // The leader's snapshot replaced our log: its game is the applied state now.
                Output::Restore(snapshot) => game = Some(snapshot.game),
                Output::Reply { req, result } => replies.push((req, result)),
            }
        }
        outbox.send(self.transport.as_mut());
        let game = game.map(Arc::new).unwrap_or(old_game);
        let mut view = self.view.write().expect("view lock");
        *view = NodeView::of(&self.engine, game, Some(&view));
        let standing = Standing::of(&view);
        drop(view);
        self.standing
            .send_if_modified(|s| std::mem::replace(s, standing) != standing);
        for (req, result) in replies {
            if let Some(tx) = self.replies.remove(&req) {
                let _ = tx.send(result);
            }
        }
        log_changed
    }
}

impl Driver {
    /// Hands the transport the addresses of the configuration(s) in use when they change.
    fn refresh_addresses(&mut self) {
        let seen = (
            self.engine.config_zxid(),
            self.engine.committed_membership().0,
        );
        if self.config_seen == Some(seen) {
            return;
        }
        self.config_seen = Some(seen);
        for m in self.engine.known_members() {
            if !m.address.is_empty() && self.known.get(&m.id) != Some(&m.address) {
                self.known.insert(m.id.clone(), m.address.clone());
                self.transport.learn(&m.id, &m.address);
            }
        }
    }
}

/// One turn's messages, per peer in send order, coalesced where a single message says the
/// same as a run of them (the engine's outputs are carried out as if sent one by one).
#[derive(Default)]
struct Outbox {
    queues: Vec<(NodeId, Vec<Message>)>,
}

impl Outbox {
    fn push(&mut self, to: NodeId, msg: Message) {
        let queue = match self.queues.iter().position(|(peer, _)| *peer == to) {
            Some(i) => &mut self.queues[i].1,
            None => {
                self.queues.push((to, Vec::new()));
                &mut self.queues.last_mut().expect("just pushed").1
            }
        };
        if let Some(msg) = match queue.last_mut() {
            Some(last) => coalesce(last, msg),
            None => Some(msg),
        } {
            queue.push(msg);
        }
    }

    fn send(self, transport: &mut dyn Transport) {
        for (to, msgs) in self.queues {
            for msg in msgs {
                transport.send(&to, &msg);
            }
        }
    }
}

/// Folds `next` into `last` (the message queued before it for the same peer) when the one
/// message means the same to the receiver as the two in a row; else hands `next` back.
///
/// - Proposal + Proposal continuing it (same epoch, `prev` = its last entry): one proposal
///   with both runs of entries and the later commit point. The follower appends (one
///   persist), ACKs the last zxid — which acknowledges every entry before it — and commits.
/// - Proposal + Commit of an entry it carries: the proposal's commit point moves up; the
///   follower commits right after appending, as it would on the separate Commit.
/// - Commit + Commit, Ack + later Ack (same epoch): the later one says it all (commit points
///   and ACKed zxids only grow; the leader keeps the maximum).
/// - Heartbeat + later Heartbeat, HeartbeatAck + later HeartbeatAck (same epoch): likewise
///   (the leader confirms every read whose round is at or below the acknowledged seq).
fn coalesce(last: &mut Message, next: Message) -> Option<Message> {
    match (last, next) {
        (
            Message::Proposal {
                epoch,
                entries,
                commit,
                ..
            },
            Message::Proposal {
                epoch: e2,
                prev,
                entries: more,
                commit: c2,
            },
        ) if *epoch == e2 && entries.last().map(|e| e.zxid) == Some(prev) => {
            entries.extend(more);
            *commit = (*commit).max(c2);
            None
        }
        (
            Message::Proposal {
                epoch,
                entries,
                commit,
                ..
            },
            Message::Commit { epoch: e2, zxid },
        ) if *epoch == e2 && entries.last().is_some_and(|e| zxid <= e.zxid) => {
            *commit = (*commit).max(zxid);
            None
        }
        (
            Message::Commit { epoch, zxid },
            Message::Commit {
                epoch: e2,
                zxid: z2,
            },
        ) if *epoch == e2 => {
            *zxid = (*zxid).max(z2);
            None
        }
        (
            Message::Ack { epoch, zxid },
            Message::Ack {
                epoch: e2,
                zxid: z2,
            },
        ) if *epoch == e2 && z2 >= *zxid => {
            *zxid = z2;
            None
        }
        // Linearizable reads each start a heartbeat round; a turn's rounds become one, whose
        // (highest) seq answers all of them (ReadIndex batching: the reads of a turn share one
        // quorum round). Its commit point is the later one.
        (
            Message::Heartbeat { epoch, commit, seq },
            Message::Heartbeat {
                epoch: e2,
                commit: c2,
                seq: s2,
            },
        ) if *epoch == e2 && s2 >= *seq => {
            *seq = s2;
            *commit = (*commit).max(c2);
            None
        }
        (
            Message::HeartbeatAck {
                epoch,
                seq,
                last_zxid,
            },
            Message::HeartbeatAck {
                epoch: e2,
                seq: s2,
                last_zxid: z2,
            },
        ) if *epoch == e2 && s2 >= *seq && z2 >= *last_zxid => {
            *seq = s2;
            *last_zxid = z2;
            None
        }
        (_, next) => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStore, StorageError};
    use guessgame_core::{Credentials, Message, Persistent, Timing};
    use std::sync::Mutex;

    type Journal = Arc<Mutex<Vec<String>>>;

    struct RecordingStore(MemoryStore, Journal);
    impl LogStore for RecordingStore {
        fn load(&mut self) -> Result<Persistent, StorageError> {
            self.0.load()
        }
        fn persist(&mut self, ops: &[StorageOp]) -> Result<(), StorageError> {
            if !ops.is_empty() {
                self.1
                    .lock()
                    .unwrap()
                    .push(format!("persist {}", ops.len()));
            }
            self.0.persist(ops)
        }
    }
    struct RecordingTransport(Journal);
    impl Transport for RecordingTransport {
        fn send(&mut self, to: &NodeId, msg: &Message) {
            self.0
                .lock()
                .unwrap()
                .push(format!("send {} {to}", msg.kind()));
        }
    }

    #[test]
    fn a_turn_persists_before_it_sends() {
        let journal: Journal = Arc::default();
        let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let timing = Timing {
            heartbeat_ms: 20,
            election_timeout_ms: 60_000, // never times out during the test
        };
        let engine = Engine::new("c".into(), ids, 2, timing, Persistent::default(), 1);
        let EngineHandle {
            commands: tx,
            view,
            thread,
            ..
        } = spawn(
            engine,
            Box::new(RecordingStore(MemoryStore::default(), journal.clone())),
            Box::new(RecordingTransport(journal.clone())),
        );
        let hello = |from: &str| Command::Peer {
            from: from.into(),
            from_address: None,
            msg: Message::Hello {
                accepted_epoch: 0,
                creds: Credentials {
                    last_zxid: Zxid::ZERO,
                    node_id: from.into(),
                },
                sees_only_a_minority: false,
            },
        };
        // "c" ranks highest among the looking nodes: after the gathering delay it stands,
        // which persists its new epoch and asks the others to accept it.
        for _ in 0..40 {
            tx.send(hello("a")).unwrap();
            tx.send(Command::Tick).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        tx.send(Command::Stop).unwrap();
        thread.join().unwrap();
        let j = journal.lock().unwrap().clone();
        let stood = j
            .iter()
            .position(|l| l.starts_with("send new_epoch"))
            .expect("stood for leader");
        // The only thing persisted in this run is the new epoch: it must precede the ask.
        assert!(j[..stood].iter().any(|l| l.starts_with("persist")), "{j:?}");
        assert_eq!(
            j.iter().filter(|l| l.starts_with("persist")).count(),
            1,
            "{j:?}"
        );
        assert_eq!(view.read().unwrap().accepted_epoch, 1);
    }

    fn entry(c: u64) -> guessgame_core::Entry {
        guessgame_core::Entry {
            zxid: Zxid::new(1, c),
            op: guessgame_core::Op::Guess {
                round: 1,
                client: format!("c{c}"),
                value: 1,
                seq: 0,
            },
        }
    }

    fn proposal(prev: u64, entries: &[u64], commit: u64) -> Message {
        Message::Proposal {
            epoch: 1,
            prev: Zxid::new(1, prev),
            entries: entries.iter().map(|c| entry(*c)).collect(),
            commit: Zxid::new(1, commit),
        }
    }

    struct Collect(Vec<(NodeId, Message)>);
    impl Transport for Collect {
        fn send(&mut self, to: &NodeId, msg: &Message) {
            self.0.push((to.clone(), msg.clone()));
        }
    }

    #[test]
    fn a_turn_of_proposals_commits_and_acks_goes_out_coalesced_per_peer() {
        let mut out = Outbox::default();
        let commit = |c| Message::Commit {
            epoch: 1,
            zxid: Zxid::new(1, c),
        };
        let ack = |e, c| Message::Ack {
            epoch: e,
            zxid: Zxid::new(e, c),
        };
        let heartbeat = Message::Heartbeat {
            epoch: 1,
            commit: Zxid::new(1, 1),
            seq: 7,
        };
        out.push("a".into(), proposal(0, &[1], 0));
        out.push("b".into(), proposal(0, &[1], 0));
        out.push("a".into(), proposal(1, &[2, 3], 0));
        out.push("a".into(), commit(2));
        out.push("b".into(), proposal(1, &[2, 3], 0));
        out.push("a".into(), proposal(3, &[4], 1));
        out.push("a".into(), heartbeat.clone());
        out.push("a".into(), proposal(4, &[5], 2));
        // Not a continuation of what "b" got: stays on its own.
        out.push("b".into(), proposal(7, &[8], 0));
        out.push("c".into(), commit(1));
        out.push("c".into(), commit(3));
        out.push("l".into(), ack(1, 4));
        out.push("l".into(), ack(1, 6));
        out.push("l".into(), ack(2, 0));
        let mut sent = Collect(Vec::new());
        out.send(&mut sent);
        assert_eq!(
            sent.0,
            vec![
                ("a".into(), proposal(0, &[1, 2, 3, 4], 2)),
                ("a".into(), heartbeat),
                ("a".into(), proposal(4, &[5], 2)),
                ("b".into(), proposal(0, &[1, 2, 3], 0)),
                ("b".into(), proposal(7, &[8], 0)),
                ("c".into(), commit(3)),
                ("l".into(), ack(1, 6)),
                ("l".into(), ack(2, 0)),
            ]
        );
    }

    /// Three engines whose messages go through the outbox (coalesced per turn) commit every
    /// write, in the same order everywhere.
    #[test]
    fn an_ensemble_talking_through_coalesced_turns_commits_everything() {
        use std::collections::{BTreeMap, VecDeque};
        let ids: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let timing = Timing {
            heartbeat_ms: 20,
            election_timeout_ms: 100,
        };
        let mut engines: BTreeMap<String, Engine> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let e = Engine::new(
                    id.clone(),
                    ids.clone(),
                    2,
                    timing.clone(),
                    Persistent::default(),
                    i as u64 + 3,
                );
                (id.clone(), e)
            })
            .collect();
        let mut net: VecDeque<(String, String, Message)> = VecDeque::new();
        let mut replies = 0;
        let mut req = 0;
        // One "turn" of a node: its outputs' messages through an outbox, then `Persisted`
        // when the log changed (as `Driver::run` does).
        let turn = |from: &str,
                    e: &mut Engine,
                    mut outputs: Vec<Output>,
                    net: &mut VecDeque<_>,
                    replies: &mut u64| loop {
            let mut outbox = Outbox::default();
            let mut log_changed = false;
            for o in outputs {
                match o {
                    Output::Send { to, msg } | Output::SendEarly { to, msg } => {
                        outbox.push(to, msg)
                    }
                    Output::Reply { result: Ok(_), .. } => *replies += 1,
                    Output::Persist(op) if op.changes_log() => log_changed = true,
                    _ => {}
                }
            }
            let mut sent = Collect(Vec::new());
            outbox.send(&mut sent);
            for (to, msg) in sent.0 {
                net.push_back((from.to_string(), to, msg));
            }
            if !log_changed {
                break;
            }
            outputs = e.step(Event::Persisted);
        };
        for step in 0..600u64 {
            let now = step * 5;
            for (id, e) in engines.iter_mut() {
                let out = e.step(Event::Tick { now_ms: now });
                turn(id, e, out, &mut net, &mut replies);
            }
            // Each node takes everything waiting for it in one turn, as the runtime does.
            let waiting: Vec<_> = net.drain(..).collect();
            for id in &ids {
                let mut outputs = Vec::new();
                for (from, to, msg) in waiting.iter().filter(|m| m.1 == *id) {
                    let _ = to;
                    let e = engines.get_mut(id).unwrap();
                    outputs.extend(e.step(Event::Message {
                        from: from.clone(),
                        msg: msg.clone(),
                    }));
                }
                if let Some(e) = engines.get_mut(id).filter(|e| e.is_established_leader()) {
                    if step > 100 && step < 500 {
                        // A burst of writes in one turn.
                        for _ in 0..5 {
                            req += 1;
                            let op = if req % 10 == 1 {
                                ClientOp::Write {
                                    client: "w".into(),
                                    value: 5,
                                    seq: 0,
                                }
                            } else {
                                ClientOp::Guess {
                                    client: format!("c{req}"),
                                    value: 5,
                                    seq: 0,
                                }
                            };
                            outputs.extend(e.step(Event::Propose { req, op }));
                        }
                    }
                }
                let e = engines.get_mut(id).unwrap();
                turn(id, e, outputs, &mut net, &mut replies);
            }
        }
        assert!(req > 100, "no leader took writes ({req})");
        assert_eq!(replies, req, "every write committed and answered");
        let logs: Vec<Vec<Zxid>> = engines
            .values()
            .map(|e| e.committed_entries().iter().map(|x| x.zxid).collect())
            .collect();
        assert!(logs.iter().all(|l| *l == logs[0]), "committed logs differ");
    }
}
