//! `SqliteLog`: one SQLite file per node (`logs_<node_id>.db`, as in the original lab).
//!
//! WAL journal with `synchronous=FULL`: when `persist` returns, the transaction is on disk,
//! so an ACK sent after it means what it says. Each `persist` call is one transaction (one
//! fsync), and the runtime hands it everything a batch of events produced: group commit.
//!
//! One exception: a batch that only moves the commit point (`SetCommitted`, what a leader
//! writes when ACKs arrive and a follower when a COMMIT does) is written without its own
//! fsync; the next synced transaction makes it durable with everything before it. The commit
//! point on disk is a hint, not a promise: entries up to it were already durable (they were
//! appended, with an fsync, before anyone could count them), it is only read back at start
//! to rebuild the applied state, and it only ever grows, so losing its last update in a crash
//! means restarting from an earlier commit point and learning the rest from the leader — as
//! a node that was down longer would. Such a batch runs with `synchronous=NORMAL`: the
//! transaction stays atomic (a torn WAL tail is discarded on recovery) and checkpoints still
//! sync the WAL before copying it and the database after, so nothing else becomes less
//! durable. This takes an fsync off every write's critical path: the leader's reply used to
//! wait for a second fsync after the follower ACKs.
//!
//! Snapshots (schema version 2): the latest snapshot is one row of `snapshot`, and meta's
//! `log_start` says where the log begins; both are written in the batch's transaction.
//! `load` returns only the entries after `log_start`; the rows below it are deleted later by
//! the background thread (`housekeeping.rs`), so a snapshot never makes the engine wait for
//! a large delete. A version-1 file is upgraded in place, in one transaction, when opened.
//!
//! A file is created complete or not at all (built under a temporary name, then renamed), and
//! held by one process at a time (`lock.rs`). A file that is not ours (another application,
//! another node, a newer schema) or that is damaged is refused with a clear error and left
//! untouched.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior};
use thiserror::Error;

use super::housekeeping::{Housekeeper, BACKSTOP_PAGES, WAL_RESTART_BYTES};
use super::lock::{describe_holder, FileLock};
use super::LogStore;
use guessgame_core::{Entry, Op, Persistent, Snapshot, StorageOp, Zxid};

/// `PRAGMA application_id` of a guessgame log ("GGL1").
pub const APPLICATION_ID: i32 = 0x4747_4C31;
/// 1: meta and log. 2: the snapshot table, `log_start`, and meta values stored as written.
pub const SCHEMA_VERSION: i32 = 2;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{path}: not a guessgame log (SQLite application_id {found:#x}, expected {APPLICATION_ID:#x}); refusing to touch it — move it away or pick another --data-dir")]
    Foreign { path: PathBuf, found: i32 },
    #[error("{path}: belongs to node {found:?}, not {expected:?}; refusing to touch it")]
    WrongNode {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path}: schema version {found} is not supported (this build reads versions 1 to {SCHEMA_VERSION}); run a guessgame-node that supports it")]
    Version { path: PathBuf, found: i32 },
    #[error("{path}: the database is corrupt ({detail}); refusing to start. {}", replace_member_advice(.path))]
    Corrupt { path: PathBuf, detail: String },
    #[error("another guessgame-node ({}) is using {path}; stop it first", describe_holder(.pid))]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error("{path}: already exists; a restore only creates a new log, it never replaces one")]
    Exists { path: PathBuf },
    #[error("{path}: a journal without its database (was the database moved away without it?); a new log created here would have it replayed into it, so refusing — move it to where its database went")]
    OrphanJournal { path: PathBuf },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to bring back a node whose log cannot be used. Restoring an older copy can make it
/// vote twice in an epoch it already voted in, and a node started empty can help elect a
/// leader that lacks a committed entry; a member removed and added back as a new one
/// catches up as a learner before it votes again, so neither can happen.
fn replace_member_advice(path: &Path) -> String {
    let id = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("logs_"))
        .and_then(|n| n.strip_suffix(".db"))
        .unwrap_or("<node-id>");
    format!(
        "Restoring an older copy or deleting it can break the ensemble's consistency; \
         instead replace this member: run `guessgame reconfig remove {id}` against another \
         member, move {}* away, then start `guessgame-node --node-id {id} --listen <its \
         address> --join <another member's address>` to add it back as a new member",
        path.display()
    )
}

pub struct SqliteLog {
    conn: Connection,
    path: PathBuf,
    /// The durable `log_start` (read at open, advanced by committed `SaveSnapshot`s): kept
    /// here so a batch never reads before it writes.
    log_start: Zxid,
    /// Checkpoints and compaction off the engine thread (`None` when it could not open the
    /// database: SQLite's automatic checkpoints then do it, as before, and compacted rows
    /// stay hidden until a later start).
    _housekeeper: Option<Housekeeper>,
    /// Dropped last: after every connection to the file is closed.
    _lock: FileLock,
}

/// The file name a node's log has in its data directory.
pub fn log_file_name(node_id: &str) -> String {
    format!("logs_{node_id}.db")
}

/// `path` with `suffix` appended to its file name (SQLite's `-wal`, `-journal`, ...).
pub(super) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

const CREATE_META: &str = "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;";
const CREATE_LOG: &str = "CREATE TABLE log (
     epoch   INTEGER NOT NULL,
     counter INTEGER NOT NULL,
     op      TEXT NOT NULL,   -- JSON of the game operation
     PRIMARY KEY (epoch, counter)
 ) WITHOUT ROWID;";
