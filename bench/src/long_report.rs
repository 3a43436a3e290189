//! What `--long` measured, as JSON (`long.json`) and as the Markdown printed on stdout.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cli::System;
use crate::long::{median, Disk};
use crate::report::{f1, thousands, Machine, Outcome, Status};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LongSettings {
    pub members: usize,
    pub clients: usize,
    /// Acknowledged writes per system (`--long-entries`).
    pub entries: u64,
    /// Acknowledged writes at which the checkpoints fall.
    pub checkpoints: Vec<u64>,
    /// Checkpoints (from 1) after which a follower was restarted.
    pub restart_at: Vec<usize>,
    /// Deadline of one Put of an etcd client, s (then its next write goes to the next
    /// endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_attempt_s: Option<f64>,
}

/// One member at a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberPoint {
    pub member: String,
    /// `None`: the process was not running.
    pub pid: Option<u32>,
    pub rss_kib: Option<u64>,
    pub disk: Disk,
}

/// Memory and disk of every member after the `index`-th tenth of the writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub index: usize,
    /// The acknowledged writes it waited for, and how many there were when it was taken.
    pub target: u64,
    pub acked: u64,
    /// Since the writers started, s.
    pub elapsed_s: f64,
    /// Since the previous checkpoint (or the start): writes acknowledged, how long, the
    /// throughput and the failed writes. Intervals after a restart include it.
    pub interval_writes: u64,
    pub interval_s: f64,
    pub interval_ops_per_sec: f64,
    pub interval_errors: u64,
    pub leader: Option<String>,
    /// RSS over the running members, MiB.
    pub rss_median_mib: Option<f64>,
    pub rss_max_mib: Option<f64>,
    /// Data on disk (allocated bytes) over the members, MiB.
    pub disk_median_mib: Option<f64>,
    pub disk_max_mib: Option<f64>,
    pub members: Vec<MemberPoint>,
}

impl Checkpoint {
    /// `interval`: (writes acknowledged, seconds, failed writes) since the previous one.
    pub fn new(
        index: usize,
        target: u64,
        acked: u64,
        elapsed_s: f64,
        interval: (u64, f64, u64),
        leader: Option<String>,
        members: Vec<MemberPoint>,
    ) -> Checkpoint {
        let rss: Vec<f64> = members
            .iter()
            .filter_map(|m| Some(m.rss_kib? as f64 / 1024.0))
            .collect();
        let disk: Vec<f64> = members
            .iter()
            .map(|m| m.disk.total.allocated as f64 / MIB)
            .collect();
        let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
        let (writes, secs, errors) = interval;
        Checkpoint {
            index,
            target,
            acked,
            elapsed_s,
            interval_writes: writes,
            interval_s: secs,
            interval_ops_per_sec: writes as f64 / secs.max(1e-9),
            interval_errors: errors,
            leader,
            rss_max_mib: max(&rss),
            rss_median_mib: median(rss),
            disk_max_mib: max(&disk),
            disk_median_mib: median(disk),
            members,
        }
    }

    /// Per named part of the members' data, its median over the members, MiB.
    pub fn parts_median_mib(&self) -> Vec<(String, f64)> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .disk
            .parts
            .iter()
            .filter_map(|p| {
                let values = self
                    .members
                    .iter()
                    .filter_map(|m| m.disk.parts.iter().find(|q| q.name == p.name))
                    .map(|q| q.size.allocated as f64 / MIB)
                    .collect();
                Some((p.name.clone(), median(values)?))
            })
            .collect()
    }

    /// The line under the progress bar.
    pub fn line(&self, system: &str) -> String {
        format!(
            "{system:>10} checkpoint {:>2}: {:>9} writes, {:>7.0} ops/s, RSS median {} (max {}) MiB, disk median {} (max {}) MiB",
            self.index,
            thousands(self.acked as f64),
            self.interval_ops_per_sec,
            mib(self.rss_median_mib),
            mib(self.rss_max_mib),
            mib(self.disk_median_mib),
            mib(self.disk_max_mib),
        )
    }
}

