//! Backup and restore with real processes: `guessgame snapshot save` from a running ensemble
//! under writes, `snapshot status`, `guessgame-node snapshot restore` into a NEW ensemble
//! (same member names, other ports but one) that serves the same game, and the two
//! ensembles never talking: an old node dialling a new node's address is refused, an old
//! node started at a new node's address refuses the new ones, and no entry crosses over.
//! Damaged, truncated and foreign files are refused by `status` and `restore`, and `restore`
//! never replaces a data file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guessgame_client::Client;
use guessgame_tests::*;

/// Acknowledged moves: (zxid, client id).
type Acked = Arc<Mutex<Vec<((u64, u64), String)>>>;

/// A closed-loop player on `endpoints`: every fifth move a `write`, else a guess under a
/// fresh client id `<prefix>-<k>`; each acknowledgement is recorded.
async fn play(
    endpoints: Vec<(String, String)>,
    prefix: String,
    stop: Arc<AtomicBool>,
    acked: Acked,
) {
    let mut client = Client::new(&endpoints, Duration::from_secs(3)).unwrap();
    let mut k = 0u64;
    while !stop.load(Ordering::SeqCst) {
        k += 1;
        let r = if k % 5 == 1 {
            let who = format!("{prefix}-w");
            client
                .write(&who, (k % 101) as u32)
                .await
                .map(|w| (w.zxid, who))
        } else {
            let who = format!("{prefix}-{k}");
            client
                .guess(&who, (k * 7 % 101) as u32)
                .await
                .map(|g| (g.zxid, who))
        };
        match r {
            Ok((zxid, who)) => acked.lock().unwrap().push((parse_zxid(&zxid), who)),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn wait_for_acks(acked: &Acked, more_than: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() <= more_than {
        assert!(Instant::now() < deadline, "{what}: no writes acknowledged");
        sleep_ms(20);
    }
}

fn node_bin() -> PathBuf {
    ensure_binaries();
    find_binary("guessgame-node").expect("guessgame-node binary")
}

/// `guessgame-node snapshot restore FILE --node-id ID --data-dir DIR ARGS...`.
fn restore(file: &Path, id: &str, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(node_bin())
        .args(["snapshot", "restore"])
        .arg(file)
        .args(["--node-id", id, "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("GUESSGAME_CONFIG")
        .env_remove("GUESSGAME_DATA_DIR")
        .output()
        .expect("run guessgame-node")
}

fn json(o: &Output, what: &str) -> serde_json::Value {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        stdout(o),
        stderr(o)
    );
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("{what}: bad JSON ({e}): {}", stdout(o)))
}

/// The snapshot inside a backup file (its fourth part, after three lines).
fn snapshot_in(file: &Path) -> guessgame_core::Snapshot {
    let bytes = std::fs::read(file).unwrap();
    let mut at = 0;
    for _ in 0..3 {
        at += bytes[at..].iter().position(|b| *b == b'\n').unwrap() + 1;
    }
    guessgame_core::Snapshot::decode(&bytes[at..]).unwrap()
}

fn ensemble_id(db: &Path) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT CAST(value AS TEXT) FROM meta WHERE key = 'ensemble_id'",
        [],
        |r| r.get(0),
    )
    .ok()
}

/// Client ids of the moves in a node's log (after its log start).
fn clients_in(db: &Path) -> Vec<String> {
    decode_entries(&read_db(db).entries)
        .into_iter()
        .filter_map(|e| match e.op {
            guessgame_core::Op::Guess { client, .. }
            | guessgame_core::Op::Target { client, .. } => Some(client),
            _ => None,
        })
        .collect()
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Lines of a node's log that say it refused calls from `peer`.
fn refusals_of(log: &str, peer: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("refusing peer calls") && l.contains(&format!("peer={peer}")))
        .count()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nothing crossed over: the new logs hold only the new ensemble's moves after the snapshot
/// (at `z`), the old logs none of them, and the old ones keep their ensemble id.
fn no_move_crossed_over(old: &LocalCluster, new: &LocalCluster, z: (u64, u64), old_id: &str) {
    for id in ["node1", "node2", "node3"] {
        let clients = clients_in(&new.db_path(id));
        assert!(
            clients
                .iter()
                .all(|c| c.starts_with("new-") || c == "after-old3"),
            "new {id} holds old moves: {clients:?}"
        );
        assert_eq!(
            read_db(&new.db_path(id)).snapshot.map(|s| pair(s.zxid)),
            Some(z)
        );
        let clients = clients_in(&old.db_path(id));
        assert!(
            !clients
                .iter()
                .any(|c| c.starts_with("new-") || c == "after-old3"),
            "old {id} holds new moves"
        );
        assert_eq!(
            ensemble_id(&old.db_path(id)),
            Some(old_id.to_string()),
            "old {id}"
        );
    }
}

#[test]
fn a_backup_under_writes_restores_into_a_new_ensemble_that_never_talks_to_the_old_one() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut old, _) = started(&rt, 3, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("game.snap");

    // 1. Save while two players write.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let players: Vec<_> = (0..2)
        .map(|p| {
            rt.spawn(play(
                old.endpoints(),
                format!("old{p}"),
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    wait_for_acks(&acked, 20, "before the save");
    let before = acked.lock().unwrap().iter().map(|(z, _)| *z).max().unwrap();
    let saved = cli_json(&old, &["snapshot", "save", file.to_str().unwrap()]);
    let during = acked.lock().unwrap().len();
    wait_for_acks(&acked, during + 10, "after the save");
    let z = parse_zxid(saved["zxid"].as_str().unwrap());
    assert!(
        z >= before,
        "the backup ({z:?}) misses writes acknowledged before it was asked for (up to {before:?})"
    );
    assert_eq!(
        saved["bytes"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );
    let ids: Vec<&str> = saved["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node1", "node2", "node3"]);

    // 2. status reads the same, and the ensemble it names is the old one.
    let status = cli_json(&old, &["snapshot", "status", file.to_str().unwrap()]);
    assert_eq!(status, saved);
    let old_id = ensemble_id(&old.db_path("node1")).expect("the old ensemble has an id");
    for id in old.ids() {
        assert_eq!(
            ensemble_id(&old.db_path(&id)).as_ref(),
            Some(&old_id),
            "{id}"
        );
    }
    assert_eq!(status["ensemble_id"].as_str(), Some(old_id.as_str()));
    let text = stdout(&cli(&old, &["snapshot", "status", file.to_str().unwrap()]));
    assert!(
        text.contains("checksum ok")
            && text.contains(&format!("zxid:     {}", saved["zxid"].as_str().unwrap())),
        "{text}"
    );

    // The snapshot is exactly the committed game at its zxid, as the leader's log replays it.
    let snapshot = snapshot_in(&file);
    assert_eq!(pair(snapshot.zxid), z);
    let producer = saved["node"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let replayed = loop {
        if let Some(g) = read_db(&old.db_path(&producer)).game_at(z) {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "{producer}'s log never covered {z:?}"
        );
        sleep_ms(50);
    };
    assert_eq!(snapshot.game, replayed);

    // 3. The new ensemble: the same member names; node2 takes over the old node2's address
    //    (that node is stopped), the others get new ports.
    stop.store(true, Ordering::SeqCst);
    for p in players {
        rt.block_on(p).unwrap();
    }
    old.stop("node2").unwrap();
    let old_node2 = old.address("node2");
    let mut new = LocalCluster::new(3, None, |c| c.nodes[1].address = old_node2.clone()).unwrap();
    let members: Vec<String> = new
        .endpoints()
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect();
    let members = members.join(",");
    let data = new.data_dir();
    let r1 = json(
        &restore(
            &file,
            "node1",
            &data,
            &["--members", &members, "--output", "json"],
        ),
        "restore node1",
    );
    assert_eq!(r1["generated"], true);
    let new_id = r1["ensemble_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    for id in ["node2", "node3"] {
        let r = json(
            &restore(
                &file,
                id,
                &data,
                &[
                    "--members",
                    &members,
                    "--ensemble-id",
                    &new_id,
                    "--output",
                    "json",
                ],
            ),
            id,
        );
        assert_eq!(r["zxid"], saved["zxid"]);
    }
    // A restore never replaces a data file.
    let before_bytes = std::fs::read(new.db_path("node1")).unwrap();
    let again = restore(
        &file,
        "node1",
        &data,
        &["--members", &members, "--ensemble-id", &new_id],
    );
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(new.db_path("node1")).unwrap(), before_bytes);

    new.start_all().unwrap();
    rt.block_on(new.wait_for_leader(Duration::from_secs(20)))
        .expect("the new ensemble elects");
    let read = cli_json(&new, &["read", "--linearizable"]);
    assert_eq!(read["round"].as_u64(), Some(snapshot.game.round));
    assert_eq!(read["target"].as_u64(), snapshot.game.target.map(u64::from));
    assert_eq!(
        read["guesses"].as_u64(),
        Some(snapshot.game.guesses.len() as u64)
    );
    assert_eq!(read["last_result"], status["last_result"]);
    for id in new.ids() {
        assert_eq!(ensemble_id(&new.db_path(&id)), Some(new_id.clone()), "{id}");
    }

    // 4. Both ensembles take writes at once. The old leader keeps dialling node2's address,
    //    where the new node2 now listens: refused, and said once per peer.
    let acked_old: Acked = Arc::default();
    let acked_new: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let old_eps: Vec<_> = old
        .endpoints()
        .into_iter()
        .filter(|(id, _)| id != "node2")
        .collect();
    let players = [
        rt.spawn(play(
            old_eps,
            "late".into(),
            stop.clone(),
            acked_old.clone(),
        )),
        rt.spawn(play(
            new.endpoints(),
            "new".into(),
            stop.clone(),
            acked_new.clone(),
        )),
    ];
    wait_for_acks(&acked_old, 20, "the old ensemble");
    wait_for_acks(&acked_new, 20, "the new ensemble");
    let old_leader = rt
        .block_on(old.wait_for_leader(Duration::from_secs(20)))
        .unwrap();
    // The old leader's sender retries a refused stream every second: several refusals.
    sleep_ms(2_500);
    stop.store(true, Ordering::SeqCst);
    for p in players {
        rt.block_on(p).unwrap();
    }
    no_move_crossed_over(&old, &new, z, &old_id);
    let new2 = log_text(&new.log_path("node2"));
    assert_eq!(
        refusals_of(&new2, &old_leader),
        1,
        "new node2's log:\n{new2}"
    );
    assert!(
        new2.contains(&format!(
            "ensemble {new_id} and {old_leader} to ensemble {old_id}"
        )),
        "{new2}"
    );
    let old_log = log_text(&old.log_path(&old_leader));
    assert_eq!(
        old_log.matches("node2 refused our stream").count(),
        1,
        "old leader's log:\n{old_log}"
    );

    // 5. An old member started at a new member's address (its old log, the new ensemble's
    //    configuration file) refuses the new members, and they it.
    new.stop("node3").unwrap();
    old.stop("node3").unwrap();
    let old3_log = dir.path().join("old-node3.log");
    let old3 = Killed(
        Command::new(node_bin())
            .args(["--node-id", "node3", "--config"])
            .arg(&new.config_path)
            .arg("--data-dir")
            .arg(old.data_dir())
            .env_remove("GUESSGAME_CONFIG")
            .stdout(Stdio::from(std::fs::File::create(&old3_log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&old3_log)
                    .unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_leader = rt
        .block_on(new.wait_for_leader(Duration::from_secs(20)))
        .unwrap();
    while refusals_of(&log_text(&old3_log), &new_leader) == 0 {
        assert!(
            Instant::now() < deadline,
            "the old node3 never heard the new leader:\n{}",
            log_text(&old3_log)
        );
        sleep_ms(50);
    }
    let more = cli(
        &new,
        &[
            "--node",
            "node1,node2",
            "--client-id",
            "after-old3",
            "guess",
            "5",
        ],
    );
    assert!(more.status.success(), "{}", stderr(&more));
    drop(old3);

    // 6. A new member that lost its data comes back as the operator brings back a pod after
    //    a scale-down: removed, started afresh from the configuration file (whose voters
    //    derive another id than the restored one), added again. Its empty log holds the
    //    derived id only provisionally: it takes the restored ensemble's and catches up.
    let two = ["--node", "node1,node2"];
    let removed = cli(&new, &[&two[..], &["reconfig", "remove", "node3"]].concat());
    assert!(removed.status.success(), "{}", stderr(&removed));
    for f in std::fs::read_dir(new.data_dir()).unwrap() {
        let f = f.unwrap().path();
        if f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("logs_node3.db")
        {
            std::fs::remove_file(f).unwrap();
        }
    }
    new.start("node3").unwrap();
    let node3 = new.address("node3");
    let added = cli(
        &new,
        &[&two[..], &["reconfig", "add", "node3", &node3]].concat(),
    );
    assert!(
        added.status.success(),
        "{}{}",
        stdout(&added),
        stderr(&added)
    );
    assert_eq!(ensemble_id(&new.db_path("node3")), Some(new_id.clone()));
    // It serves the ensemble's game (no writes run now; its commit point may lag a heartbeat).
    let now = cli_json(&new, &["--node", "node1,node2", "read", "--linearizable"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let back = cli_json(&new, &["--node", "node3", "read"]);
        if back["applied"] == now["applied"] {
            assert_eq!(
                (&back["round"], &back["guesses"]),
                (&now["round"], &now["guesses"])
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node3 serves {back}, the ensemble {now}"
        );
        sleep_ms(50);
    }

    no_move_crossed_over(&old, &new, z, &old_id);
    assert!(clients_in(&new.db_path(&new_leader))
        .iter()
        .any(|c| c == "after-old3"));
}

#[test]
fn damaged_truncated_and_foreign_files_are_refused_and_nothing_is_written() {
    let _turn = serial();
    let rt = runtime();
    let (one, _) = started(&rt, 1, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.snap");
    assert!(cli(&one, &["write", "42"]).status.success());
    cli_json(&one, &["snapshot", "save", file.to_str().unwrap()]);
    let good = std::fs::read(&file).unwrap();

    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 5] ^= 0x20;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("damaged", flipped, "damaged: checksum mismatch"),
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        (
            "foreign",
            std::fs::read(one.db_path("node1")).unwrap(),
            "not a guessgame snapshot file",
        ),
        ("empty", Vec::new(), "truncated: the file is empty"),
    ];
    for (name, bytes, why) in cases {
        let path = dir.path().join(format!("{name}.snap"));
        std::fs::write(&path, &bytes).unwrap();
        let st = cli(&one, &["snapshot", "status", path.to_str().unwrap()]);
        assert_eq!(st.status.code(), Some(1), "{name}: {}", stdout(&st));
        assert!(stderr(&st).contains(why), "{name}: {}", stderr(&st));
        let target = dir.path().join(format!("restore-{name}"));
        let r = restore(&path, "node1", &target, &[]);
        assert_eq!(r.status.code(), Some(1), "{name}: {}", stdout(&r));
        assert!(stderr(&r).contains(why), "{name}: {}", stderr(&r));
        assert!(
            !target.join("logs_node1.db").exists(),
            "{name}: a log was written"
        );
        // The bad file itself is left as it was.
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
    }
    // A save that cannot write (a directory in the way) loses nothing either.
    let st = cli(&one, &["snapshot", "save", dir.path().to_str().unwrap()]);
    assert_eq!(st.status.code(), Some(1), "{}", stderr(&st));
    assert_eq!(std::fs::read(&file).unwrap(), good);
    // And the good file still restores.
    let r = restore(
        &file,
        "node1",
        &dir.path().join("ok"),
        &["--output", "json"],
    );
    assert!(r.status.success(), "{}", stderr(&r));
}
