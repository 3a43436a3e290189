//! Wires one node together: storage, engine thread, peer transport, gRPC server, ticks.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::runtime::{self, Command};
use crate::service::NodeServices;
use crate::storage::{LogStore, SqliteLog};
use crate::transport::GrpcTransport;
use guessgame_core::{Engine, Member, Membership};
use guessgame_wire::config::Config;
use guessgame_wire::proto::{game_server::GameServer, peer_server::PeerServer};

/// Opens the node's log (refusing foreign or corrupt files) — done before binding so a bad
/// data directory fails fast with a clear message.
pub fn open_store(data_dir: &Path, node_id: &str) -> anyhow::Result<SqliteLog> {
    check_data_dir(data_dir)?;
    Ok(SqliteLog::open(data_dir, node_id)?)
}

/// How a node takes part beyond the configuration file.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// `host:port` peers and clients reach this node at (default: its address in the
    /// configuration).
    pub advertise: Option<String>,
    /// Start outside the configuration and ask the member at this address to add this node
    /// (as a learner first, then as a voter once it has caught up).
    pub join: Option<String>,
    /// Exit once the committed configuration leaves this node out (a local node). A pod
    /// stays up, idle, until its StatefulSet shrinks.
    pub exit_when_removed: bool,
    /// What a new ensemble's id is derived from, with its initial voters (default:
    /// `guessgame`); only used on the first start of a log that has none.
    pub ensemble_token: Option<String>,
}

/// Runs node `node_id` (a member of `config`) until `shutdown` completes.
pub async fn run(
    config: Config,
    node_id: String,
    store: SqliteLog,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.node(&node_id)?;
    let options = NodeOptions {
        exit_when_removed: true,
        ..NodeOptions::default()
    };
    run_with(config, node_id, options, store, listener, shutdown).await
}

