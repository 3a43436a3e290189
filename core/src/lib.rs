//! guessgame's protocol core: a ZAB-style state machine and the game it replicates.
//!
//! Pure by construction: this crate depends on no async runtime, RPC, protobuf or database
//! crate, so nothing in here can block, send or write. Events go in, outputs (persist, send,
//! apply, reply) come out; time comes from `Event::Tick`, randomness from a seed.
//!
//! - [`types`]: zxid, entries, members and configurations, credentials.
//! - [`message`]: what members say to each other.
//! - [`game`]: the replicated state machine (rounds, targets, guesses, results).
//! - [`snapshot`]: the committed state at a zxid, which replaces the log below it.
//! - [`engine`]: the protocol state machine (events in, outputs out).

pub mod engine;
pub mod game;
pub mod message;
pub mod rules;
pub mod snapshot;
pub mod types;

pub use engine::{
    split_early, ClientError, ClientOp, ClientReply, Engine, Event, Output, Persistent, RequestId,
    RoleKind, StorageOp, Timing,
};
pub use message::{EpochSummary, GameMove, Message};
pub use snapshot::{Snapshot, SnapshotError, SnapshotPolicy};
pub use types::{Credentials, Entry, Member, Membership, NodeId, Op, RoundResult, Zxid};
