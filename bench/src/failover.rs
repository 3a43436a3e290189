//! The failover cases: 16 clients (each with the whole endpoint list) write closed-loop
//! while the leader is SIGKILLed (a crash) or SIGTERMed (a graceful stop: the member may hand
//! over before it exits); afterwards every acknowledged write is read back.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::load::{DRAIN, ERROR_PAUSE, STOP, WARMUP};
use crate::systems::{Ensemble, Verification, Writer};

/// How the leader is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful stop.
    Term,
}

impl StopKind {
    pub fn signal(self) -> &'static str {
        match self {
            StopKind::Kill => "SIGKILL",
            StopKind::Term => "SIGTERM",
        }
    }
}

/// Failed writes with the same message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorGroup {
    pub message: String,
    pub count: u64,
    /// When the first and the last of them failed, s after the leader was stopped
    /// (negative: before).
    pub first_s: f64,
    pub last_s: f64,
    /// The longest any of them waited for its answer, s.
    pub longest_wait_s: f64,
}

/// One failover case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailoverResult {
    /// How the leader was stopped (old results: SIGKILL).
    #[serde(default = "kill")]
    pub stop: StopKind,
    pub clients: usize,
    /// The member that led and was stopped.
    #[serde(alias = "killed")]
    pub leader: String,
    /// When the leader was signalled, s after the clients started.
    #[serde(alias = "kill_at_s")]
    pub stop_at_s: f64,
    pub run_s: f64,
    /// How long the signalled leader's process took to exit, s (`None`: it had not exited
    /// by the end of the run).
    #[serde(default)]
    pub exited_after_s: Option<f64>,
    /// Longest time without any acknowledged write (any client), s.
    pub longest_gap_s: f64,
    /// When that gap began, s after the leader was signalled.
    #[serde(default)]
    pub longest_gap_from_s: Option<f64>,
    /// From the signal to the first acknowledgement of a write sent after it, s
    /// (`None`: there was none).
    #[serde(alias = "first_ok_after_kill_s")]
    pub first_ok_after_stop_s: Option<f64>,
    pub ops: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// The failed writes, grouped by message (most frequent first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_groups: Vec<ErrorGroup>,
    pub verification: Verification,
}

fn kill() -> StopKind {
    StopKind::Kill
}

/// What one failover client saw: acknowledged writes as (sent, acknowledged: µs since t0;
/// op); failed ones as (sent, failed: µs since t0; message).
#[derive(Default)]
struct Seen {
    acks: Vec<(u64, u64, u64)>,
    errors: Vec<(u64, u64, String)>,
}

