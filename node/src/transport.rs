//! Outgoing peer traffic: one queue, one sending task and one long-lived `Peer.Stream` call
//! per peer.
//!
//! The task pushes batches into the stream: whatever queued up while the stream was busy
//! goes in the next batch (up to [`MAX_BATCH`] messages). Delivery is best effort — when the
//! stream fails, what was in flight and what piled up meanwhile is dropped, and the protocol
//! recovers (resync, retransmission on ticks); the task opens a new stream, after a short
//! back-off, once there is something to send. The queue is bounded so a dead peer cannot eat
//! the memory.
//!
//! The receiver takes the end of our stream as a sign that we may be gone (it starts an
//! election at once when we led it). The stream ends when this node stops (the queue's
//! sender is dropped), when the process dies (the kernel resets the connection), and also
//! when [`Transport::learn`] gives the peer a new address: the old stream closes as the new
//! one opens, and a receiver that followed us may then start an election it did not need.
//! Addresses change only with membership, so that is rare and harmless.
//!
//! Every stream names this node's ensemble in its metadata ([`ENSEMBLE_HEADER`], read from
//! the [`Identity`] when the stream opens) and this node ([`NODE_HEADER`]). A peer of another
//! ensemble refuses it (FAILED_PRECONDITION): that is logged once per peer, and the stream is
//! retried only every [`REFUSED_PAUSE`] (what is queued meanwhile is dropped, as for any
//! failed stream), in case the peer's address is reused by a member of our ensemble.

use std::collections::HashMap;
use std::pin::pin;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::identity::{Identity, ENSEMBLE_HEADER, NODE_HEADER};
use guessgame_core::{Message, NodeId};
use guessgame_wire::channel::stream_channel;
use guessgame_wire::convert::message_to_pb;
use guessgame_wire::proto::{self as pb, peer_client::PeerClient};

const QUEUE: usize = 16_384;
const MAX_BATCH: usize = 1024;
/// Batches handed to the stream that its HTTP/2 connection has not taken yet. Few: while the
/// stream is backed up, messages wait in the queue, where they batch up.
const IN_FLIGHT: usize = 2;
/// A stream that lasted this long worked: its end starts the back-off afresh.
const HEALTHY: Duration = Duration::from_secs(1);
/// How long a sender waits after a peer refused it for belonging to another ensemble.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(1);

/// Where the runtime hands messages for other members.
pub trait Transport: Send {
    fn send(&mut self, to: &NodeId, msg: &Message);
    /// `id` is reached at `address` (from the configuration in the log, or from the
    /// sender's own word for a peer not in it yet). Membership changes call this.
    fn learn(&mut self, _id: &NodeId, _address: &str) {}
}

pub struct GrpcTransport {
    me: NodeId,
    /// Our own address, sent at the start of every stream.
    my_address: String,
    runtime: tokio::runtime::Handle,
    peers: HashMap<NodeId, (String, mpsc::Sender<pb::PeerMessage>)>,
    /// Our ensemble id, sent with every stream.
    identity: Identity,
}

impl GrpcTransport {
    /// Starts one sender task per peer, for a node that names no ensemble (it has no id
    /// yet). Must be called inside a tokio runtime.
    pub fn start(
        me: &str,
        my_address: &str,
        peers: &[(NodeId, String)],
    ) -> anyhow::Result<GrpcTransport> {
        Self::start_with_identity(me, my_address, peers, Identity::unknown())
    }

    /// Starts one sender task per peer; every stream names the ensemble `identity` holds
    /// when it opens. Must be called inside a tokio runtime.
    pub fn start_with_identity(
        me: &str,
        my_address: &str,
        peers: &[(NodeId, String)],
        identity: Identity,
    ) -> anyhow::Result<GrpcTransport> {
        let mut t = GrpcTransport {
            me: me.to_string(),
            my_address: my_address.to_string(),
            runtime: tokio::runtime::Handle::current(),
            peers: HashMap::new(),
            identity,
        };
        for (id, address) in peers {
            t.connect(id, address)?;
        }
        Ok(t)
    }

