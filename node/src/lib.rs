//! guessgame node: one member of a ZAB-style replicated ensemble running a number-guessing game.
//!
//! The protocol itself is the pure [`guessgame_core`] crate; the wire, the configuration and
//! the shared rules are [`guessgame_wire`]. This crate is the I/O around them. Map:
//! - [`storage`]: the `LogStore` trait, `SqliteLog` (`logs_<node_id>.db`) and `MemoryStore`.
//! - [`transport`]: batched, best-effort peer messaging over gRPC.
//! - [`runtime`]: the engine thread: group commit, then sends/applies/replies.
//! - [`service`]: the `Game` (clients) and `Peer` (members) gRPC services, forwarding;
//!   `session`: a client's requests on one long-lived stream (`Game.Session`).
//! - [`server`]: `run(...)` — one node, with graceful shutdown (and `--join`: asking a
//!   running ensemble to add it).
//! - [`launcher`]: `guessgame-node all` — every configured node as a child process.
//! - [`identity`]: the ensemble id (kept in the log, sent and checked on peer calls).
//! - [`restore`]: `guessgame-node snapshot restore` — a new ensemble's member from a backup.

pub mod identity;
pub mod launcher;
pub mod restore;
pub mod runtime;
pub mod server;
pub mod service;
mod session;
pub mod storage;
pub mod transport;
