//! WAL checkpoints off the engine thread.
//!
//! SQLite checkpoints a WAL database from inside the commit that crosses
//! `wal_autocheckpoint` pages: that commit then copies the whole WAL into the database and
//! fsyncs it, and on a node's engine thread every write behind it waits (a stall of tens of
//! milliseconds every few hundred turns). Instead a thread with its own connection runs
//! passive checkpoints — they never block the writer — every 100 ms; the engine's connection keeps a much higher automatic threshold only as a
//! backstop. Durability is unchanged: a checkpoint syncs the WAL before copying it and the
//! database after, whoever runs it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The engine's own connection checkpoints only past this many WAL pages (a backstop).
pub(super) const BACKSTOP_PAGES: i64 = 16_384;
/// How often the thread checkpoints (each one a WAL and a database fsync, when there is
/// anything to copy).
const EVERY: Duration = Duration::from_millis(100);

/// The running checkpoint thread; stopped when dropped.
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `path` (already in WAL mode). A database it cannot open is left
    /// to the engine's automatic checkpoints.
    pub(super) fn start(path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        let _ = conn.busy_timeout(Duration::from_millis(5));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(EVERY);
                    // Busy (another checkpoint) or failing: the next round, or the backstop.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok()?;
        Some(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
