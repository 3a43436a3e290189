//! A session with one node (`Game.Session`): writes, guesses and reads on one long-lived
//! stream, each answered as its unary call would be (the protocol lets a client pipeline
//! requests; this `Session` sends one at a time, like the closed-loop clients that use it). For a busy client (a load
//! generator, an application with many requests in flight) it saves the per-call cost of
//! HTTP/2. No failover: a request whose session breaks before its answer fails (a write as
//! outcome unknown), and the next request opens a new session. [`crate::Client`] tries
//! endpoints in turn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{game_state, guess_outcome, write_outcome};
use crate::{ClientError, ErrorKind, GameState, GuessOutcome, WriteOutcome};
use guessgame_wire::channel::stream_channel;
use guessgame_wire::proto::{self as pb, game_client::GameClient};

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<pb::session_response::Result>>>>;

/// One open stream: where requests go, and who waits for which answer.
struct Open {
    requests: mpsc::Sender<pb::SessionRequest>,
    waiting: Waiting,
    /// Cleared when the stream's answers end.
    alive: Arc<AtomicBool>,
}

pub struct Session {
    label: String,
    client: GameClient<tonic::transport::Channel>,
    timeout: Duration,
    open: Option<Open>,
    next_id: AtomicU64,
}

impl Session {
    /// A session with the node at `address` (`host:port`), labelled `label` in errors;
    /// `timeout` bounds each request. Connects on the first request.
    pub fn new(label: &str, address: &str, timeout: Duration) -> Result<Session, ClientError> {
        let channel = stream_channel(address).map_err(|e| {
            ClientError::new(
                ErrorKind::InvalidArgument,
                format!("bad address {address}: {e}"),
            )
        })?;
        Ok(Session {
            label: label.to_string(),
            client: GameClient::new(channel),
            timeout,
            open: None,
            next_id: AtomicU64::new(1),
        })
    }

    /// The open stream, opening one when there is none (or the last one ended).
    async fn stream(&mut self) -> Result<&Open, ClientError> {
        if self
            .open
            .as_ref()
            .is_some_and(|o| !o.alive.load(Ordering::Relaxed))
        {
            self.open = None;
        }
        if self.open.is_none() {
            let (requests, outgoing) = mpsc::channel(1024);
            let answers = self
                .client
                .session(ReceiverStream::new(outgoing))
                .await
                .map_err(|s| {
                    ClientError::new(
                        ErrorKind::Unavailable,
                        format!("{} unreachable: {}", self.label, s.message()),
                    )
                })?;
            let waiting: Waiting = Arc::default();
            let mut answers = answers.into_inner();
            let hand_out = waiting.clone();
            let alive = Arc::new(AtomicBool::new(true));
            let ended = alive.clone();
            tokio::spawn(async move {
                while let Ok(Some(a)) = answers.message().await {
                    let waiter = hand_out.lock().expect("waiting").remove(&a.id);
                    if let (Some(w), Some(result)) = (waiter, a.result) {
                        let _ = w.send(result);
                    }
                }
                // The stream ended: whoever still waits learns it (their senders drop), and
                // the next request opens a new stream.
                ended.store(false, Ordering::Relaxed);
                hand_out.lock().expect("waiting").clear();
            });
            self.open = Some(Open {
                requests,
                waiting,
                alive,
            });
        }
        Ok(self.open.as_ref().expect("just opened"))
    }

    /// Sends `op` and waits for its answer. `None`: the session broke after the request
    /// may have reached the node.
    async fn call(
        &mut self,
        op: pb::session_request::Op,
    ) -> Result<Option<pb::session_response::Result>, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout;
        let label = self.label.clone();
        let open = self.stream().await?;
        let (tx, rx) = oneshot::channel();
        open.waiting.lock().expect("waiting").insert(id, tx);
        let req = pb::SessionRequest { id, op: Some(op) };
        if open.requests.send(req).await.is_err() {
            open.waiting.lock().expect("waiting").remove(&id);
            return Err(ClientError::new(
                ErrorKind::Unavailable,
                format!("{label}: the session closed"),
            ));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => Ok(Some(result)),
            Ok(Err(_)) => Ok(None),
            Err(_) => {
                open.waiting.lock().expect("waiting").remove(&id);
                Ok(None)
            }
        }
    }

    fn lost(&self, what: &str) -> ClientError {
        ClientError::new(
            ErrorKind::OutcomeUnknown,
            format!(
                "lost the session with {} (or no answer within {:?}) after sending the {what}: it may or may not have been applied",
                self.label, self.timeout
            ),
        )
    }

    pub async fn write(
        &mut self,
        client_id: &str,
        value: u32,
    ) -> Result<WriteOutcome, ClientError> {
        use pb::session_request::Op;
        use pb::session_response::Result as R;
        let op = Op::Write(pb::WriteRequest {
            client_id: client_id.to_string(),
            value,
            forwarded: false,
            // Unnumbered: a session does not resend (a lost answer is OutcomeUnknown).
            seq: 0,
        });
        match self.call(op).await? {
            Some(R::Write(r)) => write_outcome(r)
                .map(|(_, w)| w)
                .map_err(ClientError::from_pb),
            _ => Err(self.lost("write")),
        }
    }

    pub async fn guess(
        &mut self,
        client_id: &str,
        value: u32,
    ) -> Result<GuessOutcome, ClientError> {
        use pb::session_request::Op;
        use pb::session_response::Result as R;
        let op = Op::Guess(pb::GuessRequest {
            client_id: client_id.to_string(),
            value,
            forwarded: false,
            // Unnumbered: a session does not resend (a lost answer is OutcomeUnknown).
            seq: 0,
        });
        match self.call(op).await? {
            Some(R::Guess(r)) => guess_outcome(r, value)
                .map(|(_, g)| g)
                .map_err(ClientError::from_pb),
            _ => Err(self.lost("guess")),
        }
    }

    /// The game state (local to the node unless `linearizable`).
    pub async fn read(&mut self, linearizable: bool) -> Result<GameState, ClientError> {
        use pb::session_request::Op;
        use pb::session_response::Result as R;
        let op = Op::Read(pb::ReadRequest {
            linearizable,
            forwarded: false,
            allow_stale: false,
        });
        match self.call(op).await? {
            Some(R::Read(r)) => game_state(r).map(|(_, s)| s).map_err(ClientError::from_pb),
            _ => Err(ClientError::new(
                ErrorKind::Unavailable,
                format!("lost the session with {} during a read", self.label),
            )),
        }
    }
}
