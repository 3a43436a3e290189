//! `guessgame-node snapshot restore FILE --node-id ID`: a member of a NEW ensemble, made from
//! a backup file (`guessgame snapshot save`).
//!
//! It creates `logs_<ID>.db` in the data directory holding only the backup's snapshot (the
//! log starts after it; everything up to it is committed), with a new ensemble id — random,
//! or `--ensemble-id` — and the backup's configuration or `--members`. Every member of the
//! new ensemble is restored from the same file with the same id and members, then started as
//! usual. It never replaces an existing log, and a damaged or foreign file is refused before
//! anything is written. The new ensemble's id differs from the old one's, so the two never
//! talk (see [`crate::identity`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use guessgame_core::rules::{check_member_id, is_ensemble_size, split_host_port, MAX_VOTERS};
use guessgame_core::{Member, Membership, Snapshot, Zxid};
use guessgame_wire::backup::{self, check_ensemble_id};
use serde::Serialize;

use crate::storage::SqliteLog;

#[derive(clap::Subcommand)]
pub enum SnapshotCmd {
    /// Create this member's log for a NEW ensemble from a backup file (`guessgame snapshot
    /// save`). Run it for every member, with the same FILE, --ensemble-id and --members; then
    /// start the members as usual. Refuses to replace an existing log.
    Restore(RestoreArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The member whose log to create (its logs_<ID>.db goes into --data-dir).
    #[arg(long = "node-id", value_name = "ID")]
    pub node_id: String,
    /// The new ensemble's voters, `id=host:port,...` (an odd number, 1 to 9; it must include
    /// --node-id). Default: the backup's configuration, addresses included.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub members: Option<String>,
    /// The new ensemble's id. Default: a new random one, printed; give it to the restore of
    /// every other member.
    #[arg(long, value_name = "ID")]
    pub ensemble_id: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What a restore made.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    pub node: String,
    /// The log file created.
    pub log: PathBuf,
    pub ensemble_id: String,
    /// The id was made up here (pass it to the other members' restores).
    pub generated: bool,
    pub zxid: String,
    pub round: u64,
    pub members: Vec<Member>,
    /// The ensemble and node the backup came from.
    pub source_ensemble: Option<String>,
    pub source_node: String,
}

/// Runs `guessgame-node snapshot ...` with logs going into `data_dir`.
pub fn run(cmd: SnapshotCmd, data_dir: &Path) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Restore(args) => {
            let r = restore(&args, data_dir)?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string(&r)?),
                Output::Text => print!("{}", describe(&r)),
            }
            Ok(())
        }
    }
}

fn describe(r: &Restored) -> String {
    let members: Vec<String> = r
        .members
        .iter()
        .map(|m| format!("{}={}", m.id, m.address))
        .collect();
    let mut out = format!(
        "restored {} at zxid {} (round {}) from a backup of ensemble {} by {}: {}\n\
         members: {}\n\
         ensemble id: {}\n",
        r.node,
        r.zxid,
        r.round,
        r.source_ensemble.as_deref().unwrap_or("(unknown)"),
        r.source_node,
        r.log.display(),
        members.join(","),
        r.ensemble_id,
    );
    if r.generated {
        out += &format!(
            "a new ensemble id was generated: restore every other member with \
             --ensemble-id {} --members {}\n",
            r.ensemble_id,
            members.join(",")
        );
    }
    out += "then start each member as usual, with a configuration that lists these addresses\n";
    out
}

/// `id=host:port,...` as the voters of a new ensemble.
pub fn parse_members(text: &str) -> anyhow::Result<Membership> {
    let mut voters: Vec<Member> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('=')
            .with_context(|| format!("--members: {item:?} is not id=host:port"))?;
        let (id, address) = (id.trim(), address.trim());
        check_member_id(id).map_err(|e| anyhow::anyhow!("--members: {e}"))?;
        split_host_port(address).map_err(|e| anyhow::anyhow!("--members: {id}: {e}"))?;
        if voters.iter().any(|m| m.id == id) {
            bail!("--members: {id} is named twice");
        }
        if let Some(m) = voters.iter().find(|m| m.address == address) {
            bail!(
                "--members: {} and {id} have the same address {address}",
                m.id
            );
        }
        voters.push(Member {
            id: id.to_string(),
            address: address.to_string(),
        });
    }
    if !is_ensemble_size(voters.len()) {
        bail!(
            "--members: {} members; an ensemble has an odd number of them, 1 to {MAX_VOTERS}",
            voters.len()
        );
    }
    Ok(Membership::of_voters(voters))
}