    fn connect(&mut self, id: &NodeId, address: &str) -> anyhow::Result<()> {
        // Called from the engine thread too: the lazy channel needs the runtime's context.
        let _context = self.runtime.enter();
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = PeerClient::new(stream_channel(address)?);
        self.runtime.spawn(sender(
            self.me.clone(),
            self.my_address.clone(),
            id.clone(),
            client,
            rx,
            self.identity.clone(),
        ));
        // Replacing the entry drops the old queue's sender: its task ends, closing its stream.
        self.peers.insert(id.clone(), (address.to_string(), tx));
        Ok(())
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, to: &NodeId, msg: &Message) {
        if let Some((_, tx)) = self.peers.get(to) {
            // Full queue: the peer is far behind or gone; dropping is what the network would do.
            let _ = tx.try_send(message_to_pb(msg));
        }
    }

    fn learn(&mut self, id: &NodeId, address: &str) {
        if *id == self.me || address.is_empty() {
            return;
        }
        if self.peers.get(id).is_some_and(|(a, _)| a == address) {
            return;
        }
        tracing::info!(peer = %id, %address, "peer address");
        if let Err(e) = self.connect(id, address) {
            tracing::warn!(peer = %id, %address, "unusable peer address: {e}");
        }
    }
}

/// Feeds `rx` to `peer` over one stream at a time, until the queue's sender is dropped.
async fn sender(
    me: String,
    my_address: String,
    peer: NodeId,
    mut client: PeerClient<Channel>,
    mut rx: mpsc::Receiver<pb::PeerMessage>,
    identity: Identity,
) {
    let mut failures = 0u32;
    // The refusal last logged (each is logged once).
    let mut refused: Option<String> = None;
    // A stream opens once there is something to send: an idle or dead peer costs nothing.
    while let Some(first) = rx.recv().await {
        let opened = Instant::now();
        let (batches, body) = mpsc::channel::<pb::PeerBatch>(IN_FLIGHT);
        let mut request = tonic::Request::new(ReceiverStream::new(body));
        let metadata = request.metadata_mut();
        // Ids are checked to be header-safe; a value that is not is simply not sent.
        if let Some(v) = identity.header().and_then(|id| id.parse().ok()) {
            metadata.insert(ENSEMBLE_HEADER, v);
        }
        if let Ok(v) = me.parse() {
            metadata.insert(NODE_HEADER, v);
        }
        let mut call = pin!(client.stream(request));
        let mut next = Some(first);
        // The first batch says who we are; later ones leave it out.
        let mut named = false;
        let end = loop {
            let first = match next.take() {
                Some(m) => m,
                None => tokio::select! {
                    biased;
                    end = &mut call => break end,
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => {
                            // This node stops: end the stream cleanly (the receiver sees EOF).
                            drop(batches);
                            let _ = tokio::time::timeout(Duration::from_millis(500), &mut call).await;
                            return;
                        }
                    },
                },
            };
            // Wait for room in the stream before batching: what queues meanwhile joins in.
            let permit = tokio::select! {
                biased;
                end = &mut call => break end,
                permit = batches.reserve() => match permit {
                    Ok(p) => p,
                    // The call dropped its body: it is ending.
                    Err(_) => break (&mut call).await,
                },
            };
            let mut messages = vec![first];
            while messages.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => messages.push(m),
                    Err(_) => break,
                }
            }
            let (from, from_address) = if named {
                (String::new(), String::new())
            } else {
                named = true;
                (me.clone(), my_address.clone())
            };
            permit.send(pb::PeerBatch {
                from,
                messages,
                from_address,
            });
        };
        if let Err(status) = &end {
            if status.code() == tonic::Code::FailedPrecondition {
                // Another ensemble's node at that address: say so once, then try rarely.
                if refused.as_deref() != Some(status.message()) {
                    tracing::warn!(%peer, "{peer} refused our stream: {}", status.message());
                    refused = Some(status.message().to_string());
                }
                tokio::time::sleep(REFUSED_PAUSE).await;
                while rx.try_recv().is_ok() {}
                continue;
            }
        }
        failures = if opened.elapsed() >= HEALTHY {
            1
        } else {
            failures + 1
        };
        if failures == 1 || failures.is_multiple_of(50) {
            match &end {
                Ok(_) => tracing::debug!(%peer, "peer closed the stream"),
                Err(status) => {
                    tracing::debug!(%peer, code = ?status.code(), "peer unreachable: {}", status.message())
                }
            }
        }
        // Drop what piled up meanwhile; back off a little so a dead peer costs nothing.
        tokio::time::sleep(Duration::from_millis(20 * u64::from(failures.min(5)))).await;
        while rx.try_recv().is_ok() {}
    }
}
