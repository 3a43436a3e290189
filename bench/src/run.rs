//! One system's run, step by step: start an ensemble, warm it up, the write windows (with
//! the processes' CPU and memory), the read windows, the SIGKILL failover; then a fresh
//! ensemble for the SIGTERM failover. A step that fails is recorded beside the figures of
//! the steps that worked; the run goes on with the next step.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::cli::{Args, System};
use crate::efficiency::{self, Meter};
use crate::failover::{self, StopKind};
use crate::load::{self, Writes};
use crate::reads;
use crate::report::{Outcome, Status, Step, StepNote, SystemReport};
use crate::systems::external::{External, NO_FAILOVER};
use crate::systems::{self, etcd::Etcd, guessgame::Guessgame, zookeeper::Zookeeper, Ensemble};

/// A line under the progress bar; on stderr as it is when the bar is hidden (not a terminal).
pub fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Slack on top of a step's planned time before it counts as hung (connecting clients,
/// draining, the read-back).
const STEP_SLACK: Duration = Duration::from_secs(120);

/// What every step needs.
struct Ctx<'a> {
    args: &'a Args,
    next_op: &'a Arc<AtomicU64>,
    pb: &'a ProgressBar,
}

/// Says under the progress bar that `step` of `system` failed; the reason, for the report.
pub(crate) fn say_failed(
    pb: &ProgressBar,
    system: &str,
    step: &dyn std::fmt::Display,
    e: anyhow::Error,
) -> String {
    let why = format!("{e:#}");
    say(pb, format!("{system:>10} {step} FAILED: {why}"));
    why
}

impl Ctx<'_> {
    /// Records a failed step and says so under the progress bar.
    fn failed(&self, sys: &mut SystemReport, step: Step, e: anyhow::Error) {
        let why = say_failed(self.pb, &sys.system, &step, e);
        sys.steps.push(StepNote {
            step,
            outcome: Outcome::Failed,
            why,
        });
    }

    fn skipped(&self, sys: &mut SystemReport, step: Step, why: &str) {
        say(self.pb, format!("{:>10} {step} {why}", sys.system));
        sys.steps.push(StepNote {
            step,
            outcome: Outcome::Skipped,
            why: why.trim_start_matches("skipped: ").to_string(),
        });
    }
}

/// `fut` within `planned` plus slack.
async fn bounded<T>(
    planned: Duration,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let limit = planned + STEP_SLACK;
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("step did not finish within {limit:?}"),
    }
}

fn report_of(system: System) -> SystemReport {
    SystemReport {
        system: system.name().to_string(),
        version: String::new(),
        binary: None,
        status: Status::Ok,
        reason: None,
        op: system.op().to_string(),
        startup_s: None,
        runs: Vec::new(),
        reads: Vec::new(),
        failovers: Vec::new(),
        legacy_failover: None,
        efficiency: None,
        steps: Vec::new(),
    }
}