const CREATE_SNAPSHOT: &str = "CREATE TABLE snapshot (
     id      INTEGER PRIMARY KEY CHECK (id = 0),   -- only the latest
     epoch   INTEGER NOT NULL,
     counter INTEGER NOT NULL,
     data    BLOB NOT NULL   -- Snapshot::encode
 );";

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sql_error(path: &Path) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |source| StorageError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// SQLite's busy handler for the engine's connection: try again in 10 ms, for ever.
fn wait_out_a_lock(_attempts: i32) -> bool {
    std::thread::sleep(Duration::from_millis(10));
    true
}

/// Creates the log at `path` complete or not at all: built under a temporary name beside
/// it, synced, renamed into place, and the directory synced. A crash in between leaves at
/// most the temporary (redone next time), never a half-made log that would be refused
/// forever. `fill` adds to the first transaction. The caller holds the lock.
fn create_file(
    path: &Path,
    node_id: &str,
    fill: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
) -> Result<(), StorageError> {
    // SQLite replays a journal it finds beside a database into it, even into a new one.
    for suffix in ["-wal", "-journal"] {
        let journal = beside(path, suffix);
        if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
            return Err(StorageError::OrphanJournal { path: journal });
        }
    }
    let tmp = beside(path, ".new");
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let leftover = beside(&tmp, suffix);
        match std::fs::remove_file(&leftover) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error(&leftover)(e))
            }
            _ => {}
        }
    }
    let sql = sql_error(&tmp);
    let mut conn = Connection::open_with_flags(
        &tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(&sql)?;
    // Only possible before the first table exists: lets the background thread give space
    // back after a large compaction.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(&sql)?;
    // A rollback journal (not WAL) while it is built: the file is then complete by itself.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(&sql)?;
    let tx = conn.transaction().map_err(&sql)?;
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         {CREATE_META} {CREATE_LOG} {CREATE_SNAPSHOT}"
    ))
    .map_err(&sql)?;
    set_meta(&tx, "node_id", &node_id).map_err(&sql)?;
    fill(&tx).map_err(&sql)?;
    tx.commit().map_err(&sql)?;
    conn.close().map_err(|(_, e)| sql(e))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Version 1 → 2 in one transaction: a crash in the middle leaves version 1, upgraded at
/// the next start.
fn upgrade_from_v1(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Version 1's `value ANY` has NUMERIC affinity: it would store an ensemble id such as
    // "0123" as the integer 123. Without a declared type, values stay as written.
    tx.execute_batch(&format!(
        "{}
         INSERT INTO meta_v2(key, value) SELECT key, value FROM meta;
         DROP TABLE meta;
         ALTER TABLE meta_v2 RENAME TO meta;
         {CREATE_SNAPSHOT}
         PRAGMA user_version = 2;",
        CREATE_META.replacen("meta", "meta_v2", 1)
    ))?;
    tx.commit()
}

