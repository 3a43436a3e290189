//! Helpers for the multi-process tests: a started local ensemble, the CLI, the SQLite logs.

pub mod chaos;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

pub use guessgame_client::cluster::{find_binary, LocalCluster};
use guessgame_client::Config;

/// Ensembles are heavy for a 2-core machine: tests that start one take turns.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes sure `guessgame-node` and `guessgame` are built and current (same profile as the
/// tests): `cargo test` builds only this package's targets, not the other packages' binaries.
/// Set `GUESSGAME_SKIP_BUILD=1` to use whatever binaries are found.
pub fn ensure_binaries() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("GUESSGAME_SKIP_BUILD").is_some() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--bins",
            "-p",
            "guessgame-node",
            "-p",
            "guessgame-client",
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A started `n`-node ensemble with an elected leader. Its directory (config, node logs,
/// SQLite files) is removed afterwards unless `$GUESSGAME_TEST_KEEP` names a directory to
/// keep it in (for a failing test's logs).
pub fn started(
    rt: &tokio::runtime::Runtime,
    n: usize,
    tweak: impl FnOnce(&mut Config),
) -> (LocalCluster, String) {
    ensure_binaries();
    let keep = std::env::var_os("GUESSGAME_TEST_KEEP").map(|d| {
        let d = std::path::PathBuf::from(d);
        std::fs::create_dir_all(&d).expect("GUESSGAME_TEST_KEEP directory");
        tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir_in(&d)
            .expect("cluster dir")
            .keep()
    });
    let mut c = LocalCluster::new(n, keep, tweak).expect("cluster dir");
    c.start_all().expect("start nodes");
    let leader = rt
        .block_on(c.wait_for_leader(Duration::from_secs(20)))
        .expect("leader elected");
    (c, leader)
}

/// Runs the `guessgame` CLI against `cluster`'s config.
pub fn cli(cluster: &LocalCluster, args: &[&str]) -> Output {
    ensure_binaries();
    Command::new(find_binary("guessgame").expect("guessgame binary"))
        .arg("--config")
        .arg(&cluster.config_path)
        .args(args)
        .env_remove("GUESSGAME_CONFIG")
        .output()
        .expect("run guessgame")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the CLI with `--output json`, asserts success, parses stdout.
pub fn cli_json(cluster: &LocalCluster, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let o = cli(cluster, &all);
    assert!(
        o.status.success(),
        "guessgame {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", stdout(&o)))
}

/// One node's SQLite log as `(zxid text, op json)` rows after its log start, its committed
/// zxid, and the snapshot it holds (entries at or below `log_start` were compacted into it;
/// rows the background thread has not deleted yet are hidden, as `load` hides them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbLog {
    pub entries: Vec<(String, String)>,
    pub committed: String,
    pub log_start: (u64, u64),
    pub snapshot: Option<guessgame_core::Snapshot>,
}

/// A zxid as the `(epoch, counter)` pair the helpers compare.
pub fn pair(z: guessgame_core::Zxid) -> (u64, u64) {
    (z.epoch, z.counter)
}

impl DbLog {
    /// The commit point this file vouches for: the stored one, or its snapshot's zxid when
    /// that is higher (a snapshot only ever holds committed state; the stored commit point
    /// is a hint that may lag).
    pub fn committed_zxid(&self) -> (u64, u64) {
        parse_zxid(&self.committed).max(self.snapshot_zxid())
    }

    /// The zxid of the snapshot held ((0, 0): none).
    pub fn snapshot_zxid(&self) -> (u64, u64) {
        self.snapshot.as_ref().map_or((0, 0), |s| pair(s.zxid))
    }

    /// The committed entries held (after the log start).
    pub fn committed_entries(&self) -> Vec<(String, String)> {
        let c = self.committed_zxid();
        self.entries
            .iter()
            .filter(|(z, _)| parse_zxid(z) <= c)
            .cloned()
            .collect()
    }

    /// The committed entries held, decoded.
    pub fn committed_log(&self) -> Vec<guessgame_core::Entry> {
        decode_entries(&self.committed_entries())
    }

    /// The game as it was at `zxid`, rebuilt from this file alone: from its snapshot (or the
    /// empty game while nothing was compacted) through the committed entries up to `zxid`.
    /// `None` when the file does not cover `zxid` (compacted past it, or not committed).
    pub fn game_at(&self, zxid: (u64, u64)) -> Option<guessgame_core::game::Game> {
        if zxid > self.committed_zxid() {
            return None;
        }
        let (mut game, from) = match &self.snapshot {
            Some(s) if pair(s.zxid) <= zxid => (s.game.clone(), pair(s.zxid)),
            _ if self.log_start == (0, 0) => (Default::default(), (0, 0)),
            _ => return None,
        };
        for e in self.committed_log() {
            if pair(e.zxid) > from && pair(e.zxid) <= zxid {
                game.apply(&e);
            }
        }
        Some(game)
    }
}

/// `(zxid text, op json)` rows as entries (panics on a row that does not decode).
pub fn decode_entries(rows: &[(String, String)]) -> Vec<guessgame_core::Entry> {
    rows.iter()
        .map(|(z, op)| {
            let (epoch, counter) = parse_zxid(z);
            guessgame_core::Entry {
                zxid: guessgame_core::Zxid::new(epoch, counter),
                op: serde_json::from_str(op)
                    .unwrap_or_else(|e| panic!("entry {z} does not decode ({e}): {op}")),
            }
        })
        .collect()
}

