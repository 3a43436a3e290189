//! guessgame: `LocalCluster` of release `guessgame-node` processes, the project's client.
//!
//! The load is the game's durable write path. Every op is a new, committed and fsynced log
//! entry that went through Proposal → ACK → Commit: a `guess` under a client id used for
//! that op only (a client may guess once per round), and every 100th op a `write`, which
//! closes the round (so rounds stay small, as in a real game) and opens the next.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use guessgame_client::cluster::{find_binary, LocalCluster};
use guessgame_client::status::node_status;
use guessgame_client::{Client, ClientError, Role, Session, Zxid};
use guessgame_core::Op;
use guessgame_node::storage::{LogStore, SqliteLog};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{signal, Ensemble, Reader, Retention, Verification, Writer};
use crate::long::{self, Disk, LongRun, Position};
use crate::reads::ReadKind;

pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// This crate's version and the build of the node binary the bench found.
pub fn version() -> String {
    let build = match find_binary("guessgame-node") {
        Ok(p) if p.components().any(|c| c.as_os_str() == "release") => "release build".into(),
        Ok(p) if p.components().any(|c| c.as_os_str() == "debug") => "DEBUG build".into(),
        Ok(p) => p.display().to_string(),
        Err(_) => "not found".into(),
    };
    format!("{} ({build})", env!("CARGO_PKG_VERSION"))
}

/// Why guessgame cannot run, if it cannot.
pub fn missing() -> Option<String> {
    find_binary("guessgame-node").err().map(|e| {
        format!("{e} (the benchmark expects it next to itself: run `cargo build --release` first)")
    })
}

pub struct Guessgame {
    cluster: LocalCluster,
    ids: Vec<String>,
}

/// How a bench client talks to guessgame: in the load windows a session with its one member
/// (`Game.Session`: requests on one long-lived stream, as a ZooKeeper client's session
/// connection); in the failover runs, and with `--guessgame-api unary`, the failover
/// [`Client`] (one unary call per request, endpoints in turn).
pub(crate) enum Conn {
    Session(Session),
    Client(Client),
}

/// `--guessgame-api unary`: load windows use unary calls too.
pub(crate) static UNARY: AtomicBool = AtomicBool::new(false);

impl Conn {
    /// A connection for `eps` (the first is the member a load client talks to).
    pub(crate) fn new(eps: &[(String, String)], failover: bool) -> anyhow::Result<Conn> {
        if failover || UNARY.load(Ordering::Relaxed) {
            let eps = if failover { eps } else { &eps[..1] };
            return Ok(Conn::Client(Client::new(eps, REQUEST_TIMEOUT)?));
        }
        let (label, address) = &eps[0];
        Ok(Conn::Session(Session::new(
            label,
            address,
            REQUEST_TIMEOUT,
        )?))
    }

    async fn write(&mut self, id: &str, value: u32) -> Result<(), ClientError> {
        match self {
            Conn::Session(s) => s.write(id, value).await.map(drop),
            Conn::Client(c) => c.write(id, value).await.map(drop),
        }
    }

    async fn guess(&mut self, id: &str, value: u32) -> Result<(), ClientError> {
        match self {
            Conn::Session(s) => s.guess(id, value).await.map(drop),
            Conn::Client(c) => c.guess(id, value).await.map(drop),
        }
    }

    async fn read(&mut self, linearizable: bool) -> Result<(), ClientError> {
        match self {
            Conn::Session(s) => s.read(linearizable).await.map(drop),
            Conn::Client(c) => c.read(linearizable).await.map(drop),
        }
    }
}

pub struct GgWriter {
    pub(crate) client: Conn,
    /// Prefix of the client ids this writer guesses under.
    pub(crate) prefix: String,
}

/// Client-id prefix of the ensembles the bench starts (fresh, so ids cannot collide).
const PREFIX: &str = "b";

/// The id and value of op `op`.
fn op_id(prefix: &str, op: u64) -> (String, u32) {
    (format!("{prefix}{op}"), (op % 101) as u32)
}

