//! etcd: Debian's `etcd-server` package (3.4) or the binary `--etcd-bin` names; five members
//! with etcd's defaults (heartbeat 100 ms, election timeout 1000 ms, fsync on). Each client
//! `Put`s its own key.
//!
//! The client is a minimal gRPC client of etcd's v3 API (`proto/etcd.proto`), built with the
//! same tonic as guessgame's own client.
//!
//! Why a failover client gives up on an attempt after [`FAILOVER_ATTEMPT`] (1 s) and not after
//! the 5 s of the other requests: measured with 3.4.23 and 3.7.3 alike, a Put in flight on a
//! follower when the leader is SIGKILLed is neither answered nor refused. The follower had
//! forwarded the proposal to the leader, the proposal died with it, and etcd keeps waiting for
//! it until the request's deadline (then `Cancelled: Timeout expired` here, or
//! `etcdserver: request timed out, possibly due to previous leader failure` when the server's
//! own timer wins) — even though a new leader is elected about 1 s after the kill. It is not
//! the client channel: the in-flight requests to the killed member fail within ~15 ms
//! (`transport error`), a new connection to it is refused within 1 ms (`tcp connect error`),
//! and the client then moves to the next endpoint. So with a 5 s per-request deadline the
//! leader-kill gap read 5.0 s whenever every one of the 16 clients had a request parked on a
//! follower (as with 3.7.3 on this machine), and ~1 s when one client happened to escape:
//! the figure was the client's deadline, not etcd's recovery. guessgame's and ZooKeeper's
//! followers drop their clients' pending requests as soon as the connection to the leader
//! breaks (the clients then go to another member), so their clients never wait for a
//! deadline. To measure etcd's recovery and not our timeout, a failover client abandons an
//! attempt after one election timeout (the earliest a new leader can exist) and sends its
//! next write to the next endpoint, as a client with an endpoint list should; the abandoned
//! attempt counts as an error and its outcome is left to the read-back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use guessgame_client::cluster::free_ports;
use tonic::transport::{Channel, Endpoint};

use super::{
    log_tail, running_pids, value_of, Ensemble, Proc, Reader, Retention, Verification, Writer,
};
use crate::long::{Disk, LongRun, Position};
use crate::reads::ReadKind;

pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("etcdserverpb");
}

use pb::{kv_client::KvClient, maintenance_client::MaintenanceClient};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Deadline of one attempt of a failover client (see the module's documentation): etcd's
/// default election timeout.
pub const FAILOVER_ATTEMPT: Duration = Duration::from_millis(1000);

/// Where Debian's `etcd-server` puts the server.
const DEBIAN_ETCD: &str = "/usr/bin/etcd";

/// The default server: Debian's etcd if it is installed (another etcd on PATH, e.g. one
/// built for other tests, must not stand in for it unasked), else whatever `etcd` is on
/// PATH. `--etcd-bin` picks another.
pub fn default_binary() -> Option<PathBuf> {
    let debian = PathBuf::from(DEBIAN_ETCD);
    if debian.is_file() {
        return Some(debian);
    }
    super::which("etcd")
}

/// Why etcd cannot run, if it cannot.
pub fn missing(bin: Option<&Path>) -> Option<String> {
    match bin {
        None => Some(format!(
            "neither {DEBIAN_ETCD} nor `etcd` on PATH: install Debian's package (apt-get install -y etcd-server) or give --etcd-bin"
        )),
        Some(b) if !b.is_file() => Some(format!("--etcd-bin {}: no such file", b.display())),
        Some(_) => None,
    }
}

/// From `<bin> --version`, e.g. `3.4.23`.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("etcd Version: ").map(str::to_string))
        })
        .unwrap_or_else(|| "unknown version".into())
}

