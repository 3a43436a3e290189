//! The command line: which systems, workloads and failover cases, for how long.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::failover::StopKind;
use crate::reads::ReadKind;
use crate::systems;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    Guessgame,
    Zookeeper,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Guessgame => "guessgame",
            System::Zookeeper => "zookeeper",
            System::Etcd => "etcd",
        }
    }

    pub fn op(self) -> &'static str {
        match self {
            System::Guessgame => {
                "a guess under a fresh client id (every 100th op a write that closes the round): one committed, fsynced log entry via Proposal→ACK→Commit; each load client's requests on its own Game.Session stream (--guessgame-api unary: one gRPC call each)"
            }
            System::Zookeeper => "setData of 16 bytes on the client's own znode",
            System::Etcd => "Put of 16 bytes to the client's own key",
        }
    }
}

/// What the clients do in the measuring windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Durable writes (and the efficiency figures measured over them).
    Writes,
    /// Reads served by the member asked.
    LocalReads,
    /// Reads confirmed by the leader (ZooKeeper: sync + getData, not linearizable).
    LinearizableReads,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Writes => "writes",
            Workload::LocalReads => "local-reads",
            Workload::LinearizableReads => "linearizable-reads",
        }
    }
}

/// guessgame vs ZooKeeper vs etcd: 5-member ensembles on loopback, one at a time.
#[derive(Parser, Debug)]
#[command(version)]
pub struct Args {
    /// Systems to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "guessgame,zookeeper,etcd"
    )]
    pub systems: Vec<System>,
    /// Drive a guessgame ensemble that is already running (e.g. `kubectl port-forward`ed):
    /// its client addresses, host:port,... No member is started, stopped or killed (no
    /// failover cases), no process figures; writes and reads only.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// How guessgame's load clients call: `session` (default: each client's requests on one
    /// long-lived `Game.Session` stream, as each ZooKeeper client uses its session
    /// connection) or `unary` (one gRPC call per request, as etcd's clients do; what the
    /// `guessgame` CLI does). Failover clients always use unary calls over the endpoint list.
    #[arg(long, value_enum, default_value = "session")]
    pub guessgame_api: GuessgameApi,
    /// The etcd server to run (default: Debian's /usr/bin/etcd, else `etcd` on PATH).
    #[arg(long, value_name = "PATH")]
    pub etcd_bin: Option<PathBuf>,
    /// Deadline of one Put of an etcd failover client, seconds; on expiry its next write goes
    /// to the next endpoint. Default: etcd's election timeout (see the README: with 5, the
    /// SIGKILL gap reads the deadline, not etcd's recovery).
    #[arg(long, default_value_t = systems::etcd::FAILOVER_ATTEMPT.as_secs_f64())]
    pub etcd_attempt_timeout: f64,
    /// Workloads, in this order, each at every client count.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "writes,local-reads,linearizable-reads"
    )]
    pub workloads: Vec<Workload>,
    /// Client counts (C): one measuring window each, per workload.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Measuring window per client count, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub window: f64,
    /// Measuring window of the read workloads, seconds (default: --window).
    #[arg(long)]
    pub read_window: Option<f64>,
    /// Warm-up before each window (same clients, not measured), seconds.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Warm-up of each freshly started ensemble (16 clients, not measured), seconds.
    #[arg(long, default_value_t = 5.0)]
    pub system_warmup: f64,
    /// Failover cases: `kill` (SIGKILL the leader) and `term` (SIGTERM it: a graceful stop).
    /// The SIGTERM case runs on a fresh ensemble.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill,term")]
    pub failover: Vec<StopKind>,
    /// Clients of the failover runs.
    #[arg(long, default_value_t = 16)]
    pub failover_clients: usize,
    /// Seconds of load before the leader is signalled.
    #[arg(long, default_value_t = 3.0)]
    pub failover_before: f64,
    /// Seconds of load after the leader is signalled.
    #[arg(long, default_value_t = 7.0)]
    pub failover_after: f64,
    /// Skip the failover runs.
    #[arg(long)]
    pub no_failover: bool,
    /// Members per ensemble.
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// fsyncs sampled for the disk's floor.
    #[arg(long, default_value_t = 300)]
    pub fsync_samples: usize,
    /// Where the JSON, Markdown and PNG go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Where the ensembles' temporary directories go (default: the system's temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the ensembles' directories (data and logs) instead of deleting them.
    #[arg(long)]
    pub keep: bool,
    /// Smoke run: guessgame only, C = 1, 2 s write window, one 1 s local-read window, no
    /// failover (unless set explicitly).
    #[arg(long)]
    pub quick: bool,
    /// Measure nothing: redraw the table and chart of an earlier run's results.json into
    /// `--out` (with --long: of a long.json).
    #[arg(long, value_name = "RESULTS_JSON")]
    pub replot: Option<PathBuf>,
    /// Long run instead of the windows: per system a fresh ensemble with snapshots and
    /// compaction on, --long-clients writers until --long-entries writes are acknowledged;
    /// every tenth, each member's memory and data on disk; after the 4th, 7th and 10th a
    /// follower's restart time. Writes long.json, long.md and long.png.
    #[arg(long)]
    pub long: bool,
    /// Acknowledged writes per system in the long run.
    #[arg(long, default_value_t = 300_000)]
    pub long_entries: u64,
    /// Closed-loop writers of the long run.
    #[arg(long, default_value_t = 16)]
    pub long_clients: usize,
}

