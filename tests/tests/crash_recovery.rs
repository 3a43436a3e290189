//! Crashes with real processes: SIGKILL the leader, a follower, everyone; lose the quorum.

use std::time::{Duration, Instant};

use guessgame_client::Client;
use guessgame_tests::*;

fn client(cluster: &LocalCluster, except: &[&str]) -> Client {
    let eps: Vec<(String, String)> = cluster
        .endpoints()
        .into_iter()
        .filter(|(id, _)| !except.contains(&id.as_str()))
        .collect();
    Client::new(&eps, Duration::from_secs(10)).unwrap()
}

/// Waits until every running node has committed `zxid` or later and the committed logs agree.
fn wait_converged(rt: &tokio::runtime::Runtime, cluster: &LocalCluster, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = rt.block_on(cluster.status());
        let mine: Vec<_> = st.nodes.iter().filter(|n| ids.contains(&n.id)).collect();
        let first = &mine[0].last_committed;
        if mine
            .iter()
            .all(|n| &n.last_committed == first && n.role != "unreachable" && n.role != "looking")
        {
            return;
        }
        assert!(Instant::now() < deadline, "nodes did not converge: {st:?}");
        sleep_ms(100);
    }
}

#[test]
fn sigkill_leader_elects_a_new_one_writes_continue_and_the_old_leader_catches_up() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, old) = started(&rt, 5, |_| {});
    let mut c = client(&cluster, &[]);
    rt.block_on(async {
        c.write("w", 50).await.unwrap();
        c.guess("g1", 40).await.unwrap();
    });

    cluster.kill(&old).unwrap();
    let killed = Instant::now();
    let mut c = client(&cluster, &[&old]);
    let g = rt
        .block_on(c.guess("g2", 60))
        .expect("write after leader crash");
    let failover = killed.elapsed();
    assert_ne!(g.leader, old);
    eprintln!("failover: first committed write {failover:?} after SIGKILL of {old}");
    let new = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(10)))
        .unwrap();
    assert_ne!(new, old);
    let w = rt.block_on(c.write("w", 10)).unwrap();
    assert_eq!(
        w.closed.as_ref().and_then(|r| r.winner.clone()).as_deref(),
        Some("g1")
    );

    cluster.start(&old).unwrap();
    wait_converged(&rt, &cluster, &cluster.ids());
    let st = rt.block_on(cluster.status());
    let o = st.nodes.iter().find(|n| n.id == old).unwrap();
    assert_eq!(o.role, "follower");
    assert_eq!(o.leader.as_deref(), Some(new.as_str()));
    // The old leader serves the same game locally.
    let mut at_old = cluster.client_of(&old, Duration::from_secs(5)).unwrap();
    let s = rt.block_on(at_old.read(false)).unwrap();
    assert_eq!((s.round, s.target), (2, Some(10)));
    cluster.kill_all();
    let log = assert_committed_prefixes_agree(&cluster);
    for id in cluster.ids() {
        assert_eq!(
            read_db(&cluster.db_path(&id)).committed_entries(),
            log,
            "{id}"
        );
    }
}

#[test]
fn crashed_follower_catches_up_after_restart() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, leader) = started(&rt, 5, |_| {});
    let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
    let mut c = client(&cluster, &[]);
    rt.block_on(c.write("w", 1)).unwrap();
    cluster.kill(&follower).unwrap();
    // Not through the killed node: a request on its broken connection may count as sent
    // (outcome unknown), which is not what this test is about.
    let mut c = client(&cluster, &[&follower]);
    rt.block_on(async {
        for i in 0..20 {
            c.guess(&format!("p{i}"), i).await.unwrap();
        }
        c.write("w", 2).await.unwrap();
    });
    cluster.start(&follower).unwrap();
    wait_converged(&rt, &cluster, &cluster.ids());
    let mut at = cluster
        .client_of(&follower, Duration::from_secs(5))
        .unwrap();
    let s = rt.block_on(at.read(false)).unwrap();
    assert_eq!(s.round, 2);
    assert_eq!(s.last_result.unwrap().winner.as_deref(), Some("p1"));
}

#[test]
fn kill_all_and_restart_all_gives_identical_state() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, _) = started(&rt, 5, |_| {});
    let mut c = client(&cluster, &[]);
    rt.block_on(async {
        c.write("w", 70).await.unwrap();
        c.guess("a", 60).await.unwrap();
        c.guess("b", 75).await.unwrap();
        c.write("w", 20).await.unwrap();
        c.guess("a", 25).await.unwrap();
    });
    let before = rt.block_on(c.read(true)).unwrap();
    wait_converged(&rt, &cluster, &cluster.ids());
    cluster.kill_all();
    let logs_before: Vec<_> = cluster
        .ids()
        .iter()
        .map(|id| read_db(&cluster.db_path(id)).committed_entries())
        .collect();

    cluster.start_all().unwrap();
    rt.block_on(cluster.wait_for_leader(Duration::from_secs(20)))
        .unwrap();
    for id in cluster.ids() {
        let mut at = cluster.client_of(&id, Duration::from_secs(5)).unwrap();
        let s = rt.block_on(at.read(true)).unwrap();
        assert_eq!(
            (s.round, s.target, s.guesses, &s.last_result),
            (
                before.round,
                before.target,
                before.guesses,
                &before.last_result
            ),
            "{id}"
        );
    }
    cluster.kill_all();
    for (id, before) in cluster.ids().iter().zip(logs_before) {
        let after = read_db(&cluster.db_path(id)).committed_entries();
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "{id} lost or changed committed entries"
        );
    }
}

#[test]
fn with_two_of_five_alive_a_write_fails_within_its_bound_and_nothing_diverges() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, leader) = started(&rt, 5, |c| c.request_timeout_ms = 3000);
    let mut c = client(&cluster, &[]);
    rt.block_on(c.write("w", 33)).unwrap();
    // Keep the leader and one follower; kill the other three.
    let others: Vec<String> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    for id in &others[1..] {
        cluster.kill(id).unwrap();
    }
    let alive = [leader.clone(), others[0].clone()];
    let started_at = Instant::now();
    let o = cli(
        &cluster,
        &[
            "--node",
            &alive.join(","),
            "--timeout-ms",
            "4000",
            "--client-id",
            "x",
            "guess",
            "5",
        ],
    );
    let took = started_at.elapsed();
    assert!(
        !o.status.success(),
        "a write without a quorum succeeded: {}",
        stdout(&o)
    );
    let code = o.status.code();
    assert!(
        code == Some(3) || code == Some(4),
        "exit {code:?}: {}",
        stderr(&o)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The leader steps down: no node claims to lead.
    sleep_ms(1500);
    let st = rt.block_on(cluster.status());
    assert!(st.nodes.iter().all(|n| n.role != "leader"), "{st:?}");

    for id in &others[1..] {
        cluster.start(id).unwrap();
    }
    rt.block_on(cluster.wait_for_leader(Duration::from_secs(20)))
        .unwrap();
    let mut c = client(&cluster, &[]);
    let r = rt.block_on(c.read(true)).unwrap();
    assert_eq!(r.target, Some(33));
    wait_converged(&rt, &cluster, &cluster.ids());
    cluster.kill_all();
    let log = assert_committed_prefixes_agree(&cluster);
    for id in cluster.ids() {
        assert_eq!(
            read_db(&cluster.db_path(&id)).committed_entries(),
            log,
            "{id}"
        );
    }
}
