//! The load generator: C closed-loop clients (each waits for its answer before it sends the
//! next request), the same for every system and workload.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::efficiency::{Meter, WindowUsage};
use crate::systems::{Reader, Writer};

pub(crate) const WARMUP: u8 = 0;
pub(crate) const MEASURE: u8 = 1;
pub(crate) const STOP: u8 = 2;

/// After a failed request a client pauses this long before the next one, so a system that
/// refuses at once (connection refused) is not hammered in a tight loop.
pub(crate) const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How long to wait for in-flight requests after a window ends.
pub(crate) const DRAIN: Duration = Duration::from_secs(15);

/// One request of a closed-loop client: a write or a read.
pub(crate) trait Call: Send + 'static {
    fn call(&mut self, op: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A writer as a closed-loop client.
pub(crate) struct Writes<W>(pub W);

impl<W: Writer> Call for Writes<W> {
    async fn call(&mut self, op: u64) -> anyhow::Result<()> {
        self.0.write(op).await
    }
}

/// A reader as a closed-loop client (the op id goes unused).
pub(crate) struct Reads<R>(pub R);

impl<R: Reader> Call for Reads<R> {
    async fn call(&mut self, _op: u64) -> anyhow::Result<()> {
        self.0.read().await
    }
}

/// Figures of one (system, workload, C) point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadResult {
    pub clients: usize,
    /// Length of the measuring window, s.
    pub window_s: f64,
    /// Requests answered (writes acknowledged, reads answered) within the window.
    pub ops: u64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Requests that failed within the window.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// CPU and memory of the ensemble's processes over the window (write windows of an
    /// ensemble the bench started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WindowUsage>,
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

/// Runs `workers` closed-loop: `warmup`, then the measuring `window`. Ops ids come from
/// `next_op` (unique across the run). With a `meter`, the CPU time of the ensemble's
/// processes over the window and their memory at its end are read too.
pub(crate) async fn closed_loop<W: Call>(
    workers: Vec<W>,
    warmup: Duration,
    window: Duration,
    next_op: &Arc<AtomicU64>,
    pb: &ProgressBar,
    label: &str,
    meter: Option<&Meter>,
) -> LoadResult {
    let clients = workers.len();
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut w in workers {
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
                let res = w.call(op).await;
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
    let mark = meter.map(Meter::mark);
    phase.store(MEASURE, Ordering::Relaxed);
    let started = Instant::now();
    show("measuring", started + window).await;
    phase.store(STOP, Ordering::Relaxed);
    let window_s = started.elapsed().as_secs_f64();
    // Read before the drain: the window is what the clients measured.
    let mut usage = meter.zip(mark).map(|(m, mark)| m.usage(&mark));

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
    if let Some(u) = &mut usage {
        u.set_ops(ops);
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
        usage,
    }
}
