//! The three systems under test behind one interface: start a 5-member ensemble, make
//! clients, find and kill the leader, read back what was acknowledged.

pub mod etcd;
pub mod guessgame;
pub mod zookeeper;

use std::future::Future;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One client of a system: its own connection(s), one write at a time (closed loop).
pub(crate) trait Writer: Send + 'static {
    /// One durable write. `op` is unique in the whole run and grows with every call of a
    /// client, so it doubles as the value written (for the read-back after failover).
    fn write(&mut self, op: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
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

/// A running ensemble.
pub(crate) trait Ensemble {
    type W: Writer;

    /// Label of member `m` (for the report).
    fn member_name(&self, m: usize) -> String;

    /// A client with its own connection. For load runs it talks to member `client % size`
    /// only; with `failover` it gets the whole endpoint list (starting at that member).
    async fn writer(&self, client: usize, failover: bool) -> anyhow::Result<Self::W>;

    /// The current leader (index of the member).
    async fn leader(&self) -> anyhow::Result<usize>;

    /// SIGKILL member `m`.
    fn kill(&mut self, m: usize) -> anyhow::Result<()>;

    /// Reads back what the failover clients saw acknowledged: `acked[i]` holds the ops
    /// failover client `i` got an acknowledgement for, in order. May stop the ensemble.
    async fn verify(&mut self, acked: &[Vec<u64>]) -> anyhow::Result<Verification>;

    /// Stops every member.
    fn stop(&mut self);
}

/// A member process we started; killed (SIGKILL) when dropped.
pub(crate) struct Proc {
    pub child: Option<Child>,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(log)?;
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
