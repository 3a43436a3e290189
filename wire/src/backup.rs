//! Backups and ensemble identity: the snapshot file that `guessgame snapshot save` writes,
//! `guessgame snapshot status` checks and `guessgame-node snapshot restore` turns into a new
//! member's log, and the ensemble id every node keeps and sends with its peer calls.
//!
//! The file (format version 1) is three text lines and the body:
//!
//! ```text
//! guessgame-snapshot 1
//! {"ensemble_id":"4f0c…","node":"node2","created_unix_ms":1764675600000,"zxid":"3:17","body_bytes":412}
//! sha256 <64 hex digits: SHA-256 of the header line (with its newline) and the body>
//! <body: body_bytes bytes, `Snapshot::encode()` — JSON of the committed game and configuration>
//! ```
//!
//! The first line names the format and its version; the checksum covers the header and the
//! body, so a damaged, truncated or foreign file is refused (with what is wrong) before any
//! of it is used.

use std::io::Write;
use std::path::{Path, PathBuf};

use guessgame_core::Snapshot;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The file's first word.
pub const FORMAT: &str = "guessgame-snapshot";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// The gRPC metadata header that carries the sender's ensemble id on every peer call.
pub const ENSEMBLE_HEADER: &str = "guessgame-ensemble";
/// The gRPC metadata header that names the sending node on peer calls (for log messages).
pub const NODE_HEADER: &str = "guessgame-node";
/// What a new ensemble's id is derived from when no `--ensemble-token` is given.
pub const DEFAULT_ENSEMBLE_TOKEN: &str = "guessgame";
/// The largest backup file a node sends and a client takes (the state is small: one round's
/// guesses, the last result and the configuration).
pub const MAX_FILE_BYTES: usize = 256 << 20;
/// Longest ensemble id accepted.
pub const MAX_ENSEMBLE_ID_LEN: usize = 64;

/// Where a backup came from and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The ensemble's id (`None`: the node did not know it, e.g. an older build).
    pub ensemble_id: Option<String>,
    /// The node that produced the snapshot (the leader).
    pub node: String,
    /// Milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// The header line.
#[derive(Serialize, Deserialize)]
struct Header {
    ensemble_id: String,
    node: String,
    created_unix_ms: u64,
    zxid: String,
    body_bytes: u64,
}

/// A backup file, checked: its origin, the snapshot, its checksum and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    pub origin: Origin,
    pub snapshot: Snapshot,
    /// SHA-256 (hex) of the header line and the body, as the file states and its contents
    /// hash to.
    pub sha256: String,
    /// The whole file's size.
    pub file_bytes: u64,
}

/// Why bytes are not a usable backup.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BackupError {
    #[error("not a guessgame snapshot file (it does not start with {FORMAT:?})")]
    NotABackup,
    #[error(
        "snapshot file format version {0:?} is not supported (this build reads version {VERSION})"
    )]
    Version(String),
    #[error("truncated: {0}; the file is incomplete and cannot be used — take a new backup, or use another file")]
    Truncated(String),
    #[error("damaged: {0}; the file cannot be used — take a new backup, or use another file")]
    Damaged(String),
}

/// A backup file that could not be read or used.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {error}")]
    Invalid { path: PathBuf, error: BackupError },
}

