//! ZooKeeper 3.8 from Debian's `zookeeper` package: five `QuorumPeerMain` JVMs, each with
//! its own `zoo.cfg` and `myid`, Debian's defaults (tickTime 2000, initLimit 10, syncLimit 5,
//! forceSync on, heap 1000 MB as `zkServer.sh` sets it). Each client `setData`s its own znode.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use guessgame_client::cluster::free_ports;
use zookeeper_client as zk;

use super::{
    log_tail, port_open, running_pids, value_of, Ensemble, Proc, Reader, Retention, Verification,
    Writer,
};
use crate::long::{self, Disk, LongRun, Position};
use crate::reads::ReadKind;

/// Budget of one request of the read-back after the failover.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

const JAR: &str = "/usr/share/java/zookeeper.jar";
/// A logging backend for slf4j (from `libslf4j-java`, a dependency of `zookeeper`).
const SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";

/// Why ZooKeeper cannot run, if it cannot.
pub fn missing() -> Option<String> {
    if !Path::new(JAR).is_file() {
        return Some(format!(
            "{JAR} not found: install Debian's package (apt-get install -y zookeeper)"
        ));
    }
    if super::which("java").is_none() {
        return Some("no `java` on PATH (apt-get install -y zookeeper brings one)".into());
    }
    None
}

/// The Debian package's version, e.g. `3.8.0-11+deb12u2`.
pub fn version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "zookeeper"])
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "3.8 (Debian)".into())
}

pub struct Zookeeper {
    procs: Vec<Proc>,
    client_ports: Vec<u16>,
    logs: Vec<PathBuf>,
    /// Each member's directory (its `zoo.cfg`, `data/`, log) and the JVM's classpath: what
    /// a restart needs.
    homes: Vec<PathBuf>,
    classpath: String,
}

/// What `--long` adds to `zoo.cfg`: keep the 3 newest snapshots (and the transaction logs
/// they need), purge the rest every hour (the smallest interval; it also runs at start-up).
/// snapCount stays at its default (100,000).
const AUTOPURGE: &str = "autopurge.snapRetainCount=3\nautopurge.purgeInterval=1\n";

/// The JVM of the member whose directory is `home`.
fn member_command(classpath: &str, home: &Path) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg("-Xmx1000m")
        .arg(format!("-Dzookeeper.log.dir={}", home.display()))
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=info")
        .arg("-cp")
        .arg(classpath)
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(home.join("zoo.cfg"))
        .current_dir(home);
    cmd
}

/// The `Zxid: 0x…` line of a `srvr` answer.
fn srvr_zxid(srvr: &str) -> Option<u64> {
    srvr.lines().find_map(|l| {
        let hex = l.strip_prefix("Zxid: ")?.trim();
        u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok()
    })
}

/// A ZooKeeper zxid: epoch in the high 32 bits, counter in the low ones.
fn position(zxid: u64) -> Position {
    Position::new((zxid >> 32, zxid & 0xffff_ffff), format!("{zxid:#x}"))
}

pub struct ZkWriter {
    client: zk::Client,
    path: String,
}

impl Writer for ZkWriter {
    async fn write(&mut self, op: u64) -> anyhow::Result<()> {
        self.client
            .set_data(&self.path, value_of(op).as_bytes(), None)
            .await?;
        Ok(())
    }
}

pub struct ZkReader {
    client: zk::Client,
    path: String,
    sync: bool,
}

impl Reader for ZkReader {
    /// `getData`; for the "linearizable" kind after a `sync` of the same path. ZooKeeper's
    /// sync + read is not linearizable (the sync flushes the channel from the leader to the
    /// member, but no quorum confirms that leader, and the member serves the read), so the
    /// report says so.
    async fn read(&mut self) -> anyhow::Result<()> {
        if self.sync {
            self.client.sync(&self.path).await?;
        }
        self.client.get_data(&self.path).await?;
        Ok(())
    }
}

/// ZooKeeper's `srvr` four-letter command; `None` when the member does not answer.
fn srvr(port: u16) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
    s.write_all(b"srvr").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn mode(port: u16) -> Option<String> {
    srvr(port)?
        .lines()
        .find_map(|l| l.strip_prefix("Mode: ").map(|m| m.trim().to_string()))
}

fn path_of(client: usize, failover: bool) -> String {
    format!("/bench/{}{client}", if failover { "f" } else { "c" })
}

/// Creates `path` holding a 16-byte value, unless it exists.
async fn ensure_znode(c: &zk::Client, path: &str) -> anyhow::Result<()> {
    match c
        .create(
            path,
            value_of(0).as_bytes(),
            &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
        )
        .await
    {
        Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {path}")),
    }
}

