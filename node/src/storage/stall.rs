//! How long the storage write the engine waits on has been running. The engine thread is
//! blocked in that write, so it cannot say so itself: a slow disk (fsync taking seconds), a
//! full one, or the database locked by another process (`sqlite3 … .backup`, an open
//! transaction) shows here instead — in `status`, in the health services (a node stalled
//! longer than an election timeout is not SERVING, so the kubelet takes it out of its
//! Service) and in the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stall shorter than this is an ordinary write, not worth a word.
pub const STALL_REPORTED_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct StorageWatch {
    epoch: Instant,
    /// When the write under way began, in milliseconds since `epoch` plus one; 0: none.
    busy_since: AtomicU64,
}

impl StorageWatch {
    pub fn new() -> Arc<StorageWatch> {
        Arc::new(StorageWatch {
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
        })
    }

    /// A write begins (the engine thread is about to block in it).
    pub fn begin(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.busy_since.store(now, Ordering::Relaxed);
    }

    /// The write is done.
    pub fn end(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// How long the write under way has been running; `None` when there is none.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let now = self.epoch.elapsed().as_millis() as u64 + 1;
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    /// The write under way, if it has run for [`STALL_REPORTED_AFTER`] or longer.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.busy_for().filter(|d| *d >= STALL_REPORTED_AFTER)
    }
}

/// Logs a stall while it lasts: after 1 s, then each time it doubles (2, 4, 8 s, …), and
/// once more when it ends. Runs until the task is aborted.
pub async fn report_stalls(watch: Arc<StorageWatch>, node: String, path: String) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_word = STALL_REPORTED_AFTER;
    let mut longest: Option<Duration> = None;
    loop {
        every.tick().await;
        match watch.busy_for() {
            Some(d) if d >= next_word => {
                tracing::warn!(
                    node = %node,
                    stalled_s = d.as_secs_f64(),
                    "a write to {path} has not finished for {:.1} s: the disk is slow or full, \
                     or another process holds the database locked (look with `fuser {path}`); \
                     the engine waits for it (it never acknowledges what is not on disk)",
                    d.as_secs_f64()
                );
                next_word = d * 2;
                longest = Some(d);
            }
            Some(_) => {}
            None => {
                if let Some(d) = longest.take() {
                    tracing::warn!(node = %node, "the stalled write to {path} finished (stalled at least {:.1} s)", d.as_secs_f64());
                }
                next_word = STALL_REPORTED_AFTER;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_under_way_is_timed_and_a_finished_one_is_not() {
        let w = StorageWatch::new();
        assert_eq!(w.busy_for(), None);
        w.begin();
        std::thread::sleep(Duration::from_millis(20));
        assert!(w.busy_for().unwrap() >= Duration::from_millis(20));
        assert_eq!(w.stalled_for(), None, "20 ms is not a stall");
        w.end();
        assert_eq!(w.busy_for(), None);
    }
}