pub fn parse_zxid(s: &str) -> (u64, u64) {
    let (e, c) = s.split_once(':').expect("epoch:counter");
    (e.parse().expect("epoch"), c.parse().expect("counter"))
}

pub fn read_db(path: &Path) -> DbLog {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let meta = |k: &str| -> i64 {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .unwrap_or(0)
    };
    let log_start = (
        meta("log_start_epoch") as u64,
        meta("log_start_counter") as u64,
    );
    let mut stmt = conn
        .prepare("SELECT epoch, counter, op FROM log ORDER BY epoch, counter")
        .unwrap();
    let entries = stmt
        .query_map([], |r| {
            Ok((
                (r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64),
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .into_iter()
        .filter(|(z, _)| *z > log_start)
        .map(|((e, c), op)| (format!("{e}:{c}"), op))
        .collect();
    drop(stmt);
    // A version-1 file has no snapshot table.
    let snapshot = conn
        .query_row("SELECT data FROM snapshot WHERE id = 0", [], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .ok()
        .map(|b| guessgame_core::Snapshot::decode(&b).expect("a readable snapshot"));
    DbLog {
        entries,
        committed: format!("{}:{}", meta("committed_epoch"), meta("committed_counter")),
        log_start,
        snapshot,
    }
}

/// What the nodes' files hold together (see [`committed_history`]).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every committed entry some node still holds, once each, in zxid order.
    pub entries: Vec<(String, String)>,
    /// The node (index into the files given) whose log starts earliest: its snapshot is where
    /// a replay of `entries` starts.
    pub base: usize,
    /// `entries` miss nothing from the base's snapshot up to here (a node whose log starts
    /// after another's commit point leaves a gap behind that point).
    pub complete_through: (u64, u64),
}

/// Compares the nodes' files where they overlap: every two nodes hold the same committed
/// entries over the zxid range both hold, and every snapshot's game equals the game the
/// others' files give at its zxid. Returns what they hold together, or what disagrees.
pub fn committed_history(dbs: &[(String, DbLog)]) -> Result<History, Vec<String>> {
    let mut v = Vec::new();
    let held: Vec<Vec<(String, String)>> = dbs.iter().map(|(_, d)| d.committed_entries()).collect();
    for (a, (id_a, da)) in dbs.iter().enumerate() {
        for (b, (id_b, db)) in dbs.iter().enumerate().skip(a + 1) {
            let from = da.log_start.max(db.log_start);
            let to = da.committed_zxid().min(db.committed_zxid());
            let within = |l: &[(String, String)]| -> Vec<(String, String)> {
                l.iter()
                    .filter(|(z, _)| parse_zxid(z) > from && parse_zxid(z) <= to)
                    .cloned()
                    .collect()
            };
            let (ea, eb) = (within(&held[a]), within(&held[b]));
            if ea != eb {
                let same = ea.iter().zip(&eb).take_while(|(x, y)| x == y).count();
                v.push(format!(
                    "{id_a} and {id_b} hold different committed entries after {}:{} up to {}:{} \
                     ({} and {} entries, the same for the first {same}: {:?} vs {:?})",
                    from.0,
                    from.1,
                    to.0,
                    to.1,
                    ea.len(),
                    eb.len(),
                    ea.get(same),
                    eb.get(same)
                ));
            }
        }
    }
    for (id_a, da) in dbs {
        let Some(s) = &da.snapshot else { continue };
        for (id_b, db) in dbs.iter().filter(|(id, _)| id != id_a) {
            if let Some(game) = db.game_at(pair(s.zxid)) {
                if game != s.game {
                    v.push(format!(
                        "{id_a}'s snapshot at {} holds {:?}, but {id_b}'s file gives {game:?} there",
                        s.zxid, s.game
                    ));
                }
            }
        }
    }
    let mut all = std::collections::BTreeMap::new();
    for l in &held {
        for (z, op) in l {
            all.entry(parse_zxid(z))
                .or_insert_with(|| (z.clone(), op.clone()));
        }
    }
    let base = (0..dbs.len())
        .min_by_key(|&k| {
            (
                dbs[k].1.log_start,
                std::cmp::Reverse(dbs[k].1.committed_zxid()),
            )
        })
        .unwrap_or(0);
    let mut order: Vec<&DbLog> = dbs.iter().map(|(_, d)| d).collect();
    order.sort_by_key(|d| d.log_start);
    let mut complete_through = dbs.get(base).map_or((0, 0), |(_, d)| d.committed_zxid());
    for d in order {
        if d.log_start <= complete_through {
            complete_through = complete_through.max(d.committed_zxid());
        }
    }
    if !v.is_empty() {
        return Err(v);
    }
    Ok(History {
        entries: all.into_values().collect(),
        base,
        complete_through,
    })
}

/// Reads every node's file, asserts [`committed_history`] finds them in agreement, and
/// returns the committed entries they hold together (with nothing compacted: the longest
/// committed log).
pub fn assert_committed_prefixes_agree(cluster: &LocalCluster) -> Vec<(String, String)> {
    let dbs: Vec<(String, DbLog)> = cluster
        .ids()
        .iter()
        .map(|id| (id.clone(), read_db(&cluster.db_path(id))))
        .collect();
    match committed_history(&dbs) {
        Ok(h) => h.entries,
        Err(v) => panic!("the nodes' committed logs disagree:\n{}", v.join("\n")),
    }
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
