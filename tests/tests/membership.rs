//! Membership changes with real processes: the ensemble grows and shrinks one member at a
//! time (3 → 5 → 3 → 1 → 3) while clients keep writing and guessing, the leader removes
//! itself and hands over, a removed node comes back with its old log, and the CLI reports
//! and refuses clearly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guessgame_client::{Client, Configuration, ErrorKind, Reconfig};
use guessgame_tests::*;

type Endpoints = Arc<Mutex<Vec<(String, String)>>>;

/// What the clients had acknowledged: zxid → the op it must be in the log.
type Acked = Arc<Mutex<BTreeMap<(u64, u64), String>>>;

fn client_for(endpoints: &Endpoints, timeout: Duration) -> Client {
    let eps = endpoints.lock().unwrap().clone();
    Client::new(&eps, timeout).unwrap()
}

/// A closed-loop player: opens a round, then a few clients guess in it; repeat.
async fn play(
    player: usize,
    endpoints: Endpoints,
    stop: Arc<AtomicBool>,
    acked: Acked,
    ok: Arc<Mutex<u64>>,
) {
    let mut k: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        k += 1;
        let t = Instant::now();
        let mut c = client_for(&endpoints, Duration::from_secs(5));
        let r = if k.is_multiple_of(4) {
            c.write("host", (k % 101) as u32).await.map(|w| {
                (
                    w.zxid,
                    format!(
                        r#""type":"target","round":{},"value":{}"#,
                        w.round, w.target
                    ),
                )
            })
        } else {
            let who = format!("p{player}-{k}");
            c.guess(&who, (k * 7 % 101) as u32).await.map(|g| {
                (
                    g.zxid,
                    format!(r#""type":"guess","round":{},"client":"{who}""#, g.round),
                )
            })
        };
        match r {
            Ok((zxid, op)) => {
                if std::env::var("MEMBERSHIP_DEBUG").is_ok() {
                    eprintln!("ok {zxid} in {:?}", t.elapsed());
                }
                acked.lock().unwrap().insert(parse_zxid(&zxid), op);
                *ok.lock().unwrap() += 1;
            }
            // Refused (no open round yet, ...), no leader for a moment, or an unknown
            // outcome: not acknowledged, so nothing to check.
            Err(e) if e.kind == ErrorKind::InvalidArgument => panic!("bad request: {e}"),
            Err(e) => {
                if std::env::var("MEMBERSHIP_DEBUG").is_ok() {
                    eprintln!("{:?}: {}", e.kind, e.message);
                }
                tokio::time::sleep(Duration::from_millis(20)).await
            }
        }
    }
}

fn voters(c: &Configuration) -> Vec<String> {
    c.voters().map(|m| m.id.clone()).collect()
}

