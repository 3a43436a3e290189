//! Persist before acknowledging: whenever a node's output reveals state to anyone (a message,
//! a client reply, an applied entry), that state is already durable in its store — checked
//! by carrying out every output list strictly in order, as a crash could cut it anywhere.

use std::collections::{BTreeMap, VecDeque};

use guessgame_core::{
    split_early, ClientOp, ClientReply, Engine, Event, Message, Output, Persistent, SnapshotPolicy,
    Timing, Zxid,
};

/// Snapshots installed by followers in this test binary (the runs must include some).
static INSTALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Node {
    engine: Engine,
    durable: Persistent,
}

type Net = VecDeque<(String, String, Message)>;

fn durable_has(d: &Persistent, z: Zxid) -> bool {
    // At or below the log start: compacted into a durable snapshot.
    z <= d.log_start || d.log.iter().any(|e| e.zxid == z)
}

/// Checks a message against the sender's durable state at the moment it is sent.
fn check_send(id: &str, node: &Node, to: &str, msg: &Message) {
    let d = &node.durable;
    match msg {
        Message::Ack { epoch, zxid } => {
            assert!(
                durable_has(d, *zxid),
                "{id} acked {zxid} before persisting it"
            );
            assert!(
                d.accepted_epoch >= *epoch,
                "{id} acked in epoch {epoch} before persisting the epoch"
            );
            // Compared where both still hold entries (memory may have compacted already).
            let from = node.engine.log_start().max(d.log_start);
            let held = |e: &&guessgame_core::Entry| e.zxid > from && e.zxid <= *zxid;
            let mem: Vec<_> = node.engine.log().iter().filter(held).collect();
            let disk: Vec<_> = d.log.iter().filter(held).collect();
            assert_eq!(mem, disk, "{id}: acked prefix differs on disk");
        }
        // "Installed" (all of it acknowledged, our log now starting at it) must mean on disk.
        Message::SnapshotAck { zxid, received, .. }
            if *received > 0 && node.engine.log_start() == *zxid =>
        {
            assert!(
                d.snapshot.as_ref().is_some_and(|s| s.zxid == *zxid) && d.log_start == *zxid,
                "{id} acknowledged the snapshot at {zxid} before persisting it"
            );
        }
        Message::NewEpoch { epoch, .. } => {
            assert!(
                d.accepted_epoch >= *epoch,
                "{id} stood for {epoch} before persisting it"
            );
        }
        Message::FollowerInfo { epoch, .. }
            if node.engine.leader().map(String::as_str) == Some(to) =>
        {
            assert!(
                d.accepted_epoch >= *epoch,
                "{id} accepted {epoch} before persisting it"
            );
        }
        Message::Proposal { entries, .. } | Message::Sync { entries, .. } => {
            for e in entries {
                assert!(
                    durable_has(d, e.zxid),
                    "{id} sent {} before persisting it",
                    e.zxid
                );
            }
        }
        Message::HeartbeatAck { last_zxid, .. } => {
            assert!(
                durable_has(d, *last_zxid),
                "{id} reported {last_zxid} before persisting it"
            );
        }
        _ => {}
    }
}

/// A message that leaves before the batch's persists (`Output::SendEarly`): only a leader's
/// proposals, commits and heartbeats, and the commit point it carries is on the sender's disk
/// already (a leader counts its own copy only once durable).
fn check_early_send(id: &str, node: &Node, msg: &Message) {
    let d = &node.durable;
    let commit = match msg {
        Message::Proposal { commit, .. }
        | Message::Commit { zxid: commit, .. }
        | Message::Heartbeat { commit, .. } => *commit,
        other => panic!("{id} sent {} ahead of its persists", other.kind()),
    };
    assert!(
        node.engine.is_established_leader(),
        "{id} sent {} ahead of its persists without leading",
        msg.kind()
    );
    assert!(
        durable_has(d, commit),
        "{id} announced commit point {commit} before persisting it"
    );
}

/// Carries out `outputs` of `id` as the runtime does — the early sends not behind a `Send` to
/// the same peer first, then the rest in order — checking each revealing output against the
/// store; then tells the engine its log is durable, as the runtime does.
fn execute(
    id: &str,
    node: &mut Node,
    outputs: Vec<Output>,
    net: &mut Net,
    replies: &mut Vec<ClientReply>,
) {
    let (early, rest) = split_early(outputs);
    for (to, msg) in early {
        check_early_send(id, node, &msg);
        net.push_back((id.to_string(), to, msg));
    }
    let mut log_changed = false;
    for o in rest {
        match o {
            Output::Persist(op) => {
                log_changed |= op.changes_log();
                node.durable.apply(&[op])
            }
            Output::SendEarly { .. } => unreachable!("sorted above"),
            Output::Send { to, msg } => {
                check_send(id, node, &to, &msg);
                net.push_back((id.to_string(), to, msg));
            }
            Output::Apply(e) => assert!(
                durable_has(&node.durable, e.zxid),
                "{id} applied {} before persisting it",
                e.zxid
            ),
            Output::Restore(s) => {
                INSTALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert!(
                    node.durable.snapshot.as_ref() == Some(&s) && node.durable.committed >= s.zxid,
                    "{id} restored the snapshot at {} before persisting it",
                    s.zxid
                )
            }
            Output::Reply { result: Ok(r), .. } => {
                if let ClientReply::Written { zxid, .. } | ClientReply::Guessed { zxid, .. } = &r {
                    assert!(
                        durable_has(&node.durable, *zxid),
                        "{id} answered for {zxid} before persisting it"
                    );
                }
                replies.push(r);
            }
            Output::Reply { .. } => {}
        }
    }
    if log_changed {
        let out = node.engine.step(Event::Persisted);
        execute(id, node, out, net, replies);
    }
}

