//! Snapshots and compaction with real processes: members that are behind the leader's
//! compacted log (a new one, a wiped one, one that was down) catch up by its snapshot and
//! serve the same game; a follower further behind than one peer message holds catches up by
//! a DIFF in pieces and counts towards a quorum again; a node restarts from its snapshot,
//! also with a torn WAL tail.
//!
//! Every ensemble here snapshots every few dozen entries or has its peer message limit
//! lowered (`max_peer_message_bytes`), so that each scenario takes a few hundred or thousand
//! moves rather than the defaults' 10,000 entries or 64 MiB.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guessgame_client::{Client, ErrorKind, GameState};
use guessgame_tests::*;

/// The lowered peer message limit (the smallest a node accepts is 16 KiB).
const LIMIT: usize = 64 << 10;

/// A client id of `len` characters (at most 64) that no other move uses.
fn long_id(tag: &str, task: usize, i: usize, len: usize) -> String {
    let id = format!("{tag}-{task}-{i}-");
    format!("{id}{}", "x".repeat(len.saturating_sub(id.len())))
}

/// Plays moves through `endpoints` from `tasks` concurrent clients until `moves` are
/// acknowledged (or `stop` is set): each client opens a round first and every 40 tries, and
/// otherwise guesses under a new 60-character id. A move that fails (no leader for a moment,
/// an outcome unknown when a node is killed or starved of CPU) is not retried: the next one
/// has a new id. Returns how many moves were acknowledged.
async fn play(
    endpoints: Vec<(String, String)>,
    tag: &'static str,
    moves: usize,
    tasks: usize,
    stop: Option<Arc<AtomicBool>>,
    acked: Arc<AtomicUsize>,
) -> usize {
    let per_task = moves.div_ceil(tasks);
    let deadline = Instant::now() + Duration::from_secs(180);
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let (endpoints, stop, acked) = (endpoints.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut c = Client::new(&endpoints, Duration::from_secs(20)).unwrap();
                let mut mine = 0;
                let mut i = 0;
                while mine < per_task && Instant::now() < deadline {
                    if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                        break;
                    }
                    let r = if i % 40 == 0 {
                        let host = format!("host-{tag}-{task}");
                        c.write(&host, ((i / 40 + task) % 101) as u32)
                            .await
                            .map(|_| ())
                    } else {
                        c.guess(&long_id(tag, task, i, 60), (i % 101) as u32)
                            .await
                            .map(|_| ())
                    };
                    i += 1;
                    match r {
                        Ok(()) => {
                            mine += 1;
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) if e.kind == ErrorKind::InvalidArgument => {
                            panic!("move {i} of client {task} is refused: {e}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    acked.load(Ordering::SeqCst)
}

/// `moves` acknowledged moves through `endpoints`, six clients at a time.
fn play_all(
    rt: &tokio::runtime::Runtime,
    endpoints: Vec<(String, String)>,
    tag: &'static str,
    moves: usize,
) {
    let done = rt.block_on(play(endpoints, tag, moves, 6, None, Arc::default()));
    assert!(done >= moves, "{done} of {moves} moves acknowledged");
}

/// Writes target `value` through `endpoints`, again while the outcome is not a commit (no
/// leader for a moment, or unknown), until one is acknowledged; returns it.
fn write_one(
    rt: &tokio::runtime::Runtime,
    endpoints: &[(String, String)],
    value: u32,
) -> guessgame_client::WriteOutcome {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut c = Client::new(endpoints, Duration::from_secs(10)).unwrap();
        match rt.block_on(c.write("writer", value)) {
            Ok(w) => return w,
            Err(e) if e.kind == ErrorKind::InvalidArgument => panic!("{e}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "no write committed: {e}");
                sleep_ms(200);
            }
        }
    }
}

/// The leader once one is elected and every running node follows it.
fn leader_of(rt: &tokio::runtime::Runtime, cluster: &mut LocalCluster) -> String {
    rt.block_on(cluster.wait_for_leader(Duration::from_secs(30)))
        .expect("a leader")
}

fn endpoints_except(cluster: &LocalCluster, except: &[&str]) -> Vec<(String, String)> {
    cluster
        .endpoints()
        .into_iter()
        .filter(|(id, _)| !except.contains(&id.as_str()))
        .collect()
}

/// The node's status as it reports it (`None`: it did not answer).
fn status_of(
    rt: &tokio::runtime::Runtime,
    cluster: &LocalCluster,
    id: &str,
) -> Option<guessgame_client::status::NodeStatus> {
    let st = rt.block_on(cluster.status());
    st.nodes
        .into_iter()
        .find(|n| n.id == id && n.role != "unreachable")
}

/// Waits until the ensemble has a leader and `id` (following it, or leading) has committed
/// what the leader has; returns the leader.
fn wait_caught_up(rt: &tokio::runtime::Runtime, cluster: &LocalCluster, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = rt.block_on(cluster.status());
        let of = |n: &str| st.nodes.iter().find(|s| s.id == n).cloned();
        if let Some(leader) = &st.leader {
            if let (Some(a), Some(b)) = (of(id), of(leader)) {
                let serving = a.role == "follower" || a.role == "leader";
                if serving && a.last_committed == b.last_committed {
                    return leader.clone();
                }
            }
        }
        assert!(Instant::now() < deadline, "{id} did not catch up: {st:?}");
        sleep_ms(100);
    }
}

/// Waits until `id` has caught up (see [`wait_caught_up`]) and asserts it serves the
/// leader's game; returns the leader.
fn same_game_once_caught_up(
    rt: &tokio::runtime::Runtime,
    cluster: &LocalCluster,
    id: &str,
) -> String {
    let leader = wait_caught_up(rt, cluster, id);
    assert_eq!(
        game_on(rt, cluster, id),
        game_on(rt, cluster, &leader),
        "{id} and {leader}"
    );
    leader
}

/// The game node `id` serves locally (its own applied state).
fn game_on(rt: &tokio::runtime::Runtime, cluster: &LocalCluster, id: &str) -> GameState {
    let mut c = cluster.client_of(id, Duration::from_secs(5)).unwrap();
    let mut s = rt
        .block_on(c.read(false))
        .unwrap_or_else(|e| panic!("read on {id}: {e}"));
    s.node.clear();
    s
}

/// The game node `id` loaded, asked while it is alone (in no quorum, so only a read that
/// allows a stale answer is served) and checked to say it is stale.
fn lone_game_on(rt: &tokio::runtime::Runtime, cluster: &LocalCluster, id: &str) -> GameState {
    let mut c = cluster.client_of(id, Duration::from_secs(5)).unwrap();
    let s = rt
        .block_on(c.read_allowing_stale())
        .unwrap_or_else(|e| panic!("stale read on {id}: {e}"));
    assert!(
        s.stale.is_some(),
        "{id} is alone, so its answer says it is stale: {s:?}"
    );
    s
}

/// How often `what` appears in node `id`'s output so far.
fn logged(cluster: &LocalCluster, id: &str, what: &str) -> usize {
    std::fs::read_to_string(cluster.log_path(id))
        .unwrap_or_default()
        .matches(what)
        .count()
}

const INSTALLED: &str = "installing the leader's snapshot";

fn compacting(c: &mut guessgame_client::Config) {
    c.snapshot_every = 50;
    c.snapshot_retain = 10;
}

/// Compaction effectively off, and a lowered peer message limit.
fn small_messages(c: &mut guessgame_client::Config) {
    c.snapshot_every = 1_000_000;
    c.max_peer_message_bytes = LIMIT;
}

/// Kills every node and checks what their files hold together agrees.
fn stop_and_compare(cluster: &mut LocalCluster) {
    cluster.kill_all();
    let log = assert_committed_prefixes_agree(cluster);
    assert!(!log.is_empty());
}

#[test]
fn a_follower_down_while_the_log_compacted_catches_up_by_snapshot_and_restarts_from_it() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, leader) = started(&rt, 3, compacting);
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    cluster.kill(&follower).unwrap();
    let before = read_db(&cluster.db_path(&follower));
    play_all(&rt, endpoints_except(&cluster, &[&follower]), "down", 300);
    let leader = leader_of(&rt, &mut cluster);
    let leader_db = read_db(&cluster.db_path(&leader));
    let last_before = before.entries.last().map(|(z, _)| parse_zxid(z));
    assert!(
        last_before.is_none_or(|z| z < leader_db.log_start),
        "the scenario needs the leader's log to start after the follower's end"
    );

    cluster.start(&follower).unwrap();
    same_game_once_caught_up(&rt, &cluster, &follower);
    let after = read_db(&cluster.db_path(&follower));
    assert!(
        after.snapshot.is_some() && after.log_start > (0, 0),
        "the follower holds a snapshot and a compacted log: {after:?}"
    );
    assert_eq!(
        logged(&cluster, &follower, INSTALLED),
        1,
        "the follower caught up by snapshot"
    );

    // Restarted, it loads its snapshot and replays only the rest: same game again.
    cluster.kill(&follower).unwrap();
    cluster.start(&follower).unwrap();
    write_one(&rt, &cluster.endpoints(), 7);
    same_game_once_caught_up(&rt, &cluster, &follower);
    stop_and_compare(&mut cluster);
}

