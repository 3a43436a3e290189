//! Everything measured, as JSON and as the Markdown table printed on stdout.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::efficiency::Efficiency;
use crate::failover::{FailoverResult, StopKind};
use crate::fsync::FsyncFloor;
use crate::load::LoadResult;
use crate::reads::{ReadKind, ReadRun};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub members: usize,
    pub clients: Vec<usize>,
    pub system_warmup_s: f64,
    pub warmup_s: f64,
    pub window_s: f64,
    /// Measuring window of each read point (old results: none ran).
    #[serde(default)]
    pub read_window_s: f64,
    /// The workloads asked for (`writes`, `local-reads`, `linearizable-reads`).
    #[serde(default)]
    pub workloads: Vec<String>,
    pub failover_clients: Option<usize>,
    /// The failover cases asked for.
    #[serde(default)]
    pub failover_stops: Vec<StopKind>,
    pub failover_kill_after_s: f64,
    pub failover_run_after_kill_s: f64,
    /// Deadline of one Put of an etcd failover client, s (then its next write goes to the
    /// next endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_failover_attempt_s: Option<f64>,
    /// `--endpoints`: an ensemble the bench did not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub os: String,
    pub started_unix: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Not installed / not built: not a failure of the benchmark.
    Skipped,
    /// It was there but did not start (later steps that fail are in `steps`).
    Failed,
}

/// A step of a system's run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    SystemWarmup,
    Writes { clients: usize },
    Reads { kind: ReadKind, clients: usize },
    Failover { stop: StopKind },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::SystemWarmup => write!(f, "system warm-up"),
            Step::Writes { clients } => write!(f, "writes C={clients}"),
            Step::Reads { kind, clients } => write!(f, "{} reads C={clients}", kind.label()),
            Step::Failover { stop } => write!(f, "{} failover", stop.signal()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Failed,
    Skipped,
}

/// A step that did not give its figures, and why; the other steps' figures stay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepNote {
    pub step: Step,
    pub outcome: Outcome,
    pub why: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SystemReport {
    pub system: String,
    pub version: String,
    /// The server binary that ran, when the bench was told or had to choose (etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What each write op is.
    pub op: String,
    pub startup_s: Option<f64>,
    /// Write windows.
    pub runs: Vec<LoadResult>,
    #[serde(default)]
    pub reads: Vec<ReadRun>,
    #[serde(default)]
    pub failovers: Vec<FailoverResult>,
    /// Results written before the SIGTERM case existed had one SIGKILL failover here.
    #[serde(default, rename = "failover", skip_serializing)]
    pub legacy_failover: Option<FailoverResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<Efficiency>,
    /// Steps that failed or were skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepNote>,
}

impl SystemReport {
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Failed)
            || self.steps.iter().any(|n| n.outcome == Outcome::Failed)
    }

    fn note(&self, step: &Step) -> Option<&StepNote> {
        self.steps.iter().find(|n| n.step == *step)
    }

    /// `FAILED: why` / `skipped: why` for a table cell.
    fn note_text(n: &StepNote) -> String {
        let what = match n.outcome {
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        };
        let why = n.why.replace('\n', " ").replace('|', "/");
        format!("{what}: {why}")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub fsync: Option<FsyncFloor>,
    pub systems: Vec<SystemReport>,
}

pub(crate) fn f1(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub(crate) fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn sec(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.3} s"))
        .unwrap_or_else(|| "none".into())
}

impl Report {
    /// Results of older versions carried their one failover in another field.
    pub fn upgrade(&mut self) {
        for s in &mut self.systems {
            if let Some(f) = s.legacy_failover.take() {
                if s.failovers.is_empty() {
                    s.failovers.push(f);
                }
            }
        }
    }

    fn ok(&self, name: &str) -> Option<&SystemReport> {
        self.systems
            .iter()
            .find(|s| s.system == name && matches!(s.status, Status::Ok))
    }

