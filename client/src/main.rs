//! `guessgame`: the command-line client.
//!
//! Original lab form: `guessgame --client-id client1 --node node1 --command write --value 50`.
//! Subcommand form:   `guessgame write 50 --node node1`.
//!
//! Exit status: 0 ok; 1 refused or failed (nothing written); 2 bad usage; 3 no leader / no
//! node reachable, or a membership change that cannot be made yet (nothing written, retry); 4
//! outcome unknown (the write may have happened).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use guessgame_client::{
    demo, resolve_endpoints, status::ensemble_status, Client, ClientError, Config, ErrorKind,
    GameState, Reconfig,
};

#[derive(Parser)]
#[command(name = "guessgame", version, about = "Client for a guessgame ensemble")]
struct Cli {
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
struct Opts {
    /// Who is playing (one guess per client per round). Default: client-<pid>.
    #[arg(long, global = true, env = "GUESSGAME_CLIENT_ID")]
    client_id: Option<String>,
    /// Node(s) to talk to: ids from the config or host:port; repeat or comma-separate for failover.
    /// Default: every configured node.
    #[arg(long, global = true)]
    node: Vec<String>,
    /// Ensemble configuration (TOML). Default: $GUESSGAME_CONFIG, else five nodes on 127.0.0.1:7101-7105.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Give up after this long (default: the config's request_timeout_ms + 1 s).
    #[arg(long, global = true)]
    timeout_ms: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LabCommand {
    Write,
    Read,
    Guess,
    Status,
}

#[derive(Subcommand)]
enum Cmd {
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
        #[arg(long)]
        linearizable: bool,
    },
    /// Show every node's role, epoch and zxids, and the leader.
    Status,
    /// Show the ensemble's configuration: members, voter or learner, config version, and each
    /// member's role and zxids.
    Members,
    /// Change the membership, one member at a time, through the leader.
    #[command(subcommand)]
    Reconfig(ReconfigCmd),
    /// Start a local five-node ensemble, play, crash the leader, watch it recover.
    Demo {
        /// Keep the demo's files (config, SQLite logs, node logs) in this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ReconfigCmd {
    /// Add node ID reached at ADDRESS (host:port): it joins as a learner, catches up with the
    /// log, then becomes a voter. Start the node first (`guessgame-node --node-id ID --listen
    /// ADDRESS --join <member>` does both).
    Add { id: String, address: String },
    /// Remove node ID (a voter or a learner). A removed local node stops by itself.
    Remove { id: String },
}

fn parse_value(text: Option<&str>) -> Result<u32, ClientError> {
    let text = text.ok_or_else(|| {
        ClientError::new(
            ErrorKind::InvalidArgument,
            "a value is required (--value N)",
        )
    })?;
    let n: i64 = text.trim().parse().map_err(|_| {
        ClientError::new(
            ErrorKind::InvalidArgument,
            format!(
                "value {text:?} is not an integer: it must be a whole number between 0 and 100"
            ),
        )
    })?;
    guessgame_core::game::check_value(n)
        .map_err(|e| ClientError::new(ErrorKind::InvalidArgument, e.to_string()))
}

fn exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NoLeader | ErrorKind::Unavailable | ErrorKind::ReconfigBusy => 3,
        ErrorKind::OutcomeUnknown => 4,
        _ => 1,
    }
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).expect("serializable"));
}

