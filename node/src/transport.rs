//! Outgoing peer traffic: one queue and one sending task per peer.
//!
//! Messages are batched: whatever queued up while the previous `Deliver` call was in flight
//! goes in the next one. Delivery is best effort — a batch that fails is dropped, and the
//! protocol recovers (resync, retransmission on ticks). The queue is bounded so a dead peer
//! cannot eat the memory.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::Channel;

use guessgame_core::{Message, NodeId};
use guessgame_wire::channel::channel;
use guessgame_wire::convert::message_to_pb;
use guessgame_wire::proto::{self as pb, peer_client::PeerClient};

const QUEUE: usize = 16_384;
const MAX_BATCH: usize = 1024;

/// Where the runtime hands messages for other members.
pub trait Transport: Send {
    fn send(&mut self, to: &NodeId, msg: &Message);
    /// `id` is reached at `address` (from the configuration in the log, or from the
    /// sender's own word for a peer not in it yet). Membership changes call this.
    fn learn(&mut self, _id: &NodeId, _address: &str) {}
}

pub struct GrpcTransport {
    me: NodeId,
    /// Our own address, sent with every batch.
    my_address: String,
    runtime: tokio::runtime::Handle,
    peers: HashMap<NodeId, (String, mpsc::Sender<pb::PeerMessage>)>,
}

impl GrpcTransport {
    /// Starts one sender task per peer. Must be called inside a tokio runtime.
    pub fn start(
        me: &str,
        my_address: &str,
        peers: &[(NodeId, String)],
    ) -> anyhow::Result<GrpcTransport> {
        let mut t = GrpcTransport {
            me: me.to_string(),
            my_address: my_address.to_string(),
            runtime: tokio::runtime::Handle::current(),
            peers: HashMap::new(),
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
        let client = PeerClient::new(channel(address, Duration::from_secs(2))?);
        self.runtime.spawn(sender(
            self.me.clone(),
            self.my_address.clone(),
            id.clone(),
            client,
            rx,
        ));
        // Replacing the entry drops the old queue's sender: its task ends.
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

async fn sender(
    me: String,
    my_address: String,
    peer: NodeId,
    mut client: PeerClient<Channel>,
    mut rx: mpsc::Receiver<pb::PeerMessage>,
) {
    let mut failures = 0u32;
    while let Some(first) = rx.recv().await {
        let mut messages = vec![first];
        while messages.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => messages.push(m),
                Err(_) => break,
            }
        }
        let batch = pb::PeerBatch {
            from: me.clone(),
            messages,
            from_address: my_address.clone(),
        };
        match client.deliver(batch).await {
            Ok(_) => failures = 0,
            Err(status) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::debug!(%peer, code = ?status.code(), "peer unreachable: {}", status.message());
                }
                // Drop what piled up meanwhile; back off a little so a dead peer costs nothing.
                tokio::time::sleep(Duration::from_millis(20 * u64::from(failures.min(5)))).await;
                while rx.try_recv().is_ok() {}
            }
        }
    }
}