/// The warm-up, write and read windows on a running ensemble.
async fn measure<E: Ensemble>(ens: &mut E, cx: &Ctx<'_>, sys: &mut SystemReport) {
    let args = cx.args;
    let name = sys.system.clone();
    if args.system_warmup > 0.0 {
        let r = bounded(secs(args.system_warmup), async {
            let mut ws = Vec::new();
            for i in 0..16 {
                ws.push(Writes(ens.writer(i, false).await?));
            }
            // Not measured: JIT, caches, connection pools and the first log segments warm up.
            Ok(load::closed_loop(
                ws,
                secs(args.system_warmup),
                Duration::ZERO,
                cx.next_op,
                cx.pb,
                &format!("{name} system warm-up, 16 clients"),
                None,
            )
            .await)
        })
        .await;
        if let Err(e) = r {
            cx.failed(sys, Step::SystemWarmup, e);
        }
    }
    if args.writes() {
        for &c in &args.clients {
            let meter = Meter::new(ens.pids());
            let r = bounded(secs(args.warmup + args.window), async {
                cx.pb.set_message(format!("{name}: connecting {c} clients"));
                let mut ws = Vec::with_capacity(c);
                for i in 0..c {
                    ws.push(Writes(ens.writer(i, false).await?));
                }
                Ok(load::closed_loop(
                    ws,
                    secs(args.warmup),
                    secs(args.window),
                    cx.next_op,
                    cx.pb,
                    &format!("{name} C={c}"),
                    meter.as_ref(),
                )
                .await)
            })
            .await;
            match r {
                Ok(r) => {
                    let cpu = r
                        .usage
                        .as_ref()
                        .and_then(|u| u.cpu_s_per_1k_ops)
                        .map(|x| format!("  CPU {x:.3} s/1k"))
                        .unwrap_or_default();
                    say(cx.pb, format!(
                        "{name:>10} writes C={c:<3} {:>8.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  errors {}{cpu}",
                        r.ops_per_sec, r.p50_ms, r.p99_ms, r.max_ms, r.errors
                    ));
                    sys.runs.push(r);
                }
                Err(e) => cx.failed(sys, Step::Writes { clients: c }, e),
            }
        }
        let how = if ens.owned() {
            "member processes the bench started, read from /proc"
        } else {
            "not measured"
        };
        sys.efficiency = efficiency::summarize(&sys.runs, how);
    }
    for kind in args.read_kinds() {
        for &c in &args.clients {
            let step = Step::Reads { kind, clients: c };
            let r = bounded(
                secs(args.warmup + args.read_window()),
                reads::window(
                    &*ens,
                    &name,
                    kind,
                    c,
                    secs(args.warmup),
                    secs(args.read_window()),
                    cx.next_op,
                    cx.pb,
                ),
            )
            .await;
            match r {
                Ok(r) => {
                    let x = &r.run;
                    say(cx.pb, format!(
                        "{name:>10} {:<12} reads C={c:<3} {:>8.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                        kind.label(),
                        x.ops_per_sec,
                        x.p50_ms,
                        x.p99_ms,
                        x.errors
                    ));
                    if x.ops == 0 {
                        let why = x.first_error.clone().unwrap_or_default();
                        cx.failed(sys, step, anyhow::anyhow!("no read answered ({why})"));
                    }
                    sys.reads.push(r);
                }
                Err(e) => cx.failed(sys, step, e),
            }
        }
    }
}

/// One failover case on a running ensemble.
async fn failover_step<E: Ensemble>(
    ens: &mut E,
    stop: StopKind,
    cx: &Ctx<'_>,
    sys: &mut SystemReport,
) {
    let args = cx.args;
    let name = sys.system.clone();
    let r = bounded(
        secs(args.failover_before + args.failover_after),
        failover::failover(
            ens,
            stop,
            args.failover_clients,
            secs(args.failover_before),
            secs(args.failover_after),
            cx.next_op,
            cx.pb,
            &name,
        ),
    )
    .await;
    match r {
        Ok(f) => {
            say(cx.pb, format!(
                "{name:>10} {} failover: leader {} — longest gap {:.3} s, {} of {} acknowledged writes lost",
                stop.signal(),
                f.leader,
                f.longest_gap_s,
                f.verification.lost,
                f.verification.checked
            ));
            sys.failovers.push(f);
        }
        Err(e) => cx.failed(sys, Step::Failover { stop }, e),
    }
}

