//! The gRPC services a node serves: `Game` for clients, `Peer` for members.
//!
//! Client requests may reach any node. A follower forwards writes and linearizable reads to
//! the leader itself (no redirect dance for the client). While there is no leader, a request
//! waits up to `request_timeout_ms` and then fails with `NO_LEADER` (nothing written, safe to
//! retry). A request that was proposed but whose commit was not seen answers
//! `OUTCOME_UNKNOWN`: it may still commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::identity::{Admission, Identity, ENSEMBLE_HEADER, NODE_HEADER};
use crate::runtime::{ClientResult, Command, NodeView, SharedView};
use crate::storage::StorageWatch;
use guessgame_core::game::{check_client_id, check_value, GameError};
use guessgame_core::rules::{check_member_id, split_host_port};
use guessgame_core::{ClientError, ClientOp, ClientReply, Member, NodeId, RoleKind, Snapshot};
use guessgame_wire::backup;
use guessgame_wire::channel::{channel, never_sent};
use guessgame_wire::config::Config;
use guessgame_wire::convert::{
    member_to_pb, membership_from_pb, membership_to_pb, message_from_pb, result_to_pb, zxid_to_pb,
};
use guessgame_wire::proto::{self as pb, game_client::GameClient, ErrorKind};

const RETRY_PAUSE: Duration = Duration::from_millis(10);

#[derive(Clone)]
pub struct NodeServices {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    commands: mpsc::UnboundedSender<Command>,
    view: SharedView,
    leaders: Mutex<HashMap<NodeId, GameClient<Channel>>>,
    /// Set once the server shuts down: inbound peer streams end.
    closing: tokio::sync::watch::Sender<bool>,
    /// This node's ensemble id: peer calls naming another are refused.
    identity: Identity,
    /// The engine thread's storage write under way (`status` reports a stall).
    storage: Arc<StorageWatch>,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> pb::Error {
    pb::Error {
        kind: kind as i32,
        message: message.into(),
        retryable: false,
    }
}

fn game_error(e: &GameError) -> pb::Error {
    let kind = match e {
        GameError::OutOfRange(_) | GameError::BadClientId => ErrorKind::InvalidArgument,
        GameError::NoOpenRound => ErrorKind::NoOpenRound,
        GameError::DuplicateGuess { .. } => ErrorKind::DuplicateGuess,
    };
    error(kind, e.to_string())
}

/// What a request turned out to be, whichever node served it.
enum Outcome<T> {
    Done(T),
    Failed(pb::Error),
}

impl NodeServices {
    /// Services of a node that has no ensemble id yet (it takes the first a peer names).
    pub fn new(config: Config, commands: mpsc::UnboundedSender<Command>, view: SharedView) -> Self {
        Self::with_identity(
            config,
            commands,
            view,
            Identity::unknown(),
            StorageWatch::new(),
        )
    }

    /// Services of a node of the ensemble `identity` names; `storage` is its engine's (a
    /// stalled write shows in `status`).
    pub fn with_identity(
        config: Config,
        commands: mpsc::UnboundedSender<Command>,
        view: SharedView,
        identity: Identity,
        storage: Arc<StorageWatch>,
    ) -> Self {
        NodeServices {
            inner: Arc::new(Inner {
                config,
                commands,
                view,
                leaders: Mutex::new(HashMap::new()),
                closing: tokio::sync::watch::Sender::new(false),
                identity,
                storage,
            }),
        }
    }

    fn view(&self) -> NodeView {
        self.inner.view.read().expect("view lock").clone()
    }

    fn leader_client(&self, leader: &NodeId) -> Option<GameClient<Channel>> {
        let mut map = self.inner.leaders.lock().expect("leaders lock");
        if let Some(c) = map.get(leader) {
            return Some(c.clone());
        }
        let view = self.view();
        let address = view
            .address_of(leader)
            .or_else(|| self.inner.config.address_of(leader))?;
        // Membership changes wait for a learner to catch up: give them longer.
        let client = GameClient::new(
            channel(
                address,
                3 * self.inner.config.request_timeout() + Duration::from_secs(15),
            )
            .ok()?,
        )
        .max_decoding_message_size(backup::MAX_FILE_BYTES);
        map.insert(leader.clone(), client.clone());
        Some(client)
    }

