//! Everything measured, as JSON and as the Markdown table printed on stdout.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::fsync::FsyncFloor;
use crate::load::{FailoverResult, LoadResult};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub members: usize,
    pub clients: Vec<usize>,
    pub system_warmup_s: f64,
    pub warmup_s: f64,
    pub window_s: f64,
    pub failover_clients: Option<usize>,
    pub failover_kill_after_s: f64,
    pub failover_run_after_kill_s: f64,
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
    /// It was there but did not start or broke down.
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SystemReport {
    pub system: String,
    pub version: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What each op is.
    pub op: String,
    pub startup_s: Option<f64>,
    pub runs: Vec<LoadResult>,
    pub failover: Option<FailoverResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub fsync: Option<FsyncFloor>,
    pub systems: Vec<SystemReport>,
}

fn f1(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn thousands(x: f64) -> String {
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

impl Report {
    fn ok(&self, name: &str) -> Option<&SystemReport> {
        self.systems
            .iter()
            .find(|s| s.system == name && matches!(s.status, Status::Ok))
    }

    fn run(&self, name: &str, clients: usize) -> Option<&LoadResult> {
        self.ok(name)?.runs.iter().find(|r| r.clients == clients)
    }

    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## guessgame vs ZooKeeper vs etcd — {} members each on 127.0.0.1, one system at a time\n",
            s.members
        );
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
        out.push_str(
            "| system | version | clients | ops/s | p50 | p90 | p99 | max | errors |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for sys in &self.systems {
            match sys.status {
                Status::Ok => {
                    for r in &sys.runs {
                        let _ = writeln!(
                            out,
                            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
                    }
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | — | {}: {} | | | | | |",
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
            .systems
            .iter()
            .filter(|s| matches!(s.status, Status::Ok))
            .map(|s| format!("{}: {}", s.system, s.op))
            .collect();
        if !ops.is_empty() {
            let _ = writeln!(out, "\nOne op = {}.", ops.join("; "));
        }

        let with_failover: Vec<&SystemReport> = self
            .systems
            .iter()
            .filter(|s| s.failover.is_some())
            .collect();
        if !with_failover.is_empty() {
            let _ = writeln!(
                out,
                "\n### Failover: {} clients writing through the whole endpoint list, leader SIGKILLed after {:.0} s, run on for {:.0} s\n",
                s.failover_clients.unwrap_or(0),
                s.failover_kill_after_s,
                s.failover_run_after_kill_s
            );
            out.push_str(
                "| system | killed | longest gap between acknowledged writes | first ack of a write sent after the kill | acks | errors | acknowledged writes lost |\n\
                 |---|---|--:|--:|--:|--:|---|\n",
            );
            for sys in with_failover {
                let f = sys.failover.as_ref().expect("filtered");
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.3} s | {} | {} | {} | {} of {} checked |",
                    sys.system,
                    f.killed,
                    f.longest_gap_s,
                    f.first_ok_after_kill_s
                        .map(|x| format!("{x:.3} s"))
                        .unwrap_or_else(|| "none".into()),
                    f.ops,
                    f.errors,
                    f.verification.lost,
                    f.verification.checked
                );
            }
        }

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
            if min_c == 1 {
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