fn magic_line() -> String {
    format!("{FORMAT} {VERSION}\n")
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The file's bytes for `snapshot`, produced by `origin`.
pub fn encode(snapshot: &Snapshot, origin: &Origin) -> Vec<u8> {
    let body = snapshot.encode();
    let header = Header {
        ensemble_id: origin.ensemble_id.clone().unwrap_or_default(),
        node: origin.node.clone(),
        created_unix_ms: origin.created_unix_ms,
        zxid: snapshot.zxid.to_string(),
        body_bytes: body.len() as u64,
    };
    let mut header = serde_json::to_vec(&header).expect("a header always serializes");
    header.push(b'\n');
    let sum = sha256_hex(&[&header, &body]);
    let mut out = magic_line().into_bytes();
    out.extend_from_slice(&header);
    out.extend_from_slice(format!("sha256 {sum}\n").as_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits off the line at the start of `bytes` (with its newline), or `None` without one.
fn line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|b| *b == b'\n')? + 1;
    Some(bytes.split_at(end))
}

/// Checks and decodes a backup file's bytes.
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    let truncated = |what: &str| BackupError::Truncated(what.to_string());
    let damaged = |what: String| BackupError::Damaged(what);
    let magic = magic_line();
    if bytes.is_empty() {
        return Err(truncated("the file is empty"));
    }
    if !bytes.starts_with(FORMAT.as_bytes()) {
        if magic.as_bytes().starts_with(bytes) {
            return Err(truncated("it ends inside its first line"));
        }
        return Err(BackupError::NotABackup);
    }
    let Some((first, rest)) = line(bytes) else {
        return Err(if magic.as_bytes().starts_with(bytes) {
            truncated("it ends inside its first line")
        } else {
            BackupError::NotABackup
        });
    };
    if first != magic.as_bytes() {
        let text = String::from_utf8_lossy(first);
        return match text.trim_end().strip_prefix(FORMAT) {
            Some(v) if v.starts_with(' ') => Err(BackupError::Version(v.trim().to_string())),
            _ => Err(BackupError::NotABackup),
        };
    }
    let (header_line, rest) = line(rest).ok_or_else(|| truncated("it ends inside its header"))?;
    let (sum_line, body) = line(rest).ok_or_else(|| truncated("it ends before its checksum"))?;
    let stated = std::str::from_utf8(sum_line)
        .ok()
        .and_then(|l| l.strip_suffix('\n')?.strip_prefix("sha256 "))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| damaged("its checksum line is not \"sha256 <64 hex digits>\"".into()))?
        .to_ascii_lowercase();
    let header: Result<Header, _> = serde_json::from_slice(header_line);
    let actual = sha256_hex(&[header_line, body]);
    if actual != stated {
        // A header that still reads and promises more than is there: the tail is missing.
        if let Ok(h) = &header {
            if (body.len() as u64) < h.body_bytes {
                return Err(BackupError::Truncated(format!(
                    "its snapshot should be {} bytes, only {} are there",
                    h.body_bytes,
                    body.len()
                )));
            }
        }
        return Err(damaged(format!(
            "checksum mismatch (the file states sha256 {stated}, its contents hash to {actual})"
        )));
    }
    let header = header.map_err(|e| damaged(format!("its header does not read: {e}")))?;
    if body.len() as u64 != header.body_bytes {
        return Err(damaged(format!(
            "its header promises a {}-byte snapshot, {} bytes follow",
            header.body_bytes,
            body.len()
        )));
    }
    let snapshot =
        Snapshot::decode(body).map_err(|e| damaged(format!("its snapshot does not read: {e}")))?;
    if snapshot.zxid.to_string() != header.zxid {
        return Err(damaged(format!(
            "its header says zxid {}, its snapshot is at {}",
            header.zxid, snapshot.zxid
        )));
    }
    Ok(Backup {
        origin: Origin {
            ensemble_id: Some(header.ensemble_id).filter(|e| !e.is_empty()),
            node: header.node,
            created_unix_ms: header.created_unix_ms,
        },
        snapshot,
        sha256: actual,
        file_bytes: bytes.len() as u64,
    })
}

/// Reads and checks the backup file at `path`.
pub fn read_file(path: &Path) -> Result<Backup, FileError> {
    let bytes = std::fs::read(path).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes).map_err(|error| FileError::Invalid {
        path: path.to_path_buf(),
        error,
    })
}

/// Writes `bytes` to `path` so that `path` is either what it was before or all of `bytes`:
/// a temporary file beside it, written and fsynced, renamed over it, then the directory
/// fsynced. The temporary file is removed if anything fails.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is.
    std::fs::File::open(&dir)?.sync_all()
}

/// The id a new ensemble's nodes agree on without talking: derived from `token` (the
/// `--ensemble-token`, like etcd's `--initial-cluster-token`) and the ids of the initial
/// voters, in any order. 16 hex digits.
pub fn derive_ensemble_id<'a>(token: &str, voters: impl IntoIterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = voters.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut parts: Vec<&[u8]> = vec![b"guessgame ensemble\0", token.as_bytes()];
    for id in &ids {
        parts.push(b"\0");
        parts.push(id.as_bytes());
    }
    sha256_hex(&parts)[..16].to_string()
}

