//! The command line: options every subcommand takes, the subcommands, and the original
//! lab's `--command`/`--value` form.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use guessgame_client::{ClientError, ErrorKind};

#[derive(Parser)]
#[command(name = "guessgame", version, about = "Client for a guessgame ensemble")]
pub struct Cli {
    #[command(flatten)]
    opts: Opts,
    /// Original lab form: write | read | guess | status.
    #[arg(long, value_enum)]
    command: Option<LabCommand>,
    /// Original lab form: the value for write/guess (0-100).
    #[arg(long, allow_hyphen_values = true)]
    value: Option<String>,
    #[command(subcommand)]
    sub: Option<Cmd>,
}

#[derive(clap::Args, Clone)]
pub struct Opts {
    /// Who is playing (one guess per client per round). Default: client-<pid>.
    #[arg(long, global = true, env = "GUESSGAME_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Node(s) to talk to: ids from the config or host:port; repeat or comma-separate for failover.
    /// Default: every configured node.
    #[arg(long, global = true)]
    pub node: Vec<String>,
    /// Ensemble configuration (TOML). Default: $GUESSGAME_CONFIG, else five nodes on 127.0.0.1:7101-7105.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Give up after this long (default: the config's request_timeout_ms + 1 s).
    #[arg(long, global = true)]
    pub timeout_ms: Option<u64>,
    /// Send `write`/`guess` as this request number of --client-id (default: a new number).
    /// The ensemble applies a numbered request once: repeating one whose outcome was unknown
    /// (exit status 4) answers with what it did, or applies it if it never was. Every
    /// write and guess is numbered and resent by itself until --timeout-ms; exit status 4
    /// prints the command that retries it.
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_seq: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LabCommand {
    Write,
    Read,
    Guess,
    Status,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Close the open round (the closest guess wins) and open the next with VALUE as target.
    Write {
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Guess VALUE in the open round.
    Guess {
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Show the game: round, target, number of guesses, last result.
    Read {
        /// Confirm with the leader and a quorum first (never stale).
        #[arg(long, conflicts_with = "allow_stale")]
        linearizable: bool,
        /// Answer even from a node in no working quorum (looking, removed): its game may be
        /// behind by any amount, and the answer says so. Without it such a node refuses and
        /// the next --node is asked.
        #[arg(long)]
        allow_stale: bool,
    },
    /// Show every node's role, epoch and zxids, and the leader.
    Status,
    /// Show the ensemble's configuration: members, voter or learner, config version, and each
    /// member's role and zxids.
    Members,
    /// Change the membership, one member at a time, through the leader.
    #[command(subcommand)]
    Reconfig(ReconfigCmd),
    /// Backups: save a consistent snapshot of the running ensemble, or check a saved one.
    /// Restore one into a new ensemble with `guessgame-node snapshot restore`.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Start a local five-node ensemble, play, crash the leader, watch it recover.
    Demo {
        /// Keep the demo's files (config, SQLite logs, node logs) in this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Save the committed state to FILE: taken by the leader after a quorum round, so it
    /// holds every acknowledged write; checked, then written atomically (a temporary file,
    /// fsynced, renamed over FILE).
    Save { file: PathBuf },
    /// Check FILE (format, checksum) and show what it holds: zxid, game, members, where and
    /// when it was taken. Exit status 1 for a damaged or foreign file.
    Status { file: PathBuf },
}

#[derive(Subcommand)]
pub enum ReconfigCmd {
    /// Add node ID reached at ADDRESS (host:port): it joins as a learner, catches up with the
    /// log, then becomes a voter. Start the node first (`guessgame-node --node-id ID --listen
    /// ADDRESS --join <member>` does both).
    Add { id: String, address: String },
    /// Remove node ID (a voter or a learner). A removed local node stops by itself.
    Remove { id: String },
}

impl Cli {
    /// Whether errors are reported as JSON too.
    pub fn json(&self) -> bool {
        self.opts.output == Output::Json
    }

    /// The subcommand, given as one or in the lab form, and the options.
    pub fn into_command(self) -> Result<(Cmd, Opts), ClientError> {
        let invalid = |m: &str| ClientError::new(ErrorKind::InvalidArgument, m);
        let cmd = match (self.sub, self.command) {
            (Some(c), None) => c,
            (None, Some(LabCommand::Write)) => Cmd::Write {
                value: self.value.unwrap_or_default(),
            },
            (None, Some(LabCommand::Guess)) => Cmd::Guess {
                value: self.value.unwrap_or_default(),
            },
            (None, Some(LabCommand::Read)) => Cmd::Read {
                linearizable: false,
                allow_stale: false,
            },
            (None, Some(LabCommand::Status)) => Cmd::Status,
            (None, None) => {
                return Err(invalid(
                    "nothing to do: give a command (write, guess, read, status, members, \
                     reconfig, snapshot, demo) or --command; see --help",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(invalid("use either --command or a subcommand, not both"))
            }
        };
        Ok((cmd, self.opts))
    }
}
