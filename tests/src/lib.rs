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

/// A started `n`-node ensemble with an elected leader.
pub fn started(
    rt: &tokio::runtime::Runtime,
    n: usize,
    tweak: impl FnOnce(&mut Config),
) -> (LocalCluster, String) {
    ensure_binaries();
    let mut c = LocalCluster::new(n, None, tweak).expect("cluster dir");
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

/// One node's SQLite log as `(zxid text, op json)` rows, and its committed zxid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbLog {
    pub entries: Vec<(String, String)>,
    pub committed: String,
}

impl DbLog {
    /// The committed prefix.
    pub fn committed_entries(&self) -> Vec<(String, String)> {
        let c = parse_zxid(&self.committed);
        self.entries
            .iter()
            .filter(|(z, _)| parse_zxid(z) <= c)
            .cloned()
            .collect()
    }
}

pub fn parse_zxid(s: &str) -> (u64, u64) {
    let (e, c) = s.split_once(':').expect("epoch:counter");
    (e.parse().expect("epoch"), c.parse().expect("counter"))
}

pub fn read_db(path: &Path) -> DbLog {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut stmt = conn
        .prepare("SELECT epoch, counter, op FROM log ORDER BY epoch, counter")
        .unwrap();
    let entries = stmt
        .query_map([], |r| {
            Ok((
                format!("{}:{}", r.get::<_, i64>(0)?, r.get::<_, i64>(1)?),
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let meta = |k: &str| -> i64 {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .unwrap_or(0)
    };
    DbLog {
        entries,
        committed: format!("{}:{}", meta("committed_epoch"), meta("committed_counter")),
    }
}

/// Asserts that the committed prefixes of all nodes' logs agree (one is a prefix of the
/// other) and returns the longest.
pub fn assert_committed_prefixes_agree(cluster: &LocalCluster) -> Vec<(String, String)> {
    let logs: Vec<(String, Vec<(String, String)>)> = cluster
        .ids()
        .iter()
        .map(|id| {
            (
                id.clone(),
                read_db(&cluster.db_path(id)).committed_entries(),
            )
        })
        .collect();
    let longest = logs
        .iter()
        .map(|(_, l)| l.clone())
        .max_by_key(|l| l.len())
        .unwrap_or_default();
    for (id, l) in &logs {
        assert_eq!(
            &longest[..l.len()],
            &l[..],
            "{id}'s committed log diverges from the longest"
        );
    }
    longest
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