/// All the steps of a system the bench starts itself; `start` starts a fresh ensemble in
/// the given directory.
async fn session<E, F, Fut>(start: F, dir: &Path, cx: &Ctx<'_>, sys: &mut SystemReport)
where
    E: Ensemble,
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = anyhow::Result<E>>,
{
    let args = cx.args;
    let stops = args.stops();
    let measuring = args.writes() || !args.read_kinds().is_empty();
    let first_stop = stops.first().copied();
    let mut pending: Vec<StopKind> = stops.clone();
    if measuring || first_stop.is_some() {
        cx.pb
            .set_message(format!("{}: starting {} members", sys.system, args.members));
        let started = Instant::now();
        match start(dir.join("main")).await {
            Ok(mut ens) => {
                sys.startup_s = Some(started.elapsed().as_secs_f64());
                measure(&mut ens, cx, sys).await;
                // The first failover case on this ensemble, the others on fresh ones.
                if let Some(stop) = first_stop {
                    pending.remove(0);
                    failover_step(&mut ens, stop, cx, sys).await;
                }
                ens.stop();
            }
            Err(e) => {
                let why = format!("{e:#}");
                say(
                    cx.pb,
                    format!(
                        "{:>10} FAILED to start: {why} (logs in {})",
                        sys.system,
                        dir.display()
                    ),
                );
                sys.status = Status::Failed;
                sys.reason = Some(why);
                return;
            }
        }
    }
    for stop in pending {
        let d = dir.join(format!("failover-{}", stop.signal().to_lowercase()));
        cx.pb
            .set_message(format!("{}: starting a fresh ensemble", sys.system));
        match start(d.clone()).await {
            Ok(mut ens) => {
                failover_step(&mut ens, stop, cx, sys).await;
                ens.stop();
            }
            Err(e) => cx.failed(
                sys,
                Step::Failover { stop },
                e.context(format!(
                    "starting a fresh ensemble (logs in {})",
                    d.display()
                )),
            ),
        }
    }
}

/// The version of `system` (and the server binary, for etcd: `etcd_bin`), or why it cannot
/// run.
pub(crate) fn identify(
    system: System,
    etcd_bin: Option<&Path>,
) -> Result<(String, Option<PathBuf>), String> {
    let missing = match system {
        System::Guessgame => systems::guessgame::missing(),
        System::Zookeeper => systems::zookeeper::missing(),
        System::Etcd => systems::etcd::missing(etcd_bin),
    };
    if let Some(why) = missing {
        return Err(why);
    }
    Ok(match system {
        System::Guessgame => (systems::guessgame::version(), None),
        System::Zookeeper => (systems::zookeeper::version(), None),
        System::Etcd => {
            let bin = etcd_bin.expect("checked by missing()");
            (systems::etcd::version(bin), Some(bin.to_path_buf()))
        }
    })
}

/// Runs `system` on ensembles the bench starts in `work`.
pub async fn run_system(
    system: System,
    args: &Args,
    work: &Path,
    next_op: &Arc<AtomicU64>,
    pb: &ProgressBar,
) -> SystemReport {
    let cx = Ctx { args, next_op, pb };
    let mut sys = report_of(system);
    let etcd_bin = args.etcd_binary();
    match identify(system, etcd_bin.as_deref()) {
        Ok((version, binary)) => {
            sys.version = version;
            sys.binary = binary.map(|b| b.display().to_string());
        }
        Err(why) => {
            sys.version = "—".into();
            sys.status = Status::Skipped;
            say(pb, format!("{:>10} skipped: {why}", sys.system));
            sys.reason = Some(why);
            return sys;
        }
    }
    let dir = work.join(system.name());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        sys.status = Status::Failed;
        sys.reason = Some(format!("{}: {e}", dir.display()));
        return sys;
    }
    let n = args.members;
    match system {
        System::Guessgame => {
            session(
                |d| async move { Guessgame::start(&d, n).await },
                &dir,
                &cx,
                &mut sys,
            )
            .await
        }
        System::Zookeeper => {
            session(
                |d| async move { Zookeeper::start(&d, n).await },
                &dir,
                &cx,
                &mut sys,
            )
            .await
        }
        System::Etcd => {
            let bin = etcd_bin.expect("checked by missing()");
            let attempt = secs(args.etcd_attempt_timeout);
            session(
                |d| {
                    let bin = bin.clone();
                    async move { Etcd::start(&d, n, &bin, attempt).await }
                },
                &dir,
                &cx,
                &mut sys,
            )
            .await
        }
    }
    sys
}

/// `--endpoints`: the write and read workloads against a guessgame ensemble started
/// elsewhere.
pub async fn run_external(args: &Args, next_op: &Arc<AtomicU64>, pb: &ProgressBar) -> SystemReport {
    let cx = Ctx { args, next_op, pb };
    let mut sys = report_of(System::Guessgame);
    pb.set_message(format!("connecting to {}", args.endpoints.join(", ")));
    match External::connect(&args.endpoints).await {
        Ok(mut ens) => {
            sys.version = format!("external: {}", ens.labels().join(", "));
            measure(&mut ens, &cx, &mut sys).await;
            for &stop in &args.failover {
                cx.skipped(&mut sys, Step::Failover { stop }, NO_FAILOVER);
            }
        }
        Err(e) => {
            let why = format!("{e:#}");
            say(pb, format!("{:>10} FAILED: {why}", sys.system));
            sys.status = Status::Failed;
            sys.reason = Some(why);
        }
    }
    sys
}
