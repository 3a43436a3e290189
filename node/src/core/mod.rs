//! The pure protocol core: no tokio, tonic or rusqlite in here.
//!
//! - [`types`]: zxid, entries, credentials.
//! - [`message`]: what members say to each other.
//! - [`engine`]: the state machine (events in, outputs out).

pub mod engine;
pub mod message;
pub mod types;

pub use engine::{
    ClientError, ClientOp, ClientReply, Engine, Event, Output, Persistent, RequestId, RoleKind,
    StorageOp, Timing,
};
pub use message::{EpochSummary, Message};
pub use types::{Credentials, Entry, Member, Membership, NodeId, Op, RoundResult, Zxid};