fn mib(x: Option<f64>) -> String {
    x.map(f1).unwrap_or_else(|| "—".into())
}

fn parts_text(parts: &[(String, f64)]) -> String {
    let texts: Vec<String> = parts
        .iter()
        .map(|(name, v)| format!("{name} {}", f1(*v)))
        .collect();
    texts.join(", ")
}

/// A follower SIGKILLed and started again on its data, under the write load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restart {
    /// The checkpoint after which it ran.
    pub checkpoint: usize,
    pub member: String,
    pub leader: String,
    /// What the leader had committed when the follower was killed.
    pub leader_committed: String,
    pub acked_at_kill: u64,
    /// From the restart to the member's first answer as a follower (etcd: to its first
    /// serializable read), s, and the position it showed.
    pub answered_s: Option<f64>,
    #[serde(default)]
    pub answered_at: Option<String>,
    /// From the restart until it showed `leader_committed` or later and more than in its
    /// first answer, s.
    pub caught_up_s: f64,
    /// What it showed then.
    pub caught_up_at: String,
    /// Writes acknowledged (by any member) from the kill until it had caught up.
    pub acked_meanwhile: u64,
}

impl Restart {
    pub fn line(&self, system: &str) -> String {
        format!(
            "{system:>10} restart after checkpoint {}: {} (leader {}, had committed {}) caught up after {:.3} s",
            self.checkpoint, self.member, self.leader, self.leader_committed, self.caught_up_s
        )
    }
}

/// A step of a system's long run that can fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum LongStep {
    /// The writers (connecting them, or no acknowledgement for a minute).
    Load,
    Restart {
        checkpoint: usize,
    },
}

impl std::fmt::Display for LongStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LongStep::Load => write!(f, "load"),
            LongStep::Restart { checkpoint } => {
                write!(f, "restart after checkpoint {checkpoint}")
            }
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LongNote {
    pub step: LongStep,
    pub outcome: Outcome,
    pub why: String,
}