#[test]
fn ensemble_grows_and_shrinks_3_5_3_1_3_under_load_and_loses_no_acknowledged_write() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, first_leader) = started(&rt, 3, |_| {});
    let endpoints: Endpoints = Arc::new(Mutex::new(cluster.endpoints()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let ok = Arc::new(Mutex::new(0u64));
    let players: Vec<_> = (0..2)
        .map(|player| {
            rt.spawn(play(
                player,
                endpoints.clone(),
                stop.clone(),
                acked.clone(),
                ok.clone(),
            ))
        })
        .collect();
    let admin = |eps: &Endpoints| client_for(eps, Duration::from_secs(40));
    // Each step must happen while the players keep getting answers.
    let progress = |label: &str| {
        let before = *ok.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while *ok.lock().unwrap() < before + 10 {
            assert!(
                Instant::now() < deadline,
                "{label}: clients made no progress"
            );
            sleep_ms(20);
        }
    };
    let wait_voters = |eps: &Endpoints, want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = rt.block_on(admin(eps).configuration());
            if let Ok(c) = &c {
                let mut v = voters(c);
                v.sort();
                if v == want && c.config == c.committed_config {
                    return c.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "voters never became {want:?}: {c:?}"
            );
            sleep_ms(100);
        }
    };
    progress("3 voters");

    // 3 → 5: two new nodes ask to join (learner, catch up, voter).
    let started_at = Instant::now();
    cluster.start_joining("node4", "node1").unwrap();
    *endpoints.lock().unwrap() = cluster.endpoints();
    wait_voters(&endpoints, &["node1", "node2", "node3", "node4"]);
    eprintln!("node4 joined as a voter in {:?}", started_at.elapsed());
    progress("4 voters");
    cluster.start_joining("node5", "node2").unwrap();
    *endpoints.lock().unwrap() = cluster.endpoints();
    let five = wait_voters(&endpoints, &["node1", "node2", "node3", "node4", "node5"]);
    assert!(five.members.iter().all(|m| m.kind == "voter"));
    progress("5 voters");

    // 5 → 3, starting with the leader itself: it answers, steps down, and stops.
    let leader = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let after = rt
        .block_on(admin(&endpoints).reconfig(Reconfig::Remove { id: leader.clone() }))
        .expect("the leader removes itself");
    assert!(!voters(&after).contains(&leader));
    let new_leader = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(10)))
        .unwrap();
    eprintln!(
        "{leader} removed itself; {new_leader} leads {:?} later",
        t.elapsed()
    );
    assert_ne!(new_leader, leader);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.exit_status(&leader).is_none() {
        assert!(Instant::now() < deadline, "removed {leader} did not stop");
        sleep_ms(50);
    }
    assert!(
        cluster.exit_status(&leader).unwrap().success(),
        "a removed node exits cleanly"
    );
    progress("4 voters after removing the leader");
    let mut remaining: Vec<String> = voters(&after);
    // Keep node5 (a joiner) to the end; remove the lowest others.
    remaining.retain(|m| m != "node5");
    remaining.sort();
    let mut removed = vec![leader.clone()];
    for id in remaining.iter().take(1) {
        rt.block_on(admin(&endpoints).reconfig(Reconfig::Remove { id: id.clone() }))
            .unwrap_or_else(|e| panic!("remove {id}: {e}"));
        removed.push(id.clone());
    }
    let three = rt.block_on(admin(&endpoints).configuration()).unwrap();
    assert_eq!(voters(&three).len(), 3, "{three:?}");
    progress("3 voters");

    // 3 → 1.
    for id in voters(&three).into_iter().filter(|m| m != "node5") {
        rt.block_on(admin(&endpoints).reconfig(Reconfig::Remove { id: id.clone() }))
            .unwrap_or_else(|e| panic!("remove {id}: {e}"));
        removed.push(id);
    }
    wait_voters(&endpoints, &["node5"]);
    progress("1 voter");

    // 1 → 3: a node removed earlier comes back with its old log (from an earlier
    // membership), and a brand-new one joins.
    let comeback = removed
        .iter()
        .find(|id| id.as_str() != first_leader && cluster.exit_status(id).is_some())
        .or(removed.first())
        .unwrap()
        .clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.exit_status(&comeback).is_none() {
        assert!(Instant::now() < deadline, "removed {comeback} did not stop");
        sleep_ms(50);
    }
    let stale = read_db(&cluster.db_path(&comeback));
    assert!(!stale.entries.is_empty(), "{comeback} kept its old log");
    cluster.start_joining(&comeback, "node5").unwrap();
    *endpoints.lock().unwrap() = cluster.endpoints();
    let mut want = vec!["node5".to_string(), comeback.clone()];
    want.sort();
    wait_voters(
        &endpoints,
        &want.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    progress("2 voters");
    cluster.start_joining("node6", "node5").unwrap();
    *endpoints.lock().unwrap() = cluster.endpoints();
    want.push("node6".into());
    want.sort();
    wait_voters(
        &endpoints,
        &want.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    progress("3 voters again");

    stop.store(true, Ordering::SeqCst);
    for p in players {
        rt.block_on(p).unwrap();
    }
    // Let the last commits reach everyone, then compare the logs on disk.
    let final_leader = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(10)))
        .unwrap();
    let check = rt
        .block_on(client_for(&endpoints, Duration::from_secs(5)).write("final", 1))
        .unwrap();
    sleep_ms(500);
    let log = assert_committed_prefixes_agree(&cluster);
    let by_zxid: BTreeMap<(u64, u64), &String> =
        log.iter().map(|(z, op)| (parse_zxid(z), op)).collect();
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 100, "too little traffic: {}", acked.len());
    for (zxid, op) in acked.iter() {
        let logged = by_zxid
            .get(zxid)
            .unwrap_or_else(|| panic!("acknowledged {zxid:?} ({op}) is not in the committed log"));
        assert!(
            logged.contains(op.as_str()),
            "acknowledged {zxid:?} as {op} but the log has {logged}"
        );
    }
    assert!(by_zxid.contains_key(&parse_zxid(&check.zxid)));
    for id in &want {
        let db = read_db(&cluster.db_path(id)).committed_entries();
        assert!(
            db.len() + 3 >= log.len(),
            "{id} is far behind: {} of {}",
            db.len(),
            log.len()
        );
    }
    eprintln!(
        "{} acknowledged operations checked against {} committed entries; final leader {final_leader}",
        acked.len(),
        log.len()
    );
}