/// Error messages are grouped by their text with digits blanked (ports, ids, durations).
fn shape(message: &str) -> String {
    let mut out = String::new();
    for c in message.chars().take(240) {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn groups(errors: &[(u64, u64, String)], stop_us: u64) -> Vec<ErrorGroup> {
    let s = |us: u64| (us as f64 - stop_us as f64) / 1e6;
    let mut out: Vec<ErrorGroup> = Vec::new();
    for (sent, failed, message) in errors {
        let key = shape(message);
        let wait = failed.saturating_sub(*sent) as f64 / 1e6;
        match out.iter_mut().find(|g| g.message == key) {
            Some(g) => {
                g.count += 1;
                g.first_s = g.first_s.min(s(*failed));
                g.last_s = g.last_s.max(s(*failed));
                g.longest_wait_s = g.longest_wait_s.max(wait);
            }
            None => out.push(ErrorGroup {
                message: key,
                count: 1,
                first_s: s(*failed),
                last_s: s(*failed),
                longest_wait_s: wait,
            }),
        }
    }
    out.sort_by_key(|g| std::cmp::Reverse(g.count));
    out.truncate(8);
    out
}

/// `clients` failover clients write closed-loop; after `before` the leader is signalled
/// (`stop`); the run goes on for `after`. Then what was acknowledged is read back.
#[allow(clippy::too_many_arguments)]
pub async fn failover<E: Ensemble>(
    ens: &mut E,
    stop: StopKind,
    clients: usize,
    before: Duration,
    after: Duration,
    next_op: &Arc<AtomicU64>,
    pb: &ProgressBar,
    label: &str,
) -> anyhow::Result<FailoverResult> {
    pb.set_message(format!("{label}: connecting {clients} failover clients"));
    let mut writers = Vec::new();
    for i in 0..clients {
        writers.push(ens.writer(i, true).await?);
    }
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for mut w in writers {
        let phase = phase.clone();
        let next_op = next_op.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            while phase.load(Ordering::Relaxed) != STOP {
                let op = next_op.fetch_add(1, Ordering::Relaxed);
                let sent = t0.elapsed().as_micros() as u64;
                match w.write(op).await {
                    Ok(()) => seen.acks.push((sent, t0.elapsed().as_micros() as u64, op)),
                    Err(e) => {
                        seen.errors
                            .push((sent, t0.elapsed().as_micros() as u64, format!("{e:#}")));
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            seen
        }));
    }
    let tick = |what: String, d: Duration| {
        let pb = pb.clone();
        async move {
            let until = Instant::now() + d;
            let mut last = Instant::now();
            pb.set_message(what);
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(100).min(until - Instant::now())).await;
                let now = Instant::now();
                pb.inc((now - last).as_millis() as u64);
                last = now;
            }
        }
    };
    tick(
        format!("{label}: {} failover, steady", stop.signal()),
        before,
    )
    .await;
    let leader = match ens.leader().await {
        Ok(l) => l,
        Err(e) => {
            phase.store(STOP, Ordering::Relaxed);
            for t in tasks {
                t.abort();
            }
            return Err(e);
        }
    };
    let name = ens.member_name(leader);
    let stop_at = t0.elapsed();
    let signalled = match stop {
        StopKind::Kill => ens.kill(leader),
        StopKind::Term => ens.terminate(leader),
    };
    if let Err(e) = signalled {
        phase.store(STOP, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        return Err(e);
    }
    // The rest of the run, watching for the signalled process to exit.
    pb.set_message(format!("{label}: {} sent to leader {name}", stop.signal()));
    let until = Instant::now() + after;
    let mut last = Instant::now();
    let mut exited_after = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20).min(until - Instant::now())).await;
        if exited_after.is_none() && !ens.running(leader) {
            exited_after = Some(t0.elapsed() - stop_at);
        }
        let now = Instant::now();
        pb.inc((now - last).as_millis() as u64);
        last = now;
    }
    phase.store(STOP, Ordering::Relaxed);
    let run = t0.elapsed();

    let stop_us = stop_at.as_micros() as u64;
    let mut times = Vec::new();
    let mut sent_after_stop = Vec::new();
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout(DRAIN, t).await {
            Ok(Ok(seen)) => {
                times.extend(seen.acks.iter().map(|(_, t, _)| *t));
                sent_after_stop.extend(
                    seen.acks
                        .iter()
                        .filter(|(s, _, _)| *s >= stop_us)
                        .map(|(_, t, _)| *t),
                );
                acked.push(seen.acks.into_iter().map(|(_, _, op)| op).collect());
                errors.extend(seen.errors);
            }
            _ => {
                abort.abort();
                acked.push(Vec::new());
            }
        }
    }
    times.sort_unstable();
    errors.sort_by_key(|(_, failed, _)| *failed);
    let run_us = run.as_micros() as u64;
    // Gaps between consecutive acknowledgements, counted from the first one (connection
    // set-up is not a gap) to the end of the run (a system that never recovers shows it).
    let (mut longest, mut longest_from) = (0u64, None);
    if let Some(first) = times.first() {
        let mut prev = *first;
        for t in times.iter().skip(1).chain(std::iter::once(&run_us)) {
            if t.saturating_sub(prev) > longest {
                longest = t - prev;
                longest_from = Some(prev);
            }
            prev = *t;
        }
    } else {
        longest = run_us;
    }
    let first_after = sent_after_stop.iter().min().map(|t| t - stop_us);
    pb.set_message(format!("{label}: reading back acknowledged writes"));
    let verification = ens.verify(&acked).await?;
    Ok(FailoverResult {
        stop,
        clients,
        leader: name,
        stop_at_s: stop_at.as_secs_f64(),
        run_s: run.as_secs_f64(),
        exited_after_s: exited_after.map(|d| d.as_secs_f64()),
        longest_gap_s: longest as f64 / 1e6,
        longest_gap_from_s: longest_from.map(|us| (us as f64 - stop_us as f64) / 1e6),
        first_ok_after_stop_s: first_after.map(|us| us as f64 / 1e6),
        ops: times.len() as u64,
        errors: errors.len() as u64,
        first_error: errors.first().map(|(_, _, m)| m.clone()),
        error_groups: groups(&errors, stop_us),
        verification,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_group_without_their_numbers() {
        let errs = vec![
            (0, 5_000_000, "127.0.0.1:4001 unreachable".to_string()),
            (
                1_000_000,
                7_000_000,
                "127.0.0.1:4002 unreachable".to_string(),
            ),
            (2_000_000, 2_500_000, "timeout".to_string()),
        ];
        let g = groups(&errs, 1_000_000);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].message, "#.#.#.#:# unreachable");
        assert_eq!(g[0].count, 2);
        assert_eq!(g[0].first_s, 4.0);
        assert_eq!(g[0].last_s, 6.0);
        assert_eq!(g[0].longest_wait_s, 6.0);
    }
}