/// The value of `path` after a `sync`, retried through connection losses (the survivors may
/// still be electing a leader).
async fn read_back(c: &zk::Client, path: &str) -> anyhow::Result<u64> {
    let mut last = None;
    for _ in 0..20 {
        let r = tokio::time::timeout(VERIFY_TIMEOUT, async {
            c.sync(path).await?;
            c.get_data(path).await
        })
        .await;
        match r {
            Ok(Ok((data, _))) => {
                return Ok(String::from_utf8_lossy(&data).trim().parse().unwrap_or(0));
            }
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some(format!("no answer within {VERIFY_TIMEOUT:?}")),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "reading back {path}: {}",
        last.unwrap_or_else(|| "no attempt".into())
    )
}

impl Zookeeper {
    pub async fn start(dir: &Path, size: usize) -> anyhow::Result<Zookeeper> {
        Self::start_with(dir, size, Retention::Bench).await
    }

    pub async fn start_with(
        dir: &Path,
        size: usize,
        retention: Retention,
    ) -> anyhow::Result<Zookeeper> {
        let ports = free_ports(3 * size)?;
        let client_ports = ports[..size].to_vec();
        let servers: String = (0..size)
            .map(|k| {
                format!(
                    "server.{}=127.0.0.1:{}:{}\n",
                    k + 1,
                    ports[size + k],
                    ports[2 * size + k]
                )
            })
            .collect();
        let purge = if retention == Retention::LongRun {
            AUTOPURGE
        } else {
            ""
        };
        let mut classpath = JAR.to_string();
        if Path::new(SLF4J_SIMPLE).is_file() {
            classpath = format!("{classpath}:{SLF4J_SIMPLE}");
        }
        let mut procs = Vec::new();
        let mut logs = Vec::new();
        let mut homes = Vec::new();
        for (k, client_port) in client_ports.iter().enumerate() {
            let home = dir.join(format!("zk{}", k + 1));
            let data = home.join("data");
            std::fs::create_dir_all(&data)?;
            std::fs::write(data.join("myid"), format!("{}\n", k + 1))?;
            std::fs::write(
                home.join("zoo.cfg"),
                format!(
                    "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                     clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n\
                     4lw.commands.whitelist=srvr,ruok\n{purge}{servers}",
                    data.display(),
                    client_port
                ),
            )?;
            let log = home.join("zookeeper.log");
            procs.push(Proc::spawn(member_command(&classpath, &home), &log)?);
            logs.push(log);
            homes.push(home);
        }
        let mut me = Zookeeper {
            procs,
            client_ports,
            logs,
            homes,
            classpath,
        };
        me.wait_ready(Duration::from_secs(90)).await?;
        let c = me.connect(&me.connect_string(0, false)).await?;
        match c
            .create(
                "/bench",
                b"",
                &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
            )
            .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e).context("creating /bench"),
        }
        Ok(me)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for (k, p) in self.procs.iter_mut().enumerate() {
                if !p.alive() {
                    bail!(
                        "ZooKeeper member {} exited during start-up:\n{}",
                        k + 1,
                        log_tail(&self.logs[k], 20)
                    );
                }
            }
            let modes: Vec<Option<String>> = self.client_ports.iter().map(|p| mode(*p)).collect();
            let leaders = modes
                .iter()
                .filter(|m| m.as_deref() == Some("leader"))
                .count();
            let followers = modes
                .iter()
                .filter(|m| m.as_deref() == Some("follower"))
                .count();
            if leaders == 1 && leaders + followers == self.procs.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("ZooKeeper ensemble not ready within {timeout:?}: modes {modes:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn connect_string(&self, first: usize, all: bool) -> String {
        let n = self.client_ports.len();
        let count = if all { n } else { 1 };
        (0..count)
            .map(|k| format!("127.0.0.1:{}", self.client_ports[(first + k) % n]))
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn connect(&self, connect_string: &str) -> anyhow::Result<zk::Client> {
        let c = tokio::time::timeout(
            Duration::from_secs(15),
            zk::Client::connector()
                .with_session_timeout(Duration::from_secs(6))
                .connect(connect_string),
        )
        .await
        .context("ZooKeeper connect timed out")??;
        Ok(c)
    }
}

impl Ensemble for Zookeeper {
    type W = ZkWriter;
    type R = ZkReader;

    fn member_name(&self, m: usize) -> String {
        format!("zk{}", m + 1)
    }

    async fn writer(&self, client: usize, failover: bool) -> anyhow::Result<ZkWriter> {
        let n = self.procs.len();
        let client_conn = self
            .connect(&self.connect_string(client % n, failover))
            .await?;
        let path = path_of(client, failover);
        ensure_znode(&client_conn, &path).await?;
        Ok(ZkWriter {
            client: client_conn,
            path,
        })
    }

    async fn reader(&self, client: usize, kind: ReadKind) -> anyhow::Result<ZkReader> {
        let n = self.procs.len();
        let c = self
            .connect(&self.connect_string(client % n, false))
            .await?;
        let path = format!("/bench/r{client}");
        ensure_znode(&c, &path).await?;
        Ok(ZkReader {
            client: c,
            path,
            sync: kind == ReadKind::Linearizable,
        })
    }

    fn read_op(&self, kind: ReadKind) -> String {
        match kind {
            ReadKind::Local => "getData of a 16-byte znode, served by the member connected to".into(),
            ReadKind::Linearizable => "sync + getData of the same znode: NOT linearizable (the sync only flushes the leader-to-member channel; no quorum confirms the leader, and the member serves the read)".into(),
        }
    }

    async fn leader(&self) -> anyhow::Result<usize> {
        for (k, port) in self.client_ports.iter().enumerate() {
            if mode(*port).as_deref() == Some("leader") {
                return Ok(k);
            }
        }
        bail!("no ZooKeeper member reports Mode: leader")
    }

    fn kill(&mut self, m: usize) -> anyhow::Result<()> {
        self.procs[m].kill();
        Ok(())
    }

    fn terminate(&mut self, m: usize) -> anyhow::Result<()> {
        self.procs[m].terminate()
    }

    fn running(&mut self, m: usize) -> bool {
        self.procs[m].alive()
    }

    /// The JVMs (`java` runs QuorumPeerMain in the process the bench spawned).
    fn pids(&mut self) -> Vec<(String, u32)> {
        running_pids(&mut self.procs, "zk")
    }

    /// Each failover client's znode must hold its last acknowledged value or a later one
    /// (`sync`, then `getData`, through the survivors).
    async fn verify(&mut self, acked: &[Vec<u64>]) -> anyhow::Result<Verification> {
        let alive: Vec<usize> = (0..self.procs.len())
            .filter(|k| self.procs[*k].alive() && port_open(self.client_ports[*k]))
            .collect();
        let cs = alive
            .iter()
            .map(|k| format!("127.0.0.1:{}", self.client_ports[*k]))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = self.connect(&cs).await;
        for _ in 0..3 {
            if c.is_ok() {
                break;
            }
            c = self.connect(&cs).await;
        }
        let c = c.context("connecting to the survivors for the read-back")?;
        let mut v = Verification {
            method: "sync + getData of each failover client's znode: value >= its last acknowledged setData".into(),
            ..Default::default()
        };
        for (i, ops) in acked.iter().enumerate() {
            let Some(last) = ops.last() else { continue };
            let found = read_back(&c, &path_of(i, true)).await?;
            v.checked += 1;
            if found < *last {
                v.lost += 1;
            }
        }
        Ok(v)
    }

    fn stop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
    }
}

