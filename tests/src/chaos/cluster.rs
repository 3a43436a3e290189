//! Five real `guessgame-node` processes, each on its own test host (namespace).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use guessgame_client::cluster::find_binary;
use guessgame_client::Config;

use super::netns::TestNet;

pub struct NetCluster {
    pub net: TestNet,
    pub config: Config,
    pub dir: PathBuf,
    config_path: PathBuf,
    bin: PathBuf,
    procs: BTreeMap<usize, Child>,
    paused: Vec<usize>,
}

pub const PORT: u16 = 7100;

impl NetCluster {
    pub fn new(n: usize, dir: PathBuf) -> anyhow::Result<NetCluster> {
        let net = TestNet::create(n)?;
        let mut config = Config::local(n, 1);
        for (k, node) in config.nodes.iter_mut().enumerate() {
            node.address = format!("{}:{PORT}", net.ip_of(k + 1));
        }
        config.request_timeout_ms = 2000;
        config.data_dir = Some(dir.join("data"));
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("guessgame.toml");
        std::fs::write(&config_path, config.to_toml())?;
        Ok(NetCluster {
            net,
            config,
            dir,
            config_path,
            bin: find_binary("guessgame-node")?,
            procs: BTreeMap::new(),
            paused: Vec::new(),
        })
    }

    pub fn n(&self) -> usize {
        self.config.nodes.len()
    }

    pub fn id(&self, k: usize) -> String {
        format!("node{k}")
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        id.strip_prefix("node")?.parse().ok()
    }

    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.config
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.address.clone()))
            .collect()
    }

    pub fn db_path(&self, k: usize) -> PathBuf {
        self.dir.join("data").join(format!("logs_node{k}.db"))
    }

    pub fn start(&mut self, k: usize) -> anyhow::Result<()> {
        if self.running(k) {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{k}.log")))?;
        let prefix = self.net.exec_prefix(k);
        let child = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(&self.bin)
            .args(["--node-id", &self.id(k), "--config"])
            .arg(&self.config_path)
            .env("GUESSGAME_LOG", "info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting a node in its namespace")?;
        self.procs.insert(k, child);
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for k in 1..=self.n() {
            self.start(k)?;
        }
        Ok(())
    }

    pub fn running(&mut self, k: usize) -> bool {
        self.procs
            .get_mut(&k)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn running_nodes(&mut self) -> Vec<usize> {
        (1..=self.n()).filter(|k| self.running(*k)).collect()
    }

    fn signal(&self, k: usize, sig: &str) {
        if let Some(c) = self.procs.get(&k) {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    pub fn kill(&mut self, k: usize) {
        self.resume(k);
        if let Some(mut c) = self.procs.remove(&k) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pause(&mut self, k: usize) {
        if self.running(k) && !self.paused.contains(&k) {
            self.signal(k, "STOP");
            self.paused.push(k);
        }
    }

    pub fn resume(&mut self, k: usize) {
        if let Some(i) = self.paused.iter().position(|p| *p == k) {
            self.paused.remove(i);
            self.signal(k, "CONT");
        }
    }

    pub fn resume_all(&mut self) {
        for k in self.paused.clone() {
            self.resume(k);
        }
    }

    pub fn stop_all(&mut self) {
        for k in 1..=self.n() {
            self.kill(k);
        }
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
