//! `guessgame-operator`: the GuessGame controller, with `/healthz`, `/readyz` and `/metrics`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use guessgame_operator::controller::{self, Settings, State};
use guessgame_operator::resources::MemberAddress;
use guessgame_operator::telemetry::{self, LogFormat};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "guessgame-operator",
    version,
    about = "Runs guessgame ensembles (GuessGame resources) on Kubernetes"
)]
struct Cli {
    /// Address of the HTTP server (/healthz, /readyz, /metrics, / diagnostics).
    #[arg(
        long,
        env = "GUESSGAME_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "GUESSGAME_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Watch GuessGames in this namespace only (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile (and refresh the status of) every GuessGame at least this often.
    #[arg(long, env = "GUESSGAME_OPERATOR_REQUEUE_SECONDS", default_value_t = 5)]
    requeue_seconds: u64,
    /// Restart a Running member that has not answered for this long (also the minimum time
    /// between two restarts in one GuessGame).
    #[arg(
        long,
        env = "GUESSGAME_OPERATOR_UNRESPONSIVE_SECONDS",
        default_value_t = 60
    )]
    unresponsive_seconds: u64,
    /// Budget of one member status query.
    #[arg(
        long,
        env = "GUESSGAME_OPERATOR_PROBE_TIMEOUT_MS",
        default_value_t = 1000
    )]
    probe_timeout_ms: u64,
    /// How to reach members: `auto` (pod IP, else DNS), `dns`, or a template such as
    /// `{pod}.{service}.{namespace}.svc:{port}` or `127.0.0.1:710{ordinal}`.
    #[arg(long, env = "GUESSGAME_MEMBER_ADDRESS", default_value = "auto")]
    member_address: MemberAddress,
    /// Cluster DNS domain appended to member names (`.svc.<domain>`); default: none.
    #[arg(long, env = "GUESSGAME_CLUSTER_DOMAIN")]
    cluster_domain: Option<String>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(AxumState(state): AxumState<State>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(AxumState(state): AxumState<State>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics_text(),
    )
}

async fn index(AxumState(state): AxumState<State>) -> impl IntoResponse {
    axum::Json(state.diagnostics().await)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let settings = Settings {
        requeue: Duration::from_secs(cli.requeue_seconds.max(1)),
        unresponsive_after: Duration::from_secs(cli.unresponsive_seconds.max(1)),
        probe_timeout: Duration::from_millis(cli.probe_timeout_ms.max(50)),
        member_address: cli.member_address,
        cluster_domain: cli.cluster_domain,
        namespace: cli.namespace,
    };
    tracing::info!(?settings, "starting");
    // SIGTERM handled from here on (as PID 1 in a container it would otherwise be ignored).
    let signal = guessgame_wire::signal::shutdown_signal();
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let state = State::default();

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let app = Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(cli.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", cli.http_addr))?;
    tracing::info!(addr = %cli.http_addr, "HTTP server listening");
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    let result = controller::run(client, state, settings, stopped(stop_rx)).await;
    server.abort();
    let _ = server.await;
    result
}