#[test]
fn a_new_member_added_to_a_compacted_ensemble_catches_up_by_snapshot_and_serves_the_same_game() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, _) = started(&rt, 3, compacting);
    play_all(&rt, cluster.endpoints(), "grow", 300);
    let leader = leader_of(&rt, &mut cluster);
    // Compaction shows in the status: a snapshot, and a log that starts after the beginning.
    let st = cli_json(&cluster, &["status", "--node", &leader]);
    let node = &st["nodes"][0];
    let zxid = |k: &str| parse_zxid(node[k].as_str().unwrap_or_else(|| panic!("{k}: {st}")));
    assert!(
        zxid("snapshot") > (0, 0) && zxid("log_start") > (0, 0),
        "{st}"
    );
    assert!(zxid("first_zxid") > zxid("log_start"), "{st}");
    assert!(zxid("log_start") <= zxid("snapshot"), "{st}");

    // node4 asks to be added: learner, catch up (its log is empty, the leader's starts
    // after 0:0, so by snapshot), voter.
    cluster.start_joining("node4", &leader).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = cli_json(&cluster, &["members"]);
        let voter = m["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "node4" && x["kind"] == "voter");
        if voter && m["config"] == m["committed_config"] {
            break;
        }
        assert!(Instant::now() < deadline, "node4 never became a voter: {m}");
        sleep_ms(200);
    }
    assert!(
        logged(&cluster, "node4", INSTALLED) >= 1,
        "node4 caught up by snapshot"
    );
    // It counts in the quorum of four now; the game goes on and node4 serves it.
    play_all(&rt, cluster.endpoints(), "grown", 60);
    same_game_once_caught_up(&rt, &cluster, "node4");
    let s = status_of(&rt, &cluster, "node4").expect("node4 answers");
    assert!(s.snapshot > guessgame_client::Zxid::ZERO, "{s:?}");
    stop_and_compare(&mut cluster);
}

