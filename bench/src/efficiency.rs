//! What the servers cost: resident memory per member (`VmRSS` of `/proc/PID/status`) and CPU
//! time (`utime + stime` of `/proc/PID/stat`, all threads of the process) of the member
//! processes the bench started, over the write windows. For ZooKeeper these are the JVMs.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::load::LoadResult;

/// Memory of one member at the end of a window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberRss {
    pub member: String,
    pub pid: u32,
    pub rss_kib: u64,
}

/// The ensemble's processes over one measuring window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowUsage {
    /// CPU seconds (user + system) of all member processes during the window.
    pub cpu_s: f64,
    /// `cpu_s` per 1,000 requests answered in the window.
    pub cpu_s_per_1k_ops: Option<f64>,
    /// Resident memory of each member at the end of the window.
    pub rss: Vec<MemberRss>,
    /// Members whose CPU time could not be read at both ends of the window (exited).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

impl WindowUsage {
    /// Sets the per-1,000 figure once the window's count is known.
    pub fn set_ops(&mut self, ops: u64) {
        self.cpu_s_per_1k_ops = (ops > 0).then(|| self.cpu_s / (ops as f64 / 1000.0));
    }
}

/// A system's efficiency over all its write windows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Efficiency {
    pub members: usize,
    /// Per member, its largest RSS at the end of a write window; the median and the maximum
    /// of those over the members, MiB.
    pub rss_median_mib: f64,
    pub rss_max_mib: f64,
    /// CPU seconds of all member processes summed over the write windows.
    pub cpu_s: f64,
    /// Writes acknowledged in those windows.
    pub writes: u64,
    pub cpu_s_per_1k_writes: Option<f64>,
    pub how: String,
}

/// Reads the processes' figures at both ends of a window.
pub struct Meter {
    pids: Vec<(String, u32)>,
}

/// CPU seconds per process at the start of a window.
pub struct Mark {
    cpu: Vec<Option<f64>>,
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `utime + stime` of `pid`, seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// `VmRSS` of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

impl Meter {
    /// `None` without processes to read (an ensemble the bench did not start).
    pub fn new(pids: Vec<(String, u32)>) -> Option<Meter> {
        (!pids.is_empty()).then_some(Meter { pids })
    }

    pub fn mark(&self) -> Mark {
        Mark {
            cpu: self.pids.iter().map(|(_, p)| cpu_seconds(*p)).collect(),
        }
    }

    /// From `start` to now (`cpu_s_per_1k_ops` is set by [`WindowUsage::set_ops`]).
    pub fn usage(&self, start: &Mark) -> WindowUsage {
        let mut cpu_s = 0.0;
        let mut unread = Vec::new();
        let mut rss = Vec::new();
        for ((member, pid), before) in self.pids.iter().zip(&start.cpu) {
            match (before, cpu_seconds(*pid)) {
                (Some(b), Some(a)) => cpu_s += (a - b).max(0.0),
                _ => unread.push(member.clone()),
            }
            if let Some(kib) = rss_kib(*pid) {
                rss.push(MemberRss {
                    member: member.clone(),
                    pid: *pid,
                    rss_kib: kib,
                });
            }
        }
        WindowUsage {
            cpu_s,
            cpu_s_per_1k_ops: None,
            rss,
            unread,
        }
    }
}

pub(crate) fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        0.0
    } else if !n.is_multiple_of(2) {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The figures of a system's write windows together; `None` if none was metered.
pub fn summarize(runs: &[LoadResult], how: &str) -> Option<Efficiency> {
    let metered: Vec<(&LoadResult, &WindowUsage)> = runs
        .iter()
        .filter_map(|r| Some((r, r.usage.as_ref()?)))
        .collect();
    if metered.is_empty() {
        return None;
    }
    let mut peak: std::collections::BTreeMap<&str, u64> = Default::default();
    for (_, u) in &metered {
        for m in &u.rss {
            let e = peak.entry(m.member.as_str()).or_default();
            *e = (*e).max(m.rss_kib);
        }
    }
    let mut mib: Vec<f64> = peak.values().map(|k| *k as f64 / 1024.0).collect();
    mib.sort_by(f64::total_cmp);
    let cpu_s: f64 = metered.iter().map(|(_, u)| u.cpu_s).sum();
    let writes: u64 = metered.iter().map(|(r, _)| r.ops).sum();
    Some(Efficiency {
        members: mib.len(),
        rss_median_mib: median(&mib),
        rss_max_mib: mib.last().copied().unwrap_or(0.0),
        cpu_s,
        writes,
        cpu_s_per_1k_writes: (writes > 0).then(|| cpu_s / (writes as f64 / 1000.0)),
        how: how.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_kib(me).unwrap_or(0) > 0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 5.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