    fn run(&self, name: &str, clients: usize) -> Option<&LoadResult> {
        self.ok(name)?.runs.iter().find(|r| r.clients == clients)
    }

    fn started(&self) -> impl Iterator<Item = &SystemReport> {
        self.systems
            .iter()
            .filter(|s| matches!(s.status, Status::Ok))
    }

    fn writes_table(&self, out: &mut String) {
        out.push_str(
            "| system | version | clients | ops/s | p50 | p90 | p99 | max | errors | CPU s / 1k writes |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for sys in &self.systems {
            match sys.status {
                Status::Ok => {
                    let mut any = false;
                    for &c in &self.settings.clients {
                        if let Some(r) = sys.runs.iter().find(|r| r.clients == c) {
                            any = true;
                            let cpu = r
                                .usage
                                .as_ref()
                                .and_then(|u| u.cpu_s_per_1k_ops)
                                .map(|x| format!("{x:.3}"))
                                .unwrap_or_else(|| "—".into());
                            let _ = writeln!(
                                out,
                                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {cpu} |",
                                sys.system,
                                sys.version,
                                r.clients,
                                thousands(r.ops_per_sec),
                                f1(r.p50_ms),
                                f1(r.p90_ms),
                                f1(r.p99_ms),
                                f1(r.max_ms),
                                r.errors
                            );
                            if r.ops == 0 {
                                let _ = writeln!(
                                    out,
                                    "| {} | | {c} | FAILED: no write acknowledged ({}) | | | | | | |",
                                    sys.system,
                                    r.first_error.as_deref().unwrap_or("").replace('|', "/")
                                );
                            }
                        } else if let Some(n) = sys.note(&Step::Writes { clients: c }) {
                            any = true;
                            let _ = writeln!(
                                out,
                                "| {} | {} | {c} | {} | | | | | | |",
                                sys.system,
                                sys.version,
                                SystemReport::note_text(n)
                            );
                        }
                    }
                    if let Some(n) = sys.note(&Step::SystemWarmup) {
                        let _ = writeln!(
                            out,
                            "| {} | {} | 16 | system warm-up {} | | | | | | |",
                            sys.system,
                            sys.version,
                            SystemReport::note_text(n)
                        );
                    } else if !any && !self.settings.workloads.iter().any(|w| w == "writes") {
                        continue;
                    }
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | — | {}: {} | | | | | | |",
                        sys.system,
                        sys.version,
                        if matches!(sys.status, Status::Skipped) {
                            "skipped"
                        } else {
                            "FAILED"
                        },
                        sys.reason.as_deref().unwrap_or("").replace('\n', " ")
                    );
                }
            }
        }
        let ops: Vec<String> = self
            .started()
            .map(|s| format!("{}: {}", s.system, s.op))
            .collect();
        if !ops.is_empty() {
            let _ = writeln!(out, "\nOne op = {}.", ops.join("; "));
        }
    }

    fn reads_table(&self, out: &mut String) {
        let kinds = [ReadKind::Local, ReadKind::Linearizable];
        let any = self.started().any(|s| {
            !s.reads.is_empty() || s.steps.iter().any(|n| matches!(n.step, Step::Reads { .. }))
        });
        if !any {
            return;
        }
        let _ = writeln!(
            out,
            "\n### Reads: closed-loop readers spread round-robin over the members, {:.1} s per point\n",
            self.settings.read_window_s
        );
        out.push_str(
            "| system | read | clients | ops/s | p50 | p90 | p99 | max | errors |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let mut ops: Vec<(String, ReadKind, String)> = Vec::new();
        for sys in self.started() {
            for kind in kinds {
                let mut label = kind.label().to_string();
                if kind == ReadKind::Linearizable
                    && !crate::reads::is_linearizable(&sys.system, kind)
                {
                    label = "sync+read (**not linearizable**)".into();
                }
                for &c in &self.settings.clients {
                    if let Some(r) = sys
                        .reads
                        .iter()
                        .find(|r| r.kind == kind && r.run.clients == c)
                    {
                        let r2 = &r.run;
                        let _ = writeln!(
                            out,
                            "| {} | {label} | {c} | {} | {} | {} | {} | {} | {} |",
                            sys.system,
                            thousands(r2.ops_per_sec),
                            f1(r2.p50_ms),
                            f1(r2.p90_ms),
                            f1(r2.p99_ms),
                            f1(r2.max_ms),
                            r2.errors
                        );
                        if !ops.iter().any(|(s, k, _)| *s == sys.system && *k == kind) {
                            ops.push((sys.system.clone(), kind, r.op.clone()));
                        }
                    } else if let Some(n) = sys.note(&Step::Reads { kind, clients: c }) {
                        let _ = writeln!(
                            out,
                            "| {} | {label} | {c} | {} | | | | | |",
                            sys.system,
                            SystemReport::note_text(n)
                        );
                    }
                }
            }
        }
        if !ops.is_empty() {
            out.push_str("\nOne read = ");
            let texts: Vec<String> = ops
                .iter()
                .map(|(s, k, op)| format!("{s} {}: {op}", k.label()))
                .collect();
            out.push_str(&texts.join("; "));
            out.push_str(".\n");
        }
    }

    fn failover_table(&self, out: &mut String) {
        let s = &self.settings;
        let any = self.started().any(|sys| {
            !sys.failovers.is_empty()
                || sys
                    .steps
                    .iter()
                    .any(|n| matches!(n.step, Step::Failover { .. }))
        });
        if !any {
            return;
        }
        let _ = writeln!(
            out,
            "\n### Failover: {} clients writing through the whole endpoint list, leader signalled after {:.0} s, run on for {:.0} s\n",
            s.failover_clients.unwrap_or(0),
            s.failover_kill_after_s,
            s.failover_run_after_kill_s
        );
        out.push_str(
            "| system | signal | leader | longest gap between acknowledged writes | first ack of a write sent after the signal | leader exited after | acks | errors | acknowledged writes lost |\n\
             |---|---|---|--:|--:|--:|--:|--:|---|\n",
        );
        let mut stops: Vec<StopKind> = s.failover_stops.clone();
        if stops.is_empty() {
            stops.push(StopKind::Kill);
        }
        for sys in self.started() {
            for &stop in &stops {
                if let Some(f) = sys.failovers.iter().find(|f| f.stop == stop) {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {:.3} s | {} | {} | {} | {} | {} of {} checked |",
                        sys.system,
                        stop.signal(),
                        f.leader,
                        f.longest_gap_s,
                        sec(f.first_ok_after_stop_s),
                        match stop {
                            StopKind::Kill => "—".into(),
                            StopKind::Term => f
                                .exited_after_s
                                .map(|x| format!("{x:.3} s"))
                                .unwrap_or_else(|| "still running".into()),
                        },
                        f.ops,
                        f.errors,
                        f.verification.lost,
                        f.verification.checked
                    );
                } else if let Some(n) = sys.note(&Step::Failover { stop }) {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | | | | | | |",
                        sys.system,
                        stop.signal(),
                        SystemReport::note_text(n)
                    );
                }
            }
        }
        if let (Some(t), true) = (
            s.etcd_failover_attempt_s,
            self.started()
                .any(|x| x.system == "etcd" && !x.failovers.is_empty()),
        ) {
            let _ = writeln!(
                out,
                "\netcd failover clients give up on a Put after {t:.1} s and send the next write to the next endpoint \
                 (a Put parked on a follower when the leader dies is otherwise answered only at its deadline)."
            );
        }
    }

    fn efficiency_table(&self, out: &mut String) {
        let rows: Vec<&SystemReport> = self.started().filter(|s| s.efficiency.is_some()).collect();
        if rows.is_empty() {
            return;
        }
        out.push_str(
            "\n### Efficiency over the write windows (server processes the bench started)\n\n\
             | system | members | RSS per member, median | RSS, largest member | CPU s per 1,000 writes | CPU s | writes |\n\
             |---|--:|--:|--:|--:|--:|--:|\n",
        );
        for sys in rows {
            let e = sys.efficiency.as_ref().expect("filtered");
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} MiB | {:.0} MiB | {} | {:.1} | {} |",
                sys.system,
                e.members,
                e.rss_median_mib,
                e.rss_max_mib,
                e.cpu_s_per_1k_writes
                    .map(|x| format!("{x:.3}"))
                    .unwrap_or_else(|| "—".into()),
                e.cpu_s,
                thousands(e.writes as f64)
            );
        }
        out.push_str(
            "\nRSS: VmRSS of each member process at the end of every write window, its largest value per member; \
             CPU: utime + stime of all member processes over the write windows (ZooKeeper: the JVMs).\n",
        );
    }

    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        match &s.endpoints {
            Some(eps) => {
                let _ = writeln!(
                    out,
                    "## guessgame ensemble at {} (started elsewhere)\n",
                    eps.join(", ")
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "## guessgame vs ZooKeeper vs etcd — {} members each on 127.0.0.1, one system at a time\n",
                    s.members
                );
            }
        }
        let _ = writeln!(
            out,
            "{} cores, {}. Closed-loop clients, each with its own connection, spread round-robin over the members; \
             {:.0} s warm-up per system, then per client count {:.1} s warm-up and a {:.1} s measuring window. \
             Latency is per acknowledged write (ms).\n",
            self.machine.cores, self.machine.os, s.system_warmup_s, s.warmup_s, s.window_s
        );
        if let Some(f) = &self.fsync {
            let _ = writeln!(
                out,
                "**fsync floor** of the data directory's disk ({}): fdatasync of a 4 KiB write, \
                 p50 **{:.3} ms**, p90 {:.3} ms, p99 {:.3} ms ({} samples).\n",
                f.dir, f.p50_ms, f.p90_ms, f.p99_ms, f.samples
            );
        }
        for sys in self.started() {
            if let Some(b) = &sys.binary {
                let _ = writeln!(
                    out,
                    "{} binary: `{b}` (version {}).\n",
                    sys.system, sys.version
                );
            }
        }
        self.writes_table(&mut out);
        self.reads_table(&mut out);
        self.failover_table(&mut out);
        self.efficiency_table(&mut out);

        // How guessgame compares with the targets.
        let mut notes = Vec::new();
        let max_c = self.settings.clients.iter().copied().max().unwrap_or(0);
        let min_c = self.settings.clients.iter().copied().min().unwrap_or(0);
        if let Some(g) = self.run("guessgame", max_c) {
            for (other, want) in [("zookeeper", 1.5), ("etcd", 1.0)] {
                if let Some(o) = self.run(other, max_c) {
                    notes.push(format!(
                        "guessgame/{other} throughput at {max_c} clients: {:.2}× (target ≥ {want}×); p99 {} vs {} ms",
                        g.ops_per_sec / o.ops_per_sec.max(1e-9),
                        f1(g.p99_ms),
                        f1(o.p99_ms)
                    ));
                }
            }
        }
        if let (Some(g), Some(f)) = (self.run("guessgame", min_c), &self.fsync) {
            if min_c == 1 && s.endpoints.is_none() {
                notes.push(format!(
                    "guessgame single-client p50 {} ms = {:.1}× the fsync p50 (target: within 1.5× of two fsyncs plus a loopback round trip)",
                    f1(g.p50_ms),
                    g.p50_ms / f.p50_ms.max(1e-9)
                ));
            }
        }
        if !notes.is_empty() {
            out.push_str("\n### Against the targets\n\n");
            for n in notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}