fn describe_state(s: &GameState) -> String {
    let mut out = match s.target {
        Some(t) => format!("round {}: target {t}, {} guess(es)", s.round, s.guesses),
        None => "no round yet: a client must `write` a target first".to_string(),
    };
    if let Some(r) = &s.last_result {
        match (&r.winner, r.guess) {
            (Some(w), Some(g)) => {
                out += &format!(
                    "; round {} (target {}) won by {w} with {g}",
                    r.round, r.target
                )
            }
            _ => out += &format!("; round {} (target {}) had no guesses", r.round, r.target),
        }
    }
    format!("{out} [{} at {}]", s.node, s.applied)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    guessgame_wire::telemetry::init_tracing("warn");
    let json = cli.opts.output == Output::Json;
    if let Err(e) = run(cli).await {
        if json {
            print_json(&serde_json::json!({ "error": { "kind": e.kind, "message": e.message } }));
        }
        eprintln!("guessgame: error: {}", e.message);
        std::process::exit(exit_code(e.kind));
    }
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let invalid = |m: String| ClientError::new(ErrorKind::InvalidArgument, m);
    let cmd = match (cli.sub, cli.command) {
        (Some(c), None) => c,
        (None, Some(LabCommand::Write)) => Cmd::Write { value: cli.value.clone().unwrap_or_default() },
        (None, Some(LabCommand::Guess)) => Cmd::Guess { value: cli.value.clone().unwrap_or_default() },
        (None, Some(LabCommand::Read)) => Cmd::Read { linearizable: false },
        (None, Some(LabCommand::Status)) => Cmd::Status,
        (None, None) => return Err(invalid("nothing to do: give a command (write, guess, read, status, members, reconfig, demo) or --command; see --help".into())),
        (Some(_), Some(_)) => return Err(invalid("use either --command or a subcommand, not both".into())),
    };
    let opts = cli.opts;
    if let Cmd::Demo { dir } = cmd {
        return demo::run(dir)
            .await
            .map_err(|e| ClientError::new(ErrorKind::Internal, format!("{e:#}")));
    }
    let config = Config::load(opts.config.as_deref()).map_err(|e| invalid(e.to_string()))?;
    let endpoints = resolve_endpoints(&config, &opts.node)?;
    let mut timeout =
        Duration::from_millis(opts.timeout_ms.unwrap_or(config.request_timeout_ms + 1000));
    if matches!(cmd, Cmd::Reconfig(_)) && opts.timeout_ms.is_none() {
        // Adding a voter waits for it to catch up (the leader gives up after ten election
        // timeouts), and another change may be in flight first.
        timeout += Duration::from_millis(25 * config.election_timeout_ms);
    }
    let client_id = opts
        .client_id
        .clone()
        .unwrap_or_else(|| format!("client-{}", std::process::id()));
    let json = opts.output == Output::Json;
    let mut client = Client::new(&endpoints, timeout)?;
    match cmd {
        Cmd::Write { value } => {
            let value = parse_value(Some(value.as_str()).filter(|v| !v.is_empty()))?;
            guessgame_core::game::check_client_id(&client_id)
                .map_err(|e| invalid(e.to_string()))?;
            let w = client.write(&client_id, value).await?;
            if json {
                print_json(&w);
            } else {
                let closed = match &w.closed {
                    Some(r) => match (&r.winner, r.guess) {
                        (Some(who), Some(g)) => format!(
                            "round {} closed: target {} won by {who} with {g}; ",
                            r.round, r.target
                        ),
                        _ => format!("round {} closed with no guesses; ", r.round),
                    },
                    None => String::new(),
                };
                println!(
                    "{closed}round {} open with target {} (zxid {}, leader {})",
                    w.round, w.target, w.zxid, w.leader
                );
            }
        }
        Cmd::Guess { value } => {
            let value = parse_value(Some(value.as_str()).filter(|v| !v.is_empty()))?;
            guessgame_core::game::check_client_id(&client_id)
                .map_err(|e| invalid(e.to_string()))?;
            let g = client.guess(&client_id, value).await?;
            if json {
                print_json(
                    &serde_json::json!({"client": client_id, "round": g.round, "guess": g.value, "zxid": g.zxid, "leader": g.leader}),
                );
            } else {
                println!(
                    "{client_id} guessed {} in round {} (zxid {}, leader {})",
                    g.value, g.round, g.zxid, g.leader
                );
            }
        }
        Cmd::Read { linearizable } => {
            let s = client.read(linearizable).await?;
            if json {
                print_json(&s);
            } else {
                println!("{}", describe_state(&s));
            }
        }
        Cmd::Members => {
            let report = client.members_report().await?;
            if json {
                print_json(&report);
            } else {
                let c = &report.configuration;
                println!(
                    "configuration {} (committed {}): {} voters, quorum {}; leader {}",
                    c.config,
                    c.committed_config,
                    report.voters,
                    report.quorum,
                    c.leader.as_deref().unwrap_or("(none)")
                );
                println!(
                    "{:<10} {:<8} {:<10} {:<8} {:>6} {:>12} {:>15}  address",
                    "member", "kind", "role", "config", "epoch", "last_zxid", "last_committed"
                );
                for m in &c.members {
                    let st = report.nodes.iter().find(|n| n.id == m.id);
                    let (role, membership, epoch, last, committed) = match st {
                        Some(n) => (
                            n.role.as_str(),
                            n.membership.as_str(),
                            n.epoch.to_string(),
                            n.last_zxid.to_string(),
                            n.last_committed.to_string(),
                        ),
                        None => ("?", "?", "-".into(), "-".into(), "-".into()),
                    };
                    println!(
                        "{:<10} {:<8} {:<10} {:<8} {:>6} {:>12} {:>15}  {}",
                        m.id, m.kind, role, membership, epoch, last, committed, m.address
                    );
                }
                if c.config != c.committed_config {
                    println!("(a membership change is in flight)");
                }
            }
        }
        Cmd::Reconfig(change) => {
            let change = match change {
                ReconfigCmd::Add { id, address } => Reconfig::Add { id, address },
                ReconfigCmd::Remove { id } => {
                    // The ensemble answers a removal of a non-member with "done" (so that a
                    // repeated request is harmless); a user naming an unknown node gets an
                    // error instead.
                    let current = client.configuration().await?;
                    let known = current
                        .members
                        .iter()
                        .chain(current.committed_members.iter())
                        .any(|m| m.id == id);
                    if !known {
                        let ids: Vec<&str> =
                            current.members.iter().map(|m| m.id.as_str()).collect();
                        return Err(invalid(format!(
                            "{id} is not a member (members: {}); nothing changed",
                            ids.join(", ")
                        )));
                    }
                    Reconfig::Remove { id }
                }
            };
            let c = client.reconfig(change.clone()).await?;
            if json {
                print_json(&c);
            } else {
                let list = |kind: &str| {
                    c.members
                        .iter()
                        .filter(|m| m.kind == kind)
                        .map(|m| m.id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let what = match &change {
                    Reconfig::Add { id, .. } => format!("{id} added as a voter"),
                    Reconfig::Remove { id } => format!("{id} removed"),
                };
                let learners = list("learner");
                println!(
                    "{what}: configuration {} committed, voters [{}]{} (leader {})",
                    c.config,
                    list("voter"),
                    if learners.is_empty() {
                        String::new()
                    } else {
                        format!(", learners [{learners}]")
                    },
                    c.leader.as_deref().unwrap_or("?")
                );
            }
        }
        Cmd::Status => {
            // The members the ensemble itself reports (the file may predate changes), plus
            // any node named on the command line.
            let mut members: Vec<(String, String)> = if opts.node.is_empty() {
                config
                    .nodes
                    .iter()
                    .map(|n| (n.id.clone(), n.address.clone()))
                    .collect()
            } else {
                endpoints
            };
            let mut probe = client.clone();
            probe.set_timeout(timeout.min(Duration::from_secs(2)));
            if let Ok(live) = probe.configuration().await {
                for (id, address) in live.endpoints() {
                    if !members.iter().any(|(m, _)| *m == id) {
                        members.push((id, address));
                    }
                }
            }
            let st = ensemble_status(&members, timeout.min(Duration::from_secs(2))).await;
            if json {
                print_json(&st);
            } else {
                println!("leader: {}", st.leader.as_deref().unwrap_or("(none)"));
                println!(
                    "{:<10} {:<12} {:<8} {:>6} {:>12} {:>15}  address",
                    "node", "role", "member", "epoch", "last_zxid", "last_committed"
                );
                for n in &st.nodes {
                    println!(
                        "{:<10} {:<12} {:<8} {:>6} {:>12} {:>15}  {}",
                        n.id,
                        n.role,
                        n.membership,
                        n.epoch,
                        n.last_zxid,
                        n.last_committed,
                        n.address
                    );
                }
            }
            if st.nodes.iter().all(|n| n.role == "unreachable") {
                return Err(ClientError::new(
                    ErrorKind::Unavailable,
                    "no node reachable",
                ));
            }
        }
        Cmd::Demo { .. } => unreachable!(),
    }
    Ok(())
}