/// Moves the node's log and its SQLite companions into `to`.
fn move_log_away(cluster: &LocalCluster, id: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let db = cluster.db_path(id);
    for suffix in ["", "-wal", "-shm"] {
        let mut from = db.clone().into_os_string();
        from.push(suffix);
        let from = PathBuf::from(from);
        if from.exists() {
            std::fs::rename(&from, to.join(from.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn a_follower_wiped_the_safe_way_rejoins_and_catches_up_by_snapshot() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, _) = started(&rt, 3, compacting);
    play_all(&rt, cluster.endpoints(), "before", 100);
    let leader = leader_of(&rt, &mut cluster);
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    // The safe procedure: remove it (it stops by itself), move its file away, start it
    // empty with --join so the ensemble adds it back as a new member.
    let o = cli(&cluster, &["reconfig", "remove", &follower]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.exit_status(&follower).is_none() {
        assert!(Instant::now() < deadline, "removed {follower} did not stop");
        sleep_ms(50);
    }
    cluster.kill(&follower).unwrap();
    move_log_away(&cluster, &follower, &cluster.dir.join("wiped"));
    // The two left go on and compact past everything the wiped node ever held.
    play_all(&rt, endpoints_except(&cluster, &[&follower]), "after", 200);

    cluster.start_joining(&follower, &leader).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = cli_json(&cluster, &["members"]);
        let voters = m["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "voter")
            .count();
        if voters == 3 && m["config"] == m["committed_config"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{follower} was not added back: {m}"
        );
        sleep_ms(200);
    }
    write_one(&rt, &cluster.endpoints(), 9);
    same_game_once_caught_up(&rt, &cluster, &follower);
    assert!(
        logged(&cluster, &follower, INSTALLED) >= 1,
        "{follower} caught up by snapshot"
    );
    let db = read_db(&cluster.db_path(&follower));
    assert!(db.log_start > (0, 0) && db.snapshot.is_some(), "{db:?}");
    stop_and_compare(&mut cluster);
}

/// The bytes of the client ids of the leader's committed entries after `after`: a lower
/// bound of what one DIFF message holding all of them would take.
fn client_bytes_after(leader_db: &DbLog, after: Option<(u64, u64)>) -> usize {
    leader_db
        .committed_log()
        .iter()
        .filter(|e| after.is_none_or(|a| pair(e.zxid) > a))
        .map(|e| match &e.op {
            guessgame_core::Op::Guess { client, .. }
            | guessgame_core::Op::Target { client, .. } => client.len(),
            _ => 0,
        })
        .sum()
}

/// A 3-node ensemble with compaction off and the lowered peer message limit, where one
/// follower was killed and then left behind by more than one peer message's worth of
/// entries. Returns the cluster, that follower and the leader.
fn one_follower_far_behind(rt: &tokio::runtime::Runtime) -> (LocalCluster, String, String) {
    let (mut cluster, leader) = started(rt, 3, small_messages);
    play_all(rt, cluster.endpoints(), "first", 20);
    let lagging = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    cluster.kill(&lagging).unwrap();
    let held = read_db(&cluster.db_path(&lagging))
        .entries
        .last()
        .map(|(z, _)| parse_zxid(z));
    play_all(rt, endpoints_except(&cluster, &[&lagging]), "behind", 1500);
    let leader = leader_of(rt, &mut cluster);
    let leader_db = read_db(&cluster.db_path(&leader));
    assert_eq!(
        leader_db.log_start,
        (0, 0),
        "nothing compacted: the catch-up is a DIFF"
    );
    let missing = client_bytes_after(&leader_db, held);
    assert!(
        missing > LIMIT,
        "the scenario needs more than {LIMIT} bytes missing, got {missing}"
    );
    (cluster, lagging, leader)
}

#[test]
fn a_follower_further_behind_than_one_peer_message_catches_up_by_diff_in_pieces() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, follower, _) = one_follower_far_behind(&rt);
    cluster.start(&follower).unwrap();
    same_game_once_caught_up(&rt, &cluster, &follower);
    assert_eq!(
        logged(&cluster, &follower, INSTALLED),
        0,
        "a DIFF, not a snapshot"
    );
    stop_and_compare(&mut cluster);
}

#[test]
fn with_one_follower_far_behind_and_the_other_down_writes_commit_once_it_has_caught_up() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, lagging, leader) = one_follower_far_behind(&rt);
    // The other follower goes: the leader and the lagging one are the quorum now, and the
    // lagging one must receive everything first.
    let other = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != lagging)
        .unwrap();
    cluster.kill(&other).unwrap();
    cluster.start(&lagging).unwrap();
    let w = write_one(&rt, &endpoints_except(&cluster, &[&other]), 42);
    assert_eq!(w.target, 42);
    let leader = wait_caught_up(&rt, &cluster, &lagging);
    let game = game_on(&rt, &cluster, &lagging);
    assert_eq!(game, game_on(&rt, &cluster, &leader));
    assert_eq!(game.target, Some(42));
    stop_and_compare(&mut cluster);
}

