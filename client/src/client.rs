//! The smart client.

use std::time::Duration;

use guessgame_wire::channel::{channel, never_sent};
use guessgame_wire::proto::{self as pb, game_client::GameClient};
use serde::Serialize;
use thiserror::Error;
use tokio::time::{sleep, Instant};
use tonic::transport::Channel;

use crate::types::Zxid;

/// What went wrong, in terms a caller branches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad input; nothing written.
    InvalidArgument,
    /// `guess` with no open round; nothing written.
    NoOpenRound,
    /// Second guess in a round; nothing written.
    DuplicateGuess,
    /// No leader within the time limit; nothing written, retry later.
    NoLeader,
    /// No node answered; nothing written.
    Unavailable,
    /// The write may or may not have been applied.
    OutcomeUnknown,
    /// A numbered write or guess older than every request of its client the ensemble still
    /// remembers: nothing was written now, and whether the request was applied before is
    /// no longer known.
    RequestForgotten,
    /// A membership change was refused (last voter, address in use, ...); nothing changed.
    ReconfigRefused,
    /// A membership change could not be made now (another one in flight, a learner still
    /// catching up); it may succeed when repeated.
    ReconfigBusy,
    /// A membership change went half way: the member was added as a learner but not made a
    /// voter. Something was written; repeating the request may finish it.
    ReconfigPartial,
    Internal,
}

impl ErrorKind {
    /// Safe to send again: the request certainly was not applied.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::NoLeader | ErrorKind::Unavailable | ErrorKind::ReconfigBusy
        )
    }
}

