//! Work on the log file that must stay off the engine thread: WAL checkpoints, deleting the
//! entries a snapshot made unnecessary, and giving their space back.
//!
//! SQLite checkpoints a WAL database from inside the commit that crosses
//! `wal_autocheckpoint` pages: that commit then copies the whole WAL into the database and
//! fsyncs it, and on a node's engine thread every write behind it waits (a stall of tens of
//! milliseconds every few hundred turns). Instead a thread with its own connection runs
//! passive checkpoints — they never block the writer — every 100 ms; the engine's connection
//! keeps a much higher automatic threshold only as a backstop. Durability is unchanged: a
//! checkpoint syncs the WAL before copying it and the database after, whoever runs it.
//!
//! A passive checkpoint copies frames but never starts the WAL over: that happens only when
//! a writer finds every frame copied, and under steady load a new frame is always there
//! first, so the file would grow to the backstop (64 MiB) and stay there. Once it passes
//! [`WAL_RESTART_BYTES`] the thread runs one restarting checkpoint: it waits (at most its
//! busy timeout) for a gap between two engine transactions and copies the few frames the
//! last passive round left, holding the engine's next write for about that long; that write
//! then starts the WAL over from its beginning and trims the file to `journal_size_limit`.
//! The file is overwritten in place rather than truncated and regrown, so the engine's
//! fsyncs need no file-size metadata.
//!
//! Compaction: a snapshot moves `log_start` forward in the engine's own transaction, and
//! `load` never returns an entry at or below it, so deleting those rows is only about space.
//! Deleting tens of thousands of rows in the engine's transaction would stall it; here they
//! go in small transactions (each holds the write lock for a couple of milliseconds), with a
//! pause between them so the engine's writes get in. Those transactions are not synced on
//! their own (`synchronous=NORMAL`): one lost in a crash is only done again, since
//! `log_start` itself was written durably by the engine.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

/// The engine's own connection checkpoints only past this many WAL pages (a backstop).
pub(super) const BACKSTOP_PAGES: i64 = 16_384;
/// A WAL larger than this is checkpointed with RESTART (see the module comment), and the
/// engine's connection trims the file to this size whenever the WAL starts over.
pub(super) const WAL_RESTART_BYTES: u64 = 8 << 20;
/// How often the thread runs (each checkpoint a WAL and a database fsync, when there is
/// anything to copy).
const EVERY: Duration = Duration::from_millis(100);
/// Compacted rows deleted per transaction: measured at 1.7 ms (at most 2.4 ms) of holding
/// the write lock with 500-byte entries, less with the usual small ones.
pub(super) const DELETE_BATCH: i64 = 500;
/// Pause between two deleting transactions, so that a waiting engine write goes first.
const BETWEEN_BATCHES: Duration = Duration::from_millis(2);
/// Most time spent deleting per round (then checkpoint, and go on at the next round).
const DELETE_BUDGET: Duration = Duration::from_millis(40);
/// Free pages kept for reuse (new entries fill them without growing the file); only a
/// freelist beyond this — a large compaction, not the steady snapshot rhythm — is given
/// back to the file system, by an incremental vacuum (files created with
/// `auto_vacuum=INCREMENTAL`, i.e. by this version on).
pub(super) const KEEP_FREE_PAGES: i64 = 4_096;
/// Pages given back per vacuum transaction (measured at most 2.7 ms).
const VACUUM_STEP: i64 = 128;

/// The running background thread; stopped when dropped.
pub(super) struct Housekeeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Housekeeper {
    /// Starts the thread on `path` (already in WAL mode, current schema). A database it
    /// cannot open is left to the engine's automatic checkpoints, and its compacted rows
    /// stay (hidden) until the next start.
    pub(super) fn start(path: &Path) -> Option<Housekeeper> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        // Never wait long for the engine: this work can always wait for the next round.
        conn.busy_timeout(Duration::from_millis(5)).ok()?;
        conn.pragma_update(None, "synchronous", "NORMAL").ok()?;
        // This thread checkpoints every round anyway; an automatic one inside its commit
        // would copy the whole WAL there (hundreds of milliseconds after a large delete).
        conn.pragma_update(None, "wal_autocheckpoint", 0).ok()?;
        let wal = super::sqlite::beside(path, "-wal");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("log-housekeeping".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(EVERY);
                    // Busy (the engine, another checkpoint) or failing: the next round, or
                    // the backstop.
                    let _ = delete_compacted(&mut conn, &stopping);
                    let _ = give_back_free_pages(&conn);
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if wal_size(&wal) > WAL_RESTART_BYTES {
                        // Busy past the timeout: it ends as a passive one; the next round
                        // tries again.
                        let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
                    }
                }
            })
            .ok()?;
        Some(Housekeeper {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wal_size(wal: &Path) -> u64 {
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Deletes up to [`DELETE_BATCH`] rows at or below the durable `log_start`; how many.
pub(super) fn delete_compacted_batch(conn: &mut Connection) -> rusqlite::Result<usize> {
    // IMMEDIATE: the write lock from the start, so the log_start read below is the one the
    // delete acts on.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let meta = |key: &str| -> rusqlite::Result<i64> {
        tx.query_row(
            "SELECT coalesce((SELECT value FROM meta WHERE key = ?1), 0)",
            params![key],
            |r| r.get(0),
        )
    };
    let (epoch, counter) = (meta("log_start_epoch")?, meta("log_start_counter")?);
    let deleted = tx.execute(
        "DELETE FROM log WHERE (epoch, counter) IN (
             SELECT epoch, counter FROM log WHERE (epoch, counter) <= (?1, ?2)
             ORDER BY epoch, counter LIMIT ?3)",
        params![epoch, counter, DELETE_BATCH],
    )?;
    tx.commit()?;
    Ok(deleted)
}

fn delete_compacted(conn: &mut Connection, stopping: &AtomicBool) -> rusqlite::Result<()> {
    // Most rounds have nothing to delete: find that out without taking the write lock.
    let compacted_rows_remain: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM log WHERE (epoch, counter) <= (
             coalesce((SELECT value FROM meta WHERE key = 'log_start_epoch'), 0),
             coalesce((SELECT value FROM meta WHERE key = 'log_start_counter'), 0)))",
        [],
        |r| r.get(0),
    )?;
    if !compacted_rows_remain {
        return Ok(());
    }
    let deadline = Instant::now() + DELETE_BUDGET;
    while (delete_compacted_batch(conn)? as i64) == DELETE_BATCH
        && Instant::now() < deadline
        && !stopping.load(Ordering::Relaxed)
    {
        std::thread::sleep(BETWEEN_BATCHES);
    }
    Ok(())
}

fn give_back_free_pages(conn: &Connection) -> rusqlite::Result<()> {
    let pragma = |name: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
    };
    // 2 = INCREMENTAL; files from before schema version 2 have none (0) and keep their
    // free pages for reuse.
    if pragma("auto_vacuum")? != 2 {
        return Ok(());
    }
    let excess = pragma("freelist_count")? - KEEP_FREE_PAGES;
    if excess > 0 {
        let mut vacuum = conn.prepare(&format!(
            "PRAGMA incremental_vacuum({})",
            excess.min(VACUUM_STEP)
        ))?;
        // One row per page freed: it has to be stepped to the end.
        let mut pages = vacuum.query([])?;
        while pages.next()?.is_some() {}
    }
    Ok(())
}