pub struct Etcd {
    /// Deadline of one attempt of a failover client.
    failover_attempt: Duration,
    procs: Vec<Proc>,
    client_urls: Vec<String>,
    logs: Vec<PathBuf>,
    /// What starting (and restarting) a member needs.
    bin: PathBuf,
    peer_urls: Vec<String>,
    homes: Vec<PathBuf>,
    retention: Retention,
}

/// What `--long` adds to every member's flags: keep the last 1,000 revisions of the key
/// space (etcd's revision compactor looks every 5 minutes). Snapshots (every 100,000
/// entries), and the 5 WAL and snapshot files kept, stay at their defaults.
const AUTO_COMPACTION: [&str; 4] = [
    "--auto-compaction-mode",
    "revision",
    "--auto-compaction-retention",
    "1000",
];

pub struct EtcdWriter {
    clients: Vec<KvClient<Channel>>,
    current: usize,
    key: Vec<u8>,
    /// Deadline of one Put.
    timeout: Duration,
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

pub struct EtcdReader {
    client: KvClient<Channel>,
    key: Vec<u8>,
    serializable: bool,
}

impl Reader for EtcdReader {
    /// One Range of the reader's own key: serializable (served by the member asked) or
    /// linearizable (the member confirms with the leader's ReadIndex first).
    async fn read(&mut self) -> anyhow::Result<()> {
        let mut req = tonic::Request::new(pb::RangeRequest {
            key: self.key.clone(),
            serializable: self.serializable,
            ..Default::default()
        });
        req.set_timeout(REQUEST_TIMEOUT);
        match self.client.range(req).await {
            Ok(_) => Ok(()),
            Err(status) => bail!("etcd range: {:?}: {}", status.code(), status.message()),
        }
    }
}

fn key_of(client: usize, failover: bool) -> Vec<u8> {
    format!("bench/{}{client}", if failover { "f" } else { "c" }).into_bytes()
}

impl Writer for EtcdWriter {
    /// One Put within the writer's deadline; on failure (a refusal or no answer in time) the
    /// next write goes to the next endpoint (with a single endpoint, the same one again).
    async fn write(&mut self, op: u64) -> anyhow::Result<()> {
        let mut req = tonic::Request::new(pb::PutRequest {
            key: self.key.clone(),
            value: value_of(op).into_bytes(),
            ..Default::default()
        });
        req.set_timeout(self.timeout);
        let n = self.clients.len();
        match self.clients[self.current].put(req).await {
            Ok(_) => Ok(()),
            Err(status) => {
                self.current = (self.current + 1) % n;
                bail!("etcd put: {:?}: {}", status.code(), status.message())
            }
        }
    }
}

async fn status(url: &str) -> anyhow::Result<pb::StatusResponse> {
    let mut c = MaintenanceClient::new(channel(url)?);
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(Duration::from_millis(1000));
    Ok(c.status(req).await?.into_inner())
}

impl Etcd {
    /// `failover_attempt`: the deadline of one Put of a failover client.
    pub async fn start(
        dir: &Path,
        size: usize,
        bin: &Path,
        failover_attempt: Duration,
    ) -> anyhow::Result<Etcd> {
        Self::start_with(dir, size, bin, failover_attempt, Retention::Bench).await
    }

    pub async fn start_with(
        dir: &Path,
        size: usize,
        bin: &Path,
        failover_attempt: Duration,
        retention: Retention,
    ) -> anyhow::Result<Etcd> {
        let ports = free_ports(2 * size)?;
        let client_urls: Vec<String> = (0..size)
            .map(|k| format!("http://127.0.0.1:{}", ports[k]))
            .collect();
        let peer_urls: Vec<String> = (0..size)
            .map(|k| format!("http://127.0.0.1:{}", ports[size + k]))
            .collect();
        let homes: Vec<PathBuf> = (0..size).map(|k| dir.join(format!("m{}", k + 1))).collect();
        let mut me = Etcd {
            failover_attempt,
            procs: Vec::new(),
            client_urls,
            logs: homes.iter().map(|h| h.join("etcd.log")).collect(),
            bin: bin.to_path_buf(),
            peer_urls,
            homes,
            retention,
        };
        for k in 0..size {
            std::fs::create_dir_all(&me.homes[k])?;
            let p = Proc::spawn(me.member_command(k), &me.logs[k])?;
            me.procs.push(p);
        }
        me.wait_ready(Duration::from_secs(60)).await?;
        Ok(me)
    }

