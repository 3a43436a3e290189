//! The `Peer.Stream` call: one long-lived stream per sender, its batches handed to the engine
//! in order, checked like `Deliver`; its end (EOF, or the reset a killed process leaves)
//! reported as `PeerLost`, except while the node shuts down. A fake engine (the command
//! channel's receiver) stands in for the runtime.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

use guessgame_core::game::Game;
use guessgame_core::{Membership, Message, RoleKind, Zxid};
use guessgame_node::runtime::{Command, NodeView};
use guessgame_node::service::NodeServices;
use guessgame_node::transport::{GrpcTransport, Transport};
use guessgame_wire::config::Config;
use guessgame_wire::convert::message_to_pb;
use guessgame_wire::proto::{self as pb, peer_client::PeerClient, peer_server::PeerServer};

/// Set in the child process [`a_killed_peer_is_reported_lost_at_once`] starts.
const CHILD_ENV: &str = "GUESSGAME_PEER_STREAM_CHILD";

fn view() -> NodeView {
    NodeView {
        node_id: "node1".into(),
        role: RoleKind::Following,
        leader: None,
        accepted_epoch: 0,
        current_epoch: 0,
        last_zxid: Zxid::ZERO,
        committed: Zxid::ZERO,
        snapshot: Zxid::ZERO,
        log_start: Zxid::ZERO,
        first_zxid: Zxid::ZERO,
        members: 3,
        quorum: 2,
        membership: Arc::new(Membership::default()),
        config_zxid: Zxid::ZERO,
        committed_membership: Arc::new(Membership::default()),
        committed_config_zxid: Zxid::ZERO,
        removed: false,
        stopping: false,
        serves_reads: true,
        game: Arc::new(Game::default()),
    }
}

struct Node {
    address: String,
    commands: mpsc::UnboundedReceiver<Command>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// `node1` of a three-node configuration (`node2` and `node3` are known peers), serving the
/// `Peer` service as `server::run_with` does, with a fake engine.
async fn node() -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, commands) = mpsc::unbounded_channel();
    let services = NodeServices::new(Config::local(3, 47_100), tx, Arc::new(RwLock::new(view())));
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = services.closing_peer_streams_on(async {
        let _ = stopped.await;
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PeerServer::new(services))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown),
    );
    Node {
        address,
        commands,
        stop: Some(stop),
        server,
    }
}

async fn client(address: &str) -> PeerClient<tonic::transport::Channel> {
    PeerClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn ack(counter: u64) -> Message {
    Message::Ack {
        epoch: 1,
        zxid: Zxid::new(1, counter),
    }
}

fn batch(from: &str, counters: std::ops::Range<u64>) -> pb::PeerBatch {
    pb::PeerBatch {
        from: from.into(),
        messages: counters.map(|c| message_to_pb(&ack(c))).collect(),
        from_address: String::new(),
    }
}

async fn next(commands: &mut mpsc::UnboundedReceiver<Command>) -> Command {
    tokio::time::timeout(Duration::from_secs(5), commands.recv())
        .await
        .expect("a command within 5 s")
        .expect("the server is up")
}

/// The next command is message `counter` from `node2`.
async fn expect_ack(commands: &mut mpsc::UnboundedReceiver<Command>, counter: u64) {
    match next(commands).await {
        Command::Peer {
            from,
            from_address,
            msg,
        } => {
            assert_eq!(from, "node2");
            assert_eq!(from_address, None);
            assert_eq!(msg, ack(counter));
        }
        _ => panic!("expected message {counter} from node2"),
    }
}

async fn expect_lost(commands: &mut mpsc::UnboundedReceiver<Command>) {
    expect_lost_of(commands, "node2").await
}

async fn expect_lost_of(commands: &mut mpsc::UnboundedReceiver<Command>, id: &str) {
    match next(commands).await {
        Command::PeerLost { peer } => assert_eq!(peer, id),
        _ => panic!("expected PeerLost for {id}"),
    }
}

/// Nothing more reaches the engine for a while.
async fn expect_quiet(commands: &mut mpsc::UnboundedReceiver<Command>) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(commands.try_recv().is_err(), "unexpected command");
}

#[tokio::test]
async fn one_stream_delivers_in_order_and_its_end_reports_the_sender_lost() {
    let mut node = node().await;
    let (tx, rx) = mpsc::channel(16);
    let mut c = client(&node.address).await;
    let call = tokio::spawn(async move { c.stream(ReceiverStream::new(rx)).await });
    // The sender is named in the first batch only; a later batch may repeat it.
    tx.send(batch("node2", 0..3)).await.unwrap();
    tx.send(batch("", 3..4)).await.unwrap();
    tx.send(batch("node2", 4..10)).await.unwrap();
    for i in 0..10 {
        expect_ack(&mut node.commands, i).await;
    }
    // Still open: the stream lasts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!call.is_finished());
    tx.send(batch("", 10..11)).await.unwrap();
    expect_ack(&mut node.commands, 10).await;
    // EOF: the sender stopped.
    drop(tx);
    expect_lost(&mut node.commands).await;
    call.await.unwrap().expect("a clean end is answered");
    expect_quiet(&mut node.commands).await;
}

#[tokio::test]
async fn an_aborted_stream_reports_the_sender_lost() {
    let mut node = node().await;
    let (tx, rx) = mpsc::channel(16);
    let mut c = client(&node.address).await;
    let call = tokio::spawn(async move { c.stream(ReceiverStream::new(rx)).await });
    tx.send(batch("node2", 0..1)).await.unwrap();
    expect_ack(&mut node.commands, 0).await;
    // The call dropped mid-stream (the stream is reset, the connection stays).
    call.abort();
    let t = Instant::now();
    expect_lost(&mut node.commands).await;
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    drop(tx);
}

