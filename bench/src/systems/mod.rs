//! The systems under test behind one interface: start a 5-member ensemble, make writers and
//! readers, find the leader and kill or stop it, read back what was acknowledged, and name
//! the server processes (for their memory and CPU figures).

pub mod etcd;
pub mod external;
pub mod guessgame;
pub mod zookeeper;

use std::future::Future;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::reads::ReadKind;

/// One client of a system: its own connection(s), one write at a time (closed loop).
pub(crate) trait Writer: Send + 'static {
    /// One durable write. `op` is unique in the whole run and grows with every call of a
    /// client, so it doubles as the value written (for the read-back after failover).
    fn write(&mut self, op: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// One reading client: its own connection to one member, one read at a time.
pub(crate) trait Reader: Send + 'static {
    fn read(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What the read-back after the failover found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Verification {
    /// Acknowledged writes (or, for registers, clients with an acknowledged write) checked.
    pub checked: u64,
    /// Of those, how many were not found.
    pub lost: u64,
    /// How the check was made.
    pub method: String,
}

/// How an ensemble keeps its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retention {
    /// The benchmark windows: guessgame compacts nothing (the loss check after a failover
    /// reads the whole log); ZooKeeper and etcd as they come.
    Bench,
    /// `--long`: as a user running it for months would configure it — guessgame's default
    /// snapshot policy, ZooKeeper's autopurge, etcd's auto-compaction.
    LongRun,
}

/// A running ensemble.
pub(crate) trait Ensemble {
    type W: Writer;
    type R: Reader;

    /// Label of member `m` (for the report).
    fn member_name(&self, m: usize) -> String;

    /// A client with its own connection. For load runs it talks to member `client % size`
    /// only; with `failover` it gets the whole endpoint list (starting at that member).
    async fn writer(&self, client: usize, failover: bool) -> anyhow::Result<Self::W>;

    /// A reading client with its own connection to member `client % size`.
    async fn reader(&self, client: usize, kind: ReadKind) -> anyhow::Result<Self::R>;

    /// What one read of `kind` is, for the report.
    fn read_op(&self, kind: ReadKind) -> String;

    /// Whether the bench started this ensemble (so it may stop members and read their
    /// processes' figures).
    fn owned(&self) -> bool {
        true
    }

    /// The current leader (index of the member).
    async fn leader(&self) -> anyhow::Result<usize>;

    /// SIGKILL member `m`.
    fn kill(&mut self, m: usize) -> anyhow::Result<()>;

    /// SIGTERM member `m` and return at once: it shuts down in its own time.
    fn terminate(&mut self, m: usize) -> anyhow::Result<()>;

    /// Whether member `m`'s process is still running.
    fn running(&mut self, m: usize) -> bool;

    /// `(member, pid)` of the running server processes the bench started.
    fn pids(&mut self) -> Vec<(String, u32)>;

    /// Reads back what the failover clients saw acknowledged: `acked[i]` holds the ops
    /// failover client `i` got an acknowledgement for, in order. May stop the ensemble.
    async fn verify(&mut self, acked: &[Vec<u64>]) -> anyhow::Result<Verification>;

    /// Stops every member.
    fn stop(&mut self);
}

/// `(member, pid)` of the member processes in `procs` still running, member `k` (from 0)
/// named `{prefix}{k + 1}`.
pub(crate) fn running_pids(procs: &mut [Proc], prefix: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for (k, p) in procs.iter_mut().enumerate() {
        if let Some(pid) = p.pid() {
            out.push((format!("{prefix}{}", k + 1), pid));
        }
    }
    out
}

/// A member process we started; killed (SIGKILL) when dropped.
pub(crate) struct Proc {
    pub child: Option<Child>,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        Ok(Proc { child: Some(child) })
    }

    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        if self.alive() {
            self.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    /// SIGTERM, without waiting (the child is reaped later by `alive` or `kill`).
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let pid = self.pid().context("the process is not running")?;
        signal(pid, "TERM")
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kill -<sig> <pid>` (the bench links no libc binding of its own).
pub(crate) fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?
        .success();
    anyhow::ensure!(ok, "kill -{sig} {pid} failed");
    Ok(())
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The last lines of a member's log, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `program` as found on `$PATH`.
pub(crate) fn which(program: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(program))
        .find(|p| p.is_file())
}

/// Zero-padded decimal: the small value ZooKeeper and etcd clients write.
pub(crate) fn value_of(op: u64) -> String {
    format!("{op:016}")
}