#[test]
fn members_and_reconfig_on_the_command_line() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, _) = started(&rt, 3, |c| c.election_timeout_ms = 400);
    let m = cli_json(&cluster, &["members"]);
    assert_eq!(m["voters"], 3);
    assert_eq!(m["quorum"], 2);
    assert_eq!(m["members"].as_array().unwrap().len(), 3);
    assert!(m["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["membership"] == "voter"));

    // Bad input: a clear error, exit 1, nothing changed.
    let o = cli(&cluster, &["reconfig", "add", "node9", "no-port"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("host:port"), "{}", stderr(&o));
    let o = cli(&cluster, &["reconfig", "add", "bad id!", "127.0.0.1:9"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // A node that asks to join under a taken id is refused for good, and stops saying why.
    let spare = guessgame_client::cluster::free_ports(1).unwrap()[0];
    let o = std::process::Command::new(find_binary("guessgame-node").unwrap())
        .args(["--config"])
        .arg(&cluster.config_path)
        .args([
            "--node-id",
            "node1",
            "--listen",
            &format!("127.0.0.1:{spare}"),
        ])
        .args(["--join", &cluster.address("node2"), "--data-dir"])
        .arg(cluster.dir.join("imposter"))
        .env_remove("GUESSGAME_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("node1 is already a member"),
        "{}",
        stderr(&o)
    );

    // A node that is not running cannot catch up: it is left a learner, which is written,
    // so not exit 3 ("nothing written"): exit 5, half done, repeat to finish.
    let o = cli(&cluster, &["reconfig", "add", "node9", "127.0.0.1:9"]);
    assert_eq!(o.status.code(), Some(5), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("node9 was added as a learner but did not catch up"),
        "{}",
        stderr(&o)
    );
    let m = cli_json(&cluster, &["members"]);
    let kinds: Vec<(String, String)> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap().into(),
                x["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("node9".into(), "learner".into())),
        "{kinds:?}"
    );
    assert_eq!(m["voters"], 3, "a learner is not a voter");
    let o = cli(&cluster, &["reconfig", "remove", "node9"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Remove down to one voter; the last one cannot go.
    let o = cli(&cluster, &["reconfig", "remove", "node1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("node1 removed"), "{}", stdout(&o));
    let o = cli(&cluster, &["reconfig", "remove", "node1"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "removing a non-member: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("not a member"), "{}", stderr(&o));

    // A restarted member takes its configuration from its log, not from the file (which
    // still lists node1).
    cluster.stop("node2").unwrap();
    cluster.start("node2").unwrap();
    rt.block_on(cluster.wait_for_leader(Duration::from_secs(10)))
        .unwrap();
    let st = cli_json(&cluster, &["status", "--node", "node2"]);
    assert_eq!(st["nodes"][0]["voters"], 2, "{st}");

    let o = cli(&cluster, &["reconfig", "remove", "node2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(&cluster, &["reconfig", "remove", "node3"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("last voter"), "{}", stderr(&o));
    let w = cli_json(&cluster, &["write", "5", "--client-id", "solo"]);
    assert_eq!(w["leader"], "node3");
}
