//! The load generator: C closed-loop clients (each waits for its answer before it sends the
//! next write), the same for every system; and the leader-kill run.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::systems::{Ensemble, Verification, Writer};

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// After a failed write a client pauses this long before the next one, so a system that
/// refuses at once (connection refused) is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How long to wait for in-flight writes after a window ends.
const DRAIN: Duration = Duration::from_secs(15);

/// Figures of one (system, C) point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadResult {
    pub clients: usize,
    /// Length of the measuring window, s.
    pub window_s: f64,
    /// Writes acknowledged within the window.
    pub ops: u64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Writes that failed within the window.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// The leader-kill run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailoverResult {
    pub clients: usize,
    pub killed: String,
    /// When the leader was killed, s after the clients started.
    pub kill_at_s: f64,
    pub run_s: f64,
    /// Longest time without any acknowledged write (any client), s.
    pub longest_gap_s: f64,
    /// From the kill to the first acknowledgement of a write sent after the kill, s
    /// (`None`: there was none).
    pub first_ok_after_kill_s: Option<f64>,
    pub ops: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub verification: Verification,
}

struct ClientTally {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs `writers` closed-loop: `warmup`, then the measuring `window`. Ops ids come from
/// `next_op` (unique across the run).
pub async fn closed_loop<W: Writer>(
    writers: Vec<W>,
    warmup: Duration,
    window: Duration,
    next_op: &Arc<AtomicU64>,
    pb: &ProgressBar,
    label: &str,
) -> LoadResult {
    let clients = writers.len();
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut w in writers {
        let phase = phase.clone();
        let next_op = next_op.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = ClientTally {
                hist: histogram(),
                ok: 0,
                errors: 0,
                first_error: None,
            };
            loop {
                if phase.load(Ordering::Relaxed) == STOP {
                    break;
                }
                let op = next_op.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let res = w.write(op).await;
                let us = start.elapsed().as_micros() as u64;
                let measuring = phase.load(Ordering::Relaxed) == MEASURE;
                match res {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        if measuring {
                            t.ok += 1;
                            let _ = t.hist.record(us.max(1));
                        }
                    }
                    Err(e) => {
                        if measuring {
                            t.errors += 1;
                            if t.first_error.is_none() {
                                t.first_error = Some(format!("{e:#}"));
                            }
                        }
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            t
        }));
    }
    let show = |what: &str, until: Instant| {
        let pb = pb.clone();
        let done = done.clone();
        let msg = format!("{label}: {what}");
        async move {
            let mut last = Instant::now();
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(100).min(until - Instant::now())).await;
                let now = Instant::now();
                pb.inc((now - last).as_millis() as u64);
                last = now;
                pb.set_message(format!("{msg}, {} acks", done.load(Ordering::Relaxed)));
            }
        }
    };
    show("warm-up", Instant::now() + warmup).await;
    phase.store(MEASURE, Ordering::Relaxed);
    let started = Instant::now();
    show("measuring", started + window).await;
    phase.store(STOP, Ordering::Relaxed);
    let window_s = started.elapsed().as_secs_f64();

    let mut hist = histogram();
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout(DRAIN, t).await {
            Ok(Ok(t)) => {
                let _ = hist.add(&t.hist);
                ops += t.ok;
                errors += t.errors;
                first_error = first_error.or(t.first_error);
            }
            _ => abort.abort(),
        }
    }
    let q = |q: f64| {
        if ops == 0 {
            0.0
        } else {
            ms(hist.value_at_quantile(q))
        }
    };
    LoadResult {
        clients,
        window_s,
        ops,
        ops_per_sec: ops as f64 / window_s,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        max_ms: if ops == 0 { 0.0 } else { ms(hist.max()) },
        mean_ms: if ops == 0 { 0.0 } else { hist.mean() / 1000.0 },
        errors,
        first_error,
    }
}

/// `clients` failover clients (each with the whole endpoint list) write closed-loop; after
/// `before` the leader is SIGKILLed; the run goes on for `after`. Then what was acknowledged
/// is read back.
pub async fn failover<E: Ensemble>(
    ens: &mut E,
    clients: usize,
    before: Duration,
    after: Duration,
    next_op: &Arc<AtomicU64>,
    pb: &ProgressBar,
    label: &str,
) -> anyhow::Result<FailoverResult> {
    let mut writers = Vec::new();
    for i in 0..clients {
        writers.push(ens.writer(i, true).await?);
    }
    let stop = Arc::new(AtomicU8::new(WARMUP));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for mut w in writers {
        let stop = stop.clone();
        let next_op = next_op.clone();
        tasks.push(tokio::spawn(async move {
            // (sent, acknowledged: µs since t0; op) of every acknowledged write; errors.
            let mut acks: Vec<(u64, u64, u64)> = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while stop.load(Ordering::Relaxed) != STOP {
                let op = next_op.fetch_add(1, Ordering::Relaxed);
                let sent = t0.elapsed().as_micros() as u64;
                match w.write(op).await {
                    Ok(()) => acks.push((sent, t0.elapsed().as_micros() as u64, op)),
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            (acks, errors, first_error)
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
    tick(format!("{label}: failover, steady"), before).await;
    let leader = ens.leader().await?;
    let killed = ens.member_name(leader);
    let kill_at = t0.elapsed();
    ens.kill(leader)?;
    tick(format!("{label}: failover, {killed} killed"), after).await;
    stop.store(STOP, Ordering::Relaxed);
    let run = t0.elapsed();

    let mut times = Vec::new();
    let mut sent_after_kill = Vec::new();
    let kill_us = kill_at.as_micros() as u64;
    let mut acked = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout(DRAIN, t).await {
            Ok(Ok((acks, e, fe))) => {
                times.extend(acks.iter().map(|(_, t, _)| *t));
                sent_after_kill.extend(
                    acks.iter()
                        .filter(|(s, _, _)| *s >= kill_us)
                        .map(|(_, t, _)| *t),
                );
                acked.push(acks.into_iter().map(|(_, _, op)| op).collect::<Vec<_>>());
                errors += e;
                first_error = first_error.or(fe);
            }
            _ => {
                abort.abort();
                acked.push(Vec::new());
            }
        }
    }
    times.sort_unstable();
    let run_us = run.as_micros() as u64;
    // Gaps between consecutive acknowledgements, counted from the first one (connection
    // set-up is not a gap) to the end of the run (a system that never recovers shows it).
    let mut longest = 0u64;
    if let Some(first) = times.first() {
        let mut prev = *first;
        for t in times.iter().skip(1).chain(std::iter::once(&run_us)) {
            longest = longest.max(t.saturating_sub(prev));
            prev = *t;
        }
    } else {
        longest = run_us;
    }
    let first_after = sent_after_kill.iter().min().map(|t| t - kill_us);
    pb.set_message(format!("{label}: reading back acknowledged writes"));
    let verification = ens.verify(&acked).await?;
    Ok(FailoverResult {
        clients,
        killed,
        kill_at_s: kill_at.as_secs_f64(),
        run_s: run.as_secs_f64(),
        longest_gap_s: longest as f64 / 1e6,
        first_ok_after_kill_s: first_after.map(|us| us as f64 / 1e6),
        ops: times.len() as u64,
        errors,
        first_error,
        verification,
    })
}