    async fn ask_engine(
        &self,
        make: impl FnOnce(oneshot::Sender<ClientResult>) -> Command,
        deadline: Instant,
    ) -> Option<ClientResult> {
        let (tx, rx) = oneshot::channel();
        self.inner.commands.send(make(tx)).ok()?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => Some(r),
            _ => None,
        }
    }

    /// Runs a request here if we lead, else on the leader. `local` asks our engine,
    /// `remote` forwards. Retries while there is no leader, until the deadline.
    async fn route<T, L, LF, R, RF>(
        &self,
        forwarded: bool,
        engine_forwards: bool,
        timeout: Duration,
        local: L,
        remote: R,
    ) -> Outcome<T>
    where
        L: Fn(Instant) -> LF,
        LF: std::future::Future<Output = Option<Result<T, LocalFailure>>>,
        R: Fn(GameClient<Channel>) -> RF,
        RF: std::future::Future<Output = Result<Option<T>, RemoteFailure>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.view();
            if view.stopping {
                // Waiting here would only hold up the stop (and the client): say so at once.
                return Outcome::Failed(error(
                    ErrorKind::NoLeader,
                    format!(
                        "{} is stopping; nothing was written: retry on another member",
                        view.node_id
                    ),
                ));
            }
            // A follower's engine forwards moves to the leader itself (in the protocol, on
            // the peer stream); a request forwarded to us by RPC is never forwarded again.
            let by_engine = engine_forwards && !forwarded && view.role == RoleKind::Following;
            if view.role == RoleKind::Leading || by_engine {
                match local(deadline).await {
                    Some(Ok(v)) => return Outcome::Done(v),
                    Some(Err(LocalFailure::Refused(e))) => return Outcome::Failed(e),
                    Some(Err(LocalFailure::NotLeader)) => {}
                    Some(Err(LocalFailure::Unknown)) => {
                        return Outcome::Failed(error(
                            ErrorKind::OutcomeUnknown,
                            "leadership changed after the request was proposed: it may or may not have been applied",
                        ))
                    }
                    None => {
                        return Outcome::Failed(error(
                            ErrorKind::OutcomeUnknown,
                            format!("no commit within {} ms after proposing: the request may or may not be applied", timeout.as_millis()),
                        ))
                    }
                }
            } else if forwarded {
                // We were asked as the leader but are not (any more): the forwarder retries.
                return Outcome::Failed(error(
                    ErrorKind::NoLeader,
                    format!("{} is not the leader", view.node_id),
                ));
            } else if let Some(client) = view.leader.as_ref().and_then(|l| self.leader_client(l)) {
                match remote(client).await {
                    Ok(Some(v)) => return Outcome::Done(v),
                    Ok(None) => {}
                    Err(RemoteFailure::Retry) => {}
                    Err(RemoteFailure::Final(e)) => return Outcome::Failed(e),
                    Err(RemoteFailure::Unknown(msg)) => {
                        return Outcome::Failed(error(
                            ErrorKind::OutcomeUnknown,
                            format!("lost contact with the leader after forwarding ({msg}): the request may or may not be applied"),
                        ))
                    }
                }
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Outcome::Failed(error(
                    ErrorKind::NoLeader,
                    format!("no leader within {} ms (election in progress or no quorum); nothing was written, retry later", timeout.as_millis()),
                ));
            }
            sleep(RETRY_PAUSE).await;
        }
    }

    async fn propose(&self, op: ClientOp, forwarded: bool) -> Outcome<(ClientReply, NodeId)> {
        let local = |deadline| {
            let op = op.clone();
            async move {
                let r = self
                    .ask_engine(|reply| Command::Propose { op, reply }, deadline)
                    .await?;
                Some(match r {
                    Ok(reply) => {
                        // Who committed it: us, or the leader our engine forwarded it to.
                        let view = self.view();
                        Ok((reply, view.leader.unwrap_or(view.node_id)))
                    }
                    Err(e) => Err(LocalFailure::from(e)),
                })
            }
        };
        let remote = |mut client: GameClient<Channel>| {
            let op = op.clone();
            async move {
                let (res, leader) = match op {
                    ClientOp::Write {
                        client: c,
                        value,
                        seq,
                    } => {
                        let r = client
                            .write(pb::WriteRequest {
                                client_id: c,
                                value,
                                forwarded: true,
                                seq,
                            })
                            .await
                            .map_err(RemoteFailure::from_status)?
                            .into_inner();
                        let reply = ClientReply::Written {
                            zxid: guessgame_wire::convert::zxid_from_pb(r.zxid),
                            round: r.round,
                            target: r.target,
                            closed: r.closed.map(guessgame_wire::convert::result_from_pb),
                        };
                        (r.error.map(Err).unwrap_or(Ok(reply)), r.leader)
                    }
                    ClientOp::Guess {
                        client: c,
                        value,
                        seq,
                    } => {
                        let r = client
                            .guess(pb::GuessRequest {
                                client_id: c,
                                value,
                                forwarded: true,
                                seq,
                            })
                            .await
                            .map_err(RemoteFailure::from_status)?
                            .into_inner();
                        let reply = ClientReply::Guessed {
                            zxid: guessgame_wire::convert::zxid_from_pb(r.zxid),
                            round: r.round,
                        };
                        (r.error.map(Err).unwrap_or(Ok(reply)), r.leader)
                    }
                    ClientOp::AddMember { .. } | ClientOp::RemoveMember { .. } => {
                        let change = match op {
                            ClientOp::AddMember { member, .. } => {
                                pb::reconfig_request::Change::Add(member_to_pb(&member, true))
                            }
                            ClientOp::RemoveMember { id } => {
                                pb::reconfig_request::Change::Remove(id)
                            }
                            _ => unreachable!(),
                        };
                        let r = client
                            .reconfig(pb::ReconfigRequest {
                                change: Some(change),
                                forwarded: true,
                            })
                            .await
                            .map_err(RemoteFailure::from_status)?
                            .into_inner();
                        let reply = ClientReply::Reconfigured {
                            zxid: guessgame_wire::convert::zxid_from_pb(r.config),
                            membership: membership_from_pb(r.members)
                                .map_err(|e| RemoteFailure::Unknown(e.to_string()))?,
                        };
                        (r.error.map(Err).unwrap_or(Ok(reply)), r.leader)
                    }
                };
                remote_result(res).map(|o| o.map(|r| (r, leader)))
            }
        };
        let mut timeout = self.inner.config.request_timeout();
        if matches!(
            op,
            ClientOp::AddMember { .. } | ClientOp::RemoveMember { .. }
        ) {
            // Adding a voter waits for the learner to catch up (the leader gives up after
            // ten election timeouts).
            timeout += Duration::from_millis(12 * self.inner.config.election_timeout_ms);
        }
        let moves = matches!(op, ClientOp::Write { .. } | ClientOp::Guess { .. });
        self.route(forwarded, moves, timeout, local, remote).await
    }
}