pub struct GgReader {
    pub(crate) client: Conn,
    pub(crate) linearizable: bool,
}

impl Reader for GgReader {
    async fn read(&mut self) -> anyhow::Result<()> {
        self.client.read(self.linearizable).await?;
        Ok(())
    }
}

/// What one guessgame read is.
pub(crate) fn read_op(kind: ReadKind) -> String {
    match kind {
        ReadKind::Local => {
            "Read(linearizable=false): the game state as the member asked has applied it".into()
        }
        ReadKind::Linearizable => {
            "Read(linearizable=true): confirmed by the leader with a quorum round".into()
        }
    }
}

/// Writes (closes the round, opens the next) every this many ops.
const WRITE_EVERY: u64 = 100;

impl Writer for GgWriter {
    async fn write(&mut self, op: u64) -> anyhow::Result<()> {
        let (id, value) = op_id(&self.prefix, op);
        if op.is_multiple_of(WRITE_EVERY) {
            self.client.write(&id, value).await?;
        } else {
            self.client.guess(&id, value).await?;
        }
        Ok(())
    }
}

impl Guessgame {
    pub async fn start(dir: &Path, size: usize) -> anyhow::Result<Guessgame> {
        Self::start_with(dir, size, Retention::Bench).await
    }

    pub async fn start_with(
        dir: &Path,
        size: usize,
        retention: Retention,
    ) -> anyhow::Result<Guessgame> {
        // The loss check looks every acknowledged write up in the new leader's log after the
        // run, so the log must hold all of them: no compaction within a benchmark run (a run
        // writes far fewer entries than this). The long run keeps the node's defaults.
        let mut cluster = LocalCluster::new(size, Some(dir.to_path_buf()), |c| {
            if retention == Retention::Bench {
                c.snapshot_every = 10_000_000
            }
        })?;
        cluster.start_all()?;
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .context("guessgame ensemble did not elect a leader")?;
        let ids = cluster.ids();
        // Open round 1, through every member so all of them are known to serve writes.
        for (i, ep) in cluster.endpoints().into_iter().enumerate() {
            let mut c = Client::new(&[ep], REQUEST_TIMEOUT)?;
            c.write(&format!("setup{i}"), 50)
                .await
                .with_context(|| format!("first write through {}", ids[i]))?;
        }
        Ok(Guessgame { cluster, ids })
    }
}

impl Ensemble for Guessgame {
    type W = GgWriter;
    type R = GgReader;

    fn member_name(&self, m: usize) -> String {
        self.ids[m].clone()
    }

    async fn writer(&self, client: usize, failover: bool) -> anyhow::Result<GgWriter> {
        let mut eps = self.cluster.endpoints();
        let first = client % eps.len();
        eps.rotate_left(first);
        Ok(GgWriter {
            client: Conn::new(&eps, failover)?,
            prefix: PREFIX.into(),
        })
    }

    async fn reader(&self, client: usize, kind: ReadKind) -> anyhow::Result<GgReader> {
        let eps = self.cluster.endpoints();
        let ep = eps[client % eps.len()].clone();
        Ok(GgReader {
            client: Conn::new(&[ep], false)?,
            linearizable: kind == ReadKind::Linearizable,
        })
    }

    fn read_op(&self, kind: ReadKind) -> String {
        read_op(kind)
    }

    async fn leader(&self) -> anyhow::Result<usize> {
        let st = self.cluster.status().await;
        let leader = st.leader.context("no leader")?;
        self.ids
            .iter()
            .position(|id| *id == leader)
            .context("unknown leader")
    }

    fn kill(&mut self, m: usize) -> anyhow::Result<()> {
        let id = self.ids[m].clone();
        self.cluster.kill(&id)
    }

    fn terminate(&mut self, m: usize) -> anyhow::Result<()> {
        let id = &self.ids[m];
        let pid = self
            .cluster
            .pid(id)
            .with_context(|| format!("{id} is not running"))?;
        signal(pid, "TERM")
    }