/// Runs node `node_id` until `shutdown` completes (or, with `exit_when_removed`, until it is
/// removed from the ensemble).
///
/// The configuration file (or pod environment) only bootstraps a new ensemble: once the log
/// holds a configuration entry, that is what the node uses. A node not in the file (or
/// started with `join`) starts with no configuration and waits to be added.
pub async fn run_with(
    config: Config,
    node_id: String,
    options: NodeOptions,
    mut store: SqliteLog,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let advertise = match (&options.advertise, config.address_of(&node_id)) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => a.to_string(),
        (None, None) => anyhow::bail!(
            "{node_id} is not in the configuration: say where it is reached (--advertise or --listen)"
        ),
    };
    let persistent = store.load().context("loading the log")?;
    tracing::info!(
        node = %node_id,
        entries = persistent.log.len(),
        log_start = %persistent.log_start,
        snapshot = %persistent.snapshot.as_ref().map_or(guessgame_core::Zxid::ZERO, |s| s.zxid),
        accepted_epoch = persistent.accepted_epoch,
        committed = %persistent.committed,
        log = %store.path().display(),
        "starting"
    );
    let seed = guessgame_core::rules::fnv1a(node_id.bytes()) ^ std::process::id() as u64;
    let bootstrap = if options.join.is_some() || config.address_of(&node_id).is_none() {
        Membership::default()
    } else {
        Membership::of_voters(
            config
                .nodes
                .iter()
                .map(|n| Member {
                    id: n.id.clone(),
                    address: n.address.clone(),
                })
                .collect(),
        )
    };
    let identity = crate::identity::establish(
        &mut store,
        &node_id,
        &persistent,
        &bootstrap,
        options.ensemble_token.as_deref(),
    )
    .context("recording the ensemble id")?;
    let engine = Engine::with_membership(
        node_id.clone(),
        bootstrap,
        config.timing(),
        persistent,
        seed,
    )
    .with_snapshot_policy(config.snapshot_policy());
    tracing::info!(node = %node_id, config = %engine.membership(), config_zxid = %engine.config_zxid(), %advertise, "membership");
    let peers: Vec<(String, String)> = engine
        .known_members()
        .into_iter()
        .filter(|m| !m.address.is_empty())
        .map(|m| (m.id, m.address))
        .collect();
    let transport =
        GrpcTransport::start_with_identity(&node_id, &advertise, &peers, identity.clone())?;
    let db_path = store.path().display().to_string();
    let runtime::EngineHandle {
        commands,
        view,
        standing,
        storage,
        thread: engine_thread,
    } = runtime::spawn(
        engine,
        Box::new(crate::identity::IdentityStore::new(store, identity.clone())),
        Box::new(transport),
    );

    // Ticks drive all timeouts in the engine.
    let tick_every = Duration::from_millis((config.heartbeat_interval_ms / 5).clamp(2, 20));
    let ticker = {
        let commands = commands.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick_every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                if commands.send(Command::Tick).is_err() {
                    break;
                }
            }
        })
    };

    let stall_reports = tokio::spawn(crate::storage::report_stalls(
        storage.clone(),
        node_id.clone(),
        db_path,
    ));

    // Health: SERVING once this node is in a working ensemble (leader, or synced follower),
    // and while its storage answers: a node whose engine has been blocked in a write for
    // longer than an election timeout serves nobody (its peers are electing without it).
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts the whole-server service "" (what the kubelet's gRPC probe asks
    // for by default) as SERVING: not before the node says so.
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health_reporter
        .set_not_serving::<GameServer<NodeServices>>()
        .await;
    let health = {
        let mut standing = standing.clone();
        let storage = storage.clone();
        let stall_limit = Duration::from_millis(config.election_timeout_ms);
        tokio::spawn(async move {
            let mut last = None;
            let mut every = tokio::time::interval(Duration::from_millis(250));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let stalled = storage.busy_for().is_some_and(|d| d >= stall_limit);
                let serving = standing.borrow_and_update().in_ensemble && !stalled;
                if last != Some(serving) {
                    last = Some(serving);
                    if serving {
                        health_reporter
                            .set_serving::<GameServer<NodeServices>>()
                            .await;
                        health_reporter
                            .set_service_status("", tonic_health::ServingStatus::Serving)
                            .await;
                    } else {
                        health_reporter
                            .set_not_serving::<GameServer<NodeServices>>()
                            .await;
                        health_reporter
                            .set_service_status("", tonic_health::ServingStatus::NotServing)
                            .await;
                    }
                }
                tokio::select! {
                    changed = standing.changed() => if changed.is_err() { break },
                    _ = every.tick() => {}
                }
            }
        })
    };

    // Local nodes stop once removed; the process exits cleanly. A joining node is "not a
    // member" until it is added: it only stops on a removal after it joined.
    let (armed_tx, mut armed) = tokio::sync::watch::channel(options.join.is_none());
    let (removed_tx, mut removed_rx) = tokio::sync::watch::channel(false);
    let removal = {
        let view = view.clone();
        let node_id = node_id.clone();
        let mut standing = standing.clone();
        tokio::spawn(async move {
            if !options.exit_when_removed || armed.wait_for(|a| *a).await.is_err() {
                return;
            }
            if standing.wait_for(|s| s.removed).await.is_err() {
                return;
            }
            let config = view.read().expect("view lock").committed_membership.clone();
            tracing::warn!(node = %node_id, %config, "removed from the ensemble; stopping");
            let _ = removed_tx.send(true);
        })
    };
    // A join the ensemble refuses for good (the id is taken at another address, the
    // ensemble is full, ...) stops the node with that reason.
    let (refused_tx, mut refused_rx) = tokio::sync::watch::channel(None::<String>);
    let handoff = (commands.clone(), 2 * config.heartbeat_interval_ms + 100);
    let shutdown = async move {
        let told_to_stop = tokio::select! {
            _ = shutdown => true,
            // A wait whose sender is gone (no removal to wait for) never fires.
            Ok(_) = removed_rx.wait_for(|r| *r) => false,
            Ok(_) = refused_rx.wait_for(|r| r.is_some()) => false,
        };
        if told_to_stop {
            hand_off(&handoff.0, Duration::from_millis(handoff.1)).await;
        }
    };
    if let Some(target) = options.join.clone() {
        tokio::spawn(join(
            target,
            node_id.clone(),
            advertise.clone(),
            config.request_timeout(),
            armed_tx,
            refused_tx.clone(),
        ));
    }

    // One batch of a peer stream; the catch-up pieces (`Config::snapshot_policy`) fit in it.
    let peer_limit = config.max_peer_message_bytes;
    let services =
        NodeServices::with_identity(config.clone(), commands.clone(), view, identity, storage);
    // Inbound peer streams last until their sender stops: end them when shutdown begins,
    // or the graceful shutdown would wait for them.
    let shutdown = services.closing_peer_streams_on(shutdown);
    let local = listener.local_addr()?;
    tracing::info!(node = %node_id, %local, "serving");
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(GameServer::new(services.clone()))
        .add_service(PeerServer::new(services).max_decoding_message_size(peer_limit))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    ticker.abort();
    health.abort();
    stall_reports.abort();
    removal.abort();
    let _ = commands.send(Command::Stop);
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    tracing::info!(node = %node_id, "stopped");
    result.context("gRPC server")?;
    if let Some(why) = refused_tx.borrow().clone() {
        anyhow::bail!("could not join the ensemble: {why}");
    }
    Ok(())
}

