//! `--endpoints host:port,...`: a guessgame ensemble the bench did not start — a user's own
//! cluster, or one in Kubernetes reached through `kubectl port-forward` — driven like etcd's
//! `benchmark` tool drives an etcd cluster: no start or stop, no member is killed (the
//! failover cases are skipped), no process figures (its processes are not ours to read).
//! Only the write and read workloads run, with the same clients as against a local ensemble.

use std::time::Duration;

use anyhow::bail;
use guessgame_client::status::node_status;
use guessgame_client::Client;

use super::guessgame::{read_op, Conn, GgReader, GgWriter, REQUEST_TIMEOUT};
use super::{Ensemble, Verification};
use crate::reads::ReadKind;

/// Why the failover cases do not run against such an ensemble.
pub const NO_FAILOVER: &str =
    "skipped: --endpoints drives an ensemble the bench did not start, so it kills and stops no member";

pub struct External {
    /// `(member id, host:port)`: the id is what the member answered there.
    endpoints: Vec<(String, String)>,
    /// Client-id prefix unique to this run: the ensemble may hold earlier runs' guesses.
    prefix: String,
}

impl External {
    /// Checks that every endpoint answers and that they agree on a leader, then opens a
    /// round (guesses need one).
    pub async fn connect(addresses: &[String]) -> anyhow::Result<External> {
        let mut endpoints = Vec::new();
        let mut leaders = Vec::new();
        for addr in addresses {
            let st = node_status(addr, addr, Duration::from_secs(3)).await;
            if let Some(e) = st.error {
                bail!("{addr} does not answer guessgame's Status: {e}");
            }
            leaders.push(st.leader.clone());
            endpoints.push((st.id.clone(), addr.clone()));
        }
        if leaders.iter().any(Option::is_none) || leaders.windows(2).any(|w| w[0] != w[1]) {
            bail!("the endpoints do not agree on a leader: {leaders:?}");
        }
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let prefix = format!("bench{unix}-");
        let mut c = Client::new(&endpoints, REQUEST_TIMEOUT)?;
        c.write(&format!("{prefix}open"), 50).await?;
        Ok(External { endpoints, prefix })
    }

    pub fn labels(&self) -> Vec<String> {
        self.endpoints.iter().map(|(l, _)| l.clone()).collect()
    }
}

impl Ensemble for External {
    type W = GgWriter;
    type R = GgReader;

    fn member_name(&self, m: usize) -> String {
        self.endpoints[m].0.clone()
    }

    async fn writer(&self, client: usize, failover: bool) -> anyhow::Result<GgWriter> {
        let mut eps = self.endpoints.clone();
        let first = client % eps.len();
        eps.rotate_left(first);
        Ok(GgWriter {
            client: Conn::new(&eps, failover)?,
            prefix: self.prefix.clone(),
        })
    }

    async fn reader(&self, client: usize, kind: ReadKind) -> anyhow::Result<GgReader> {
        let ep = self.endpoints[client % self.endpoints.len()].clone();
        Ok(GgReader {
            client: Conn::new(&[ep], false)?,
            linearizable: kind == ReadKind::Linearizable,
        })
    }

    fn read_op(&self, kind: ReadKind) -> String {
        read_op(kind)
    }

    fn owned(&self) -> bool {
        false
    }

    async fn leader(&self) -> anyhow::Result<usize> {
        bail!("{NO_FAILOVER}")
    }

    fn kill(&mut self, _m: usize) -> anyhow::Result<()> {
        bail!("{NO_FAILOVER}")
    }

    fn terminate(&mut self, _m: usize) -> anyhow::Result<()> {
        bail!("{NO_FAILOVER}")
    }

    fn running(&mut self, _m: usize) -> bool {
        true
    }

    fn pids(&mut self) -> Vec<(String, u32)> {
        Vec::new()
    }

    async fn verify(&mut self, _acked: &[Vec<u64>]) -> anyhow::Result<Verification> {
        bail!("{NO_FAILOVER}")
    }

    /// Not ours to stop.
    fn stop(&mut self) {}
}