/// A new random ensemble id: 16 hex digits.
pub fn random_ensemble_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `args.node_id`'s log in `data_dir` from the backup (see the module's text).
pub fn restore(args: &RestoreArgs, data_dir: &Path) -> anyhow::Result<Restored> {
    let backup = backup::read_file(&args.file)?;
    let mut snapshot: Snapshot = backup.snapshot.clone();
    if let Some(text) = &args.members {
        snapshot.config = parse_members(text)?;
        // The configuration is the snapshot's (committed) one from now on.
        if snapshot.config_zxid == Zxid::ZERO {
            snapshot.config_zxid = snapshot.zxid;
        }
    }
    if snapshot.config_zxid == Zxid::ZERO {
        bail!(
            "{}: the backup holds no configuration entry: give the members (--members id=host:port,...)",
            args.file.display()
        );
    }
    if !snapshot.config.is_voter(&args.node_id) {
        let ids: Vec<&str> = snapshot
            .config
            .voters
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        bail!(
            "{} is not a voter of the {} configuration (voters: {}): restore one of them, or give --members",
            args.node_id,
            if args.members.is_some() { "--members" } else { "backup's" },
            ids.join(", ")
        );
    }
    let (ensemble_id, generated) = match &args.ensemble_id {
        Some(id) => {
            check_ensemble_id(id).map_err(|e| anyhow::anyhow!("--ensemble-id: {e}"))?;
            (id.clone(), false)
        }
        None => (random_ensemble_id()?, true),
    };
    if backup.origin.ensemble_id.as_deref() == Some(ensemble_id.as_str()) {
        bail!(
            "--ensemble-id {ensemble_id} is the id of the ensemble the backup came from: a restored \
             ensemble needs a new one (leave --ensemble-id out for a random one)"
        );
    }
    crate::server::check_data_dir(data_dir)?;
    let log = SqliteLog::create_restored(data_dir, &args.node_id, &snapshot, &ensemble_id)?;
    let path = log.path().to_path_buf();
    drop(log);
    Ok(Restored {
        node: args.node_id.clone(),
        log: path,
        ensemble_id,
        generated,
        zxid: snapshot.zxid.to_string(),
        round: snapshot.game.round,
        members: snapshot.config.voters.clone(),
        source_ensemble: backup.origin.ensemble_id,
        source_node: backup.origin.node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LogStore;
    use guessgame_core::game::Game;

    fn backup_file(dir: &Path) -> PathBuf {
        let snapshot = Snapshot {
            zxid: Zxid::new(2, 5),
            game: Game {
                round: 3,
                target: Some(70),
                applied: Zxid::new(2, 5),
                ..Game::default()
            },
            config_zxid: Zxid::new(1, 1),
            config: parse_members("a=127.0.0.1:1,b=127.0.0.1:2,c=127.0.0.1:3").unwrap(),
        };
        let origin = backup::Origin {
            ensemble_id: Some("0ld0ld0ld".into()),
            node: "b".into(),
            created_unix_ms: 0,
        };
        let path = dir.join("backup.snap");
        std::fs::write(&path, backup::encode(&snapshot, &origin)).unwrap();
        path
    }

    fn args(file: &Path, node: &str) -> RestoreArgs {
        RestoreArgs {
            file: file.to_path_buf(),
            node_id: node.into(),
            members: None,
            ensemble_id: None,
            output: Output::Text,
        }
    }

    #[test]
    fn a_restored_log_starts_at_the_snapshot_with_a_new_identity_and_members() {
        let dir = tempfile::tempdir().unwrap();
        let file = backup_file(dir.path());
        let data = dir.path().join("data");
        let mut a = args(&file, "a");
        a.members = Some("a=10.0.0.1:7100, b=10.0.0.2:7100,c=10.0.0.3:7100".into());
        let r = restore(&a, &data).unwrap();
        assert!(r.generated);
        assert_eq!(r.ensemble_id.len(), 16);
        assert_eq!(r.source_ensemble.as_deref(), Some("0ld0ld0ld"));
        let text = describe(&r);
        assert!(
            text.contains(&format!(
                "--ensemble-id {} --members a=10.0.0.1:7100,",
                r.ensemble_id
            )),
            "{text}"
        );
        let mut log = SqliteLog::open(&data, "a").unwrap();
        assert_eq!(log.ensemble_id().unwrap(), Some(r.ensemble_id.clone()));
        let p = log.load().unwrap();
        let s = p.snapshot.unwrap();
        assert_eq!(s.zxid, Zxid::new(2, 5));
        assert_eq!(s.game.target, Some(70));
        assert_eq!(s.config.voters[1].address, "10.0.0.2:7100");
        assert_eq!(p.committed, Zxid::new(2, 5));
        assert!(p.log.is_empty());
        drop(log);

        // The next member, with that id; the backup's own members by default.
        let mut b = args(&file, "b");
        b.ensemble_id = Some(r.ensemble_id.clone());
        let rb = restore(&b, &data).unwrap();
        assert!(!rb.generated);
        assert_eq!(rb.members[1].address, "127.0.0.1:2");
    }

    #[test]
    fn bad_requests_are_refused_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = backup_file(dir.path());
        let data = dir.path().join("data");
        let fails = |a: RestoreArgs, want: &str| {
            let e = format!("{:#}", restore(&a, &data).unwrap_err());
            assert!(e.contains(want), "{e}");
            assert!(!data.join(format!("logs_{}.db", a.node_id)).exists(), "{e}");
        };
        fails(
            args(&file, "z"),
            "z is not a voter of the backup's configuration",
        );
        let mut a = args(&file, "a");
        a.members = Some("a=h:1,b=h:2".into());
        fails(a.clone(), "2 members");
        a.members = Some("a=h:1,a=h:2,c=h:3".into());
        fails(a.clone(), "a is named twice");
        a.members = Some("a=h:1,b=h:1,c=h:3".into());
        fails(a.clone(), "the same address");
        a.members = Some("a=nohost".into());
        fails(a.clone(), "host:port");
        let mut a = args(&file, "a");
        a.ensemble_id = Some("0ld0ld0ld".into());
        fails(a.clone(), "the id of the ensemble the backup came from");
        a.ensemble_id = Some("no spaces".into());
        fails(a, "--ensemble-id");
        // A damaged file.
        let mut bytes = std::fs::read(&file).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        let damaged = dir.path().join("damaged.snap");
        std::fs::write(&damaged, bytes).unwrap();
        fails(args(&damaged, "a"), "damaged: checksum mismatch");
        // An existing log is never replaced.
        restore(&args(&file, "a"), &data).unwrap();
        let before = std::fs::read(data.join("logs_a.db")).unwrap();
        let e = restore(&args(&file, "a"), &data).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(data.join("logs_a.db")).unwrap(), before);
    }
}
