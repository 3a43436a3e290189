//! Property tests over what an attacker controls: bytes on the peer port, messages from a
//! member, client requests, and the database file. None of it may panic the node.

use guessgame_core::{ClientOp, Engine, Event, Persistent, Timing};
use guessgame_node::storage::SqliteLog;
use guessgame_wire::convert::message_from_pb;
use guessgame_wire::proto::{PeerBatch, PeerMessage, ReadRequest, WriteRequest};
use proptest::prelude::*;
use prost::Message as _;

fn engine(id: &str) -> Engine {
    let ids = ["node1", "node2", "node3"].map(String::from).to_vec();
    Engine::new(
        id.into(),
        ids,
        2,
        Timing::default(),
        Persistent::default(),
        3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Garbage bytes never panic the decoder; what decodes is converted or refused cleanly,
    /// and anything that converts can be fed to the engine.
    #[test]
    fn arbitrary_bytes_on_the_peer_port_are_refused_or_handled(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(batch) = PeerBatch::decode(&bytes[..]) {
            let mut e = engine("node1");
            for m in batch.messages {
                if let Ok(msg) = message_from_pb(m) {
                    let _ = e.step(Event::Message { from: "node2".into(), msg });
                }
            }
        }
        if let Ok(m) = PeerMessage::decode(&bytes[..]) {
            let _ = message_from_pb(m);
        }
        let _ = WriteRequest::decode(&bytes[..]);
        let _ = ReadRequest::decode(&bytes[..]);
    }

    /// Any sequence of well-formed but arbitrary messages, ticks and client requests leaves
    /// the engine alive, and never makes it commit past what it holds.
    #[test]
    fn arbitrary_message_sequences_do_not_panic_the_engine(
        steps in proptest::collection::vec((0u8..11, any::<u64>(), any::<u64>(), any::<u32>()), 0..64)
    ) {
        use guessgame_core::{Credentials, Message, Zxid, Entry, Op, Member, Membership};
        let member = |n: u64| Member { id: format!("node{}", 1 + n % 5), address: format!("127.0.0.1:{}", 7101 + n % 5) };
        let mut e = engine("node1");
        let mut now = 0;
        for (kind, a, b, v) in steps {
            let z = Zxid::new(a % 4, b % 6);
            let from = if a % 2 == 0 { "node2" } else { "node3" }.to_string();
            let ev = match kind {
                0 => { now += b % 500; Event::Tick { now_ms: now } }
                1 => Event::Message { from: from.clone(), msg: Message::NewEpoch { epoch: a % 5, creds: Credentials { last_zxid: z, node_id: from } } },
                2 => Event::Message { from, msg: Message::Sync { epoch: a % 5, truncate_to: z, entries: vec![Entry { zxid: Zxid::new(a % 5, 0), op: Op::NewLeader { leader: "node2".into() } }], commit: Zxid::new(b % 5, a % 3) } },
                3 => Event::Message { from, msg: Message::Proposal { epoch: a % 5, prev: z, entries: vec![Entry { zxid: Zxid::new(a % 5, 1 + b % 3), op: Op::Guess { round: 1, client: "x".into(), value: v % 101, seq: 0 } }], commit: z } },
                4 => Event::Message { from, msg: Message::Ack { epoch: a % 5, zxid: z } },
                // Configuration entries (a node outside any configuration sends too).
                5 => Event::Message { from: format!("node{}", 1 + b % 7), msg: Message::Proposal { epoch: a % 5, prev: z, entries: vec![Entry { zxid: Zxid::new(a % 5, 1 + b % 3), op: Op::Config(Membership { voters: (0..1 + v as u64 % 4).map(|k| member(a + k)).collect(), learners: vec![member(b)] }) }], commit: z } },
                6 => Event::Message { from, msg: Message::NotMember { epoch: a % 5, config: z } },
                7 => Event::Message { from, msg: Message::StepDown { epoch: a % 5 } },
                8 => Event::Propose { req: a, op: ClientOp::AddMember { member: member(b), voter: v % 2 == 0 } },
                9 => Event::Propose { req: a, op: ClientOp::RemoveMember { id: member(b).id } },
                _ => Event::Propose { req: a, op: ClientOp::Write { client: "c".into(), value: v % 101, seq: 0 } },
            };
            let _ = e.step(ev);
            prop_assert!(e.committed() <= e.last_zxid());
        }
    }

}

proptest! {
    // Each case creates and fsyncs a database: fewer cases.
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// A database file with random bytes flipped is refused with an error or opened — never a
    /// panic — and a refused file is left exactly as it was.
    #[test]
    fn a_damaged_database_file_is_refused_without_panicking(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
        let dir = tempfile::tempdir().unwrap();
        {
            use guessgame_node::storage::LogStore;
            use guessgame_core::{StorageOp, Entry, Op, Zxid};
            let mut log = SqliteLog::open(dir.path(), "node1").unwrap();
            let entries: Vec<Entry> = (0..50).map(|c| Entry { zxid: Zxid::new(1, c), op: Op::Guess { round: 1, client: format!("c{c}"), value: 7, seq: 0 } }).collect();
            log.persist(&[StorageOp::Append(entries), StorageOp::SetAcceptedEpoch(1)]).unwrap();
        }
        let path = dir.path().join("logs_node1.db");
        // Fold the WAL into the main file so the damage hits what is read at open.
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for (pos, val) in flips {
            bytes[pos % len] ^= val | 1;
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = std::fs::remove_file(dir.path().join("logs_node1.db-wal"));
        match SqliteLog::open(dir.path(), "node1") {
            Err(_) => prop_assert_eq!(std::fs::read(&path).unwrap(), bytes),
            Ok(mut log) => {
                use guessgame_node::storage::LogStore;
                let _ = log.load();
            }
        }
    }
}