/// A leader that is told to stop hands its leadership over first (its followers elect at
/// once rather than after the election timeout); `within` bounds the wait.
async fn hand_off(commands: &tokio::sync::mpsc::UnboundedSender<Command>, within: Duration) {
    let (done, handed_over) = tokio::sync::oneshot::channel();
    if commands.send(Command::HandOff { done }).is_err() {
        return;
    }
    if tokio::time::timeout(within, handed_over).await.is_err() {
        tracing::warn!("no hand-over within {within:?}; stopping anyway");
    }
    // The StepDown just queued for each peer leaves through the sender tasks on this
    // runtime: give them a moment before the runtime goes.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Asks the member at `target` to add this node, until the ensemble answers: a learner
/// first, promoted to voter once it holds every committed entry.
async fn join(
    target: String,
    node_id: String,
    advertise: String,
    timeout: Duration,
    joined: tokio::sync::watch::Sender<bool>,
    refused: tokio::sync::watch::Sender<Option<String>>,
) {
    use guessgame_wire::proto::{game_client::GameClient, reconfig_request::Change, ErrorKind};
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = async {
            let channel =
                guessgame_wire::channel::channel(&target, timeout * 4 + Duration::from_secs(20))?;
            let r = GameClient::new(channel)
                .reconfig(guessgame_wire::proto::ReconfigRequest {
                    change: Some(Change::Add(guessgame_wire::proto::Member {
                        id: node_id.clone(),
                        address: advertise.clone(),
                        voter: true,
                    })),
                    forwarded: false,
                })
                .await?
                .into_inner();
            anyhow::Ok(r)
        }
        .await;
        match result {
            Ok(r) => match r.error {
                None => {
                    tracing::info!(node = %node_id, via = %target, config = ?r.config, "joined the ensemble as a voter");
                    joined.send_replace(true);
                    return;
                }
                Some(e)
                    if e.kind == ErrorKind::ReconfigRefused as i32 && !e.retryable
                        || e.kind == ErrorKind::InvalidArgument as i32 =>
                {
                    tracing::error!(node = %node_id, via = %target, "the ensemble refused to add this node: {}", e.message);
                    let _ = refused.send(Some(e.message));
                    return;
                }
                Some(e) => {
                    tracing::info!(node = %node_id, via = %target, attempt, "not added yet: {}", e.message)
                }
            },
            Err(e) => {
                tracing::info!(node = %node_id, via = %target, attempt, "cannot ask to join yet: {e:#}")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Checks that `data_dir` exists (creating it) and that this process may create files in it
/// (SQLite needs the log file and its `-wal` and `-shm` files there). The error names the
/// directory, the OS error and its errno, the process's uid/gid and the directory's owner and
/// mode: in a pod, a volume that ignores `fsGroup` (hostPath, kind's local-path) must be
/// writable for the node's user some other way.
pub fn check_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    if let Err(e) = std::fs::create_dir_all(data_dir) {
        anyhow::bail!(
            "{}",
            data_dir_error("cannot create the data directory", data_dir, &e)
        );
    }
    let probe = data_dir.join(format!(".guessgame-write-test.{}", std::process::id()));
    let _ = std::fs::remove_file(&probe);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "{}",
            data_dir_error("cannot create files in the data directory", data_dir, &e)
        ),
    }
}

fn data_dir_error(what: &str, dir: &Path, e: &std::io::Error) -> String {
    let id = |key: &str| -> String {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
            })
            .unwrap_or_else(|| "?".into())
    };
    let (uid, gid) = (id("Uid:"), id("Gid:"));
    // The nearest existing path: its owner and mode usually explain the error.
    let mut owner = String::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        #[cfg(unix)]
        if let Ok(m) = std::fs::metadata(d) {
            use std::os::unix::fs::MetadataExt;
            owner = format!(
                ", and {} is owned by uid {} gid {} with mode {:04o}{}",
                d.display(),
                m.uid(),
                m.gid(),
                m.mode() & 0o7777,
                if m.is_dir() { "" } else { " (not a directory)" }
            );
            break;
        }
        at = d.parent();
    }
    // An io::Error from the OS displays as "Permission denied (os error 13)".
    format!(
        "{what} {}: {e}; this process runs as uid {uid} gid {gid}{owner}. The node keeps its \
         log there (logs_<node>.db and its -wal and -shm files). In a pod, the volume mounted \
         there must be writable for uid {uid}: fsGroup does that for most volume types, but \
         hostPath volumes (kind's local-path) ignore it and need a directory that user may \
         write to",
        dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

    /// What the kubelet's gRPC readiness probe asks (service "": the whole server).
    async fn probe(address: &str, service: &str) -> Option<i32> {
        let channel = guessgame_wire::channel::channel(address, Duration::from_secs(1)).ok()?;
        let r = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        Some(r.into_inner().status)
    }

    /// Starts member `id` of `config` on a free loopback port (`config`'s address of `id` is
    /// rewritten to it); returns its address and a stop switch.
    async fn start(
        mut config: Config,
        id: &str,
        dir: &Path,
    ) -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        for n in &mut config.nodes {
            if n.id == id {
                n.address = address.clone();
            }
        }
        let store = open_store(dir, id).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let id = id.to_string();
        tokio::spawn(async move {
            run(config, id, store, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        (address, stop)
    }

    #[tokio::test]
    async fn the_grpc_health_service_serves_only_in_a_working_ensemble() {
        // A member of three alone: up (the port answers) but NOT_SERVING, from the start.
        let dir = tempfile::tempdir().unwrap();
        let (address, stop) = start(Config::local(3, 1), "node1", dir.path()).await;
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(probe(&address, "").await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let not_serving = Some(ServingStatus::NotServing as i32);
        assert!(seen.iter().all(|s| *s == not_serving), "{seen:?}");
        assert_eq!(probe(&address, "guessgame.v1.Game").await, not_serving);
        let _ = stop.send(());

        // A one-member ensemble elects itself: SERVING.
        let dir = tempfile::tempdir().unwrap();
        let (address, stop) = start(Config::local(1, 1), "node1", dir.path()).await;
        let serving = Some(ServingStatus::Serving as i32);
        let mut status = None;
        for _ in 0..100 {
            status = probe(&address, "").await;
            if status == serving {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, serving);
        assert_eq!(probe(&address, "guessgame.v1.Game").await, serving);
        let _ = stop.send(());
    }

    #[test]
    fn an_unusable_data_dir_is_refused_with_its_path_and_errno() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = check_data_dir(&file).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot create the data directory {}: File exists (os error 17); this process \
                 runs as uid ",
                file.display()
            )),
            "{err}"
        );
        assert!(err.contains("(not a directory)"), "{err}");
        let err = check_data_dir(&file.join("sub")).unwrap_err().to_string();
        assert!(err.contains("(os error 20)"), "{err}");
        // A usable one is created, and left as it was found.
        let fresh = dir.path().join("a/b");
        check_data_dir(&fresh).unwrap();
        assert_eq!(std::fs::read_dir(&fresh).unwrap().count(), 0);
    }

    /// Peer DNS names of a StatefulSet can take tens of seconds to resolve: a node whose peers
    /// do not resolve at all keeps running, answers its clients, and keeps trying.
    #[test]
    fn unresolvable_peers_do_not_stop_a_node() {
        use guessgame_wire::proto::{game_client::GameClient, StatusRequest};
        let dir = tempfile::tempdir().unwrap();
        let vars = [
            ("GUESSGAME_REPLICAS", "3"),
            ("POD_NAME", "gg-0"),
            ("POD_NAMESPACE", "nowhere"),
            ("GUESSGAME_CLUSTER_DOMAIN", "invalid"),
            ("GUESSGAME_HEARTBEAT_INTERVAL_MS", "20"),
            ("GUESSGAME_ELECTION_TIMEOUT_MS", "100"),
        ];
        let settings = guessgame_wire::config::PodSettings::from_vars(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            None,
        )
        .unwrap()
        .unwrap();
        let config = settings.config().unwrap();
        assert!(config
            .address_of("gg-1")
            .unwrap()
            .ends_with(".invalid:7100"));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let store = open_store(dir.path(), "gg-0").unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let local = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            // As `guessgame-node` runs a pod: it stays up when removed.
            let options = NodeOptions {
                exit_when_removed: false,
                ..NodeOptions::default()
            };
            let stop_signal = async move {
                let _ = stopped.await;
            };
            let node = tokio::spawn(run_with(
                config,
                "gg-0".into(),
                options,
                store,
                listener,
                stop_signal,
            ));
            // Several election rounds, each sending to both unresolvable peers.
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(!node.is_finished(), "the node stopped: {:?}", node.await);
            let ch = guessgame_wire::channel::channel(&local.to_string(), Duration::from_secs(2))
                .unwrap();
            let status = GameClient::new(ch)
                .status(StatusRequest {})
                .await
                .expect("the node answers")
                .into_inner();
            assert_eq!(status.node_id, "gg-0");
            assert_eq!(status.role, "looking");
            stop.send(()).unwrap();
            node.await.unwrap().unwrap();
        });
    }
}