impl Args {
    /// Parses the command line and applies `--quick` and `--endpoints` to the defaults the
    /// user left alone.
    pub fn parse_checked() -> anyhow::Result<Args> {
        let matches = Args::command().get_matches();
        let mut args = match Args::from_arg_matches(&matches) {
            Ok(a) => a,
            Err(e) => e.exit(),
        };
        let default = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
        if args.quick {
            if default("systems") {
                args.systems = vec![System::Guessgame];
            }
            if default("clients") {
                args.clients = vec![1];
            }
            if default("window") {
                args.window = 2.0;
            }
            if args.read_window.is_none() {
                args.read_window = Some(1.0);
            }
            if default("workloads") {
                args.workloads = vec![Workload::Writes, Workload::LocalReads];
            }
            if default("warmup") {
                args.warmup = 0.5;
            }
            if default("system_warmup") {
                args.system_warmup = 0.0;
            }
            if default("fsync_samples") {
                args.fsync_samples = 50;
            }
            if !matches.get_flag("no_failover") {
                args.no_failover = true;
            }
        }
        if !args.endpoints.is_empty() {
            if default("systems") {
                args.systems = vec![System::Guessgame];
            }
            anyhow::ensure!(
                args.systems == [System::Guessgame],
                "--endpoints drives a guessgame ensemble: --systems must be guessgame"
            );
            for e in &args.endpoints {
                anyhow::ensure!(
                    e.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                    "--endpoints: {e:?} is not host:port"
                );
            }
            args.members = args.endpoints.len();
        } else {
            anyhow::ensure!(
                args.members % 2 == 1 && args.members <= 9,
                "--members: an odd number up to 9"
            );
        }
        if args.long {
            anyhow::ensure!(
                args.endpoints.is_empty(),
                "--long starts its own ensembles: no --endpoints"
            );
            anyhow::ensure!(
                args.members >= 3,
                "--long restarts a follower while the others keep a quorum: --members 3 or more"
            );
            anyhow::ensure!(
                args.long_entries >= crate::long::CHECKPOINTS,
                "--long-entries: at least {}",
                crate::long::CHECKPOINTS
            );
            anyhow::ensure!(args.long_clients > 0, "--long-clients: at least 1");
        }
        if args.no_failover {
            args.failover.clear();
        }
        args.failover.dedup();
        anyhow::ensure!(
            !args.clients.is_empty(),
            "--clients: give at least one count"
        );
        anyhow::ensure!(
            args.clients.iter().all(|c| *c > 0),
            "--clients: counts must be positive"
        );
        Ok(args)
    }

    pub fn read_window(&self) -> f64 {
        self.read_window.unwrap_or(self.window)
    }

    pub fn writes(&self) -> bool {
        self.workloads.contains(&Workload::Writes)
    }

    /// The read kinds asked for, in the order asked.
    pub fn read_kinds(&self) -> Vec<ReadKind> {
        let mut out = Vec::new();
        for w in &self.workloads {
            let k = match w {
                Workload::LocalReads => ReadKind::Local,
                Workload::LinearizableReads => ReadKind::Linearizable,
                Workload::Writes => continue,
            };
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// The failover cases that run (none against `--endpoints`).
    pub fn stops(&self) -> Vec<StopKind> {
        if self.endpoints.is_empty() {
            self.failover.clone()
        } else {
            Vec::new()
        }
    }

    /// The etcd binary to run.
    pub fn etcd_binary(&self) -> Option<PathBuf> {
        self.etcd_bin.clone().or_else(systems::etcd::default_binary)
    }

    /// Planned load time of one system, ms (what the progress bar counts).
    pub fn planned_ms(&self) -> u64 {
        let per_c = |w: f64| self.clients.len() as f64 * (self.warmup + w);
        let mut s = self.system_warmup;
        if self.writes() {
            s += per_c(self.window);
        }
        s += self.read_kinds().len() as f64 * per_c(self.read_window());
        s += self.stops().len() as f64 * (self.failover_before + self.failover_after);
        (s * 1000.0) as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuessgameApi {
    Session,
    Unary,
}
