//! `guessgame-bench`: guessgame side by side with ZooKeeper and etcd on this machine.
//!
//! For each system in turn (never two at once): start a 5-member ensemble on 127.0.0.1 in a
//! temporary directory, warm it up, drive C closed-loop clients (C = 1, 16, 64 by default)
//! for a fixed window each, SIGKILL the leader under load and read back what was
//! acknowledged, stop it. Prints a Markdown table on stdout and writes every figure as JSON
//! and a PNG chart into `--out` (default `bench-out/`).
//!
//! ZooKeeper and etcd come from Debian's `zookeeper` and `etcd-server` packages; the bench
//! installs nothing, and reports a system it cannot find as skipped.

mod chart;
mod fsync;
mod load;
mod report;
mod systems;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use report::{Machine, Report, Settings, Status, SystemReport};
use systems::{etcd::Etcd, guessgame::Guessgame, zookeeper::Zookeeper, Ensemble};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    Guessgame,
    Zookeeper,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Guessgame => "guessgame",
            System::Zookeeper => "zookeeper",
            System::Etcd => "etcd",
        }
    }

    fn op(self) -> &'static str {
        match self {
            System::Guessgame => {
                "a guess under a fresh client id (every 100th op a write that closes the round): one committed, fsynced log entry via Proposal→ACK→Commit"
            }
            System::Zookeeper => "setData of 16 bytes on the client's own znode",
            System::Etcd => "Put of 16 bytes to the client's own key",
        }
    }

    fn missing(self) -> Option<String> {
        match self {
            System::Guessgame => systems::guessgame::missing(),
            System::Zookeeper => systems::zookeeper::missing(),
            System::Etcd => systems::etcd::missing(),
        }
    }

    fn version(self) -> String {
        match self {
            System::Guessgame => systems::guessgame::version(),
            System::Zookeeper => systems::zookeeper::version(),
            System::Etcd => systems::etcd::version(),
        }
    }
}

/// guessgame vs ZooKeeper vs etcd: 5-member ensembles on loopback, one at a time.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Systems to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "guessgame,zookeeper,etcd"
    )]
    systems: Vec<System>,
    /// Client counts (C): one measuring window each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Measuring window per client count, seconds.
    #[arg(long, default_value_t = 10.0)]
    window: f64,
    /// Warm-up before each window (same clients, not measured), seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Warm-up of each freshly started ensemble (16 clients, not measured), seconds.
    #[arg(long, default_value_t = 5.0)]
    system_warmup: f64,
    /// Clients of the leader-kill run.
    #[arg(long, default_value_t = 16)]
    failover_clients: usize,
    /// Seconds of load before the leader is killed.
    #[arg(long, default_value_t = 3.0)]
    failover_before: f64,
    /// Seconds of load after the leader is killed.
    #[arg(long, default_value_t = 7.0)]
    failover_after: f64,
    /// Skip the leader-kill run.
    #[arg(long)]
    no_failover: bool,
    /// Members per ensemble.
    #[arg(long, default_value_t = 5)]
    members: usize,
    /// fsyncs sampled for the disk's floor.
    #[arg(long, default_value_t = 300)]
    fsync_samples: usize,
    /// Where the JSON, Markdown and PNG go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Where the ensembles' temporary directories go (default: the system's temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the ensembles' directories (data and logs) instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// Smoke run: guessgame only, C = 1, 2 s window, no failover (unless set explicitly).
    #[arg(long)]
    quick: bool,
    /// Measure nothing: redraw the table and chart of an earlier run's results.json into
    /// `--out`.
    #[arg(long, value_name = "RESULTS_JSON")]
    replot: Option<PathBuf>,
}

