//! `--long`: memory, disk and restart time as the log grows.
//!
//! For each system in turn: a fresh ensemble configured for a long life
//! ([`Retention::LongRun`]: guessgame's default snapshot policy, ZooKeeper's autopurge, etcd's
//! auto-compaction) and `--long-clients` closed-loop writers until `--long-entries` writes
//! are acknowledged. At every tenth of them a checkpoint reads each member's resident memory
//! and its data on disk, and the write throughput since the previous checkpoint; at the
//! checkpoints in [`RESTART_AT`] one follower is SIGKILLed, started again on its data, and
//! timed until it has caught up with what the leader had committed at the kill. The writers
//! keep writing all along. A step that fails is noted beside the figures measured before it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::cli::{Args, System};
use crate::efficiency::rss_kib;
use crate::load::{DRAIN, ERROR_PAUSE};
use crate::long_report::{Checkpoint, LongNote, LongReport, LongSettings, LongStep, LongSystem};
use crate::long_report::{MemberPoint, Restart};
use crate::report::{Outcome, Status};
use crate::run::{self, say};
use crate::systems::{
    etcd::Etcd, guessgame::Guessgame, zookeeper::Zookeeper, Ensemble, Retention, Writer,
};

/// Checkpoints per run: one every tenth of `--long-entries`.
pub const CHECKPOINTS: u64 = 10;
/// The checkpoints (from 1) after which a follower is restarted.
pub const RESTART_AT: [usize; 3] = [4, 7, 10];
/// No write acknowledged for this long: the load has stalled and the system's run ends.
const STALL: Duration = Duration::from_secs(60);
/// A restarted follower that has not caught up by then counts as failed.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(180);
/// How often a restarted follower is asked where it stands.
const POLL: Duration = Duration::from_millis(20);

/// The acknowledged-write counts at which the checkpoints fall: every tenth of `n`, the
/// last at `n` itself.
pub fn schedule(n: u64) -> Vec<u64> {
    (1..=CHECKPOINTS)
        .map(|k| (n * k).div_ceil(CHECKPOINTS))
        .collect()
}

/// Where a member stands in the ensemble's history: guessgame's and ZooKeeper's zxid as
/// (epoch, counter), etcd's revision as (0, revision); ordered, and shown as the system
/// shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub order: (u64, u64),
    pub text: String,
}

impl Position {
    pub fn new(order: (u64, u64), text: String) -> Position {
        Position { order, text }
    }
}

/// Bytes of some files: their length, and what they take on the disk (`st_blocks` × 512:
/// less for sparse files such as ZooKeeper's padded transaction logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    pub bytes: u64,
    pub allocated: u64,
}

impl std::ops::AddAssign for Size {
    fn add_assign(&mut self, o: Size) {
        self.bytes += o.bytes;
        self.allocated += o.allocated;
    }
}

/// The regular files under `path` (or `path` itself), recursively, symbolic links not
/// followed. What cannot be read counts as nothing (a file removed while walking).
pub fn size_of(path: &Path) -> Size {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Size::default();
    };
    let mut total = Size::default();
    if meta.is_dir() {
        for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
            total += size_of(&e.path());
        }
    } else if meta.is_file() {
        total = Size {
            bytes: meta.len(),
            allocated: meta.blocks() * 512,
        };
    }
    total
}

/// The entries of `dir` whose names start with `prefix`, sorted.
pub fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// A named part of a member's data (guessgame's `.db` and `-wal`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskPart {
    pub name: String,
    #[serde(flatten)]
    pub size: Size,
}

/// One member's data on disk: all of it, and the parts worth naming.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    #[serde(flatten)]
    pub total: Size,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<DiskPart>,
}

impl Disk {
    /// `total`: the files and directories that are the member's data; `parts`: named
    /// subsets of them.
    pub fn of(total: &[PathBuf], parts: &[(&str, &[PathBuf])]) -> Disk {
        let sum = |paths: &[PathBuf]| {
            let mut s = Size::default();
            for p in paths {
                s += size_of(p);
            }
            s
        };
        Disk {
            total: sum(total),
            parts: parts
                .iter()
                .map(|(name, paths)| DiskPart {
                    name: name.to_string(),
                    size: sum(paths),
                })
                .collect(),
        }
    }
}