enum LocalFailure {
    NotLeader,
    Refused(pb::Error),
    Unknown,
}

impl From<ClientError> for LocalFailure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NotLeader { .. } => LocalFailure::NotLeader,
            ClientError::Game(g) => LocalFailure::Refused(game_error(&g)),
            ClientError::OutcomeUnknown => LocalFailure::Unknown,
            ClientError::Forgotten { oldest } => LocalFailure::Refused(pb::Error {
                kind: ErrorKind::RequestForgotten as i32,
                message: format!(
                    "this request is older than request {oldest}, the oldest of its client \
                     that the ensemble still remembers: whether it was applied is no longer \
                     known (nothing was written now)"
                ),
                retryable: false,
            }),
            ClientError::LeftAsLearner { id } => LocalFailure::Refused(pb::Error {
                kind: ErrorKind::ReconfigPartial as i32,
                message: format!(
                    "{id} was added as a learner but did not catch up with the log in time, so \
                     it was not made a voter; make sure it is running and reachable, then \
                     repeat the request"
                ),
                retryable: true,
            }),
            ClientError::Reconfig { reason, retryable } => LocalFailure::Refused(pb::Error {
                kind: ErrorKind::ReconfigRefused as i32,
                message: reason,
                retryable,
            }),
        }
    }
}

enum RemoteFailure {
    /// Certainly not applied: try again (possibly on another leader).
    Retry,
    Final(pb::Error),
    Unknown(String),
}

impl RemoteFailure {
    /// A transport failure: retry when the request surely never left, else unknown.
    fn from_status(status: Status) -> RemoteFailure {
        if never_sent(&status) {
            RemoteFailure::Retry
        } else {
            RemoteFailure::Unknown(format!("{:?}: {}", status.code(), status.message()))
        }
    }
}