/// An ensemble id: 1-64 letters, digits, `-`, `_` or `.` (it travels in a gRPC header).
pub fn check_ensemble_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ENSEMBLE_ID_LEN
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "ensemble id {id:?}: expected 1-{MAX_ENSEMBLE_ID_LEN} letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `ms` since the Unix epoch as an RFC 3339 UTC time, to the second
/// (`2025-12-02T11:22:33Z`).
pub fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use guessgame_core::game::Game;
    use guessgame_core::{Entry, Member, Membership, Op, Zxid};

    fn snapshot() -> Snapshot {
        let mut game = Game::default();
        for (c, op) in [
            (
                1,
                Op::Target {
                    round: 1,
                    value: 40,
                    client: "c1".into(),
                    seq: 0,
                },
            ),
            (
                2,
                Op::Guess {
                    round: 1,
                    client: "c2".into(),
                    value: 39,
                    seq: 0,
                },
            ),
        ] {
            game.apply(&Entry {
                zxid: Zxid::new(2, c),
                op,
            });
        }
        Snapshot {
            zxid: Zxid::new(2, 3),
            game,
            config_zxid: Zxid::new(1, 1),
            config: Membership::of_voters(
                ["node1", "node2", "node3"]
                    .iter()
                    .enumerate()
                    .map(|(i, id)| Member {
                        id: id.to_string(),
                        address: format!("127.0.0.1:{}", 7101 + i),
                    })
                    .collect(),
            ),
        }
    }

    fn origin() -> Origin {
        Origin {
            ensemble_id: Some("0123456789abcdef".into()),
            node: "node2".into(),
            created_unix_ms: 1_764_675_600_123,
        }
    }

    #[test]
    fn a_backup_round_trips_and_reads_as_text() {
        let bytes = encode(&snapshot(), &origin());
        let b = decode(&bytes).unwrap();
        assert_eq!(b.snapshot, snapshot());
        assert_eq!(b.origin, origin());
        assert_eq!(b.file_bytes, bytes.len() as u64);
        assert_eq!(b.sha256.len(), 64);
        let text = String::from_utf8(bytes).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("guessgame-snapshot 1"));
        assert!(lines
            .next()
            .unwrap()
            .starts_with(r#"{"ensemble_id":"0123456789abcdef","node":"node2","created_unix_ms":1764675600123,"zxid":"2:3","body_bytes":"#));
        assert_eq!(lines.next(), Some(format!("sha256 {}", b.sha256).as_str()));
        // An unknown ensemble id is kept as unknown.
        let o = Origin {
            ensemble_id: None,
            ..origin()
        };
        assert_eq!(decode(&encode(&snapshot(), &o)).unwrap().origin, o);
    }

    #[test]
    fn any_changed_byte_is_a_checksum_mismatch() {
        let bytes = encode(&snapshot(), &origin());
        let body_at = bytes.len() - 10;
        let header_at = magic_line().len() + 20;
        for at in [body_at, header_at] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            match decode(&bad) {
                Err(BackupError::Damaged(m)) => assert!(m.contains("checksum mismatch"), "{m}"),
                other => panic!("byte {at} changed: {other:?}"),
            }
        }
        // A body replaced whole, with the header's length kept, is no better.
        let mut swapped = bytes.clone();
        let n = swapped.len();
        swapped[n - 3..].copy_from_slice(b"}}}");
        assert!(matches!(decode(&swapped), Err(BackupError::Damaged(_))));
    }

    #[test]
    fn a_truncated_file_says_so_wherever_it_ends() {
        let bytes = encode(&snapshot(), &origin());
        for len in [
            0,
            5,
            magic_line().len(),
            magic_line().len() + 30,
            bytes.len() - 1,
        ] {
            match decode(&bytes[..len]) {
                Err(BackupError::Truncated(m)) => assert!(!m.is_empty()),
                other => panic!("cut at {len}: {other:?}"),
            }
        }
        let e = decode(&bytes[..bytes.len() - 7]).unwrap_err().to_string();
        assert!(e.starts_with("truncated: its snapshot should be "), "{e}");
        // Bytes after the end are not ignored either.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"more");
        assert!(matches!(decode(&longer), Err(BackupError::Damaged(_))));
    }

    #[test]
    fn a_foreign_file_or_another_version_is_refused() {
        for foreign in [
            &b"SQLite format 3\0rest of a database"[..],
            b"{\"zxid\":{\"epoch\":1}}",
            b"guessgame-snapshots 1\n",
            b"\x00\x01\x02",
        ] {
            assert_eq!(decode(foreign), Err(BackupError::NotABackup), "{foreign:?}");
        }
        let mut v2 = encode(&snapshot(), &origin());
        v2[FORMAT.len() + 1] = b'2';
        assert_eq!(decode(&v2), Err(BackupError::Version("2".into())));
        assert!(BackupError::NotABackup
            .to_string()
            .contains("not a guessgame snapshot file"));
    }

    #[test]
    fn files_are_replaced_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.snap");
        std::fs::write(&path, b"old").unwrap();
        let bytes = encode(&snapshot(), &origin());
        write_file_atomically(&path, &bytes).unwrap();
        assert_eq!(read_file(&path).unwrap().snapshot, snapshot());
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let e = read_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing: No such file"), "{e}");
        let e = write_file_atomically(dir.path(), &bytes).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory);
    }

    #[test]
    fn ensemble_ids_are_derived_from_the_token_and_the_voters_in_any_order() {
        let a = derive_ensemble_id("guessgame", ["node2", "node1", "node3"]);
        assert_eq!(
            a,
            derive_ensemble_id("guessgame", ["node1", "node2", "node3"])
        );
        assert_eq!(a.len(), 16);
        assert!(check_ensemble_id(&a).is_ok());
        assert_ne!(a, derive_ensemble_id("other", ["node1", "node2", "node3"]));
        assert_ne!(a, derive_ensemble_id("guessgame", ["node1", "node2"]));
        // Ids are not concatenated ambiguously.
        assert_ne!(
            derive_ensemble_id("t", ["ab", "c"]),
            derive_ensemble_id("t", ["a", "bc"])
        );
        assert!(check_ensemble_id("").is_err());
        assert!(check_ensemble_id("has space").is_err());
        assert!(check_ensemble_id(&"x".repeat(65)).is_err());
        assert!(check_ensemble_id("prod-2025.restore_1").is_ok());
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(1_764_675_600_123), "2025-12-02T11:40:00Z");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
