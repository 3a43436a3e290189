//! guessgame's wire and shared rules: what the node, the client and the operator all speak.
//!
//! Nothing in here touches a database: the client and the operator link this crate (and the
//! pure [`guessgame_core`]) without SQLite.
//!
//! - [`proto`]: the generated protobuf and gRPC code (`proto/guessgame.proto`).
//! - [`convert`]: protobuf ⇄ core conversions (untrusted input → errors, never panics).
//! - [`config`]: the TOML ensemble configuration and the pod-mode environment.
//! - [`backup`]: the snapshot file (`guessgame snapshot save`/`status`, `guessgame-node
//!   snapshot restore`) and ensemble ids.
//! - [`channel`]: gRPC channels to members, and "was this request never sent?".
//! - [`signal`]: graceful shutdown on SIGTERM / SIGINT.
//! - [`telemetry`]: log output for every binary.

pub mod backup;
pub mod channel;
pub mod config;
pub mod convert;
pub mod signal;
pub mod telemetry;

/// Generated protobuf and gRPC code (`proto/guessgame.proto`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("guessgame.v1");
}
