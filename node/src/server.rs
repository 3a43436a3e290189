//! Wires one node together: storage, engine thread, peer transport, gRPC server, ticks.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Config;
use crate::core::{Engine, RoleKind};
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

/// Runs node `node_id` until `shutdown` completes.
pub async fn run(
    config: Config,
    node_id: String,
    mut store: SqliteLog,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.node(&node_id)?;
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
    let engine = Engine::new(
        node_id.clone(),
        config.ids(),
        config.quorum(),
        config.timing(),
        persistent,
        seed,
    );
    let peers: Vec<(String, String)> = config
        .nodes
        .iter()
        .filter(|n| n.id != node_id)
        .map(|n| (n.id.clone(), n.address.clone()))
        .collect();
    let transport = GrpcTransport::start(&node_id, &peers)?;
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
    let _ = commands.send(Command::Stop);
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    tracing::info!(node = %node_id, "stopped");
    result.context("gRPC server")
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