/// SQLite's WAL index (the `-shm` file) after the process died: the last valid frame and how
/// many frames were copied into the database (little-endian, as written on this machine).
fn wal_frames(db: &Path) -> (u32, u32) {
    let mut shm = db.to_path_buf().into_os_string();
    shm.push("-shm");
    let b = std::fs::read(shm).expect("the -shm file");
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    (u32_at(16), u32_at(96))
}

/// Cuts the node's WAL in the middle of its last committed frame (a torn write of the last
/// transaction; frames already copied into the database are left alone) and removes the
/// WAL index, which SQLite rebuilds. Returns the bytes cut.
fn tear_wal_tail(db: &Path) -> u64 {
    let (last, backfilled) = wal_frames(db);
    assert!(
        last > backfilled,
        "the WAL's last frames were all checkpointed: nothing to tear"
    );
    let mut wal = db.to_path_buf().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let bytes = std::fs::read(&wal).unwrap();
    let page = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as u64;
    let frame = 24 + page;
    let keep = 32 + (last as u64 - 1) * frame + frame / 2;
    let len = bytes.len() as u64;
    assert!(keep < len, "WAL of {len} bytes ends before frame {last}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(keep)
        .unwrap();
    let mut shm = db.to_path_buf().into_os_string();
    shm.push("-shm");
    std::fs::remove_file(shm).unwrap();
    len - keep
}

#[test]
fn a_node_killed_under_load_with_a_torn_wal_tail_restarts_from_its_snapshot_and_catches_up() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, leader) = started(&rt, 3, compacting);
    let victim = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    // Through the others only: the kill must not leave a client's outcome unknown.
    let eps = endpoints_except(&cluster, &[&victim]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let load = rt.spawn(play(
        eps.clone(),
        "torn",
        100_000,
        4,
        Some(stop.clone()),
        acked.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 300 {
        assert!(Instant::now() < deadline, "no load");
        sleep_ms(20);
    }
    cluster.kill(&victim).unwrap();
    stop.store(true, Ordering::SeqCst);
    rt.block_on(load).unwrap();
    let db = cluster.db_path(&victim);
    assert!(
        read_db(&db).snapshot.is_some(),
        "the victim had taken a snapshot"
    );
    let cut = tear_wal_tail(&db);
    eprintln!("cut {cut} bytes off {victim}'s WAL");

    cluster.start(&victim).unwrap();
    play_all(&rt, eps, "later", 50);
    same_game_once_caught_up(&rt, &cluster, &victim);
    // It started from the snapshot that survived the tear (a node logs what it loaded).
    let out = std::fs::read_to_string(cluster.log_path(&victim)).unwrap();
    let restart = out
        .lines()
        .filter(|l| l.contains("starting node="))
        .nth(1)
        .expect("a second start");
    assert!(
        restart.contains("snapshot=") && !restart.contains("snapshot=0:0"),
        "{victim} restarted without its snapshot: {restart}"
    );
    stop_and_compare(&mut cluster);
}

#[test]
fn a_restarted_node_loads_its_snapshot_and_replays_only_the_entries_after_it() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, leader) = started(&rt, 3, compacting);
    play_all(&rt, cluster.endpoints(), "fill", 300);
    let node = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    wait_caught_up(&rt, &cluster, &node);
    cluster.kill_all();
    let db = read_db(&cluster.db_path(&node));
    assert!(
        db.log_start > (0, 0),
        "{node} compacted its log: {:?}",
        db.log_start
    );
    let committed = db.committed_zxid();
    let expected = db
        .game_at(committed)
        .expect("its file covers its commit point");

    // Alone it cannot be synced by anyone: what it shows is what it loaded.
    cluster.start(&node).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        if let Some(s) = status_of(&rt, &cluster, &node) {
            break s;
        }
        assert!(Instant::now() < deadline, "{node} does not answer");
        sleep_ms(100);
    };
    let z = |p: (u64, u64)| guessgame_client::Zxid::new(p.0, p.1);
    assert_eq!(s.log_start, z(db.log_start), "{s:?}");
    assert_eq!(s.snapshot, z(db.snapshot_zxid()), "{s:?}");
    assert_eq!(s.first_zxid, z(parse_zxid(&db.entries[0].0)), "{s:?}");
    assert_eq!(s.last_committed, z(committed), "{s:?}");
    let local = lone_game_on(&rt, &cluster, &node);
    assert_eq!(
        (
            local.round,
            local.target,
            local.guesses,
            parse_zxid(&local.applied)
        ),
        (
            expected.round,
            expected.target,
            expected.guesses.len() as u64,
            pair(expected.applied)
        ),
        "the game {node} rebuilt from its snapshot and the rest of its log"
    );

    cluster.start_all().unwrap();
    write_one(&rt, &cluster.endpoints(), 3);
    let mut leader = String::new();
    for id in cluster.ids() {
        leader = wait_caught_up(&rt, &cluster, &id);
    }
    for id in cluster.ids() {
        assert_eq!(
            game_on(&rt, &cluster, &id),
            game_on(&rt, &cluster, &leader),
            "{id}"
        );
    }
    stop_and_compare(&mut cluster);
}

#[test]
fn a_node_refuses_snapshot_and_message_limit_flags_out_of_range_and_names_them() {
    let _turn = serial();
    ensure_binaries();
    let cluster = LocalCluster::new(3, None, |_| {}).unwrap();
    for (flag, value) in [
        ("--snapshot-every", "0"),
        ("--snapshot-retain", "100000000"),
        ("--max-peer-message-bytes", "1000"),
    ] {
        let o = std::process::Command::new(find_binary("guessgame-node").unwrap())
            .args(["--node-id", "node1", "--config"])
            .arg(&cluster.config_path)
            .args([flag, value])
            .env_remove("GUESSGAME_CONFIG")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{flag} {value}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("({flag})")), "{flag} {value}: {err}");
    }
}
