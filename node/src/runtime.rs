//! Drives one [`Engine`]: feeds it events, carries out its outputs.
//!
//! The engine and its storage live on one dedicated thread. Each turn takes every event
//! that is waiting (up to a bound), steps the engine through all of them, writes all their
//! persists in **one** SQLite transaction (group commit), and only then sends messages,
//! applies committed entries and answers clients. A read view ([`NodeView`]) is published
//! after every turn for the gRPC handlers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::core::{
    ClientError, ClientOp, ClientReply, Engine, Event, NodeId, Output, RoleKind, StorageOp, Zxid,
};
use crate::game::Game;
use crate::storage::LogStore;
use crate::transport::Transport;

const MAX_EVENTS_PER_TURN: usize = 512;

pub type ClientResult = Result<ClientReply, ClientError>;

pub enum Command {
    Tick,
    Peer {
        from: NodeId,
        msg: crate::core::Message,
    },
    Propose {
        op: ClientOp,
        reply: oneshot::Sender<ClientResult>,
    },
    LinearizableRead {
        reply: oneshot::Sender<ClientResult>,
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
    pub members: usize,
    pub quorum: usize,
    /// Applied game state (committed entries only).
    pub game: Game,
}

impl NodeView {
    fn of(engine: &Engine, game: Game) -> NodeView {
        NodeView {
            node_id: engine.id().clone(),
            role: engine.role(),
            leader: engine.leader().cloned(),
            accepted_epoch: engine.accepted_epoch(),
            current_epoch: engine.current_epoch(),
            last_zxid: engine.last_zxid(),
            committed: engine.committed(),
            members: engine.members().len(),
            quorum: engine.quorum(),
            game,
        }
    }
}

pub type SharedView = Arc<RwLock<NodeView>>;

/// Spawns the engine thread. Returns the command queue and the published view.
pub fn spawn(
    engine: Engine,
    store: Box<dyn LogStore>,
    transport: Box<dyn Transport>,
) -> (
    mpsc::UnboundedSender<Command>,
    SharedView,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let view = Arc::new(RwLock::new(NodeView::of(&engine, engine.game().clone())));
    let shared = view.clone();
    let handle = std::thread::Builder::new()
        .name(format!("engine-{}", engine.id()))
        .spawn(move || {
            Driver {
                engine,
                store,
                transport,
                view: shared,
                replies: HashMap::new(),
                next_req: 1,
                started: Instant::now(),
            }
            .run(rx)
        })
        .expect("spawn engine thread");
    (tx, view, handle)
}

struct Driver {
    engine: Engine,
    store: Box<dyn LogStore>,
    transport: Box<dyn Transport>,
    view: SharedView,
    replies: HashMap<u64, oneshot::Sender<ClientResult>>,
    next_req: u64,
    started: Instant,
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
            self.execute(std::mem::take(&mut outputs));
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
            Command::Peer { from, msg } => Event::Message { from, msg },
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
        };
        outputs.extend(self.engine.step(event));
        false
    }

    fn execute(&mut self, outputs: Vec<Output>) {
        if outputs.is_empty() {
            return;
        }
        // 1. Everything durable first, in one transaction.
        let ops: Vec<StorageOp> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Persist(op) => Some(op.clone()),
                _ => None,
            })
            .collect();
        if let Err(e) = self.store.persist(&ops) {
            // Continuing would acknowledge what is not on disk.
            tracing::error!(node = %self.engine.id(), "storage failed, stopping: {e}");
            eprintln!("guessgame-node {}: storage failed: {e}", self.engine.id());
            std::process::exit(3);
        }
        // 2. Then what others may observe. Replies go last, after the view shows the
        //    applied entries, so a client reads its own write on this node.
        let mut game = self.view.read().expect("view lock").game.clone();
        let mut replies = Vec::new();
        for o in outputs {
            match o {
                Output::Persist(_) => {}
                Output::Send { to, msg } => self.transport.send(&to, &msg),
                Output::Apply(entry) => game.apply(&entry),
                Output::Reply { req, result } => replies.push((req, result)),
            }
        }
        *self.view.write().expect("view lock") = NodeView::of(&self.engine, game);
        for (req, result) in replies {
            if let Some(tx) = self.replies.remove(&req) {
                let _ = tx.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Credentials, Message, Persistent, Timing};
    use crate::storage::{MemoryStore, StorageError};
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
        let (tx, view, thread) = spawn(
            engine,
            Box::new(RecordingStore(MemoryStore::default(), journal.clone())),
            Box::new(RecordingTransport(journal.clone())),
        );
        let hello = |from: &str| Command::Peer {
            from: from.into(),
            msg: Message::Hello {
                accepted_epoch: 0,
                creds: Credentials {
                    last_zxid: Zxid::ZERO,
                    node_id: from.into(),
                },
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
}