/// What the long run needs of an ensemble beyond [`Ensemble`].
pub(crate) trait LongRun: Ensemble {
    /// How this ensemble keeps its history (snapshots, compaction, purging), for the report.
    fn retention(&self) -> String;

    /// Member `m`'s data on disk.
    fn disk(&self, m: usize) -> Disk;

    /// What member `m` (the leader) has committed.
    async fn committed(&self, m: usize) -> anyhow::Result<Position>;

    /// Where member `m` stands, once it answers as a follower (etcd: once a serializable
    /// read through it answers).
    async fn following(&self, m: usize) -> Option<Position>;

    /// Starts member `m` again on its data, after [`Ensemble::kill`].
    fn restart(&mut self, m: usize) -> anyhow::Result<()>;
}

/// The median of `values` (`None` if there are none).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(crate::efficiency::median(&values))
}

/// The closed-loop writers, running until stopped; what they saw so far.
struct Load {
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
    last_error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn spawn<W: Writer>(writers: Vec<W>, next_op: &Arc<AtomicU64>) -> Load {
        let load = Load {
            acked: Default::default(),
            errors: Default::default(),
            first_error: Default::default(),
            last_error: Default::default(),
            stop: Default::default(),
            tasks: Vec::new(),
            started: Instant::now(),
        };
        let tasks = writers
            .into_iter()
            .map(|mut w| {
                let (acked, errors) = (load.acked.clone(), load.errors.clone());
                let (first, last) = (load.first_error.clone(), load.last_error.clone());
                let (stop, next_op) = (load.stop.clone(), next_op.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let op = next_op.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = w.write(op).await {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let why = format!("{e:#}");
                            first
                                .lock()
                                .expect("not poisoned")
                                .get_or_insert(why.clone());
                            *last.lock().expect("not poisoned") = Some(why);
                            tokio::time::sleep(ERROR_PAUSE).await;
                        } else {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn last_error(&self) -> String {
        let last = self.last_error.lock().expect("not poisoned").clone();
        last.unwrap_or_else(|| "no error".into())
    }

    /// Lets the writers finish their request in flight (within [`DRAIN`]).
    async fn stop(self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(DRAIN, t).await.is_err() {
                abort.abort();
            }
        }
        let first = self.first_error.lock().expect("not poisoned").clone();
        first
    }
}

/// What every step of a system's long run needs.
struct Cx<'a> {
    args: &'a Args,
    pb: &'a ProgressBar,
    /// Where this system's writes start on the progress bar.
    offset: u64,
}

impl Cx<'_> {
    fn progress(&self, load: &Load, what: &str, name: &str) {
        let n = self.args.long_entries;
        let acked = load.acked();
        self.pb.set_position(self.offset + acked.min(n));
        self.pb.set_message(format!(
            "{name}: {acked} of {n} writes acknowledged, {} errors; {what}",
            load.errors()
        ));
    }

    fn failed(&self, sys: &mut LongSystem, step: LongStep, e: anyhow::Error) {
        let why = run::say_failed(self.pb, &sys.system, &step, e);
        sys.steps.push(LongNote {
            step,
            outcome: Outcome::Failed,
            why,
        });
    }
}

/// Waits until `target` writes are acknowledged; an error once none was for [`STALL`].
async fn wait_for(load: &Load, target: u64, cx: &Cx<'_>, name: &str) -> anyhow::Result<()> {
    let (mut seen, mut since) = (load.acked(), Instant::now());
    let what = format!("next checkpoint at {target}");
    while load.acked() < target {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cx.progress(load, &what, name);
        let now = load.acked();
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= STALL {
            anyhow::bail!(
                "no write acknowledged for {} s at {now} of {target} (last error: {})",
                STALL.as_secs(),
                load.last_error()
            );
        }
    }
    Ok(())
}

/// The leader's name, if one is known.
async fn leader_name<E: Ensemble>(ens: &E) -> Option<String> {
    ens.leader().await.ok().map(|m| ens.member_name(m))
}

/// Every member's memory and data now.
async fn members<E: LongRun>(ens: &mut E, n: usize) -> Vec<MemberPoint> {
    let pids = ens.pids();
    (0..n)
        .map(|m| {
            let member = ens.member_name(m);
            let pid = pids.iter().find(|(name, _)| *name == member).map(|p| p.1);
            MemberPoint {
                member,
                pid,
                rss_kib: pid.and_then(rss_kib),
                disk: ens.disk(m),
            }
        })
        .collect()
}

/// SIGKILLs the `nth` follower (counting from the leader's next one), starts it again on
/// its data and waits until it follows with what the leader had committed at the kill, and
/// moves on from there.
async fn restart<E: LongRun>(
    ens: &mut E,
    checkpoint: usize,
    nth: usize,
    load: &Load,
    cx: &Cx<'_>,
    name: &str,
) -> anyhow::Result<Restart> {
    let n = cx.args.members;
    let leader = ens.leader().await.context("finding the leader")?;
    let followers: Vec<usize> = (1..n)
        .map(|k| (leader + k) % n)
        .filter(|m| ens.running(*m))
        .collect();
    anyhow::ensure!(!followers.is_empty(), "no follower is running");
    let m = followers[nth % followers.len()];
    let member = ens.member_name(m);
    let target = ens
        .committed(leader)
        .await
        .context("reading what the leader has committed")?;
    let acked_at_kill = load.acked();
    ens.kill(m)?;
    let t0 = Instant::now();
    ens.restart(m)
        .with_context(|| format!("starting {member} again"))?;
    let what = format!(
        "restarted {member}, waiting for it to reach {}",
        target.text
    );
    // Its first answer may show only what it had itself (a guessgame node says "follower"
    // before the leader's sync, an etcd member serves its own revision): caught up is at
    // or past the leader's position at the kill *and* past that first answer, so that it
    // is applying what the leader commits now.
    let mut first: Option<(Duration, Position)> = None;
    let mut last_seen = None;
    loop {
        cx.progress(load, &what, name);
        anyhow::ensure!(ens.running(m), "{member} exited after its restart");
        if let Some(p) = ens.following(m).await {
            let at = t0.elapsed();
            match &first {
                None => first = Some((at, p.clone())),
                Some((answered, seen)) if p >= target && p > *seen => {
                    return Ok(Restart {
                        checkpoint,
                        member,
                        leader: ens.member_name(leader),
                        leader_committed: target.text,
                        acked_at_kill,
                        answered_s: Some(answered.as_secs_f64()),
                        answered_at: Some(seen.text.clone()),
                        caught_up_s: at.as_secs_f64(),
                        caught_up_at: p.text,
                        acked_meanwhile: load.acked() - acked_at_kill,
                    });
                }
                Some(_) => {}
            }
            last_seen = Some(p.text);
        }
        anyhow::ensure!(
            t0.elapsed() < CATCH_UP_LIMIT,
            "{member} had not caught up with {} within {} s of its restart (last seen: {})",
            target.text,
            CATCH_UP_LIMIT.as_secs(),
            last_seen.as_deref().unwrap_or("no answer as a follower")
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The checkpoints and restarts on a running ensemble.
async fn drive<E: LongRun>(
    ens: &mut E,
    next_op: &Arc<AtomicU64>,
    cx: &Cx<'_>,
    sys: &mut LongSystem,
) {
    let args = cx.args;
    let name = sys.system.clone();
    cx.pb
        .set_message(format!("{name}: connecting {} clients", args.long_clients));
    let mut writers = Vec::with_capacity(args.long_clients);
    for i in 0..args.long_clients {
        match ens.writer(i, true).await {
            Ok(w) => writers.push(w),
            Err(e) => return cx.failed(sys, LongStep::Load, e.context("connecting a client")),
        }
    }
    let load = Load::spawn(writers, next_op);
    let (mut prev_acked, mut prev_at, mut prev_errors) = (0, Instant::now(), 0);
    let mut restarts = 0;
    for (k, target) in schedule(args.long_entries).into_iter().enumerate() {
        let index = k + 1;
        if let Err(e) = wait_for(&load, target, cx, &name).await {
            cx.failed(sys, LongStep::Load, e);
            break;
        }
        let (acked, errors, at) = (load.acked(), load.errors(), Instant::now());
        let interval_s = (at - prev_at).as_secs_f64();
        let cp = Checkpoint::new(
            index,
            target,
            acked,
            (at - load.started).as_secs_f64(),
            (acked - prev_acked, interval_s, errors - prev_errors),
            leader_name(ens).await,
            members(ens, args.members).await,
        );
        say(cx.pb, cp.line(&name));
        sys.checkpoints.push(cp);
        (prev_acked, prev_at, prev_errors) = (acked, at, errors);
        if RESTART_AT.contains(&index) {
            match restart(ens, index, restarts, &load, cx, &name).await {
                Ok(r) => {
                    say(cx.pb, r.line(&name));
                    sys.restarts.push(r);
                }
                Err(e) => cx.failed(sys, LongStep::Restart { checkpoint: index }, e),
            }
            restarts += 1;
        }
    }
    sys.acked = load.acked();
    sys.errors = load.errors();
    sys.run_s = load.started.elapsed().as_secs_f64();
    sys.first_error = load.stop().await;
}

/// A started (or not) ensemble's long run; stops it at the end.
async fn session<E: LongRun>(
    started: anyhow::Result<E>,
    since: Instant,
    dir: &Path,
    next_op: &Arc<AtomicU64>,
    cx: &Cx<'_>,
    sys: &mut LongSystem,
) {
    match started {
        Ok(mut ens) => {
            sys.startup_s = Some(since.elapsed().as_secs_f64());
            sys.retention = ens.retention();
            drive(&mut ens, next_op, cx, sys).await;
            ens.stop();
        }
        Err(e) => {
            let why = format!("{e:#} (logs in {})", dir.display());
            say(cx.pb, format!("{:>10} FAILED to start: {why}", sys.system));
            sys.status = Status::Failed;
            sys.reason = Some(why);
        }
    }
}

/// One system's long run, on a fresh ensemble in `work`.
async fn run_system(
    system: System,
    args: &Args,
    work: &Path,
    next_op: &Arc<AtomicU64>,
    cx: &Cx<'_>,
) -> LongSystem {
    let mut sys = LongSystem::new(system, args.long_clients);
    let etcd_bin = args.etcd_binary();
    match run::identify(system, etcd_bin.as_deref()) {
        Ok((version, binary)) => {
            sys.version = version;
            sys.binary = binary.map(|b| b.display().to_string());
        }
        Err(why) => {
            say(cx.pb, format!("{:>10} skipped: {why}", sys.system));
            sys.version = "—".into();
            sys.status = Status::Skipped;
            sys.reason = Some(why);
            return sys;
        }
    }
    let dir = work.join(system.name()).join("long");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        sys.status = Status::Failed;
        sys.reason = Some(format!("{}: {e}", dir.display()));
        return sys;
    }
    let n = args.members;
    cx.pb
        .set_message(format!("{}: starting {n} members", sys.system));
    let since = Instant::now();
    let keep = Retention::LongRun;
    match system {
        System::Guessgame => {
            let ens = Guessgame::start_with(&dir, n, keep).await;
            session(ens, since, &dir, next_op, cx, &mut sys).await
        }
        System::Zookeeper => {
            let ens = Zookeeper::start_with(&dir, n, keep).await;
            session(ens, since, &dir, next_op, cx, &mut sys).await
        }
        System::Etcd => {
            let bin = etcd_bin.expect("checked by identify()");
            let attempt = run::secs(args.etcd_attempt_timeout);
            let ens = Etcd::start_with(&dir, n, &bin, attempt, keep).await;
            session(ens, since, &dir, next_op, cx, &mut sys).await
        }
    }
    sys
}

/// The table on stdout; long.json (unless replotting), long.md and long.png in `out`.
fn write_outputs(report: &LongReport, out: &Path, json: bool) -> anyhow::Result<()> {
    let json = match json {
        true => Some(serde_json::to_string_pretty(report)? + "\n"),
        false => None,
    };
    let files = crate::OutFiles {
        json: "long.json",
        md: "long.md",
        png: "long.png",
    };
    crate::write_files(&report.markdown(), json, out, &files, |png| {
        crate::long_chart::draw(report, png)
    })
}

/// `guessgame-bench --long`: every system in `--systems`, one after the other.
pub async fn main(args: &Args) -> anyhow::Result<()> {
    if let Some(path) = &args.replot {
        let text = std::fs::read_to_string(path)?;
        let report: LongReport =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return write_outputs(&report, &args.out, false);
    }
    let tmp = crate::work_dir(args)?;
    let n = args.long_entries;
    let pb = crate::progress_bar(n * args.systems.len() as u64);
    let next_op = Arc::new(AtomicU64::new(1));
    let mut systems = Vec::new();
    for (i, &system) in args.systems.iter().enumerate() {
        let cx = Cx {
            args,
            pb: &pb,
            offset: n * i as u64,
        };
        systems.push(run_system(system, args, tmp.path(), &next_op, &cx).await);
        pb.set_position(n * (i as u64 + 1));
    }
    pb.finish_and_clear();
    let report = LongReport {
        machine: crate::machine(),
        settings: LongSettings {
            members: args.members,
            clients: args.long_clients,
            entries: n,
            checkpoints: schedule(n),
            restart_at: RESTART_AT.to_vec(),
            etcd_attempt_s: args
                .systems
                .contains(&System::Etcd)
                .then_some(args.etcd_attempt_timeout),
        },
        systems,
    };
    write_outputs(&report, &args.out, true)?;
    crate::keep_work_dir(tmp, args.keep);
    if report.systems.iter().any(LongSystem::failed) {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_every_tenth_the_last_at_n() {
        let s = schedule(300_000);
        assert_eq!(s.len(), 10);
        assert_eq!(s[0], 30_000);
        assert_eq!(s[3], 120_000);
        assert_eq!(s[9], 300_000);
        // Not a multiple of ten: rounded up, still ending at n, strictly increasing.
        let s = schedule(25);
        assert_eq!(s, vec![3, 5, 8, 10, 13, 15, 18, 20, 23, 25]);
        assert!(schedule(10).windows(2).all(|w| w[0] < w[1]));
        assert!(RESTART_AT
            .iter()
            .all(|k| *k >= 1 && *k as u64 <= CHECKPOINTS));
    }

    #[test]
    fn directory_size_is_recursive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 1000]).unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![1u8; 5000]).unwrap();
        std::fs::write(dir.path().join("sub/deeper/c"), vec![1u8; 24]).unwrap();
        let s = size_of(dir.path());
        assert_eq!(s.bytes, 6024);
        assert!(s.allocated >= 4096, "{s:?}");
        assert_eq!(size_of(&dir.path().join("sub/b")).bytes, 5000);
        assert_eq!(size_of(&dir.path().join("missing")), Size::default());
        // A sparse file: long, but hardly allocated.
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        let s = size_of(&dir.path().join("sparse"));
        assert_eq!(s.bytes, 64 << 20);
        assert!(s.allocated < 1 << 20, "{s:?}");
    }

    #[test]
    fn disk_parts_and_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in [
            ("logs_node1.db", 100),
            ("logs_node1.db-wal", 40),
            ("logs_node1.db-shm", 2),
            ("logs_node2.db", 7),
        ] {
            std::fs::write(dir.path().join(name), vec![0u8; len]).unwrap();
        }
        let mine = files_with_prefix(dir.path(), "logs_node1.db");
        assert_eq!(mine.len(), 3);
        let db = dir.path().join("logs_node1.db");
        let wal = dir.path().join("logs_node1.db-wal");
        let d = Disk::of(&mine, &[(".db", &[db]), ("-wal", &[wal])]);
        assert_eq!(d.total.bytes, 142);
        assert_eq!(d.parts[0].name, ".db");
        assert_eq!(d.parts[0].size.bytes, 100);
        assert_eq!(d.parts[1].size.bytes, 40);
    }

    #[test]
    fn medians_of_unsorted_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![5.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![7.0]), Some(7.0));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn positions_order_by_epoch_then_counter() {
        let p = |e, c| Position::new((e, c), format!("{e}:{c}"));
        assert!(p(1, 900) < p(2, 1));
        assert!(p(2, 5) >= p(2, 5));
        assert!(p(2, 4) < p(2, 5));
    }
}
