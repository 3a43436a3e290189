//! A local ensemble of real `guessgame-node` processes on 127.0.0.1, in a directory of its
//! own (config, data, one log file per node). Used by `guessgame demo` and the tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use guessgame_wire::config::Config;

use crate::status::{ensemble_status, EnsembleStatus};

/// Finds a sibling binary (`guessgame-node`, `guessgame`): `$GUESSGAME_<NAME>_BIN`, next to
/// the running executable (or its parent, for test binaries in `target/*/deps`), then `$PATH`.
pub fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        for _ in 0..2 {
            if let Some(d) = dir {
                let candidate = d.join(name);
                if candidate.is_file() {
                    return Ok(candidate);
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for p in std::env::split_paths(&paths) {
            let candidate = p.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("cannot find the `{name}` binary: build it (`cargo build --bins`), put it on PATH, or set {var}")
}

/// Free TCP ports on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

pub struct LocalCluster {
    pub dir: PathBuf,
    pub config: Config,
    pub config_path: PathBuf,
    node_bin: PathBuf,
    children: BTreeMap<String, Child>,
    /// Per node: a command the node binary is started under (e.g. `ip netns exec <ns>`).
    launchers: BTreeMap<String, Vec<String>>,
    /// Nodes started with `--join`: id → (address, address of the member it asks to add it).
    joiners: BTreeMap<String, (String, String)>,
    _tempdir: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Writes a config for `n` nodes on free ports into `dir` (a new temp dir if `None`).
    pub fn new(
        n: usize,
        dir: Option<PathBuf>,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<LocalCluster> {
        let (dir, tempdir) = match dir {
            Some(d) => {
                std::fs::create_dir_all(&d)?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("guessgame-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut config = Config::local(n, 1);
        for (node, port) in config.nodes.iter_mut().zip(free_ports(n)?) {
            node.address = format!("127.0.0.1:{port}");
        }
        config.data_dir = Some(dir.join("data"));
        tweak(&mut config);
        config.validate()?;
        let config_path = dir.join("guessgame.toml");
        std::fs::write(&config_path, config.to_toml())?;
        Ok(LocalCluster {
            dir,
            config,
            config_path,
            node_bin: find_binary("guessgame-node")?,
            children: BTreeMap::new(),
            launchers: BTreeMap::new(),
            joiners: BTreeMap::new(),
            _tempdir: tempdir,
        })
    }

    /// Every node this cluster knows: the configured ones, then those started with `--join`.
    pub fn ids(&self) -> Vec<String> {
        let mut ids = self.config.ids();
        ids.extend(
            self.joiners
                .keys()
                .filter(|j| !ids.contains(j))
                .cloned()
                .collect::<Vec<_>>(),
        );
        ids
    }

    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.ids()
            .into_iter()
            .map(|id| {
                let address = self.address(&id);
                (id, address)
            })
            .collect()
    }

    /// Starts `id` as a new node that asks `via` (a member) to add it: `guessgame-node
    /// --join`. A configured node may join too (e.g. one that was removed, with its old log).
    /// Returns its address.
    pub fn start_joining(&mut self, id: &str, via: &str) -> anyhow::Result<String> {
        let address = match self.config.address_of(id) {
            Some(a) => a.to_string(),
            None => match self.joiners.get(id) {
                Some((a, _)) => a.clone(),
                None => format!("127.0.0.1:{}", free_ports(1)?[0]),
            },
        };
        let via = self.address(via);
        self.joiners.insert(id.to_string(), (address.clone(), via));
        self.start(id)?;
        Ok(address)
    }

    /// A client that talks to node `id` only (its local reads are that node's view).
    pub fn client_of(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<crate::Client, crate::ClientError> {
        crate::Client::new(&[(id.to_string(), self.address(id))], timeout)
    }

    pub fn address(&self, id: &str) -> String {
        match self.joiners.get(id) {
            Some((a, _)) => a.clone(),
            None => self.config.address_of(id).expect("known node").to_string(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone().expect("set in new()")
    }

    pub fn db_path(&self, id: &str) -> PathBuf {
        self.data_dir().join(format!("logs_{id}.db"))
    }

    /// The node's stderr/stdout, appended across restarts.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            self.start(&id)?;
        }
        Ok(())
    }

    pub fn start(&mut self, id: &str) -> anyhow::Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let mut cmd = match self.launchers.get(id).and_then(|l| l.split_first()) {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.node_bin);
                c
            }
            None => Command::new(&self.node_bin),
        };
        if let Some((address, via)) = self.joiners.get(id) {
            cmd.arg("--listen")
                .arg(address)
                .arg("--join")
                .arg(via)
                .arg("--data-dir")
                .arg(self.data_dir());
        }
        let child = cmd
            .arg("--node-id")
            .arg(id)
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("GUESSGAME_CONFIG")
            .env(
                "GUESSGAME_LOG",
                std::env::var("GUESSGAME_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.node_bin.display()))?;
        self.children.insert(id.to_string(), child);
        Ok(())
    }

    /// Starts node `id` under `launcher` from now on (`ip netns exec <ns>`, …).
    pub fn set_launcher(&mut self, id: &str, launcher: Vec<String>) {
        self.launchers.insert(id.to_string(), launcher);
    }

    pub fn is_running(&mut self, id: &str) -> bool {
        match self.children.get_mut(id) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self, id: &str) -> Option<u32> {
        self.children.get(id).map(|c| c.id())
    }

    fn signal(&self, id: &str, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .pid(id)
            .with_context(|| format!("{id} is not running"))?;
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()?
            .success();
        if !ok {
            bail!("kill -{sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGKILL: a crash, nothing flushed beyond what the node already made durable.
    pub fn kill(&mut self, id: &str) -> anyhow::Result<()> {
        if let Some(mut c) = self.children.remove(id) {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self, id: &str) -> anyhow::Result<()> {
        if self.is_running(id) {
            self.signal(id, "TERM")?;
        }
        if let Some(mut c) = self.children.remove(id) {
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGSTOP / SIGCONT.
    pub fn pause(&self, id: &str) -> anyhow::Result<()> {
        self.signal(id, "STOP")
    }
    pub fn resume(&self, id: &str) -> anyhow::Result<()> {
        self.signal(id, "CONT")
    }

    /// Whether the node process has exited by itself (e.g. after being removed), and how.
    pub fn exit_status(&mut self, id: &str) -> Option<std::process::ExitStatus> {
        self.children
            .get_mut(id)
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn kill_all(&mut self) {
        for id in self.ids() {
            let _ = self.kill(&id);
        }
    }

    pub async fn status(&self) -> EnsembleStatus {
        ensemble_status(&self.endpoints(), Duration::from_millis(500)).await
    }

    /// Waits until a leader is backed by a majority and every running node agrees on it.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self.status().await;
            if let Some(l) = &st.leader {
                // Running processes only (a removed node exits by itself).
                let running: Vec<String> = self
                    .ids()
                    .into_iter()
                    .filter(|id| self.is_running(id))
                    .collect();
                let agree = st
                    .nodes
                    .iter()
                    .filter(|n| running.contains(&n.id))
                    .all(|n| n.leader.as_deref() == Some(l));
                if agree {
                    return Ok(l.clone());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no leader within {timeout:?}: {}",
                    serde_json::to_string(&st)?
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