impl Args {
    fn parse_with_quick() -> Args {
        let matches = Args::command().get_matches();
        let mut args = match Args::from_arg_matches(&matches) {
            Ok(a) => a,
            Err(e) => e.exit(),
        };
        if args.quick {
            let default = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
            if default("systems") {
                args.systems = vec![System::Guessgame];
            }
            if default("clients") {
                args.clients = vec![1];
            }
            if default("window") {
                args.window = 2.0;
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
        args
    }

    /// Planned load time of one system, ms (what the progress bar counts).
    fn planned_ms(&self) -> u64 {
        let mut s = self.system_warmup
            + self
                .clients
                .iter()
                .map(|_| self.warmup + self.window)
                .sum::<f64>();
        if !self.no_failover {
            s += self.failover_before + self.failover_after;
        }
        (s * 1000.0) as u64
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

/// Runs the load phases and the failover on a started ensemble.
async fn drive<E: Ensemble>(
    ens: &mut E,
    args: &Args,
    next_op: &Arc<AtomicU64>,
    pb: &ProgressBar,
    sys: &mut SystemReport,
) -> anyhow::Result<()> {
    let name = sys.system.clone();
    if args.system_warmup > 0.0 {
        let mut ws = Vec::new();
        for i in 0..16 {
            ws.push(ens.writer(i, false).await?);
        }
        // Not measured: JIT, caches, connection pools and the first log segments warm up.
        load::closed_loop(
            ws,
            secs(args.system_warmup),
            Duration::ZERO,
            next_op,
            pb,
            &format!("{name} system warm-up, 16 clients"),
        )
        .await;
    }
    for &c in &args.clients {
        pb.set_message(format!("{name}: connecting {c} clients"));
        let mut ws = Vec::with_capacity(c);
        for i in 0..c {
            ws.push(ens.writer(i, false).await?);
        }
        let r = load::closed_loop(
            ws,
            secs(args.warmup),
            secs(args.window),
            next_op,
            pb,
            &format!("{name} C={c}"),
        )
        .await;
        pb.println(format!(
            "{name:>10} C={c:<3} {:>8.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  errors {}",
            r.ops_per_sec, r.p50_ms, r.p99_ms, r.max_ms, r.errors
        ));
        let none = r.ops == 0;
        let why = r.first_error.clone().unwrap_or_default();
        sys.runs.push(r);
        anyhow::ensure!(
            !none,
            "no write was acknowledged in the {c}-client window ({why})"
        );
    }
    if !args.no_failover {
        let f = load::failover(
            ens,
            args.failover_clients,
            secs(args.failover_before),
            secs(args.failover_after),
            next_op,
            pb,
            &name,
        )
        .await?;
        pb.println(format!(
            "{name:>10} failover: killed {} — longest gap {:.3} s, {} of {} acknowledged writes lost",
            f.killed, f.longest_gap_s, f.verification.lost, f.verification.checked
        ));
        sys.failover = Some(f);
    }
    Ok(())
}

async fn run_system(
    system: System,
    args: &Args,
    work: &Path,
    next_op: &Arc<AtomicU64>,
    pb: &ProgressBar,
) -> SystemReport {
    let mut sys = SystemReport {
        system: system.name().to_string(),
        version: String::new(),
        status: Status::Ok,
        reason: None,
        op: system.op().to_string(),
        startup_s: None,
        runs: Vec::new(),
        failover: None,
    };
    if let Some(why) = system.missing() {
        sys.version = "—".into();
        sys.status = Status::Skipped;
        pb.println(format!("{:>10} skipped: {why}", sys.system));
        sys.reason = Some(why);
        return sys;
    }
    sys.version = system.version();
    let dir = work.join(system.name());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        sys.status = Status::Failed;
        sys.reason = Some(format!("{}: {e}", dir.display()));
        return sys;
    }
    pb.set_message(format!("{}: starting {} members", sys.system, args.members));
    let started = Instant::now();
    let result = match system {
        System::Guessgame => match Guessgame::start(&dir, args.members).await {
            Ok(mut e) => {
                sys.startup_s = Some(started.elapsed().as_secs_f64());
                let r = drive(&mut e, args, next_op, pb, &mut sys).await;
                e.stop();
                r
            }
            Err(e) => Err(e),
        },
        System::Zookeeper => match Zookeeper::start(&dir, args.members).await {
            Ok(mut e) => {
                sys.startup_s = Some(started.elapsed().as_secs_f64());
                let r = drive(&mut e, args, next_op, pb, &mut sys).await;
                e.stop();
                r
            }
            Err(e) => Err(e),
        },
        System::Etcd => match Etcd::start(&dir, args.members).await {
            Ok(mut e) => {
                sys.startup_s = Some(started.elapsed().as_secs_f64());
                let r = drive(&mut e, args, next_op, pb, &mut sys).await;
                e.stop();
                r
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        sys.status = Status::Failed;
        let why = format!("{e:#}");
        pb.println(format!(
            "{:>10} FAILED: {why} (logs in {})",
            sys.system,
            dir.display()
        ));
        sys.reason = Some(why);
    }
    sys
}

/// The table on stdout; results.json (unless replotting), results.md and chart.png in `out`.
fn write_outputs(report: &Report, out: &Path, json: bool) -> anyhow::Result<()> {
    let md = report.markdown();
    println!("{md}");
    let mut wrote = Vec::new();
    if json {
        let path = out.join("results.json");
        std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")?;
        wrote.push(path);
    }
    let path = out.join("results.md");
    std::fs::write(&path, &md)?;
    wrote.push(path);
    let png = out.join("chart.png");
    match chart::draw(report, &png) {
        Ok(()) => wrote.push(png),
        Err(e) => eprintln!("chart: {e:#}"),
    }
    let names: Vec<String> = wrote.iter().map(|p| p.display().to_string()).collect();
    eprintln!("wrote {}", names.join(", "));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse_with_quick();
    anyhow::ensure!(
        !args.clients.is_empty(),
        "--clients: give at least one count"
    );
    anyhow::ensure!(
        args.clients.iter().all(|c| *c > 0),
        "--clients: counts must be positive"
    );
    anyhow::ensure!(
        args.members % 2 == 1 && args.members <= 9,
        "--members: an odd number up to 9"
    );
    std::fs::create_dir_all(&args.out)?;
    if let Some(path) = &args.replot {
        let text = std::fs::read_to_string(path)?;
        let report: Report =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return write_outputs(&report, &args.out, false);
    }
    let tmp = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("guessgame-bench-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new()
            .prefix("guessgame-bench-")
            .tempdir()?,
    };
    let work = tmp.path().to_path_buf();

    let per_system = args.planned_ms();
    let pb = ProgressBar::with_draw_target(
        Some(per_system * args.systems.len() as u64),
        ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner:.green} {elapsed_precise:.dim} [{bar:32.cyan/blue}] {percent:>3}% {wide_msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(120));

    pb.set_message("measuring the fsync floor");
    let floor = match fsync::measure(&work, args.fsync_samples) {
        Ok(f) => {
            pb.println(format!(
                "fsync floor in {}: p50 {:.3} ms, p99 {:.3} ms",
                f.dir, f.p50_ms, f.p99_ms
            ));
            Some(f)
        }
        Err(e) => {
            pb.println(format!(
                "fsync floor: cannot measure in {}: {e}",
                work.display()
            ));
            None
        }
    };

    let next_op = Arc::new(AtomicU64::new(1));
    let mut reports = Vec::new();
    for (i, &system) in args.systems.iter().enumerate() {
        let r = run_system(system, &args, &work, &next_op, &pb).await;
        pb.set_position(per_system * (i as u64 + 1));
        reports.push(r);
    }
    pb.finish_and_clear();

    let report = Report {
        machine: Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            os: os_name(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        },
        settings: Settings {
            members: args.members,
            clients: args.clients.clone(),
            system_warmup_s: args.system_warmup,
            warmup_s: args.warmup,
            window_s: args.window,
            failover_clients: (!args.no_failover).then_some(args.failover_clients),
            failover_kill_after_s: args.failover_before,
            failover_run_after_kill_s: args.failover_after,
        },
        fsync: floor,
        systems: reports,
    };
    write_outputs(&report, &args.out, true)?;
    if args.keep {
        let kept = tmp.keep();
        eprintln!("ensemble directories kept in {}", kept.display());
    }
    if report
        .systems
        .iter()
        .any(|s| matches!(s.status, Status::Failed))
    {
        std::process::exit(1);
    }
    Ok(())
}
