//! `guessgame-node`: runs one ensemble member, or (`all`) every configured member.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use guessgame_node::{launcher, server};
use guessgame_wire::config::{Config, Overrides, PodSettings};
use guessgame_wire::signal::shutdown_signal;

#[derive(Parser)]
#[command(
    name = "guessgame-node",
    version,
    about = "A guessgame ensemble member (ZAB-style replication, SQLite log)"
)]
struct Cli {
    /// This node's id, as in the config (e.g. node1). In a StatefulSet pod
    /// ($GUESSGAME_REPLICAS set): the pod name, from $POD_NAME or the hostname.
    #[arg(long, env = "GUESSGAME_NODE_ID")]
    node_id: Option<String>,
    #[command(flatten)]
    common: Common,
    /// Address to listen on (default: this node's address in the config; in a StatefulSet pod,
    /// 0.0.0.0:$GUESSGAME_PORT).
    #[arg(long, env = "GUESSGAME_LISTEN")]
    listen: Option<String>,
    /// Join a running ensemble through the member at this address (host:port): this node
    /// starts outside the configuration, is added as a learner, and becomes a voter once it
    /// has caught up. Needs --listen (or --advertise) for where it is reached.
    #[arg(long, value_name = "HOST:PORT")]
    join: Option<String>,
    /// The host:port peers and clients reach this node at (default: --listen, or this
    /// node's address in the config).
    #[arg(long, env = "GUESSGAME_ADVERTISE", value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// A new ensemble's id is derived from this and its initial voters' ids, so its nodes
    /// agree without talking (default: guessgame); give ensembles that share member names
    /// different tokens. Only read on the first start of a log.
    #[arg(long, env = "GUESSGAME_ENSEMBLE_TOKEN", value_name = "TOKEN")]
    ensemble_token: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Ensemble configuration (TOML). Default: $GUESSGAME_CONFIG, else five nodes on 127.0.0.1:7101-7105.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory for logs_<node_id>.db (default: the config's data_dir, else the current directory).
    #[arg(long, global = true, env = "GUESSGAME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Snapshot the committed state every N committed entries (the config's snapshot_every;
    /// default 10000).
    #[arg(
        long,
        global = true,
        env = "GUESSGAME_SNAPSHOT_EVERY",
        value_name = "N"
    )]
    snapshot_every: Option<usize>,
    /// Entries kept below a snapshot, so that a follower a little behind gets a DIFF (the
    /// config's snapshot_retain; default 5000).
    #[arg(
        long,
        global = true,
        env = "GUESSGAME_SNAPSHOT_RETAIN",
        value_name = "N"
    )]
    snapshot_retain: Option<usize>,
    /// The largest peer message accepted, in bytes (the config's max_peer_message_bytes;
    /// default 64 MiB). Catch-up pieces are sized to fit. For tests.
    #[arg(
        long,
        global = true,
        env = "GUESSGAME_MAX_PEER_MESSAGE_BYTES",
        value_name = "BYTES"
    )]
    max_peer_message_bytes: Option<usize>,
}

impl Common {
    fn overrides(&self) -> Overrides {
        Overrides {
            snapshot_every: self.snapshot_every,
            snapshot_retain: self.snapshot_retain,
            max_peer_message_bytes: self.max_peer_message_bytes,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Start every configured node as a child process; Ctrl-C stops them all.
    All,
    /// Backups: `snapshot restore FILE --node-id ID` makes a new ensemble's member from a
    /// `guessgame snapshot save` file.
    #[command(subcommand)]
    Snapshot(guessgame_node::restore::SnapshotCmd),
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("guessgame-node: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    guessgame_wire::telemetry::init_tracing("info");
    let mut config = Config::load(cli.common.config.as_deref())?;
    let overrides = cli.common.overrides();
    config.override_with(&overrides)?;
    // The pod mode (a StatefulSet member): only when no config file was named.
    let pod = if cli.common.config.is_none()
        && std::env::var_os(guessgame_wire::config::CONFIG_ENV).is_none()
    {
        PodSettings::from_env()?
    } else {
        None
    };
    let data_dir = cli.common.data_dir.clone().or(config.data_dir.clone());
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Some(Cmd::All) if pod.is_some() => anyhow::bail!(
            "`guessgame-node all` starts a local ensemble; in a StatefulSet pod ($GUESSGAME_REPLICAS \
             set) run one node per pod"
        ),
        Some(Cmd::All) => rt.block_on(launcher::run_all(
            &config,
            cli.common.config.clone(),
            data_dir,
            &overrides,
        )),
        Some(Cmd::Snapshot(cmd)) => guessgame_node::restore::run(
            cmd,
            &data_dir.unwrap_or_else(|| PathBuf::from(".")),
        ),
        None => {
            // SIGTERM handled from here on (as PID 1 in a container it would otherwise be
            // ignored while the log is opened and checked).
            let shutdown = {
                let _runtime = rt.enter();
                shutdown_signal()
            };
            let node_id = cli
                .node_id
                .or_else(|| pod.as_ref().and_then(|p| p.node_id().map(str::to_string)))
                .context("--node-id is required (or run `guessgame-node all`)")?;
            // A node outside the configuration may start when it joins (--join) or is a pod
            // of a StatefulSet that grew after the ensemble was created: the operator adds it.
            let in_config = config.address_of(&node_id).map(str::to_string);
            let pod_address = match &pod {
                Some(p) => match p.ordinal {
                    Some(ordinal) => Some(p.address(ordinal)?),
                    None => None,
                },
                None => None,
            };
            if in_config.is_none() && cli.join.is_none() && pod_address.is_none() {
                config.node(&node_id)?;
            }
            let listen = cli
                .listen
                .clone()
                .or_else(|| pod.as_ref().map(PodSettings::listen_address))
                .or(in_config.clone())
                .or(cli.advertise.clone())
                .context("--join needs --listen (the address to listen on)")?;
            // Joining: where it listens is where it is (unless --advertise says otherwise);
            // a configured node keeps its configured address even when it listens on, e.g.,
            // 0.0.0.0.
            let joining_at = cli.join.as_ref().and(cli.listen.clone());
            let advertise = cli
                .advertise
                .clone()
                .or(pod_address)
                .or(joining_at)
                .or(in_config)
                .or(cli.listen.clone());
            let options = server::NodeOptions {
                advertise,
                join: cli.join.clone(),
                // A pod that is removed stays up (idle) until the StatefulSet shrinks;
                // exiting would only make the kubelet restart it.
                exit_when_removed: pod.is_none(),
                ensemble_token: cli.ensemble_token.clone(),
            };
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from("."));
            let store = server::open_store(&data_dir, &node_id)?;
            if let Some(pod) = &pod {
                tracing::info!(
                    node = %node_id,
                    members = config.nodes.len(),
                    service = %pod.service,
                    peers = %config.nodes.iter().map(|n| n.address.as_str()).collect::<Vec<_>>().join(","),
                    "StatefulSet pod mode"
                );
            }
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                server::run_with(
                    config,
                    node_id,
                    options,
                    store,
                    listener,
                    shutdown,
                )
                .await
            })
        }
    }
}