#[test]
fn every_ack_reply_and_apply_follows_the_persist_it_depends_on() {
    let ids: Vec<String> = (1..=5).map(|i| format!("node{i}")).collect();
    let timing = Timing {
        heartbeat_ms: 50,
        election_timeout_ms: 300,
    };
    // Small enough that nodes snapshot, compact and install snapshots during the run.
    let policy = SnapshotPolicy {
        every_entries: 10,
        every_bytes: u64::MAX,
        retain_entries: 3,
        chunk_bytes: 64,
        diff_entries: 4,
        diff_bytes: 1 << 20,
    };
    let fresh = |id: &String, state: Persistent, seed: u64| {
        Engine::new(id.clone(), ids.clone(), 3, timing.clone(), state, seed)
            .with_snapshot_policy(policy.clone())
    };
    let mut nodes: BTreeMap<String, Node> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let node = Node {
                engine: fresh(id, Persistent::default(), i as u64 + 7),
                durable: Persistent::default(),
            };
            (id.clone(), node)
        })
        .collect();
    let mut net = Net::new();
    let mut replies = Vec::new();
    let mut now = 0;
    let mut req = 0;
    let mut crashed: Option<String> = None;
    for step in 0..4000u64 {
        now += 5;
        for (id, node) in nodes.iter_mut() {
            if crashed.as_ref() != Some(id) {
                let out = node.engine.step(Event::Tick { now_ms: now });
                execute(id, node, out, &mut net, &mut replies);
            }
        }
        // Deliver what is in flight (FIFO, no loss: this test is about ordering).
        for _ in 0..net.len() {
            let (from, to, msg) = net.pop_front().unwrap();
            if crashed.as_ref() == Some(&to) || crashed.as_ref() == Some(&from) {
                continue;
            }
            let node = nodes.get_mut(&to).unwrap();
            let out = node.engine.step(Event::Message { from, msg });
            execute(&to, node, out, &mut net, &mut replies);
        }
        // Clients write and guess through whoever leads.
        if step % 7 == 0 {
            if let Some((id, node)) = nodes
                .iter_mut()
                .find(|(_, n)| n.engine.is_established_leader())
            {
                req += 1;
                let value = (req % 101) as u32;
                let op = if req % 4 == 0 {
                    ClientOp::Write {
                        client: "w".into(),
                        value,
                        seq: 0,
                    }
                } else {
                    ClientOp::Guess {
                        client: format!("c{req}"),
                        value,
                        seq: 0,
                    }
                };
                let out = node.engine.step(Event::Propose { req, op });
                let id = id.clone();
                execute(&id, node, out, &mut net, &mut replies);
            }
        }
        // Crash the leader now and then; restart it later from its durable image only.
        if step % 900 == 450 {
            crashed = nodes
                .iter()
                .find(|(_, n)| n.engine.is_established_leader())
                .map(|(id, _)| id.clone());
        }
        if step % 900 == 800 {
            if let Some(id) = crashed.take() {
                let n = nodes.get_mut(&id).unwrap();
                n.engine = fresh(&id, n.durable.clone(), step);
            }
        }
    }
    assert!(
        replies.len() > 100,
        "too few writes committed: {}",
        replies.len()
    );
    let epochs: Vec<u64> = nodes.values().map(|n| n.engine.current_epoch()).collect();
    assert!(
        epochs.iter().all(|e| *e >= 3),
        "leader crashes should have caused elections: {epochs:?}"
    );
    // The run must have crossed snapshots, and a restarted leader (behind by the writes
    // committed while it was down) must have installed one.
    assert!(
        nodes.values().all(|n| n.durable.snapshot.is_some()),
        "every node snapshots during the run"
    );
    assert!(
        INSTALLS.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "some node installed a leader's snapshot"
    );
}

/// A lone voter commits its own entries by itself: its commit must still wait for its own
/// write, because a learner hears the commit point from it (ahead of that write, as a
/// `SendEarly`) and would otherwise apply an entry a crash can take back.
#[test]
fn a_lone_voter_announces_no_commit_point_it_has_not_persisted() {
    use guessgame_core::{Member, Membership};
    let member = |id: &str| Member {
        id: id.into(),
        address: String::new(),
    };
    let membership = Membership {
        voters: vec![member("a")],
        learners: vec![member("b")],
    };
    let mut node = Node {
        engine: Engine::with_membership(
            "a".into(),
            membership,
            Timing::default(),
            Persistent::default(),
            3,
        ),
        durable: Persistent::default(),
    };
    let mut net = Net::new();
    let mut replies = Vec::new();
    for now in (0..3_000).step_by(50) {
        let out = node.engine.step(Event::Tick { now_ms: now });
        execute("a", &mut node, out, &mut net, &mut replies);
    }
    assert!(node.engine.is_established_leader(), "a lone voter leads");
    // The learner is synced: it answers the leader's sync as a follower would.
    let info = Message::FollowerInfo {
        epoch: node.engine.current_epoch(),
        summary: vec![],
        last_zxid: Zxid::ZERO,
    };
    let out = node.engine.step(Event::Message {
        from: "b".into(),
        msg: info,
    });
    execute("a", &mut node, out, &mut net, &mut replies);
    for req in 1..=5 {
        let op = ClientOp::Write {
            client: "w".into(),
            value: req as u32,
            seq: 0,
        };
        let out = node.engine.step(Event::Propose { req, op });
        execute("a", &mut node, out, &mut net, &mut replies);
    }
    assert_eq!(replies.len(), 5, "every write commits on the lone voter");
    assert!(
        net.iter()
            .any(|(_, to, m)| to == "b" && m.kind() == "commit"),
        "the learner was told the commit points"
    );
}