#[derive(Clone, Debug, Error, Serialize)]
#[error("{message}")]
pub struct ClientError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ClientError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ClientError {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn from_pb(e: pb::Error) -> Self {
        use pb::ErrorKind as K;
        let kind = match K::try_from(e.kind).unwrap_or(K::Unspecified) {
            K::InvalidArgument => ErrorKind::InvalidArgument,
            K::NoOpenRound => ErrorKind::NoOpenRound,
            K::DuplicateGuess => ErrorKind::DuplicateGuess,
            K::NoLeader => ErrorKind::NoLeader,
            K::OutcomeUnknown => ErrorKind::OutcomeUnknown,
            K::RequestForgotten => ErrorKind::RequestForgotten,
            K::ReconfigRefused if e.retryable => ErrorKind::ReconfigBusy,
            K::ReconfigRefused => ErrorKind::ReconfigRefused,
            K::ReconfigPartial => ErrorKind::ReconfigPartial,
            K::Internal | K::Unspecified => ErrorKind::Internal,
        };
        ClientError::new(kind, e.message)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoundResult {
    pub round: u64,
    pub target: u32,
    pub winner: Option<String>,
    pub guess: Option<u32>,
}

impl From<pb::RoundResult> for RoundResult {
    fn from(r: pb::RoundResult) -> Self {
        RoundResult {
            round: r.round,
            target: r.target,
            winner: r.has_winner.then(|| r.winner.clone()),
            guess: r.has_winner.then_some(r.guess),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GameState {
    pub round: u64,
    pub target: Option<u32>,
    pub guesses: u64,
    pub last_result: Option<RoundResult>,
    pub node: String,
    /// Last zxid applied on the node that answered (`epoch:counter`, a [`Zxid`]'s text).
    pub applied: String,
    /// Why the answering node's game may be behind by any amount (it is in no working
    /// quorum); only ever set by [`Client::read_allowing_stale`].
    pub stale: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteOutcome {
    pub round: u64,
    pub target: u32,
    /// The entry's zxid (`epoch:counter`, a [`Zxid`]'s text).
    pub zxid: String,
    pub closed: Option<RoundResult>,
    pub leader: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuessOutcome {
    pub round: u64,
    pub value: u32,
    /// The entry's zxid (`epoch:counter`, a [`Zxid`]'s text).
    pub zxid: String,
    pub leader: String,
}

/// What [`Client::with_failover`] may send again to the next node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Anything: a read.
    Always,
    /// Anything, until the budget ends: a numbered write or guess, which the ensemble
    /// applies at most once. If any try may have been applied, the final error says the
    /// outcome is unknown.
    Numbered,
}

/// A client bound to an ordered list of nodes. It tries them in turn: a node that cannot
/// be reached, or that has no leader, is skipped. Writes and guesses are numbered
/// (client id and [`Client::next_seq`]), so one whose outcome is unknown (its leader died,
/// the connection was lost) is sent again under the same number until the budget ends:
/// the ensemble applies it once and answers every try with what it did.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<(String, GameClient<Channel>)>,
    pub(crate) timeout: Duration,
    preferred: usize,
    /// Newest zxid this client has seen applied: a local read from a node that is behind it
    /// is refused, so this client's reads never go back in time (ZooKeeper does the same).
    seen: Zxid,
    /// The number the next write or guess gets: microseconds since the Unix epoch when the
    /// client was made, then one more per request, so requests made one after another
    /// under one client id (even by different processes) number upwards.
    next_seq: u64,
}

impl Client {
    /// `endpoints`: `(label, host:port)` pairs; `timeout`: the whole budget of one request.
    pub fn new(endpoints: &[(String, String)], timeout: Duration) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::new(
                ErrorKind::InvalidArgument,
                "no node to talk to",
            ));
        }
        let endpoints = endpoints
            .iter()
            .map(|(label, addr)| {
                let ch = channel(addr, timeout + Duration::from_secs(1)).map_err(|e| {
                    ClientError::new(
                        ErrorKind::InvalidArgument,
                        format!("bad address {addr}: {e}"),
                    )
                })?;
                Ok((label.clone(), GameClient::new(ch)))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Client {
            endpoints,
            timeout,
            preferred: 0,
            seen: Zxid::ZERO,
            next_seq: seq_from_clock(),
        })
    }

    /// The whole budget of one request from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A fresh request number (see [`Client::write_numbered`]).
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Runs `call` against the endpoints in turn until one gives a final answer.
    pub(crate) async fn with_failover<T, F, Fut>(
        &mut self,
        resend: Resend,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(GameClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, pb::Error>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let n = self.endpoints.len();
        let mut attempt = 0usize;
        // A numbered request that some try may have applied.
        let mut maybe_applied = false;
        loop {
            let i = (self.preferred + attempt) % n;
            let (label, client) = self.endpoints[i].clone();
            let last_err = match call(client).await {
                Ok(Ok(v)) => {
                    self.preferred = i;
                    return Ok(v);
                }
                Ok(Err(e)) => {
                    let e = ClientError::from_pb(e);
                    match e.kind {
                        ErrorKind::NoLeader => {}
                        ErrorKind::OutcomeUnknown if resend == Resend::Numbered => {
                            maybe_applied = true;
                        }
                        _ => return Err(e),
                    }
                    ClientError::new(e.kind, format!("{label}: {}", e.message))
                }
                Err(status) if resend == Resend::Always || never_sent(&status) => ClientError::new(
                    ErrorKind::Unavailable,
                    format!("{label} unreachable: {}", status.message()),
                ),
                Err(status) => {
                    // Numbered: the ensemble applies it at most once, so send it again.
                    maybe_applied = true;
                    ClientError::new(
                        ErrorKind::OutcomeUnknown,
                        format!(
                            "lost {label} after sending the request ({})",
                            status.message()
                        ),
                    )
                }
            };
            attempt += 1;
            if Instant::now() >= deadline {
                if maybe_applied && last_err.kind != ErrorKind::OutcomeUnknown {
                    return Err(ClientError::new(
                        ErrorKind::OutcomeUnknown,
                        format!(
                            "an earlier try may have been applied, and the last failed: {}",
                            last_err.message
                        ),
                    ));
                }
                return Err(last_err);
            }
            if attempt.is_multiple_of(n) {
                sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Closes the open round and opens the next with `value` as target (a new request).
    pub async fn write(
        &mut self,
        client_id: &str,
        value: u32,
    ) -> Result<WriteOutcome, ClientError> {
        let seq = self.next_seq();
        self.write_numbered(client_id, value, seq).await
    }

    /// [`Client::write`] as request `seq` of `client_id`: if the ensemble applied that
    /// request already, its answer is what it did then, and nothing is written again. A
    /// caller that got [`ErrorKind::OutcomeUnknown`] may call this again with the same
    /// arguments, at any time later, to learn the outcome or apply it.
    pub async fn write_numbered(
        &mut self,
        client_id: &str,
        value: u32,
        seq: u64,
    ) -> Result<WriteOutcome, ClientError> {
        let req = pb::WriteRequest {
            client_id: client_id.to_string(),
            value,
            forwarded: false,
            seq,
        };
        let (zxid, w) = self
            .with_failover(Resend::Numbered, |mut c| {
                let req = req.clone();
                async move { Ok(write_outcome(c.write(req).await?.into_inner())) }
            })
            .await?;
        self.saw(zxid);
        Ok(w)
    }

    /// Guesses `value` in the open round (a new request).
    pub async fn guess(
        &mut self,
        client_id: &str,
        value: u32,
    ) -> Result<GuessOutcome, ClientError> {
        let seq = self.next_seq();
        self.guess_numbered(client_id, value, seq).await
    }

    /// [`Client::guess`] as request `seq` of `client_id` (see [`Client::write_numbered`]).
    pub async fn guess_numbered(
        &mut self,
        client_id: &str,
        value: u32,
        seq: u64,
    ) -> Result<GuessOutcome, ClientError> {
        let req = pb::GuessRequest {
            client_id: client_id.to_string(),
            value,
            forwarded: false,
            seq,
        };
        let (zxid, g) = self
            .with_failover(Resend::Numbered, |mut c| {
                let req = req.clone();
                async move { Ok(guess_outcome(c.guess(req).await?.into_inner(), value)) }
            })
            .await?;
        self.saw(zxid);
        Ok(g)
    }

    /// The game state. Local to the node asked unless `linearizable` (then confirmed by the
    /// leader with a quorum round before it answers).
    /// A node in no working quorum (looking, removed, stopping) refuses a local read, and
    /// the next endpoint is asked.
    pub async fn read(&mut self, linearizable: bool) -> Result<GameState, ClientError> {
        self.read_with(pb::ReadRequest {
            linearizable,
            forwarded: false,
            allow_stale: false,
        })
        .await
    }

    /// A local read that a node in no working quorum answers too, saying so in
    /// [`GameState::stale`] (`guessgame read --allow-stale`: what a lone node knows).
    pub async fn read_allowing_stale(&mut self) -> Result<GameState, ClientError> {
        self.read_with(pb::ReadRequest {
            linearizable: false,
            forwarded: false,
            allow_stale: true,
        })
        .await
    }

    async fn read_with(&mut self, req: pb::ReadRequest) -> Result<GameState, ClientError> {
        let seen = self.seen;
        let (applied, state) = self
            .with_failover(Resend::Always, |mut c| async move {
                let r = c.read(req).await?.into_inner();
                let (applied, state) = match game_state(r) {
                    Ok(s) => s,
                    Err(e) => return Ok(Err(e)),
                };
                if applied < seen {
                    // This node is behind what we already saw: ask another one.
                    return Ok(Err(pb::Error {
                        kind: pb::ErrorKind::NoLeader as i32,
                        message: format!(
                            "{} has applied only up to {applied}, older than what this client saw",
                            state.node
                        ),
                        retryable: true,
                    }));
                }
                Ok(Ok((applied, state)))
            })
            .await?;
        self.saw(applied);
        Ok(state)
    }

    fn saw(&mut self, zxid: Zxid) {
        self.seen = self.seen.max(zxid);
    }
}

/// Microseconds since the Unix epoch: where a client's request numbers start.
fn seq_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1)
}

/// A `Write` answer: the outcome and the zxid it names, or the node's error.
pub(crate) fn write_outcome(r: pb::WriteResponse) -> Result<(Zxid, WriteOutcome), pb::Error> {
    if let Some(e) = r.error {
        return Err(e);
    }
    let zxid = Zxid::from(r.zxid);
    let w = WriteOutcome {
        round: r.round,
        target: r.target,
        zxid: zxid.to_string(),
        closed: r.closed.map(Into::into),
        leader: r.leader,
    };
    Ok((zxid, w))
}

/// A `Guess` answer (of a guess of `value`).
pub(crate) fn guess_outcome(
    r: pb::GuessResponse,
    value: u32,
) -> Result<(Zxid, GuessOutcome), pb::Error> {
    if let Some(e) = r.error {
        return Err(e);
    }
    let zxid = Zxid::from(r.zxid);
    let g = GuessOutcome {
        round: r.round,
        value,
        zxid: zxid.to_string(),
        leader: r.leader,
    };
    Ok((zxid, g))
}

/// A `Read` answer: the zxid applied where it was served, and the state.
pub(crate) fn game_state(r: pb::ReadResponse) -> Result<(Zxid, GameState), pb::Error> {
    if let Some(e) = r.error {
        return Err(e);
    }
    let applied = Zxid::from(r.applied);
    let state = GameState {
        round: r.round,
        target: r.has_target.then_some(r.target),
        guesses: r.guesses,
        last_result: r.last_result.map(Into::into),
        node: r.node,
        applied: applied.to_string(),
        stale: (!r.stale.is_empty()).then_some(r.stale),
    };
    Ok((applied, state))
}