#[tokio::test]
async fn streams_are_checked_like_deliver() {
    let mut node = node().await;
    let mut c = client(&node.address).await;
    let one = |b: pb::PeerBatch| tokio_stream::iter(vec![b]);
    // Unknown, and no address to answer at: not a peer.
    let status = c.stream(one(batch("node9", 0..1))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let status = c.deliver(batch("node9", 0..1)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // An address, but no valid id.
    let mut bad = batch("no good", 0..1);
    bad.from_address = "127.0.0.1:1".into();
    let status = c.stream(one(bad.clone())).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let status = c.deliver(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A newcomer that says where it is reached is heard.
    let mut newcomer = batch("node4", 0..1);
    newcomer.from_address = "127.0.0.1:2".into();
    c.stream(one(newcomer)).await.unwrap();
    match next(&mut node.commands).await {
        Command::Peer {
            from, from_address, ..
        } => {
            assert_eq!(from, "node4");
            assert_eq!(from_address.as_deref(), Some("127.0.0.1:2"));
        }
        _ => panic!("expected node4's message"),
    }
    // Its stream ended (EOF after the one batch).
    expect_lost_of(&mut node.commands, "node4").await;
    // An undecodable message ends the stream; the batch is refused whole, and no PeerLost
    // (the sender is alive and opens a new stream).
    let (tx, rx) = mpsc::channel(16);
    let call = tokio::spawn({
        let mut c = c.clone();
        async move { c.stream(ReceiverStream::new(rx)).await }
    });
    tx.send(batch("node2", 0..1)).await.unwrap();
    expect_ack(&mut node.commands, 0).await;
    let mut broken = batch("", 1..2);
    broken.messages.push(pb::PeerMessage { body: None });
    tx.send(broken).await.unwrap();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // Another sender's batch on node2's stream.
    let (tx, rx) = mpsc::channel(16);
    let call = tokio::spawn({
        let mut c = c.clone();
        async move { c.stream(ReceiverStream::new(rx)).await }
    });
    tx.send(batch("node2", 0..1)).await.unwrap();
    expect_ack(&mut node.commands, 0).await;
    tx.send(batch("node3", 1..2)).await.unwrap();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    expect_quiet(&mut node.commands).await;
    drop(tx);
}

#[tokio::test]
async fn shutdown_ends_open_streams_without_reporting_them_lost() {
    let mut node = node().await;
    let (tx, rx) = mpsc::channel(16);
    let mut c = client(&node.address).await;
    let call = tokio::spawn(async move { c.stream(ReceiverStream::new(rx)).await });
    tx.send(batch("node2", 0..1)).await.unwrap();
    expect_ack(&mut node.commands, 0).await;
    let _ = node.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(2), &mut node.server)
        .await
        .expect("graceful shutdown does not wait for the open stream")
        .unwrap()
        .unwrap();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(node.commands.try_recv().is_err(), "no PeerLost at shutdown");
    drop(tx);
}

/// `GrpcTransport` keeps one stream per peer: everything arrives in order (more than one
/// batch's worth), and its end — the transport dropped, as when the node stops — is one
/// `PeerLost`.
#[tokio::test]
async fn the_transport_sends_over_one_stream_in_order() {
    let mut node = node().await;
    let mut transport = GrpcTransport::start(
        "node2",
        "127.0.0.1:47101",
        &[("node1".to_string(), node.address.clone())],
    )
    .unwrap();
    let to = "node1".to_string();
    for i in 0..3000 {
        transport.send(&to, &ack(i));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 3000..3100 {
        transport.send(&to, &ack(i));
    }
    for i in 0..3100 {
        match next(&mut node.commands).await {
            Command::Peer {
                from,
                from_address,
                msg,
            } => {
                assert_eq!(from, "node2");
                assert_eq!(from_address.as_deref(), Some("127.0.0.1:47101"));
                assert_eq!(msg, ack(i));
            }
            _ => panic!("expected message {i}"),
        }
    }
    drop(transport);
    expect_lost(&mut node.commands).await;
    expect_quiet(&mut node.commands).await;
}

/// The child of [`a_killed_peer_is_reported_lost_at_once`]: opens a stream to the node at
/// `$GUESSGAME_PEER_STREAM_CHILD`, sends one batch and waits to be killed. Without the
/// variable (a normal test run) it does nothing.
#[tokio::test]
async fn peer_stream_child() {
    let Ok(address) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(batch("node2", 0..1)).await.unwrap();
    let mut c = client(&address).await;
    let _ = c.stream(ReceiverStream::new(rx)).await;
    unreachable!("the stream stays open until this process is killed");
}

#[tokio::test]
async fn a_killed_peer_is_reported_lost_at_once() {
    let mut node = node().await;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["peer_stream_child", "--exact", "--nocapture"])
        .env(CHILD_ENV, &node.address)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    expect_ack(&mut node.commands, 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(node.commands.try_recv().is_err());
    // SIGKILL: no goodbye, the kernel closes the connection.
    child.start_kill().unwrap();
    let t = Instant::now();
    expect_lost(&mut node.commands).await;
    let took = t.elapsed();
    assert!(took < Duration::from_millis(500), "PeerLost after {took:?}");
    eprintln!("PeerLost {took:?} after SIGKILL");
    let _ = child.wait().await;
}
