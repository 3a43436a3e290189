//! Backups: a consistent snapshot of a running ensemble ([`Client::snapshot`], `guessgame
//! snapshot save`), and what a backup file holds ([`Summary`], `guessgame snapshot status`).
//!
//! The file format is [`guessgame_wire::backup`]'s; restoring one belongs to the node
//! binary (`guessgame-node snapshot restore`), which links SQLite — this crate does not.

use std::path::Path;

use guessgame_wire::backup::{self, Backup};
use guessgame_wire::proto as pb;
use serde::Serialize;

use crate::client::{Client, ClientError, ErrorKind, Resend, RoundResult};
use crate::members::MemberInfo;
use crate::types::MemberKind;

/// A backup taken from the ensemble: the file's bytes, checked.
#[derive(Clone, Debug)]
pub struct Taken {
    pub bytes: Vec<u8>,
    pub backup: Backup,
}

impl Client {
    /// A snapshot of the ensemble's committed state holding every write acknowledged before
    /// the call: the leader serves it after a quorum round (a follower asked forwards it).
    /// Checked (format and checksum) before it is returned.
    pub async fn snapshot(&mut self) -> Result<Taken, ClientError> {
        self.with_failover(Resend::Always, |c| async move {
            let r = c
                .max_decoding_message_size(backup::MAX_FILE_BYTES)
                .snapshot(pb::SnapshotRequest { forwarded: false })
                .await?
                .into_inner();
            if let Some(e) = r.error {
                return Ok(Err(e));
            }
            Ok(match backup::decode(&r.file) {
                Ok(backup) => Ok(Taken {
                    bytes: r.file,
                    backup,
                }),
                Err(e) => Err(pb::Error {
                    kind: pb::ErrorKind::Internal as i32,
                    message: format!("{} sent an unusable snapshot: {e}", r.node),
                    retryable: false,
                }),
            })
        })
        .await
    }
}

/// What a backup file holds, for people and `--output json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub file: String,
    /// `guessgame-snapshot 1`.
    pub format: String,
    /// The last entry the snapshot covers.
    pub zxid: String,
    pub round: u64,
    pub target: Option<u32>,
    pub guesses: u64,
    pub last_result: Option<RoundResult>,
    /// The configuration's entry, and its members.
    pub config: String,
    pub members: Vec<MemberInfo>,
    /// The ensemble and the node it came from, and when (RFC 3339, UTC).
    pub ensemble_id: Option<String>,
    pub node: String,
    pub created: String,
    pub created_unix_ms: u64,
    /// The file's size.
    pub bytes: u64,
    pub sha256: String,
}

impl Summary {
    pub fn of(file: &Path, b: &Backup) -> Summary {
        let s = &b.snapshot;
        let member = |m: &guessgame_core::Member, kind| MemberInfo {
            id: m.id.clone(),
            address: m.address.clone(),
            kind,
        };
        let members = s
            .config
            .voters
            .iter()
            .map(|m| member(m, MemberKind::Voter))
            .chain(
                s.config
                    .learners
                    .iter()
                    .map(|m| member(m, MemberKind::Learner)),
            )
            .collect();
        Summary {
            file: file.display().to_string(),
            format: format!("{} {}", backup::FORMAT, backup::VERSION),
            zxid: s.zxid.to_string(),
            round: s.game.round,
            target: s.game.target,
            guesses: s.game.guesses.len() as u64,
            last_result: s.game.last_result.as_ref().map(|r| RoundResult {
                round: r.round,
                target: r.target,
                winner: r.winner.as_ref().map(|(w, _)| w.clone()),
                guess: r.winner.as_ref().map(|(_, g)| *g),
            }),
            config: s.config_zxid.to_string(),
            members,
            ensemble_id: b.origin.ensemble_id.clone(),
            node: b.origin.node.clone(),
            created: backup::format_unix_ms(b.origin.created_unix_ms),
            created_unix_ms: b.origin.created_unix_ms,
            bytes: b.file_bytes,
            sha256: b.sha256.clone(),
        }
    }
}

/// Reads and checks the backup file at `path`: a damaged, truncated or foreign file is an
/// `InvalidArgument` error that says what is wrong.
pub fn read(path: &Path) -> Result<Summary, ClientError> {
    backup::read_file(path)
        .map(|b| Summary::of(path, &b))
        .map_err(|e| ClientError::new(ErrorKind::InvalidArgument, e.to_string()))
}

/// Writes a backup taken from the ensemble to `path`: all of it or nothing (a temporary file,
/// fsynced, renamed over `path`).
pub fn save(path: &Path, taken: &Taken) -> Result<Summary, ClientError> {
    backup::write_file_atomically(path, &taken.bytes).map_err(|e| {
        ClientError::new(
            ErrorKind::Internal,
            format!("cannot write {}: {e}", path.display()),
        )
    })?;
    Ok(Summary::of(path, &taken.backup))
}