impl LongNote {
    fn cell(&self) -> String {
        let what = match self.outcome {
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        };
        let why = self.why.replace('\n', " ").replace('|', "/");
        format!("{} {what}: {why}", self.step)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LongSystem {
    pub system: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What each write is, and how the clients connect.
    pub op: String,
    pub clients: String,
    /// How the ensemble kept its history.
    pub retention: String,
    pub startup_s: Option<f64>,
    pub checkpoints: Vec<Checkpoint>,
    pub restarts: Vec<Restart>,
    /// Over the whole run: writes acknowledged, failed, how long the writers ran.
    pub acked: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub run_s: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<LongNote>,
}

impl LongSystem {
    pub fn new(system: System, clients: usize) -> LongSystem {
        let op = match system {
            System::Guessgame => "a guess under a fresh client id (every 100th op a write that closes the round): one committed, fsynced log entry",
            other => other.op(),
        };
        let how = match system {
            System::Guessgame => "unary calls, the whole endpoint list in turn",
            System::Zookeeper => "one session over the whole member list",
            System::Etcd => "Puts with the deadline of --etcd-attempt-timeout (1 s unless set), the next endpoint after a failure",
        };
        LongSystem {
            system: system.name().into(),
            version: String::new(),
            binary: None,
            status: Status::Ok,
            reason: None,
            op: op.into(),
            clients: format!(
                "{clients} closed-loop clients, starting round-robin over the members: {how}"
            ),
            retention: String::new(),
            startup_s: None,
            checkpoints: Vec::new(),
            restarts: Vec::new(),
            acked: 0,
            errors: 0,
            first_error: None,
            run_s: 0.0,
            steps: Vec::new(),
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Failed)
            || self.steps.iter().any(|n| n.outcome == Outcome::Failed)
    }

    fn started(&self) -> bool {
        matches!(self.status, Status::Ok)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LongReport {
    pub machine: Machine,
    pub settings: LongSettings,
    pub systems: Vec<LongSystem>,
}

impl LongReport {
    fn checkpoint_table(&self, out: &mut String) {
        out.push_str(
            "\n### Memory and disk per member as the log grows\n\n\
             | system | checkpoint | acknowledged writes | ops/s since the previous | errors | leader | RSS median (max), MiB | disk median (max), MiB | disk by part, median MiB |\n\
             |---|--:|--:|--:|--:|---|--:|--:|---|\n",
        );
        for sys in &self.systems {
            if !sys.started() {
                let what = match sys.status {
                    Status::Skipped => "skipped",
                    _ => "FAILED",
                };
                let why = sys.reason.as_deref().unwrap_or("").replace('\n', " ");
                let _ = writeln!(out, "| {} | — | {what}: {why} | | | | | | |", sys.system);
                continue;
            }
            for c in &sys.checkpoints {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} ({}) | {} ({}) | {} |",
                    sys.system,
                    c.index,
                    thousands(c.acked as f64),
                    thousands(c.interval_ops_per_sec),
                    c.interval_errors,
                    c.leader.as_deref().unwrap_or("none"),
                    mib(c.rss_median_mib),
                    mib(c.rss_max_mib),
                    mib(c.disk_median_mib),
                    mib(c.disk_max_mib),
                    parts_text(&c.parts_median_mib()),
                );
            }
            for n in sys.steps.iter().filter(|n| n.step == LongStep::Load) {
                let after = sys.checkpoints.last().map(|c| c.index).unwrap_or(0);
                let _ = writeln!(
                    out,
                    "| {} | after {after} | {} | | | | | | |",
                    sys.system,
                    n.cell()
                );
            }
        }
    }

    fn restart_table(&self, out: &mut String) {
        let any = self
            .systems
            .iter()
            .any(|s| !s.restarts.is_empty() || s.steps.iter().any(|n| n.step != LongStep::Load));
        if !any {
            return;
        }
        out.push_str(
            "\n### Restart of a follower: SIGKILL, started again on its data, the writers going on\n\n\
             | system | after checkpoint | member | leader | the leader had committed | answering after | caught up after | writes acknowledged meanwhile |\n\
             |---|--:|---|---|---|--:|--:|--:|\n",
        );
        for sys in self.systems.iter().filter(|s| s.started()) {
            for &k in &self.settings.restart_at {
                let step = LongStep::Restart { checkpoint: k };
                if let Some(r) = sys.restarts.iter().find(|r| r.checkpoint == k) {
                    let _ = writeln!(
                        out,
                        "| {} | {k} | {} | {} | {} | {} | **{:.3} s** ({}) | {} |",
                        sys.system,
                        r.member,
                        r.leader,
                        r.leader_committed,
                        match (r.answered_s, &r.answered_at) {
                            (Some(s), Some(at)) => format!("{s:.3} s ({at})"),
                            (Some(s), None) => format!("{s:.3} s"),
                            _ => "—".into(),
                        },
                        r.caught_up_s,
                        r.caught_up_at,
                        thousands(r.acked_meanwhile as f64)
                    );
                } else if let Some(n) = sys.steps.iter().find(|n| n.step == step) {
                    let _ = writeln!(out, "| {} | {k} | {} | | | | | |", sys.system, n.cell());
                }
            }
        }
        out.push_str(
            "\nCaught up: guessgame's `Status` says *follower* with last committed zxid ≥ the leader's at the kill; \
             ZooKeeper's `srvr` says `Mode: follower` with `Zxid` ≥ the leader's at the kill; \
             etcd answers a serializable Range with a header revision ≥ the leader's at the kill — \
             and more than in its first such answer (*answering*, with what it showed), which may be only what it had on disk \
             (a guessgame node says *follower* before the leader's sync; an etcd member serves its own revision).\n",
        );
    }

    fn member_table(&self, out: &mut String) {
        out.push_str(
            "\n### Per member\n\n\
             | system | checkpoint | member | RSS, MiB | disk, MiB | by part, MiB |\n\
             |---|--:|---|--:|--:|---|\n",
        );
        for sys in self.systems.iter().filter(|s| s.started()) {
            for c in &sys.checkpoints {
                for m in &c.members {
                    let parts: Vec<(String, f64)> = m
                        .disk
                        .parts
                        .iter()
                        .map(|p| (p.name.clone(), p.size.allocated as f64 / MIB))
                        .collect();
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} |",
                        sys.system,
                        c.index,
                        m.member,
                        m.rss_kib
                            .map(|k| f1(k as f64 / 1024.0))
                            .unwrap_or_else(|| "not running".into()),
                        f1(m.disk.total.allocated as f64 / MIB),
                        parts_text(&parts)
                    );
                }
            }
        }
    }

    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Long run: memory, disk and restart time as the log grows — {} acknowledged writes per system, {} members each on 127.0.0.1, one system at a time\n",
            thousands(s.entries as f64),
            s.members
        );
        let _ = writeln!(
            out,
            "{} cores, {}. {} closed-loop writers per system on a fresh ensemble. A checkpoint every tenth of the writes \
             ({} acknowledged) reads each member's resident memory (`VmRSS`) and its data on disk (the blocks its files \
             take, recursively; their lengths are in long.json), and the write throughput since the previous checkpoint. \
             After checkpoints {} one follower is SIGKILLed and started again on the same data while the writers go on; \
             the interval after it includes the restart.\n",
            self.machine.cores,
            self.machine.os,
            s.clients,
            thousands(s.checkpoints.first().copied().unwrap_or(0) as f64),
            s.restart_at
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        for sys in self.systems.iter().filter(|s| s.started()) {
            let binary = sys
                .binary
                .as_ref()
                .map(|b| format!(", `{b}`"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- **{}** {}{binary}: {}. One write = {}; {}. {} acknowledged, {} failed in {:.0} s.",
                sys.system,
                sys.version,
                sys.retention,
                sys.op,
                sys.clients,
                thousands(sys.acked as f64),
                thousands(sys.errors as f64),
                sys.run_s
            );
        }
        self.checkpoint_table(&mut out);
        self.restart_table(&mut out);
        self.member_table(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::long::{DiskPart, Size};

    fn member(name: &str, rss_mib: Option<u64>, db_mib: u64, wal_mib: u64) -> MemberPoint {
        let part = |name: &str, m: u64| DiskPart {
            name: name.into(),
            size: Size {
                bytes: m << 20,
                allocated: m << 20,
            },
        };
        MemberPoint {
            member: name.into(),
            pid: rss_mib.map(|_| 1),
            rss_kib: rss_mib.map(|m| m * 1024),
            disk: Disk {
                total: Size {
                    bytes: (db_mib + wal_mib) << 20,
                    allocated: (db_mib + wal_mib) << 20,
                },
                parts: vec![part(".db", db_mib), part("-wal", wal_mib)],
            },
        }
    }

    #[test]
    fn checkpoint_medians_over_the_members() {
        let c = Checkpoint::new(
            2,
            200,
            205,
            3.0,
            (100, 2.0, 1),
            Some("node1".into()),
            vec![
                member("node1", Some(30), 10, 4),
                member("node2", Some(20), 12, 1),
                member("node3", None, 11, 2),
            ],
        );
        assert_eq!(c.interval_ops_per_sec, 50.0);
        // The member that is not running has no RSS: the median of the two others.
        assert_eq!(c.rss_median_mib, Some(25.0));
        assert_eq!(c.rss_max_mib, Some(30.0));
        assert_eq!(c.disk_median_mib, Some(13.0));
        assert_eq!(c.disk_max_mib, Some(14.0));
        assert_eq!(
            c.parts_median_mib(),
            vec![(".db".to_string(), 11.0), ("-wal".to_string(), 2.0)]
        );
    }
}