    /// Member `k`'s server (on a restart, etcd reads its membership from its data directory
    /// and ignores the `--initial-*` flags).
    fn member_command(&self, k: usize) -> Command {
        let initial: String = self
            .peer_urls
            .iter()
            .enumerate()
            .map(|(j, url)| format!("m{}={url}", j + 1))
            .collect::<Vec<_>>()
            .join(",");
        let home = &self.homes[k];
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name")
            .arg(format!("m{}", k + 1))
            .arg("--data-dir")
            .arg(home.join("data"))
            .arg("--listen-client-urls")
            .arg(&self.client_urls[k])
            .arg("--advertise-client-urls")
            .arg(&self.client_urls[k])
            .arg("--listen-peer-urls")
            .arg(&self.peer_urls[k])
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer_urls[k])
            .arg("--initial-cluster")
            .arg(&initial)
            .arg("--initial-cluster-token")
            .arg("guessgame-bench")
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .arg("--log-level")
            .arg("warn")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(home);
        if self.retention == Retention::LongRun {
            cmd.args(AUTO_COMPACTION);
        }
        cmd
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for (k, p) in self.procs.iter_mut().enumerate() {
                if !p.alive() {
                    bail!(
                        "etcd member {} exited during start-up:\n{}",
                        k + 1,
                        log_tail(&self.logs[k], 20)
                    );
                }
            }
            let mut leaders = Vec::new();
            for url in &self.client_urls {
                leaders.push(status(url).await.ok().map(|s| s.leader));
            }
            let first = leaders[0];
            if first.is_some_and(|l| l != 0) && leaders.iter().all(|l| *l == first) {
                // The KV path works end to end through every member.
                let mut ok = true;
                for k in 0..self.client_urls.len() {
                    let mut w = self.writer(k, false).await?;
                    ok &= w.write(0).await.is_ok();
                }
                if ok {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("etcd ensemble not ready within {timeout:?}: leaders {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Ensemble for Etcd {
    type W = EtcdWriter;
    type R = EtcdReader;

    fn member_name(&self, m: usize) -> String {
        format!("m{}", m + 1)
    }

    async fn writer(&self, client: usize, failover: bool) -> anyhow::Result<EtcdWriter> {
        let n = self.client_urls.len();
        let count = if failover { n } else { 1 };
        let clients = (0..count)
            .map(|k| Ok(KvClient::new(channel(&self.client_urls[(client + k) % n])?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(EtcdWriter {
            clients,
            current: 0,
            key: key_of(client, failover),
            timeout: if failover {
                self.failover_attempt
            } else {
                REQUEST_TIMEOUT
            },
        })
    }

    async fn reader(&self, client: usize, kind: ReadKind) -> anyhow::Result<EtcdReader> {
        let url = &self.client_urls[client % self.client_urls.len()];
        let key = format!("bench/r{client}").into_bytes();
        let mut c = KvClient::new(channel(url)?);
        let mut req = tonic::Request::new(pb::PutRequest {
            key: key.clone(),
            value: value_of(0).into_bytes(),
            ..Default::default()
        });
        req.set_timeout(REQUEST_TIMEOUT);
        c.put(req).await.context("etcd put of a reader's key")?;
        Ok(EtcdReader {
            client: c,
            key,
            serializable: kind == ReadKind::Local,
        })
    }

    fn read_op(&self, kind: ReadKind) -> String {
        match kind {
            ReadKind::Local => {
                "serializable Range of a 16-byte key, served by the member asked".into()
            }
            ReadKind::Linearizable => {
                "linearizable Range of the same key (ReadIndex confirmed by the leader)".into()
            }
        }
    }

    async fn leader(&self) -> anyhow::Result<usize> {
        for (k, url) in self.client_urls.iter().enumerate() {
            if let Ok(s) = status(url).await {
                let me = s.header.map(|h| h.member_id).unwrap_or(0);
                if s.leader != 0 && s.leader == me {
                    return Ok(k);
                }
            }
        }
        bail!("no etcd member reports itself as leader")
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

    fn pids(&mut self) -> Vec<(String, u32)> {
        running_pids(&mut self.procs, "m")
    }

    /// Each failover client's key must hold its last acknowledged value or a later one
    /// (linearizable Range through a survivor).
    async fn verify(&mut self, acked: &[Vec<u64>]) -> anyhow::Result<Verification> {
        let alive: Vec<usize> = (0..self.procs.len())
            .filter(|k| self.procs[*k].alive())
            .collect();
        let mut v = Verification {
            method: "linearizable Range of each failover client's key: value >= its last acknowledged Put".into(),
            ..Default::default()
        };
        for (i, ops) in acked.iter().enumerate() {
            let Some(last) = ops.last() else { continue };
            let mut found = None;
            let mut last_err = None;
            'members: for _ in 0..50 {
                for k in &alive {
                    let mut c = KvClient::new(channel(&self.client_urls[*k])?);
                    let mut req = tonic::Request::new(pb::RangeRequest {
                        key: key_of(i, true),
                        ..Default::default()
                    });
                    req.set_timeout(REQUEST_TIMEOUT);
                    match c.range(req).await {
                        Ok(r) => {
                            let value = r
                                .into_inner()
                                .kvs
                                .first()
                                .map(|kv| String::from_utf8_lossy(&kv.value).trim().to_string())
                                .and_then(|s| s.parse::<u64>().ok())
                                .unwrap_or(0);
                            found = Some(value);
                            break 'members;
                        }
                        Err(e) => last_err = Some(e),
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let Some(found) = found else {
                bail!("cannot read back from etcd: {last_err:?}");
            };
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

fn revision(rev: i64) -> Position {
    let rev = rev.max(0) as u64;
    Position::new((0, rev), format!("revision {rev}"))
}

impl LongRun for Etcd {
    fn retention(&self) -> String {
        format!(
            "{} (the compactor runs every 5 minutes); snapshot-count 100,000, max-wals 5, max-snapshots 5 (defaults); no defragmentation",
            AUTO_COMPACTION.join(" ")
        )
    }

    /// Its `--data-dir` (`member/wal/`, `member/snap/` with the `db` file).
    fn disk(&self, m: usize) -> Disk {
        let data = self.homes[m].join("data");
        let member = data.join("member");
        Disk::of(
            std::slice::from_ref(&data),
            &[
                ("wal", &[member.join("wal")]),
                ("db", &[member.join("snap").join("db")]),
            ],
        )
    }

    async fn committed(&self, m: usize) -> anyhow::Result<Position> {
        let s = status(&self.client_urls[m]).await?;
        Ok(revision(s.header.map(|h| h.revision).unwrap_or(0)))
    }

    /// The revision a serializable Range through member `m` answers with.
    async fn following(&self, m: usize) -> Option<Position> {
        let mut c = KvClient::new(channel(&self.client_urls[m]).ok()?);
        let mut req = tonic::Request::new(pb::RangeRequest {
            key: key_of(0, true),
            serializable: true,
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(500));
        let r = c.range(req).await.ok()?.into_inner();
        Some(revision(r.header?.revision))
    }

    fn restart(&mut self, m: usize) -> anyhow::Result<()> {
        self.procs[m] = Proc::spawn(self.member_command(m), &self.logs[m])?;
        Ok(())
    }
}