/// Maps a leader's answer: `Ok(None)` means "retry" (it was not the leader after all).
fn remote_result<T>(res: Result<T, pb::Error>) -> Result<Option<T>, RemoteFailure> {
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NoLeader as i32 => Ok(None),
        Err(e) => Err(RemoteFailure::Final(e)),
    }
}

fn check_input(client: &str, value: u32) -> Result<(), pb::Error> {
    check_client_id(client).map_err(|e| game_error(&e))?;
    check_value(value as i64).map_err(|e| game_error(&e))?;
    Ok(())
}

fn read_response(view: &NodeView) -> pb::ReadResponse {
    let g = &view.game;
    pb::ReadResponse {
        error: None,
        round: g.round,
        target: g.target.unwrap_or(0),
        has_target: g.target.is_some(),
        guesses: g.guesses.len() as u64,
        last_result: g.last_result.as_ref().map(result_to_pb),
        node: view.node_id.clone(),
        applied: Some(zxid_to_pb(g.applied)),
        stale: String::new(),
    }
}

/// A local read: this node's game, unless it is in no working quorum (then only with
/// `allow_stale`, flagged; ZooKeeper stops serving clients when it loses its quorum).
fn local_read(view: &NodeView, allow_stale: bool) -> pb::ReadResponse {
    match view.stale_because() {
        None => read_response(view),
        Some(why) if allow_stale => pb::ReadResponse {
            stale: why.to_string(),
            ..read_response(view)
        },
        Some(why) => pb::ReadResponse {
            error: Some(pb::Error {
                kind: pb::ErrorKind::NoLeader as i32,
                message: format!(
                    "{} is {why}: its game may be stale, so it serves local reads only when \
                     asked to allow that (guessgame read --allow-stale); ask another node",
                    view.node_id
                ),
                retryable: true,
            }),
            node: view.node_id.clone(),
            ..Default::default()
        },
    }
}

#[tonic::async_trait]
impl pb::game_server::Game for NodeServices {
    type SessionStream = crate::session::SessionStream;

    async fn session(
        &self,
        req: Request<tonic::Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Ok(Response::new(self.serve_session(req.into_inner())))
    }

