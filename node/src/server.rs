//! Wires one node together: storage, engine thread, peer transport, gRPC server, ticks.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Config;
use crate::core::{Engine, Member, Membership, RoleKind};
use crate::proto::{game_server::GameServer, peer_server::PeerServer};
use crate::runtime::{self, Command};
use crate::service::NodeServices;
use crate::storage::{LogStore, SqliteLog};
use crate::transport::GrpcTransport;

/// Opens the node's log (refusing foreign or corrupt files) — done before binding so a bad
/// data directory fails fast with a clear message.
pub fn open_store(data_dir: &Path, node_id: &str) -> anyhow::Result<SqliteLog> {
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
        accepted_epoch = persistent.accepted_epoch,
        committed = %persistent.committed,
        log = %store.path().display(),
        "starting"
    );
    let seed = node_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    }) ^ std::process::id() as u64;
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
    let engine = Engine::with_membership(
        node_id.clone(),
        bootstrap,
        config.timing(),
        persistent,
        seed,
    );
    tracing::info!(node = %node_id, config = %engine.membership(), config_zxid = %engine.config_zxid(), %advertise, "membership");
    let peers: Vec<(String, String)> = engine
        .known_members()
        .into_iter()
        .filter(|m| !m.address.is_empty())
        .map(|m| (m.id, m.address))
        .collect();
    let transport = GrpcTransport::start(&node_id, &advertise, &peers)?;
    let (commands, view, engine_thread) =
        runtime::spawn(engine, Box::new(store), Box::new(transport));

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

    // Health: SERVING once this node is in a working ensemble (leader, or synced follower).
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let health = {
        let view = view.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let serving = {
                    let v = view.read().expect("view lock");
                    matches!(v.role, RoleKind::Leading | RoleKind::Following) && v.leader.is_some()
                };
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
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Local nodes stop once removed; the process exits cleanly. A joining node is "not a
    // member" until it is added: it only stops on a removal after it joined.
    let armed = Arc::new(AtomicBool::new(options.join.is_none()));
    let (removed_tx, mut removed_rx) = tokio::sync::watch::channel(false);
    let removal = {
        let view = view.clone();
        let node_id = node_id.clone();
        let armed = armed.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (removed, config) = {
                    let v = view.read().expect("view lock");
                    (v.removed, v.committed_membership.clone())
                };
                if removed && options.exit_when_removed && armed.load(Ordering::SeqCst) {
                    tracing::warn!(node = %node_id, %config, "removed from the ensemble; stopping");
                    let _ = removed_tx.send(true);
                    break;
                }
            }
        })
    };
    // A join the ensemble refuses for good (the id is taken at another address, the
    // ensemble is full, ...) stops the node with that reason.
    let (refused_tx, mut refused_rx) = tokio::sync::watch::channel(None::<String>);
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = removed_rx.wait_for(|r| *r) => {}
            _ = refused_rx.wait_for(|r| r.is_some()) => {}
        }
    };
    if let Some(target) = options.join.clone() {
        tokio::spawn(join(
            target,
            node_id.clone(),
            advertise.clone(),
            config.request_timeout(),
            armed,
            refused_tx.clone(),
        ));
    }

    let services = NodeServices::new(config.clone(), commands.clone(), view);
    let local = listener.local_addr()?;
    tracing::info!(node = %node_id, %local, "serving");
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(GameServer::new(services.clone()))
        .add_service(PeerServer::new(services).max_decoding_message_size(64 << 20))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    ticker.abort();
    health.abort();
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

/// Asks the member at `target` to add this node, until the ensemble answers: a learner
/// first, promoted to voter once it holds every committed entry.
async fn join(
    target: String,
    node_id: String,
    advertise: String,
    timeout: Duration,
    joined: Arc<AtomicBool>,
    refused: tokio::sync::watch::Sender<Option<String>>,
) {
    use crate::proto::{game_client::GameClient, reconfig_request::Change, ErrorKind};
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = async {
            let channel =
                crate::transport::channel(&target, timeout * 4 + Duration::from_secs(20))?;
            let r = GameClient::new(channel)
                .reconfig(crate::proto::ReconfigRequest {
                    change: Some(Change::Add(crate::proto::Member {
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
                    joined.store(true, Ordering::SeqCst);
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

/// Completes on SIGTERM or Ctrl-C: the graceful-shutdown trigger of the binaries.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