    fn running(&mut self, m: usize) -> bool {
        let id = self.ids[m].clone();
        self.cluster.is_running(&id)
    }

    fn pids(&mut self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for id in self.ids.clone() {
            if self.cluster.is_running(&id) {
                if let Some(pid) = self.cluster.pid(&id) {
                    out.push((id, pid));
                }
            }
        }
        out
    }

    /// Every acknowledged op must be in the committed log of the new leader: after one more
    /// write through the survivors (so all of it is committed), they are stopped and their
    /// logs read back from disk.
    async fn verify(&mut self, acked: &[Vec<u64>]) -> anyhow::Result<Verification> {
        let running: Vec<String> = self
            .ids
            .clone()
            .into_iter()
            .filter(|id| self.cluster.is_running(id))
            .collect();
        let leader = self
            .cluster
            .wait_for_leader(Duration::from_secs(30))
            .await?;
        let eps: Vec<(String, String)> = self
            .cluster
            .endpoints()
            .into_iter()
            .filter(|(id, _)| running.contains(id))
            .collect();
        let mut c = Client::new(&eps, REQUEST_TIMEOUT)?;
        c.write("verify", 1).await.context("final write")?;
        for id in &running {
            self.cluster.stop(id)?;
        }
        let mut log = SqliteLog::open_path(&self.cluster.db_path(&leader), &leader)?;
        let state = log.load()?;
        let committed: std::collections::HashSet<String> = state
            .log
            .iter()
            .filter(|e| e.zxid <= state.committed)
            .filter_map(|e| match &e.op {
                Op::Guess { client, .. } => Some(client.clone()),
                Op::Target { client, .. } => Some(client.clone()),
                _ => None,
            })
            .collect();
        if committed.is_empty() {
            bail!("the new leader's log has no committed entries");
        }
        let mut v = Verification {
            method: format!(
                "every acknowledged guess/write looked up in the committed log of the new leader ({leader}) after stopping it"
            ),
            ..Default::default()
        };
        for ops in acked {
            for op in ops {
                v.checked += 1;
                if !committed.contains(&op_id(PREFIX, *op).0) {
                    v.lost += 1;
                }
            }
        }
        Ok(v)
    }

    fn stop(&mut self) {
        self.cluster.kill_all();
    }
}

fn position(z: Zxid) -> Position {
    Position::new((z.epoch, z.counter), z.to_string())
}

impl LongRun for Guessgame {
    fn retention(&self) -> String {
        let c = &self.cluster.config;
        format!(
            "snapshot_every = {}, snapshot_retain = {} (the node's defaults: a snapshot every {} committed entries, the log compacted to {} entries below it)",
            c.snapshot_every, c.snapshot_retain, c.snapshot_every, c.snapshot_retain
        )
    }

    /// Its `logs_<id>.db*` files in the data directory the members share.
    fn disk(&self, m: usize) -> Disk {
        let db = self.cluster.db_path(&self.ids[m]);
        let name = db
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let all = long::files_with_prefix(&self.cluster.data_dir(), &name);
        let wal = db.with_file_name(format!("{name}-wal"));
        Disk::of(&all, &[(".db", &[db]), ("-wal", &[wal])])
    }

    async fn committed(&self, m: usize) -> anyhow::Result<Position> {
        let (id, address) = &self.cluster.endpoints()[m];
        let st = node_status(id, address, Duration::from_millis(1000)).await;
        if let Some(e) = st.error {
            bail!("Status of {id}: {e}");
        }
        Ok(position(st.last_committed))
    }

    async fn following(&self, m: usize) -> Option<Position> {
        let (id, address) = &self.cluster.endpoints()[m];
        let st = node_status(id, address, Duration::from_millis(500)).await;
        (st.role == Role::Follower).then(|| position(st.last_committed))
    }

    fn restart(&mut self, m: usize) -> anyhow::Result<()> {
        let id = self.ids[m].clone();
        self.cluster.start(&id)
    }
}
