//! Five real `guessgame-node` processes, each on its own test host (namespace): a
//! [`LocalCluster`] whose nodes listen on namespace addresses and start under
//! `ip netns exec`. Nodes are numbered 1..=n here (`node<k>`).

use std::path::PathBuf;

use guessgame_client::cluster::LocalCluster;

use super::netns::TestNet;

pub struct NetCluster {
    /// Declared first so the nodes are killed before their namespaces are removed.
    pub nodes: LocalCluster,
    pub net: TestNet,
}

pub const PORT: u16 = 7100;

impl NetCluster {
    pub fn new(n: usize, dir: PathBuf) -> anyhow::Result<NetCluster> {
        let net = TestNet::create(n)?;
        let mut nodes = LocalCluster::new(n, Some(dir), |config| {
            for (k, node) in config.nodes.iter_mut().enumerate() {
                node.address = format!("{}:{PORT}", net.ip_of(k + 1));
            }
            config.request_timeout_ms = 2000;
            // Snapshots and compaction many times per schedule, so that kills, stops and
            // partitions hit nodes while they snapshot, compact and send snapshots.
            config.snapshot_every = 100;
            config.snapshot_retain = 20;
        })?;
        for k in 1..=n {
            nodes.set_launcher(&format!("node{k}"), net.exec_prefix(k));
        }
        Ok(NetCluster { nodes, net })
    }

    pub fn n(&self) -> usize {
        self.nodes.config.nodes.len()
    }

    fn id(k: usize) -> String {
        format!("node{k}")
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        id.strip_prefix("node")?.parse().ok()
    }

    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.nodes.endpoints()
    }

    pub fn db_path(&self, k: usize) -> PathBuf {
        self.nodes.db_path(&Self::id(k))
    }

    pub fn start(&mut self, k: usize) -> anyhow::Result<()> {
        self.nodes.start(&Self::id(k))
    }

    /// Starts node `k` with `--join`, asking node `via` to add it back (after a removal it
    /// keeps its old log, which the leader then syncs).
    pub fn rejoin(&mut self, k: usize, via: usize) -> anyhow::Result<()> {
        self.nodes.start_joining(&Self::id(k), &Self::id(via))?;
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        self.nodes.start_all()
    }

    /// SIGKILL (a paused node too).
    pub fn kill(&mut self, k: usize) {
        let _ = self.nodes.kill(&Self::id(k));
    }

    /// SIGTERM, waiting for the process to exit (a leader hands over first).
    pub fn terminate(&mut self, k: usize) {
        let id = Self::id(k);
        let _ = tokio::task::block_in_place(|| self.nodes.stop(&id));
    }

    pub fn pause(&mut self, k: usize) {
        let _ = self.nodes.pause(&Self::id(k));
    }

    pub fn resume(&mut self, k: usize) {
        let _ = self.nodes.resume(&Self::id(k));
    }

    /// SIGCONT to every running node (a no-op for those not paused).
    pub fn resume_all(&mut self) {
        for k in 1..=self.n() {
            self.resume(k);
        }
    }

    pub fn stop_all(&mut self) {
        self.nodes.kill_all();
    }
}
