//! The original lab's normal and guessing flows, through the real CLI, across five nodes.

use guessgame_tests::*;
use std::time::{Duration, Instant};

#[test]
fn normal_and_guessing_flows_across_all_five_nodes() {
    let _turn = serial();
    let rt = runtime();
    let (cluster, _leader) = started(&rt, 5, |_| {});

    // Seed form, exactly as the lab's README has it.
    let o = cli(
        &cluster,
        &[
            "--client-id",
            "client1",
            "--node",
            "node1",
            "--command",
            "write",
            "--value",
            "50",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("round 1 open with target 50"),
        "{}",
        stdout(&o)
    );

    // Normal flow: every node sees the new target.
    for id in cluster.ids() {
        let r = cli_json(
            &cluster,
            &["--client-id", "client2", "--node", &id, "--command", "read"],
        );
        assert_eq!(r["round"], 1, "{id}: {r}");
        assert_eq!(r["target"], 50, "{id}: {r}");
        assert_eq!(r["node"], id.as_str());
        assert!(r["last_result"].is_null());
    }

    // Guessing flow: guesses through different followers, then the next write closes the round.
    for (client, node, value) in [
        ("client3", "node3", "45"),
        ("client4", "node4", "55"),
        ("client5", "node5", "60"),
    ] {
        let g = cli_json(
            &cluster,
            &["--client-id", client, "--node", node, "guess", value],
        );
        assert_eq!(g["round"], 1);
    }
    let w = cli_json(
        &cluster,
        &["--client-id", "client1", "--node", "node2", "write", "75"],
    );
    assert_eq!(w["round"], 2);
    assert_eq!(w["closed"]["winner"], "client3");
    assert_eq!(w["closed"]["guess"], 45);

    for id in cluster.ids() {
        let r = cli_json(&cluster, &["--node", &id, "read", "--linearizable"]);
        assert_eq!(
            (
                r["round"].clone(),
                r["target"].clone(),
                r["guesses"].clone()
            ),
            (2.into(), 75.into(), 0.into()),
            "{r}"
        );
        assert_eq!(r["last_result"]["round"], 1);
        assert_eq!(r["last_result"]["target"], 50);
        assert_eq!(r["last_result"]["winner"], "client3");
        assert_eq!(r["last_result"]["guess"], 45);
    }
    // Local reads catch up on every node too (sequential consistency).
    for id in cluster.ids() {
        let mut ok = false;
        for _ in 0..50 {
            let r = cli_json(&cluster, &["--node", &id, "read"]);
            if r["round"] == 2 && r["last_result"]["winner"] == "client3" {
                ok = true;
                break;
            }
            sleep_ms(50);
        }
        assert!(ok, "{id} never applied round 2");
    }

    let st = cli_json(&cluster, &["status"]);
    assert!(st["leader"].is_string(), "{st}");
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    assert_eq!(nodes.iter().filter(|n| n["role"] == "leader").count(), 1);
    assert_eq!(nodes.iter().filter(|n| n["role"] == "follower").count(), 4);
}

#[test]
fn game_rules_refuse_a_second_guess_and_a_guess_without_a_round() {
    let _turn = serial();
    let rt = runtime();
    let (cluster, _) = started(&rt, 3, |_| {});

    let o = cli(&cluster, &["--client-id", "c1", "guess", "10"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no round is open"), "{}", stderr(&o));

    cli_json(&cluster, &["--client-id", "c0", "write", "30"]);
    cli_json(
        &cluster,
        &["--client-id", "c1", "--node", "node1", "guess", "10"],
    );
    let o = cli(
        &cluster,
        &["--client-id", "c1", "--node", "node2", "guess", "20"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("already guessed in round 1"),
        "{}",
        stderr(&o)
    );

    // Tie: the earliest committed guess wins.
    cli_json(&cluster, &["--client-id", "c2", "guess", "50"]);
    let w = cli_json(&cluster, &["--client-id", "c0", "write", "40"]);
    assert_eq!(w["closed"]["winner"], "c1", "{w}");
    let r = cli_json(&cluster, &["read", "--linearizable"]);
    assert_eq!(r["guesses"], 0);
    // The refused guess wrote nothing: round 1 had exactly two guesses on every node's log.
    let log = assert_committed_prefixes_agree(&cluster);
    let guesses = log
        .iter()
        .filter(|(_, op)| op.contains("\"guess\"") && op.contains("\"round\":1"))
        .count();
    assert_eq!(guesses, 2, "{log:?}");
}

/// `Game.Session`: a client's requests on one stream are answered as their unary calls
/// (writes through a follower commit, refusals come back as such, reads see the writes), and a
/// node that stops ends its sessions instead of waiting for them.
#[test]
fn a_session_answers_each_request_as_its_unary_call_and_ends_when_the_node_stops() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, leader) = started(&rt, 3, |_| {});
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let (label, address) = cluster
        .endpoints()
        .into_iter()
        .find(|(id, _)| *id == follower)
        .expect("its endpoint");
    let mut s = guessgame_client::Session::new(&label, &address, std::time::Duration::from_secs(5))
        .unwrap();
    let w = rt
        .block_on(s.write("s-writer", 40))
        .expect("write through a follower's session");
    assert_eq!(w.target, 40);
    assert_eq!(w.leader, leader, "committed by the leader");
    for k in 0..20 {
        rt.block_on(s.guess(&format!("s{k}"), k)).expect("guess");
    }
    let e = rt.block_on(s.guess("s3", 9)).unwrap_err();
    assert_eq!(e.kind, guessgame_client::ErrorKind::DuplicateGuess, "{e}");
    let e = rt.block_on(s.guess("s21", 1000)).unwrap_err();
    assert_eq!(e.kind, guessgame_client::ErrorKind::InvalidArgument, "{e}");
    let state = rt.block_on(s.read(false)).expect("local read");
    assert_eq!((state.target, state.guesses), (Some(40), 20), "{state:?}");
    assert_eq!(state.node, follower);
    let lin = rt.block_on(s.read(true)).expect("linearizable read");
    assert_eq!(lin.guesses, 20);

    // The session stays open; stopping its node must not wait for it.
    let stopped = std::time::Instant::now();
    cluster.stop(&follower).unwrap();
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(3),
        "the node waited {:?} for an open session",
        stopped.elapsed()
    );
    let e = rt.block_on(s.read(false)).unwrap_err();
    assert_eq!(e.kind, guessgame_client::ErrorKind::Unavailable, "{e}");
}

#[test]
fn a_node_in_no_quorum_refuses_local_reads_unless_asked_to_allow_stale_answers() {
    let _turn = serial();
    let rt = runtime();
    let _enter = rt.enter();
    let (mut cluster, leader) = started(&rt, 3, |_| {});
    let o = cli(
        &cluster,
        &["--client-id", "w", "--node", &leader, "write", "30"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lone = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    // A quorum's follower answers, not flagged.
    let r = cli_json(&cluster, &["--node", &lone, "read"]);
    assert_eq!(
        (r["target"].as_u64(), r["stale"].is_null()),
        (Some(30), true),
        "{r}"
    );

    for id in cluster.ids().into_iter().filter(|id| *id != lone) {
        cluster.kill(&id).unwrap();
    }
    // Once it has given its leader up, the lone node says it is in no quorum.
    let mut at_lone = cluster.client_of(&lone, Duration::from_secs(2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let stale = loop {
        let s = rt
            .block_on(at_lone.read_allowing_stale())
            .expect("a stale read is answered");
        if s.stale.is_some() {
            break s;
        }
        assert!(Instant::now() < deadline, "{lone} still in a quorum: {s:?}");
        sleep_ms(100);
    };
    assert_eq!(stale.target, Some(30), "{stale:?}");
    assert!(
        stale.stale.as_deref().unwrap().contains("looking"),
        "{stale:?}"
    );
    let e = rt.block_on(at_lone.read(false)).unwrap_err();
    assert_eq!(e.kind, guessgame_client::ErrorKind::NoLeader, "{e}");
    assert!(e.message.contains("--allow-stale"), "{e}");

    // The CLI: refused with the retry exit status and the way out named; allowed, flagged.
    let o = cli(&cluster, &["--node", &lone, "read"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("--allow-stale"), "{}", stderr(&o));
    let o = cli(&cluster, &["--node", &lone, "read", "--allow-stale"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("target 30"), "{}", stdout(&o));
    assert!(stdout(&o).contains("STALE:"), "{}", stdout(&o));
    let r = cli_json(&cluster, &["--node", &lone, "read", "--allow-stale"]);
    assert!(r["stale"].as_str().unwrap().contains("looking"), "{r}");
    let o = cli(
        &cluster,
        &["--node", &lone, "read", "--allow-stale", "--linearizable"],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "conflicting flags: {}",
        stderr(&o)
    );

    // Back in a quorum, it answers plain local reads again.
    cluster.start(&leader).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rt.block_on(at_lone.read(false)) {
            Ok(s) => {
                assert_eq!((s.target, s.stale), (Some(30), None));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        sleep_ms(100);
    }
}

/// A move sent again under its number (client id and `--request-seq`) is answered with what it
/// did the first time and is not applied again: through the leader or a follower, after other
/// moves, and after its leader was killed and another one took over (the table of recent
/// requests is replicated state). A new number is a new move.
#[test]
fn a_move_sent_again_under_its_number_is_answered_with_what_it_did_and_written_once() {
    let _turn = serial();
    let rt = runtime();
    let (mut cluster, leader) = started(&rt, 3, |_| {});
    let follower = ["node1", "node2", "node3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let alice = |cluster: &LocalCluster, node: &str, seq: &str, value: &str| {
        cli_json(
            cluster,
            &[
                "--client-id",
                "alice",
                "--request-seq",
                seq,
                "--node",
                node,
                "write",
                value,
            ],
        )
    };
    let first = alice(&cluster, &leader, "41", "50");
    assert_eq!(
        (first["round"].as_u64(), first["target"].as_u64()),
        (Some(1), Some(50))
    );
    // Again, through a follower that forwards it: the same answer, nothing new in the log.
    assert_eq!(alice(&cluster, follower, "41", "50"), first);
    let bob = ["--client-id", "bob", "--request-seq", "7", "guess", "45"];
    let g = cli_json(&cluster, &bob);
    assert_eq!(
        cli_json(&cluster, &bob)["zxid"],
        g["zxid"],
        "a guess retried is not a second guess"
    );
    let w2 = cli_json(&cluster, &["--client-id", "carol", "write", "70"]);
    assert_eq!(w2["round"], 2);
    assert_eq!(w2["closed"]["winner"], "bob", "{w2}");
    // After a later round opened, the retry still names round 1, and opens nothing.
    assert_eq!(alice(&cluster, &leader, "41", "50"), first);
    // The leader dies; its successor answers the retry from the replicated table.
    cluster.kill(&leader).unwrap();
    rt.block_on(cluster.wait_for_leader(Duration::from_secs(20)))
        .expect("a new leader");
    let again = alice(&cluster, follower, "41", "50");
    assert_eq!(
        (&again["zxid"], &again["round"]),
        (&first["zxid"], &first["round"])
    );
    let r = cli_json(&cluster, &["--node", follower, "read", "--linearizable"]);
    assert_eq!(r["round"], 2, "no retry opened a round: {r}");
    // A new number is a new write.
    assert_eq!(alice(&cluster, follower, "42", "60")["round"], 3);
    cluster.start(&leader).unwrap();
    let log = assert_committed_prefixes_agree(&cluster);
    let targets = log
        .iter()
        .filter(|(_, op)| op.contains("\"type\":\"target\""))
        .count();
    let guesses = log
        .iter()
        .filter(|(_, op)| op.contains("\"type\":\"guess\""))
        .count();
    assert_eq!((targets, guesses), (3, 1), "{log:?}");
    // Request numbers start at 1.
    let o = cli(
        &cluster,
        &["--client-id", "alice", "--request-seq", "0", "write", "5"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
