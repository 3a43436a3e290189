//! Sick storage against real processes: a node's database locked by another process.

use guessgame_tests::*;
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// Another process holds a follower's database locked (an open write transaction, as
/// `sqlite3 … .backup` into it would) for longer than SQLite's usual 5 s busy timeout, which
/// used to fail the follower's next write and stop the node (exit 3). Now it waits the lock
/// out: meanwhile `status` reports the stall, its health says NOT_SERVING, the log says what
/// is wrong, and the other two keep committing; once the lock is gone it catches up.
#[test]
fn a_node_whose_database_another_process_locks_waits_it_out_says_so_and_catches_up() {
    let _turn = serial();
    let rt = runtime();
    let (mut cluster, leader) = started(&rt, 3, |_| {});
    let follower = cluster.ids().into_iter().find(|n| *n != leader).unwrap();
    cli_json(&cluster, &["--client-id", "w", "write", "10"]);

    let other = rusqlite::Connection::open(cluster.db_path(&follower)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked_at = Instant::now();
    // The ensemble goes on without it (the leader and the other follower are a quorum).
    for v in 20..23 {
        let w = cli_json(
            &cluster,
            &[
                "--client-id",
                "w",
                "--node",
                &leader,
                "write",
                &v.to_string(),
            ],
        );
        assert_eq!(w["target"], v);
    }
    let stalled_for = |cluster: &LocalCluster| -> Option<u64> {
        let st = rt.block_on(cluster.status());
        let n = st.nodes.iter().find(|n| n.id == follower)?;
        n.storage_stalled_ms
    };
    let mut seen = None;
    while locked_at.elapsed() < Duration::from_secs(7) {
        if let Some(ms) = stalled_for(&cluster) {
            seen = Some(seen.unwrap_or(0).max(ms));
        }
        sleep_ms(250);
    }
    let seen = seen.expect("status never reported the stall");
    assert!(seen >= 5_000, "stall reported only up to {seen} ms");
    assert!(
        cluster.is_running(&follower),
        "{follower} stopped while its database was locked: {:?}",
        cluster.exit_status(&follower)
    );
    let text = stdout(&cli(&cluster, &["status"]));
    assert!(text.contains("STORAGE STALLED"), "{text}");
    // What the kubelet's gRPC readiness probe asks: the whole server ("").
    assert_eq!(
        rt.block_on(probe(&cluster.address(&follower))),
        Some(ServingStatus::NotServing as i32),
        "a node stalled past an election timeout is not ready"
    );
    let log = std::fs::read_to_string(cluster.log_path(&follower)).unwrap();
    assert!(
        log.contains("has not finished for")
            && log.contains("another process holds the database locked"),
        "{log}"
    );

    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = rt.block_on(cluster.status());
        let lead = st.nodes.iter().find(|n| n.id == leader).unwrap();
        let f = st.nodes.iter().find(|n| n.id == follower).unwrap();
        if f.storage_stalled_ms.is_none() && f.last_committed == lead.last_committed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{follower} did not catch up after the lock was released: {f:?} vs {lead:?}"
        );
        sleep_ms(200);
    }
    assert!(cluster.is_running(&follower));
    let serving = Instant::now() + Duration::from_secs(5);
    while rt.block_on(probe(&cluster.address(&follower))) != Some(ServingStatus::Serving as i32) {
        assert!(Instant::now() < serving, "{follower} not SERVING again");
        sleep_ms(100);
    }
    assert_committed_prefixes_agree(&cluster);
}

async fn probe(address: &str) -> Option<i32> {
    let channel = guessgame_wire::channel::channel(address, Duration::from_secs(1)).ok()?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest { service: "".into() })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

/// The same stall on the leader: it is blocked in a write it cannot finish, so it sends no
/// heartbeats; its followers elect a new leader among themselves after the election timeout
/// and writes through them commit, while the old leader waits. Once its lock is gone it
/// learns of the new epoch and follows.
#[test]
fn a_leader_whose_database_is_locked_is_replaced_and_rejoins_as_a_follower() {
    let _turn = serial();
    let rt = runtime();
    let (mut cluster, leader) = started(&rt, 3, |_| {});
    let others: Vec<String> = cluster.ids().into_iter().filter(|n| *n != leader).collect();
    cli_json(&cluster, &["--client-id", "w", "write", "10"]);

    let other = rusqlite::Connection::open(cluster.db_path(&leader)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    // A write to the stalled leader blocks it in the write that cannot take the lock.
    let stuck = cli(
        &cluster,
        &[
            "--client-id",
            "w",
            "--node",
            &leader,
            "--timeout-ms",
            "500",
            "write",
            "20",
        ],
    );
    assert_ne!(stuck.status.code(), Some(0), "{}", stdout(&stuck));
    let followers = others.join(",");
    let w = cli_json(
        &cluster,
        &[
            "--client-id",
            "w",
            "--node",
            &followers,
            "--timeout-ms",
            "10000",
            "write",
            "30",
        ],
    );
    assert_eq!(w["target"], 30);
    assert_ne!(w["leader"], leader.as_str(), "{w}");
    assert!(cluster.is_running(&leader));

    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = rt.block_on(cluster.status());
        let old = st.nodes.iter().find(|n| n.id == leader).unwrap();
        let new = st.leader.clone();
        if new.is_some()
            && new.as_deref() != Some(leader.as_str())
            && old.leader == new
            && old.storage_stalled_ms.is_none()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old leader did not rejoin: {st:?}"
        );
        sleep_ms(200);
    }
    // The write that was stuck on the old leader may or may not have committed; the one
    // acknowledged through the followers has.
    let r = cli_json(&cluster, &["read", "--linearizable"]);
    assert!(r["round"].as_u64().unwrap() >= 2, "{r}");
    assert_committed_prefixes_agree(&cluster);
}