impl LongRun for Zookeeper {
    fn retention(&self) -> String {
        "snapCount 100,000 (the default: a snapshot and a new transaction log every 50,000-100,000 transactions), \
         autopurge.snapRetainCount=3, autopurge.purgeInterval=1 (hours; the purge also runs at start-up)"
            .into()
    }

    /// Its `data/` directory (`myid`, `version-2/` with the transaction logs and snapshots).
    fn disk(&self, m: usize) -> Disk {
        let data = self.homes[m].join("data");
        let v2 = data.join("version-2");
        Disk::of(
            std::slice::from_ref(&data),
            &[
                ("txn logs", &long::files_with_prefix(&v2, "log.")),
                ("snapshots", &long::files_with_prefix(&v2, "snapshot.")),
            ],
        )
    }

    async fn committed(&self, m: usize) -> anyhow::Result<Position> {
        let out = srvr(self.client_ports[m]).context("no answer to srvr")?;
        srvr_zxid(&out)
            .map(position)
            .with_context(|| format!("no Zxid in the srvr answer: {out:?}"))
    }

    async fn following(&self, m: usize) -> Option<Position> {
        let out = srvr(self.client_ports[m])?;
        let following = out.lines().any(|l| l.trim() == "Mode: follower");
        following.then(|| srvr_zxid(&out).map(position)).flatten()
    }

    fn restart(&mut self, m: usize) -> anyhow::Result<()> {
        let cmd = member_command(&self.classpath, &self.homes[m]);
        self.procs[m] = Proc::spawn(cmd, &self.logs[m])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zxid_of_a_srvr_answer() {
        let out = "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.5/12\nZxid: 0x100000a3c\nMode: follower\n";
        assert_eq!(srvr_zxid(out), Some(0x1_0000_0a3c));
        let p = position(0x1_0000_0a3c);
        assert_eq!(p.order, (1, 0xa3c));
        assert!(position(0x2_0000_0001) > p);
        assert_eq!(
            srvr_zxid("This ZooKeeper instance is not currently serving requests"),
            None
        );
    }
}
