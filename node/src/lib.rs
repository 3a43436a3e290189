//! guessgame node: a ZAB-style replicated store running a number-guessing game.
//!
//! Map of the crate:
//! - [`core`]: the pure protocol state machine (election, sync, broadcast, membership
//!   changes through the log) — events in, outputs (persist, send, apply, reply) out; no I/O.
//! - [`game`]: the replicated state machine (rounds, targets, guesses, results).
//! - [`storage`]: the `LogStore` trait, `SqliteLog` (`logs_<node_id>.db`) and `MemoryStore`.
//! - [`config`]: the TOML ensemble configuration shared with the client.
//! - [`wire`]: protobuf ⇄ core conversions (untrusted input → errors, never panics).
//! - [`transport`]: batched, best-effort peer messaging over gRPC.
//! - [`runtime`]: the engine thread: group commit, then sends/applies/replies.
//! - [`service`]: the `Game` (clients) and `Peer` (members) gRPC services, forwarding.
//! - [`server`]: `run(...)` — one node, with graceful shutdown (and `--join`: asking a
//!   running ensemble to add it).
//! - [`launcher`]: `guessgame-node all` — every configured node as a child process.

pub mod config;
pub mod core;
pub mod game;
pub mod launcher;
pub mod runtime;
pub mod server;
pub mod service;
pub mod storage;
pub mod transport;
pub mod wire;

/// Generated protobuf and gRPC code (`proto/guessgame.proto`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("guessgame.v1");
}

/// Sets up `tracing` output on stderr (`RUST_LOG` or `GUESSGAME_LOG` filter, default info).
pub fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("GUESSGAME_LOG")
        .ok()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in files and pipes (node logs, `guessgame-node all`).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
