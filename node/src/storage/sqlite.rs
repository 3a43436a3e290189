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
//! A file that is not ours (another application, another node, a newer schema) or that is
//! damaged is refused with a clear error and left untouched.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use thiserror::Error;

use super::checkpoint::{Checkpointer, BACKSTOP_PAGES};
use super::LogStore;
use guessgame_core::{Entry, Op, Persistent, StorageOp, Zxid};

/// `PRAGMA application_id` of a guessgame log ("GGL1").
pub const APPLICATION_ID: i32 = 0x4747_4C31;
pub const SCHEMA_VERSION: i32 = 1;

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
    #[error("{path}: schema version {found} is not supported (this build reads version {SCHEMA_VERSION})")]
    Version { path: PathBuf, found: i32 },
    #[error("{path}: the database is corrupt ({detail}); refusing to start — restore it from a backup or remove it to resync this node from the ensemble")]
    Corrupt { path: PathBuf, detail: String },
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

pub struct SqliteLog {
    conn: Connection,
    path: PathBuf,
    /// Checkpoints the WAL off the engine thread (`None` for a database it could not open:
    /// SQLite's automatic checkpoints then do it, as before).
    _checkpointer: Option<Checkpointer>,
}

/// The file name a node's log has in its data directory.
pub fn log_file_name(node_id: &str) -> String {
    format!("logs_{node_id}.db")
}

impl SqliteLog {
    /// Opens (or creates) `data_dir/logs_<node_id>.db`.
    pub fn open(data_dir: &Path, node_id: &str) -> Result<SqliteLog, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StorageError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(log_file_name(node_id));
        Self::open_path(&path, node_id)
    }

    pub fn open_path(path: &Path, node_id: &str) -> Result<SqliteLog, StorageError> {
        let path = path.to_path_buf();
        let existing = std::fs::metadata(&path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        let sql = |source| StorageError::Sqlite {
            path: path.clone(),
            source,
        };
        let flags = if existing {
            // Never create over (or replace) something that is already there.
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(&path, flags).map_err(sql)?;
        let corrupt = |e: rusqlite::Error| StorageError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        };
        if existing {
            let app: i32 = conn
                .query_row("PRAGMA application_id", [], |r| r.get(0))
                .map_err(corrupt)?;
            if app != APPLICATION_ID {
                return Err(StorageError::Foreign { path, found: app });
            }
            let version: i32 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(corrupt)?;
            if version != SCHEMA_VERSION {
                return Err(StorageError::Version {
                    path,
                    found: version,
                });
            }
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(corrupt)?;
            if check != "ok" {
                return Err(StorageError::Corrupt {
                    path,
                    detail: check,
                });
            }
            let owner: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(corrupt)?;
            if owner.as_deref() != Some(node_id) {
                return Err(StorageError::WrongNode {
                    path,
                    found: owner.unwrap_or_default(),
                    expected: node_id.to_string(),
                });
            }
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        if !existing {
            conn.execute_batch(&format!(
                "BEGIN;
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {SCHEMA_VERSION};
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY NOT NULL) WITHOUT ROWID;
                 CREATE TABLE log (
                     epoch   INTEGER NOT NULL,
                     counter INTEGER NOT NULL,
                     op      TEXT NOT NULL,   -- JSON of the game operation
                     PRIMARY KEY (epoch, counter)
                 ) WITHOUT ROWID;
                 COMMIT;"
            ))
            .map_err(sql)?;
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('node_id', ?1)",
                params![node_id],
            )
            .map_err(sql)?;
        }
        conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)
            .map_err(sql)?;
        let checkpointer = Checkpointer::start(&path);
        Ok(SqliteLog {
            conn,
            path,
            _checkpointer: checkpointer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
}

fn set_meta(tx: &rusqlite::Transaction<'_>, key: &str, value: i64) -> rusqlite::Result<()> {
    // Cached: the commit point is written on nearly every turn.
    tx.prepare_cached(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

impl LogStore for SqliteLog {
    fn load(&mut self) -> Result<Persistent, StorageError> {
        let corrupt = |detail: String| StorageError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT epoch, counter, op FROM log ORDER BY epoch, counter")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
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
        let committed = Zxid::new(
            self.meta_u64("committed_epoch")?,
            self.meta_u64("committed_counter")?,
        );
        Ok(Persistent {
            accepted_epoch: self.meta_u64("accepted_epoch")?,
            current_epoch: self.meta_u64("current_epoch")?,
            log,
            committed,
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
                .map_err(|source| StorageError::Sqlite {
                    path: path.clone(),
                    source,
                })?;
        }
        let res = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO log(epoch, counter, op) VALUES (?1, ?2, ?3)",
                )?;
                for op in ops {
                    match op {
                        StorageOp::SetAcceptedEpoch(e) => {
                            set_meta(&tx, "accepted_epoch", *e as i64)?
                        }
                        StorageOp::SetCurrentEpoch(e) => set_meta(&tx, "current_epoch", *e as i64)?,
                        StorageOp::SetCommitted(z) => {
                            set_meta(&tx, "committed_epoch", z.epoch as i64)?;
                            set_meta(&tx, "committed_counter", z.counter as i64)?;
                        }
                        StorageOp::TruncateAfter(z) => {
                            tx.execute(
                                "DELETE FROM log WHERE epoch > ?1 OR (epoch = ?1 AND counter > ?2)",
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
                    }
                }
            }
            tx.commit()
        })();
        if only_commit_point {
            // Back to FULL before anything else is written, even if the transaction failed.
            let restored = self.conn.pragma_update(None, "synchronous", "FULL");
            res.and(restored)
                .map_err(|source| StorageError::Sqlite { path, source })
        } else {
            res.map_err(|source| StorageError::Sqlite { path, source })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guessgame_core::RoundResult;

    fn entry(e: u64, c: u64) -> Entry {
        Entry {
            zxid: Zxid::new(e, c),
            op: Op::Guess {
                round: 1,
                client: format!("c{c}"),
                value: c as u32,
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
}