impl SqliteLog {
    /// Opens (or creates) `data_dir/logs_<node_id>.db`.
    pub fn open(data_dir: &Path, node_id: &str) -> Result<SqliteLog, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
        Self::open_path(&data_dir.join(log_file_name(node_id)), node_id)
    }

    pub fn open_path(path: &Path, node_id: &str) -> Result<SqliteLog, StorageError> {
        Self::open_with(path, node_id, true)
    }

    fn open_with(path: &Path, node_id: &str, background: bool) -> Result<SqliteLog, StorageError> {
        let lock = FileLock::acquire(path)?;
        // An empty file is what a first start that crashed before writing anything leaves.
        let existing = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        if !existing {
            create_file(path, node_id, |_| Ok(()))?;
        }
        Self::open_locked(path, node_id, lock, background)
    }

    /// Creates `data_dir/logs_<node_id>.db` holding only `snapshot` (the log starts after
    /// it, everything up to it committed) and `ensemble_id`: a node restored from a backup.
    /// Refuses to replace an existing log.
    pub fn create_restored(
        data_dir: &Path,
        node_id: &str,
        snapshot: &Snapshot,
        ensemble_id: &str,
    ) -> Result<SqliteLog, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
        let path = data_dir.join(log_file_name(node_id));
        let lock = FileLock::acquire(&path)?;
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(StorageError::Exists { path });
        }
        let zxid = snapshot.zxid;
        create_file(&path, node_id, |tx| {
            save_snapshot(tx, snapshot)?;
            set_zxid(tx, "log_start", zxid)?;
            set_zxid(tx, "committed", zxid)?;
            set_meta(tx, "accepted_epoch", &(zxid.epoch as i64))?;
            set_meta(tx, "current_epoch", &(zxid.epoch as i64))?;
            set_meta(tx, "ensemble_id", &ensemble_id)
        })?;
        Self::open_locked(&path, node_id, lock, true)
    }

    fn open_locked(
        path: &Path,
        node_id: &str,
        lock: FileLock,
        background: bool,
    ) -> Result<SqliteLog, StorageError> {
        let sql = sql_error(path);
        // Never create over (or replace) something that is already there.
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&sql)?;
        let corrupt = |e: rusqlite::Error| StorageError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let app: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(corrupt)?;
        if app != APPLICATION_ID {
            return Err(StorageError::Foreign {
                path: path.to_path_buf(),
                found: app,
            });
        }
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(corrupt)?;
        if !(1..=SCHEMA_VERSION).contains(&version) {
            return Err(StorageError::Version {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(corrupt)?;
        if check != "ok" {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                detail: check,
            });
        }
        // CAST: version 1 stored an all-digit node id as a number.
        let owner: Option<String> = conn
            .query_row(
                "SELECT CAST(value AS TEXT) FROM meta WHERE key = 'node_id'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(corrupt)?;
        if owner.as_deref() != Some(node_id) {
            return Err(StorageError::WrongNode {
                path: path.to_path_buf(),
                found: owner.unwrap_or_default(),
                expected: node_id.to_string(),
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(&sql)?;
        if version == 1 {
            upgrade_from_v1(&mut conn).map_err(&sql)?;
        }
        // Another process holding the database locked (`sqlite3 … .backup` into it, an open
        // write transaction) is waited out, however long, rather than failing the write
        // after rusqlite's default 5 s (which stopped the node): a lock is not a failed
        // fsync. The wait shows as a storage stall in `status`, the health services and
        // the log (`storage::StorageWatch`).
        conn.busy_handler(Some(wait_out_a_lock)).map_err(&sql)?;
        conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)
            .map_err(&sql)?;
        conn.pragma_update(None, "journal_size_limit", WAL_RESTART_BYTES as i64)
            .map_err(&sql)?;
        let mut log = SqliteLog {
            conn,
            path: path.to_path_buf(),
            log_start: Zxid::ZERO,
            _housekeeper: None,
            _lock: lock,
        };
        log.log_start = log.meta_zxid("log_start")?;
        if background {
            log._housekeeper = Housekeeper::start(&log.path);
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ensemble this node's log belongs to (`None`: not recorded yet).
    pub fn ensemble_id(&self) -> Result<Option<String>, StorageError> {
        self.conn
            .query_row(
                "SELECT CAST(value AS TEXT) FROM meta WHERE key = 'ensemble_id'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records the ensemble id; on disk when it returns.
    pub fn set_ensemble_id(&mut self, id: &str) -> Result<(), StorageError> {
        let sql = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&sql)?;
        set_meta(&tx, "ensemble_id", &id)
            .and_then(|()| tx.commit())
            .map_err(&sql)
    }

    fn err(&self, source: rusqlite::Error) -> StorageError {
        StorageError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn meta_u64(&self, key: &str) -> Result<u64, StorageError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// A zxid kept in meta as `<name>_epoch` and `<name>_counter` (ZERO when absent).
    fn meta_zxid(&self, name: &str) -> Result<Zxid, StorageError> {
        Ok(Zxid::new(
            self.meta_u64(&format!("{name}_epoch"))?,
            self.meta_u64(&format!("{name}_counter"))?,
        ))
    }

    fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let corrupt = |detail: String| StorageError::Corrupt {
            path: self.path.clone(),
            detail: format!("snapshot: {detail}"),
        };
        let row = self
            .conn
            .query_row(
                "SELECT epoch, counter, data FROM snapshot WHERE id = 0",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| corrupt(e.to_string()))?;
        let Some((epoch, counter, data)) = row else {
            return Ok(None);
        };
        let snapshot = Snapshot::decode(&data).map_err(|e| corrupt(e.to_string()))?;
        let zxid = Zxid::new(epoch as u64, counter as u64);
        if snapshot.zxid != zxid {
            return Err(corrupt(format!(
                "stored as {zxid} but its content is at {}",
                snapshot.zxid
            )));
        }
        Ok(Some(snapshot))
    }
}

fn set_meta(tx: &rusqlite::Transaction<'_>, key: &str, value: &dyn ToSql) -> rusqlite::Result<()> {
    // Cached: the commit point is written on nearly every turn.
    tx.prepare_cached(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn set_zxid(tx: &rusqlite::Transaction<'_>, name: &str, z: Zxid) -> rusqlite::Result<()> {
    set_meta(tx, &format!("{name}_epoch"), &(z.epoch as i64))?;
    set_meta(tx, &format!("{name}_counter"), &(z.counter as i64))
}

fn save_snapshot(tx: &rusqlite::Transaction<'_>, snapshot: &Snapshot) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO snapshot(id, epoch, counter, data) VALUES (0, ?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET
             epoch = excluded.epoch, counter = excluded.counter, data = excluded.data",
    )?
    .execute(params![
        snapshot.zxid.epoch as i64,
        snapshot.zxid.counter as i64,
        snapshot.encode()
    ])?;
    Ok(())
}

impl LogStore for SqliteLog {
    fn load(&mut self) -> Result<Persistent, StorageError> {
        let corrupt = |detail: String| StorageError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let snapshot = self.load_snapshot()?;
        let log_start = self.meta_zxid("log_start")?;
        if log_start != Zxid::ZERO && snapshot.is_none() {
            return Err(corrupt(format!(
                "the log starts after {log_start} but there is no snapshot of what came before"
            )));
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT epoch, counter, op FROM log WHERE (epoch, counter) > (?1, ?2)
                 ORDER BY epoch, counter",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![log_start.epoch as i64, log_start.counter as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .map_err(|e| self.err(e))?;
        let mut log = Vec::new();
        for row in rows {
            let (epoch, counter, op) = row.map_err(|e| corrupt(e.to_string()))?;
            let op: Op = serde_json::from_str(&op)
                .map_err(|e| corrupt(format!("entry {epoch}:{counter}: {e}")))?;
            log.push(Entry {
                zxid: Zxid::new(epoch as u64, counter as u64),
                op,
            });
        }
        drop(stmt);
        self.log_start = log_start;
        Ok(Persistent {
            accepted_epoch: self.meta_u64("accepted_epoch")?,
            current_epoch: self.meta_u64("current_epoch")?,
            snapshot,
            log_start,
            log,
            committed: self.meta_zxid("committed")?,
        })
    }

    fn persist(&mut self, ops: &[StorageOp]) -> Result<(), StorageError> {
        if ops.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let only_commit_point = ops
            .iter()
            .all(|op| matches!(op, StorageOp::SetCommitted(_)));
        if only_commit_point {
            self.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(sql_error(&path))?;
        }
        let mut log_start = self.log_start;
        let res = (|| -> rusqlite::Result<()> {
            // IMMEDIATE: the write lock first (waiting out the background thread's short
            // transactions), so no statement ever has to upgrade a stale read.
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO log(epoch, counter, op) VALUES (?1, ?2, ?3)",
                )?;
                for op in ops {
                    match op {
                        StorageOp::SetAcceptedEpoch(e) => {
                            set_meta(&tx, "accepted_epoch", &(*e as i64))?
                        }
                        StorageOp::SetCurrentEpoch(e) => {
                            set_meta(&tx, "current_epoch", &(*e as i64))?
                        }
                        StorageOp::SetCommitted(z) => set_zxid(&tx, "committed", *z)?,
                        StorageOp::TruncateAfter(z) => {
                            tx.execute(
                                "DELETE FROM log WHERE (epoch, counter) > (?1, ?2)",
                                params![z.epoch as i64, z.counter as i64],
                            )?;
                        }
                        StorageOp::Append(entries) => {
                            for e in entries {
                                let op =
                                    serde_json::to_string(&e.op).expect("an Op always serializes");
                                insert.execute(params![
                                    e.zxid.epoch as i64,
                                    e.zxid.counter as i64,
                                    op
                                ])?;
                            }
                        }
                        StorageOp::SaveSnapshot {
                            snapshot,
                            log_start: start,
                        } => {
                            save_snapshot(&tx, snapshot)?;
                            // Never moves back (as `Persistent::apply`): the rows below
                            // may already be gone.
                            log_start = log_start.max(*start);
                            set_zxid(&tx, "log_start", log_start)?;
                        }
                    }
                }
            }
            tx.commit()
        })();
        if res.is_ok() {
            self.log_start = log_start;
        }
        if only_commit_point {
            // Back to FULL before anything else is written, even if the transaction failed.
            let restored = self.conn.pragma_update(None, "synchronous", "FULL");
            res.and(restored).map_err(sql_error(&path))
        } else {
            res.map_err(sql_error(&path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::housekeeping;
    use super::*;
    use guessgame_core::game::Game;
    use guessgame_core::{Member, Membership, RoundResult};
    use std::time::{Duration, Instant};

    fn entry(e: u64, c: u64) -> Entry {
        Entry {
            zxid: Zxid::new(e, c),
            op: Op::Guess {
                round: 1,
                client: format!("c{c}"),
                value: c as u32,
                seq: 0,
            },
        }
    }

    #[test]
    fn persisted_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
            log.persist(&[
                StorageOp::SetAcceptedEpoch(3),
                StorageOp::Append(vec![entry(1, 0), entry(1, 1), entry(2, 0), entry(2, 1)]),
                StorageOp::TruncateAfter(Zxid::new(1, 1)),
                StorageOp::Append(vec![Entry {
                    zxid: Zxid::new(3, 0),
                    op: Op::Result(RoundResult {
                        round: 1,
                        target: 5,
                        winner: Some(("c".into(), 4)),
                    }),
                }]),
                StorageOp::SetCurrentEpoch(3),
                StorageOp::SetCommitted(Zxid::new(1, 1)),
            ])
            .unwrap();
        }
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        let s = log.load().unwrap();
        assert_eq!(s.accepted_epoch, 3);
        assert_eq!(s.current_epoch, 3);
        assert_eq!(s.committed, Zxid::new(1, 1));
        let zxids: Vec<_> = s.log.iter().map(|e| e.zxid.to_string()).collect();
        assert_eq!(zxids, ["1:0", "1:1", "3:0"]);
        assert!(dir.path().join("logs_node1.db").exists());
    }

    #[test]
    fn garbage_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs_node1.db");
        let garbage = b"this is not a database, it is a shopping list\n".repeat(200);
        std::fs::write(&path, &garbage).unwrap();
        let err = SqliteLog::open(dir.path(), "node1").err().unwrap();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("corrupt"));
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn foreign_sqlite_file_and_other_nodes_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs_node1.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
                .unwrap();
        }
        let err = SqliteLog::open(dir.path(), "node1").err().unwrap();
        assert!(matches!(err, StorageError::Foreign { .. }), "{err}");
        let c = Connection::open(&path).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);

        let other = tempfile::tempdir().unwrap();
        drop(SqliteLog::open(other.path(), "node2").unwrap());
        std::fs::copy(
            other.path().join("logs_node2.db"),
            other.path().join("logs_node3.db"),
        )
        .unwrap();
        let err = SqliteLog::open(other.path(), "node3").err().unwrap();
        assert!(matches!(err, StorageError::WrongNode { .. }), "{err}");
    }

    #[test]
    fn a_commit_point_only_batch_is_written_and_full_sync_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let synchronous = |log: &SqliteLog| -> i64 {
            log.conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        {
            let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
            log.persist(&[StorageOp::Append(vec![entry(1, 0), entry(1, 1)])])
                .unwrap();
            assert_eq!(synchronous(&log), 2, "FULL for entries");
            log.persist(&[StorageOp::SetCommitted(Zxid::new(1, 1))])
                .unwrap();
            assert_eq!(
                synchronous(&log),
                2,
                "FULL again after a commit-point batch"
            );
        }
        let s = SqliteLog::open(dir.path(), "node1")
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(s.committed, Zxid::new(1, 1));
        assert_eq!(s.log.len(), 2);
    }

    fn snapshot_at(zxid: Zxid) -> Snapshot {
        Snapshot {
            zxid,
            game: Game {
                round: 1,
                target: Some(42),
                guesses: vec![("c1".into(), 7)],
                last_result: None,
                applied: zxid,
                requests: Default::default(),
                result_just_applied: false,
            },
            config_zxid: Zxid::ZERO,
            config: Membership::of_voters(vec![Member {
                id: "node1".into(),
                address: "127.0.0.1:7101".into(),
            }]),
        }
    }

    fn entries(epoch: u64, counters: std::ops::Range<u64>) -> Vec<Entry> {
        counters.map(|c| entry(epoch, c)).collect()
    }

    /// The zxids of every row in the log table, compacted or not.
    fn stored_rows(log: &SqliteLog) -> Vec<Zxid> {
        let mut stmt = log
            .conn
            .prepare("SELECT epoch, counter FROM log ORDER BY epoch, counter")
            .unwrap();
        stmt.query_map([], |r| {
            Ok(Zxid::new(
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_snapshot_and_log_start_survive_reopen_and_compacted_entries_are_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(log_file_name("node1"));
        let ops = [
            StorageOp::SetAcceptedEpoch(1),
            StorageOp::SetCurrentEpoch(1),
            StorageOp::Append(entries(1, 0..10)),
            StorageOp::SaveSnapshot {
                snapshot: snapshot_at(Zxid::new(1, 7)),
                log_start: Zxid::new(1, 4),
            },
            StorageOp::SetCommitted(Zxid::new(1, 7)),
        ];
        let mut expected = Persistent::default();
        expected.apply(&ops);
        {
            // No background thread: the compacted rows are certainly still in the table.
            let mut log = SqliteLog::open_with(&path, "node1", false).unwrap();
            log.persist(&ops).unwrap();
            assert_eq!(stored_rows(&log).len(), 10, "nothing deleted yet");
            let s = log.load().unwrap();
            assert_eq!(s, expected);
            assert_eq!(s.log.first().unwrap().zxid, Zxid::new(1, 5));
        }
        let mut log = SqliteLog::open_with(&path, "node1", false).unwrap();
        assert_eq!(stored_rows(&log).len(), 10);
        assert_eq!(log.load().unwrap(), expected);
    }

    #[test]
    fn load_matches_persistent_apply_through_snapshots_and_a_snapshot_install() {
        let dir = tempfile::tempdir().unwrap();
        let batches = vec![
            vec![StorageOp::Append(entries(1, 0..20))],
            vec![StorageOp::SaveSnapshot {
                snapshot: snapshot_at(Zxid::new(1, 15)),
                log_start: Zxid::new(1, 10),
            }],
            // An older log_start never moves the start back.
            vec![StorageOp::SaveSnapshot {
                snapshot: snapshot_at(Zxid::new(1, 16)),
                log_start: Zxid::new(1, 3),
            }],
            vec![StorageOp::Append(entries(2, 0..5))],
            // A follower installing its leader's snapshot, past its own log.
            vec![
                StorageOp::SaveSnapshot {
                    snapshot: snapshot_at(Zxid::new(3, 4)),
                    log_start: Zxid::new(3, 4),
                },
                StorageOp::TruncateAfter(Zxid::new(3, 4)),
                StorageOp::SetCommitted(Zxid::new(3, 4)),
            ],
            vec![StorageOp::Append(entries(3, 5..8))],
        ];
        let mut expected = Persistent::default();
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        for batch in &batches {
            log.persist(batch).unwrap();
            expected.apply(batch);
            assert_eq!(log.load().unwrap(), expected, "after {batch:?}");
        }
        drop(log);
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        assert_eq!(log.load().unwrap(), expected);
    }

    #[test]
    fn the_background_thread_deletes_the_compacted_rows_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let log_start = Zxid::new(1, 2_499);
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        // More rows than one deleting transaction takes.
        const { assert!(2_500 > housekeeping::DELETE_BATCH) };
        log.persist(&[
            StorageOp::Append(entries(1, 0..3_000)),
            StorageOp::SaveSnapshot {
                snapshot: snapshot_at(Zxid::new(1, 2_800)),
                log_start,
            },
        ])
        .unwrap();
        wait_until("the compacted rows are deleted", || {
            stored_rows(&log).first() > Some(&log_start)
        });
        let rows = stored_rows(&log);
        assert_eq!(rows.len(), 500, "the rows after log_start all stay");
        assert_eq!(log.load().unwrap().log.len(), 500);
    }

    /// The size experiment: `total` entries appended in batches of 100, a snapshot
    /// every `every` entries keeping `keep`; the database and WAL sizes (bytes) after each
    /// snapshot's rows are deleted.
    fn sizes_under_compaction(total: u64, every: u64, keep: u64) -> Vec<(u64, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        let path = log.path.clone();
        let size = |suffix: &str| {
            std::fs::metadata(beside(&path, suffix))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let mut sizes = Vec::new();
        for start in (0..total).step_by(100) {
            log.persist(&[StorageOp::Append(entries(1, start..start + 100))])
                .unwrap();
            let next = start + 100;
            if next % every == 0 {
                let log_start = Zxid::new(1, next - 1 - keep);
                log.persist(&[StorageOp::SaveSnapshot {
                    snapshot: snapshot_at(Zxid::new(1, next - 1)),
                    log_start,
                }])
                .unwrap();
                wait_until("the compacted rows are deleted", || {
                    stored_rows(&log).first() > Some(&log_start)
                });
                sizes.push((size(""), size("-wal")));
            }
        }
        sizes
    }

    #[test]
    fn the_wal_stays_small_under_a_writer_that_never_pauses() {
        // One entry per transaction, back to back, as the engine writes under load: passive
        // checkpoints alone copy the frames but never let the WAL start over, so without
        // the housekeeper's restarting checkpoint it grows to the backstop (64 MiB).
        let dir = tempfile::tempdir().unwrap();
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        let wal = beside(&log.path, "-wal");
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let mut largest = 0;
        let started = Instant::now();
        let mut next = 0;
        // Long enough for many housekeeping rounds, and for far more WAL than the limit.
        while started.elapsed() < Duration::from_secs(3) || next < 5_000 {
            log.persist(&[StorageOp::Append(entries(1, next..next + 1))])
                .unwrap();
            next += 1;
            largest = largest.max(wal_size());
        }
        assert!(
            largest <= 4 * housekeeping::WAL_RESTART_BYTES,
            "the WAL reached {largest} bytes over {next} transactions"
        );
        assert_eq!(log.load().unwrap().log.len() as u64, next);
    }

    #[test]
    fn steady_compaction_keeps_the_file_from_growing() {
        let sizes = sizes_under_compaction(40_000, 2_000, 1_000);
        // After the first few cycles the freed pages are reused: the file stops growing.
        let settled = sizes[4].0;
        let last = sizes.last().unwrap().0;
        assert!(
            last <= settled + settled / 4,
            "database grew from {settled} to {last} bytes: {sizes:?}"
        );
    }

    /// `cargo test -p guessgame-node --lib -- --ignored --nocapture compaction_size_experiment`
    #[test]
    #[ignore = "an experiment (about a minute): prints the file sizes"]
    fn compaction_size_experiment() {
        let sizes = sizes_under_compaction(200_000, 10_000, 5_000);
        for (i, (db, wal)) in sizes.iter().enumerate() {
            println!(
                "after {:>6} appends: database {db:>9} bytes, WAL {wal:>9} bytes",
                (i as u64 + 1) * 10_000
            );
        }
        let first = sizes[1].0;
        let last = sizes.last().unwrap().0;
        assert!(last <= first + first / 4, "{sizes:?}");
    }

    /// A file as version 1 wrote it (its schema, copied here: the code no longer has it).
    fn write_version_1_file(path: &Path, node_id: &str, log: &[Entry]) {
        let c = Connection::open(path).unwrap();
        c.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             BEGIN;
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = 1;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY NOT NULL) WITHOUT ROWID;
             CREATE TABLE log (
                 epoch   INTEGER NOT NULL,
                 counter INTEGER NOT NULL,
                 op      TEXT NOT NULL,
                 PRIMARY KEY (epoch, counter)
             ) WITHOUT ROWID;
             COMMIT;"
        ))
        .unwrap();
        for (key, value) in [
            ("accepted_epoch", "2"),
            ("current_epoch", "2"),
            ("committed_epoch", "2"),
            ("committed_counter", "0"),
        ] {
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)",
                params![key, value.parse::<i64>().unwrap()],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO meta(key, value) VALUES ('node_id', ?1)",
            params![node_id],
        )
        .unwrap();
        for e in log {
            c.execute(
                "INSERT INTO log(epoch, counter, op) VALUES (?1, ?2, ?3)",
                params![
                    e.zxid.epoch as i64,
                    e.zxid.counter as i64,
                    serde_json::to_string(&e.op).unwrap()
                ],
            )
            .unwrap();
        }
    }

    #[test]
    fn a_version_1_file_is_upgraded_in_place_and_keeps_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(log_file_name("node1"));
        let old_log: Vec<Entry> = entries(1, 0..5)
            .into_iter()
            .chain(entries(2, 0..2))
            .collect();
        write_version_1_file(&path, "node1", &old_log);

        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        let user_version: i32 = log
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(user_version, SCHEMA_VERSION);
        let expected = Persistent {
            accepted_epoch: 2,
            current_epoch: 2,
            snapshot: None,
            log_start: Zxid::ZERO,
            log: old_log,
            committed: Zxid::new(2, 0),
        };
        assert_eq!(log.load().unwrap(), expected);
        // Version 1's meta turned all-digit text into numbers; the upgraded one does not.
        log.set_ensemble_id("0123").unwrap();
        let snapshot = StorageOp::SaveSnapshot {
            snapshot: snapshot_at(Zxid::new(1, 4)),
            log_start: Zxid::new(1, 2),
        };
        log.persist(std::slice::from_ref(&snapshot)).unwrap();
        drop(log);

        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        let mut after = expected;
        after.apply(&[snapshot]);
        assert_eq!(log.load().unwrap(), after);
        assert_eq!(log.ensemble_id().unwrap().as_deref(), Some("0123"));
    }

    #[test]
    fn a_version_1_file_of_a_node_with_an_all_digit_id_opens() {
        let dir = tempfile::tempdir().unwrap();
        write_version_1_file(&dir.path().join(log_file_name("7")), "7", &entries(1, 0..2));
        let mut log = SqliteLog::open(dir.path(), "7").unwrap();
        assert_eq!(log.load().unwrap().log, entries(1, 0..2));
    }

    #[test]
    fn a_newer_schema_version_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(log_file_name("node1"));
        drop(SqliteLog::open(dir.path(), "node1").unwrap());
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = SqliteLog::open(dir.path(), "node1").err().unwrap();
        assert!(matches!(err, StorageError::Version { found, .. } if found == SCHEMA_VERSION + 1));
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_second_open_of_a_log_is_refused_while_the_first_is_alive() {
        let dir = tempfile::tempdir().unwrap();
        let first = SqliteLog::open(dir.path(), "node1").unwrap();
        let err = SqliteLog::open(dir.path(), "node1").err().unwrap();
        match &err {
            StorageError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other}"),
        }
        let message = err.to_string();
        assert!(message.contains("another guessgame-node"), "{message}");
        assert!(message.contains("stop it first"), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        // Restoring over a log in use is refused the same way.
        let err =
            SqliteLog::create_restored(dir.path(), "node1", &snapshot_at(Zxid::new(1, 0)), "ens")
                .err()
                .unwrap();
        assert!(matches!(err, StorageError::Locked { .. }), "{err}");
        drop(first);
        SqliteLog::open(dir.path(), "node1").unwrap();
    }

    #[test]
    fn create_restored_refuses_an_existing_log_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
            log.persist(&[StorageOp::Append(entries(1, 0..3))]).unwrap();
        }
        let err =
            SqliteLog::create_restored(dir.path(), "node1", &snapshot_at(Zxid::new(4, 9)), "ens")
                .err()
                .unwrap();
        assert!(matches!(err, StorageError::Exists { .. }), "{err}");
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        assert_eq!(log.load().unwrap().log, entries(1, 0..3));
        assert_eq!(log.ensemble_id().unwrap(), None);
    }

    #[test]
    fn create_restored_writes_a_log_holding_exactly_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = snapshot_at(Zxid::new(4, 9));
        let expected = Persistent {
            accepted_epoch: 4,
            current_epoch: 4,
            snapshot: Some(snapshot.clone()),
            log_start: Zxid::new(4, 9),
            log: Vec::new(),
            committed: Zxid::new(4, 9),
        };
        {
            let mut log =
                SqliteLog::create_restored(dir.path(), "node1", &snapshot, "ens-1").unwrap();
            assert_eq!(log.load().unwrap(), expected);
            assert_eq!(log.ensemble_id().unwrap().as_deref(), Some("ens-1"));
        }
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        assert_eq!(log.load().unwrap(), expected);
        assert_eq!(log.ensemble_id().unwrap().as_deref(), Some("ens-1"));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".new")),
            "no temporary left: {names:?}"
        );
    }

    #[test]
    fn the_ensemble_id_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
            assert_eq!(log.ensemble_id().unwrap(), None);
            log.set_ensemble_id("a").unwrap();
            log.set_ensemble_id("b").unwrap();
        }
        let log = SqliteLog::open(dir.path(), "node1").unwrap();
        assert_eq!(log.ensemble_id().unwrap().as_deref(), Some("b"));
    }

    #[test]
    fn a_creation_interrupted_before_the_rename_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(log_file_name("node1"));
        std::fs::write(beside(&path, ".new"), b"half a database").unwrap();
        std::fs::write(&path, b"").unwrap();
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        log.persist(&[StorageOp::Append(entries(1, 0..1))]).unwrap();
        assert_eq!(log.load().unwrap().log, entries(1, 0..1));
        assert!(!beside(&path, ".new").exists());
    }

    #[test]
    fn a_journal_left_without_its_database_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(log_file_name("node1"));
        // A real WAL, as a crashed node leaves it, with the database moved away.
        {
            let c = Connection::open(dir.path().join("elsewhere.db")).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t(x); INSERT INTO t VALUES (1);",
            )
            .unwrap();
            std::fs::copy(dir.path().join("elsewhere.db-wal"), beside(&path, "-wal")).unwrap();
        }
        let wal = std::fs::read(beside(&path, "-wal")).unwrap();
        let err = SqliteLog::open(dir.path(), "node1").err().unwrap();
        assert!(matches!(err, StorageError::OrphanJournal { .. }), "{err}");
        assert!(!path.exists());
        assert_eq!(std::fs::read(beside(&path, "-wal")).unwrap(), wal);
    }

    /// A log with a snapshot, damaged by `damage` (SQL) behind the store's back, then loaded.
    fn load_with_a_damaged_snapshot(damage: &str) -> StorageError {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
            log.persist(&[
                StorageOp::Append(entries(1, 0..3)),
                StorageOp::SaveSnapshot {
                    snapshot: snapshot_at(Zxid::new(1, 2)),
                    log_start: Zxid::new(1, 1),
                },
            ])
            .unwrap();
        }
        Connection::open(dir.path().join(log_file_name("node1")))
            .unwrap()
            .execute_batch(damage)
            .unwrap();
        SqliteLog::open(dir.path(), "node1")
            .unwrap()
            .load()
            .err()
            .unwrap()
    }

    #[test]
    fn an_undecodable_snapshot_is_refused_as_corrupt_with_the_safe_recovery() {
        let err = load_with_a_damaged_snapshot("UPDATE snapshot SET data = X'7B227A786964223A'");
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("snapshot"), "{message}");
        assert!(
            message.contains("guessgame reconfig remove node1"),
            "{message}"
        );
        assert!(message.contains("--node-id node1"), "{message}");
        assert!(message.contains("--join"), "{message}");
        assert!(!message.contains("restore it from a backup"), "{message}");
        assert!(!message.contains("remove it to resync"), "{message}");
    }

    #[test]
    fn a_log_start_without_a_snapshot_is_refused_as_corrupt() {
        let err = load_with_a_damaged_snapshot("DELETE FROM snapshot");
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_large_compaction_gives_most_of_the_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
        let path = log.path.clone();
        let size = || std::fs::metadata(&path).unwrap().len();
        // About 30 MB of entries: well past the free space kept for reuse.
        let client = "c".repeat(500);
        for start in (0..60_000u64).step_by(1_000) {
            let batch = (start..start + 1_000)
                .map(|c| Entry {
                    zxid: Zxid::new(1, c),
                    op: Op::Guess {
                        round: 1,
                        client: client.clone(),
                        value: 1,
                        seq: 0,
                    },
                })
                .collect();
            log.persist(&[StorageOp::Append(batch)]).unwrap();
        }
        wait_until("the entries are checkpointed into the file", || {
            size() > 30_000_000
        });
        let full = size();
        log.persist(&[StorageOp::SaveSnapshot {
            snapshot: snapshot_at(Zxid::new(1, 59_999)),
            log_start: Zxid::new(1, 58_999),
        }])
        .unwrap();
        let page_size: i64 = log
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        // What stays: the retained entries (a sixtieth) and the free pages kept for reuse.
        let kept_free = (housekeeping::KEEP_FREE_PAGES * page_size) as u64;
        wait_until("the file shrinks", || size() < full / 10 + kept_free);
        assert_eq!(log.load().unwrap().log.len(), 1_000);
    }

    /// Run by `a_log_held_by_another_process_is_refused_until_it_dies` in a child process.
    #[test]
    #[ignore = "a helper: holds a log open in a child process"]
    fn hold_a_log_in_this_process() {
        let Some(dir) = std::env::var_os("GUESSGAME_TEST_HOLD_DIR") else {
            return;
        };
        let _log = SqliteLog::open(Path::new(&dir), "node1").unwrap();
        println!("holding");
        // Until the parent kills this process.
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn a_log_held_by_another_process_is_refused_until_it_dies() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "storage::sqlite::tests::hold_a_log_in_this_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GUESSGAME_TEST_HOLD_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap().contains("holding")),
            "the child never opened the log"
        );
        let err = SqliteLog::open(dir.path(), "node1").err().unwrap();
        let result = match err {
            StorageError::Locked { pid, .. } => pid,
            other => panic!("expected Locked, got {other}"),
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(result, Some(child.id()));
        SqliteLog::open(dir.path(), "node1").unwrap();
    }
}