    async fn write(
        &self,
        req: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        if let Err(e) = check_input(&req.client_id, req.value) {
            return Ok(Response::new(pb::WriteResponse {
                error: Some(e),
                ..Default::default()
            }));
        }
        let op = ClientOp::Write {
            client: req.client_id,
            value: req.value,
            seq: req.seq,
        };
        let resp = match self.propose(op, req.forwarded).await {
            Outcome::Done((
                ClientReply::Written {
                    zxid,
                    round,
                    target,
                    closed,
                },
                leader,
            )) => pb::WriteResponse {
                error: None,
                zxid: Some(zxid_to_pb(zxid)),
                round,
                target,
                closed: closed.as_ref().map(result_to_pb),
                leader,
            },
            Outcome::Done(_) => return Err(Status::internal("unexpected reply to a write")),
            Outcome::Failed(e) => pb::WriteResponse {
                error: Some(e),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn guess(
        &self,
        req: Request<pb::GuessRequest>,
    ) -> Result<Response<pb::GuessResponse>, Status> {
        let req = req.into_inner();
        if let Err(e) = check_input(&req.client_id, req.value) {
            return Ok(Response::new(pb::GuessResponse {
                error: Some(e),
                ..Default::default()
            }));
        }
        let op = ClientOp::Guess {
            client: req.client_id,
            value: req.value,
            seq: req.seq,
        };
        let resp = match self.propose(op, req.forwarded).await {
            Outcome::Done((ClientReply::Guessed { zxid, round }, leader)) => pb::GuessResponse {
                error: None,
                zxid: Some(zxid_to_pb(zxid)),
                round,
                leader,
            },
            Outcome::Done(_) => return Err(Status::internal("unexpected reply to a guess")),
            Outcome::Failed(e) => pb::GuessResponse {
                error: Some(e),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        let req = req.into_inner();
        if !req.linearizable {
            return Ok(Response::new(local_read(&self.view(), req.allow_stale)));
        }
        let forward = |mut client: GameClient<Channel>| async move {
            let r = client
                .read(pb::ReadRequest {
                    linearizable: true,
                    forwarded: true,
                    allow_stale: false,
                })
                .await?
                .into_inner();
            Ok(r.error.clone().map(Err).unwrap_or(Ok(r)))
        };
        let resp = match self
            .confirmed_read(req.forwarded, read_response, forward)
            .await
        {
            Ok(r) => r,
            Err(e) => pb::ReadResponse {
                error: Some(e),
                node: self.view().node_id,
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let v = self.view();
        Ok(Response::new(pb::StatusResponse {
            node_id: v.node_id.clone(),
            role: v.role.as_str().to_string(),
            accepted_epoch: v.accepted_epoch,
            current_epoch: v.current_epoch,
            last_zxid: Some(zxid_to_pb(v.last_zxid)),
            last_committed: Some(zxid_to_pb(v.committed)),
            leader: v.leader.clone().unwrap_or_default(),
            members: v.members as u32,
            quorum: v.quorum as u32,
            config: Some(zxid_to_pb(v.config_zxid)),
            membership: v.membership_role().to_string(),
            removed: v.removed,
            snapshot: Some(zxid_to_pb(v.snapshot)),
            log_start: Some(zxid_to_pb(v.log_start)),
            first_zxid: Some(zxid_to_pb(v.first_zxid)),
            storage_stalled_ms: self
                .inner
                .storage
                .stalled_for()
                .map_or(0, |d| d.as_millis() as u64),
        }))
    }

    async fn members(
        &self,
        _req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let v = self.view();
        Ok(Response::new(pb::MembersResponse {
            node: v.node_id.clone(),
            leader: v.leader.clone().unwrap_or_default(),
            config: Some(zxid_to_pb(v.config_zxid)),
            members: membership_to_pb(&v.membership),
            committed_config: Some(zxid_to_pb(v.committed_config_zxid)),
            committed_members: membership_to_pb(&v.committed_membership),
        }))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let req = req.into_inner();
        let forward = |mut client: GameClient<Channel>| async move {
            let r = client
                .snapshot(pb::SnapshotRequest { forwarded: true })
                .await?
                .into_inner();
            Ok(r.error.clone().map(Err).unwrap_or(Ok(r)))
        };
        let answer = |view: &NodeView| self.backup_file(view);
        let resp = match self.confirmed_read(req.forwarded, answer, forward).await {
            Ok(r) => r,
            Err(e) => pb::SnapshotResponse {
                error: Some(e),
                node: self.view().node_id,
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn reconfig(
        &self,
        req: Request<pb::ReconfigRequest>,
    ) -> Result<Response<pb::ReconfigResponse>, Status> {
        let req = req.into_inner();
        let refuse = |message: String| {
            Ok(Response::new(pb::ReconfigResponse {
                error: Some(error(ErrorKind::InvalidArgument, message)),
                ..Default::default()
            }))
        };
        let op = match req.change {
            None => return refuse("say which member to add or remove".into()),
            Some(pb::reconfig_request::Change::Add(m)) => {
                if let Err(e) = check_member(&m) {
                    return refuse(e);
                }
                ClientOp::AddMember {
                    voter: true,
                    member: Member {
                        id: m.id,
                        address: m.address,
                    },
                }
            }
            Some(pb::reconfig_request::Change::Remove(id)) => {
                if id.is_empty() {
                    return refuse("which member? (an empty id)".into());
                }
                ClientOp::RemoveMember { id }
            }
        };
        let resp = match self.propose(op, req.forwarded).await {
            Outcome::Done((ClientReply::Reconfigured { zxid, membership }, leader)) => {
                pb::ReconfigResponse {
                    error: None,
                    config: Some(zxid_to_pb(zxid)),
                    members: membership_to_pb(&membership),
                    leader,
                }
            }
            Outcome::Done(_) => return Err(Status::internal("unexpected reply to a reconfig")),
            Outcome::Failed(e) => pb::ReconfigResponse {
                error: Some(e),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }
}

/// A member to add: an id like the configuration's (letters, digits, `-`, `_`, `.`) and a
/// `host:port` address.
pub fn check_member(m: &pb::Member) -> Result<(), String> {
    check_member_id(&m.id).map_err(|e| e.to_string())?;
    split_host_port(&m.address)
        .map_err(|_| format!("address {:?} of {}: expected host:port", m.address, m.id))?;
    Ok(())
}

impl NodeServices {
    /// A read-only request that must see every write acknowledged before it arrived: the
    /// leader answers it (`answer`, from its view) once a quorum round begun after the
    /// request confirmed its leadership (the ReadIndex of a linearizable read); a follower
    /// forwards it (`forward`). A read changes nothing: any failure is worth a retry, and an
    /// unknown outcome is just a failed read.
    async fn confirmed_read<T, A, F, FF>(
        &self,
        forwarded: bool,
        answer: A,
        forward: F,
    ) -> Result<T, pb::Error>
    where
        A: Fn(&NodeView) -> T,
        F: Fn(GameClient<Channel>) -> FF,
        FF: std::future::Future<Output = Result<Result<T, pb::Error>, Status>>,
    {
        let local = |deadline| {
            let answer = &answer;
            async move {
                let r = self
                    .ask_engine(|reply| Command::LinearizableRead { reply }, deadline)
                    .await?;
                Some(match r {
                    Ok(ClientReply::ReadIndex { index }) => {
                        // The view is published before replies, so it has applied `index`.
                        let view = self.view();
                        debug_assert!(view.committed >= index);
                        Ok(answer(&view))
                    }
                    Ok(_) => Err(LocalFailure::Refused(error(
                        ErrorKind::Internal,
                        "unexpected reply",
                    ))),
                    Err(_) => Err(LocalFailure::NotLeader),
                })
            }
        };
        let remote = |client| {
            let asked = forward(client);
            async move {
                let r = asked.await.map_err(|_| RemoteFailure::Retry)?;
                remote_result(r)
            }
        };
        let timeout = self.inner.config.request_timeout();
        match self.route(forwarded, false, timeout, local, remote).await {
            Outcome::Done(v) => Ok(v),
            Outcome::Failed(mut e) => {
                if e.kind == ErrorKind::OutcomeUnknown as i32 {
                    e.kind = ErrorKind::NoLeader as i32;
                }
                Err(e)
            }
        }
    }

    /// The backup file of the committed state `view` shows: its game, commit point and
    /// committed configuration are those of one turn of the engine.
    fn backup_file(&self, view: &NodeView) -> pb::SnapshotResponse {
        let snapshot = Snapshot {
            zxid: view.committed,
            game: (*view.game).clone(),
            config_zxid: view.committed_config_zxid,
            config: (*view.committed_membership).clone(),
        };
        let origin = backup::Origin {
            ensemble_id: self.inner.identity.header(),
            node: view.node_id.clone(),
            created_unix_ms: backup::now_unix_ms(),
        };
        tracing::info!(node = %view.node_id, zxid = %snapshot.zxid, "snapshot for a backup");
        pb::SnapshotResponse {
            error: None,
            file: backup::encode(&snapshot, &origin),
            node: view.node_id.clone(),
            zxid: Some(zxid_to_pb(snapshot.zxid)),
        }
    }
}

/// Who sent a peer batch (a `Deliver` call, or the first batch of a stream), checked.
struct PeerSender {
    from: NodeId,
    /// Where it says it is reached, if it said.
    from_address: Option<String>,
}

/// Peer traffic: the checks `Deliver` and `Stream` share, and the end of streams at shutdown.
impl NodeServices {
    /// Wraps the server's shutdown signal: once `shutdown` completes, inbound peer streams
    /// end (without reporting their senders lost), so the server's graceful shutdown, which
    /// waits for every call in flight, does not wait for them forever.
    /// Becomes true once the server shuts down: long-lived streams end then.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    pub fn closing_peer_streams_on(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            shutdown.await;
            inner.closing.send_replace(true);
        }
    }

    /// Refuses a peer call from another ensemble (the metadata header names it); a call
    /// without the header is taken (its sender does not know its ensemble yet).
    fn check_ensemble(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let header = |name: &str| -> Result<Option<String>, Status> {
            match metadata.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
                    Status::invalid_argument(format!("a {name} header that is not text"))
                }),
            }
        };
        let theirs = header(ENSEMBLE_HEADER)?;
        let peer = header(NODE_HEADER)?.unwrap_or_else(|| "a peer".into());
        let me = self.view().node_id;
        match self.inner.identity.admit(&me, &peer, theirs.as_deref()) {
            Admission::Accept => Ok(()),
            Admission::Learned(id) => {
                tracing::info!(node = %me, %peer, ensemble = %id, "joined ensemble {id}: the first peer to name one");
                Ok(())
            }
            Admission::Refuse { message, first } => {
                if first {
                    tracing::warn!(node = %me, %peer, "refusing peer calls: {message}");
                }
                Err(Status::failed_precondition(message))
            }
        }
    }

    fn check_sender(&self, from: &str, from_address: &str) -> Result<PeerSender, Status> {
        // A sender in no configuration we know must say where it is reached (a leader that
        // added us, or a member added by an entry we do not hold yet); anything else is
        // not a peer.
        let known = self.inner.config.address_of(from).is_some()
            || self
                .inner
                .view
                .read()
                .expect("view lock")
                .address_of(from)
                .is_some();
        let from_address = (!from_address.is_empty()).then(|| from_address.to_string());
        if !known && from_address.is_none() {
            return Err(Status::permission_denied(format!(
                "{from:?} is not a member of this ensemble"
            )));
        }
        if check_member_id(from).is_err() {
            return Err(Status::invalid_argument(
                "a batch without a valid sender id",
            ));
        }
        Ok(PeerSender {
            from: from.to_string(),
            from_address,
        })
    }

    /// Hands a batch to the engine, in order: all of it, or nothing when a message does not
    /// decode.
    fn hand_over(&self, sender: &PeerSender, messages: Vec<pb::PeerMessage>) -> Result<(), Status> {
        let mut msgs = Vec::with_capacity(messages.len());
        for m in messages {
            msgs.push(message_from_pb(m).map_err(|e| Status::invalid_argument(e.to_string()))?);
        }
        for msg in msgs {
            self.inner
                .commands
                .send(Command::Peer {
                    from: sender.from.clone(),
                    from_address: sender.from_address.clone(),
                    msg,
                })
                .map_err(|_| Status::unavailable("node is shutting down"))?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for NodeServices {
    async fn deliver(
        &self,
        req: Request<pb::PeerBatch>,
    ) -> Result<Response<pb::DeliverAck>, Status> {
        self.check_ensemble(req.metadata())?;
        let batch = req.into_inner();
        let sender = self.check_sender(&batch.from, &batch.from_address)?;
        self.hand_over(&sender, batch.messages)?;
        Ok(Response::new(pb::DeliverAck {}))
    }

    /// A member's long-lived stream. When it ends — EOF, or an error such as the connection
    /// reset a killed process leaves — the engine hears `PeerLost` for its sender, unless
    /// this node is shutting down. A batch refused ends the stream with its status, and no
    /// `PeerLost` (the sender is there; it will open a new stream).
    async fn stream(
        &self,
        req: Request<tonic::Streaming<pb::PeerBatch>>,
    ) -> Result<Response<pb::DeliverAck>, Status> {
        self.check_ensemble(req.metadata())?;
        let mut batches = req.into_inner();
        let mut closing = self.inner.closing.subscribe();
        let mut sender: Option<PeerSender> = None;
        let end = loop {
            let next = tokio::select! {
                biased;
                _ = closing.wait_for(|c| *c) => {
                    return Err(Status::unavailable("node is shutting down"));
                }
                _ = self.inner.commands.closed() => {
                    return Err(Status::unavailable("node is shutting down"));
                }
                next = batches.message() => next,
            };
            match next {
                Ok(Some(batch)) => {
                    let s = match &sender {
                        Some(s) => {
                            if !batch.from.is_empty() && batch.from != s.from {
                                return Err(Status::invalid_argument(format!(
                                    "a stream from {:?} carried a batch from {:?}",
                                    s.from, batch.from
                                )));
                            }
                            s
                        }
                        None => sender.insert(self.check_sender(&batch.from, &batch.from_address)?),
                    };
                    self.hand_over(s, batch.messages)?;
                }
                Ok(None) => break Ok(Response::new(pb::DeliverAck {})),
                Err(status) => break Err(status),
            }
        };
        if let Some(s) = sender {
            if !*closing.borrow() {
                tracing::debug!(peer = %s.from, ended = ?end.as_ref().err().map(|e| e.code()), "peer stream ended");
                let _ = self.inner.commands.send(Command::PeerLost { peer: s.from });
            }
        }
        end
    }
}
