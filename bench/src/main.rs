//! `guessgame-bench`: guessgame side by side with ZooKeeper and etcd on this machine.
//!
//! For each system in turn (never two at once): start a 5-member ensemble on 127.0.0.1 in a
//! temporary directory, warm it up, drive C closed-loop clients (C = 1, 16, 64 by default)
//! for a fixed window each — durable writes (with the server processes' CPU time and memory),
//! then local and linearizable reads — SIGKILL the leader under load and read back what was
//! acknowledged, stop it; then the same with SIGTERM (a graceful stop) on a fresh ensemble.
//! Prints a Markdown table on stdout and writes every figure as JSON and a PNG chart into
//! `--out` (default `bench-out/`). `--endpoints` drives a guessgame ensemble started
//! elsewhere instead (writes and reads only). `--long` runs the long-run mode instead
//! (memory, disk and restart time as the log grows: `long.rs`).
//!
//! ZooKeeper and etcd come from Debian's `zookeeper` and `etcd-server` packages (or
//! `--etcd-bin`); the bench installs nothing, and reports a system it cannot find as skipped.

mod chart;
mod cli;
mod efficiency;
mod failover;
mod fsync;
mod load;
mod long;
mod long_chart;
mod long_report;
mod reads;
mod report;
mod run;
mod systems;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cli::Args;
use report::{Machine, Report, Settings};

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

/// The names of a run's files in `--out`.
struct OutFiles {
    json: &'static str,
    md: &'static str,
    png: &'static str,
}

/// `md` on stdout and into `out`, with `json` (none when replotting) and the chart `draw`
/// makes.
fn write_files(
    md: &str,
    json: Option<String>,
    out: &Path,
    files: &OutFiles,
    draw: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    println!("{md}");
    let mut wrote = Vec::new();
    if let Some(json) = json {
        let path = out.join(files.json);
        std::fs::write(&path, json)?;
        wrote.push(path);
    }
    let path = out.join(files.md);
    std::fs::write(&path, md)?;
    wrote.push(path);
    let png = out.join(files.png);
    match draw(&png) {
        Ok(()) => wrote.push(png),
        Err(e) => eprintln!("chart: {e:#}"),
    }
    let names: Vec<String> = wrote.iter().map(|p| p.display().to_string()).collect();
    eprintln!("wrote {}", names.join(", "));
    Ok(())
}

/// The table on stdout; results.json (unless replotting), results.md and chart.png in `out`.
fn write_outputs(report: &Report, out: &Path, json: bool) -> anyhow::Result<()> {
    let json = match json {
        true => Some(serde_json::to_string_pretty(report)? + "\n"),
        false => None,
    };
    let files = OutFiles {
        json: "results.json",
        md: "results.md",
        png: "chart.png",
    };
    write_files(&report.markdown(), json, out, &files, |png| {
        chart::draw(report, png)
    })
}

/// This machine, for the report.
fn machine() -> Machine {
    Machine {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        os: os_name(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// The temporary directory the ensembles go in (in `--work-dir` if given).
fn work_dir(args: &Args) -> anyhow::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("guessgame-bench-");
    Ok(match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            b.tempdir_in(d)?
        }
        None => b.tempdir()?,
    })
}

/// With `--keep`, leaves the ensembles' directories behind (and says where).
fn keep_work_dir(tmp: tempfile::TempDir, keep: bool) {
    if keep {
        let kept = tmp.keep();
        eprintln!("ensemble directories kept in {}", kept.display());
    }
}

/// The progress bar on stderr, `len` steps long.
fn progress_bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner:.green} {elapsed_precise:.dim} [{bar:32.cyan/blue}] {percent:>3}% {wide_msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse_checked()?;
    systems::guessgame::UNARY.store(
        args.guessgame_api == cli::GuessgameApi::Unary,
        std::sync::atomic::Ordering::Relaxed,
    );
    std::fs::create_dir_all(&args.out)?;
    if args.long {
        return long::main(&args).await;
    }
    if let Some(path) = &args.replot {
        let text = std::fs::read_to_string(path)?;
        let mut report: Report =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        report.upgrade();
        return write_outputs(&report, &args.out, false);
    }
    let tmp = work_dir(&args)?;
    let work = tmp.path().to_path_buf();

    let per_system = args.planned_ms();
    let pb = progress_bar(per_system * args.systems.len() as u64);

    pb.set_message("measuring the fsync floor");
    // Against --endpoints the data directories are elsewhere: this disk says nothing.
    let probe = if args.endpoints.is_empty() {
        fsync::measure(&work, args.fsync_samples).map(Some)
    } else {
        Ok(None)
    };
    let floor = match probe {
        Ok(None) => None,
        Ok(Some(f)) => {
            run::say(
                &pb,
                format!(
                    "fsync floor in {}: p50 {:.3} ms, p99 {:.3} ms",
                    f.dir, f.p50_ms, f.p99_ms
                ),
            );
            Some(f)
        }
        Err(e) => {
            run::say(
                &pb,
                format!("fsync floor: cannot measure in {}: {e}", work.display()),
            );
            None
        }
    };

    let next_op = Arc::new(AtomicU64::new(1));
    let mut reports = Vec::new();
    if args.endpoints.is_empty() {
        for (i, &system) in args.systems.iter().enumerate() {
            let r = run::run_system(system, &args, &work, &next_op, &pb).await;
            pb.set_position(per_system * (i as u64 + 1));
            reports.push(r);
        }
    } else {
        reports.push(run::run_external(&args, &next_op, &pb).await);
    }
    pb.finish_and_clear();

    let report = Report {
        machine: machine(),
        settings: Settings {
            members: args.members,
            clients: args.clients.clone(),
            system_warmup_s: args.system_warmup,
            warmup_s: args.warmup,
            window_s: args.window,
            read_window_s: args.read_window(),
            workloads: args
                .workloads
                .iter()
                .map(|w| w.name().to_string())
                .collect(),
            failover_clients: (!args.failover.is_empty()).then_some(args.failover_clients),
            failover_stops: args.failover.clone(),
            failover_kill_after_s: args.failover_before,
            failover_run_after_kill_s: args.failover_after,
            etcd_failover_attempt_s: args
                .systems
                .contains(&cli::System::Etcd)
                .then_some(args.etcd_attempt_timeout),
            endpoints: (!args.endpoints.is_empty()).then(|| args.endpoints.clone()),
        },
        fsync: floor,
        systems: reports,
    };
    write_outputs(&report, &args.out, true)?;
    keep_work_dir(tmp, args.keep);
    if report.systems.iter().any(|s| s.failed()) {
        std::process::exit(1);
    }
    Ok(())
}
