//! The `guessgame` subcommands. [`args`] is the command line; [`run`] picks the subcommand
//! and builds what those that talk to the ensemble share ([`Ctx`]); each of them is a module
//! with a `run` (the request and the output) and, for text output, the function that words it.

mod args;
mod guess;
mod members;
mod read;
mod reconfig;
mod snapshot;
mod status;
mod write;

use std::time::Duration;

use guessgame_client::{demo, resolve_endpoints, Client, ClientError, Config, ErrorKind};

pub use args::Cli;
use args::{Cmd, Opts};

/// Runs the subcommand `cli` names.
pub async fn run(cli: Cli) -> Result<(), ClientError> {
    let (cmd, opts) = cli.into_command()?;
    match cmd {
        Cmd::Demo { dir } => demo::run(dir)
            .await
            .map_err(|e| ClientError::new(ErrorKind::Internal, format!("{e:#}"))),
        Cmd::Write { value } => write::run(Ctx::new(opts, false)?, &value).await,
        Cmd::Guess { value } => guess::run(Ctx::new(opts, false)?, &value).await,
        Cmd::Read {
            linearizable,
            allow_stale,
        } => read::run(Ctx::new(opts, false)?, linearizable, allow_stale).await,
        Cmd::Status => status::run(Ctx::new(opts, false)?).await,
        Cmd::Members => members::run(Ctx::new(opts, false)?).await,
        Cmd::Reconfig(change) => reconfig::run(Ctx::new(opts, true)?, change).await,
        Cmd::Snapshot(cmd) => snapshot::run(cmd, opts).await,
    }
}

/// Reports `e` (on stderr, and as JSON on stdout with `--output json`) and exits with its
/// status: 1 refused or failed (nothing written), 3 nothing written but worth retrying, 4
/// outcome unknown, 5 a membership change half done (a learner that was not promoted).
pub fn fail(e: &ClientError, json: bool) -> ! {
    if json {
        print_json(&serde_json::json!({ "error": { "kind": e.kind, "message": e.message } }));
    }
    eprintln!("guessgame: error: {}", e.message);
    std::process::exit(exit_code(e.kind));
}

fn exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NoLeader | ErrorKind::Unavailable | ErrorKind::ReconfigBusy => 3,
        ErrorKind::OutcomeUnknown | ErrorKind::RequestForgotten => 4,
        ErrorKind::ReconfigPartial => 5,
        _ => 1,
    }
}

/// What the subcommands that talk to the ensemble share.
struct Ctx {
    config: Config,
    /// `--node` as given (empty: not given).
    nodes: Vec<String>,
    /// The nodes to ask, in order: `--node`, else every configured node.
    endpoints: Vec<(String, String)>,
    /// The whole budget of one request.
    timeout: Duration,
    /// `--client-id`, else `client-<pid>`.
    client_id: String,
    /// `--request-seq`: the number of the write or guess (else a new one).
    request_seq: Option<u64>,
    json: bool,
    client: Client,
}

impl Ctx {
    /// Loads the config and sets up a client; `reconfig`: the longer default budget of a
    /// membership change.
    fn new(opts: Opts, reconfig: bool) -> Result<Ctx, ClientError> {
        let config = Config::load(opts.config.as_deref()).map_err(|e| invalid(e.to_string()))?;
        let endpoints = resolve_endpoints(&config, &opts.node)?;
        let mut timeout =
            Duration::from_millis(opts.timeout_ms.unwrap_or(config.request_timeout_ms + 1000));
        if reconfig && opts.timeout_ms.is_none() {
            // Adding a voter waits for it to catch up (the leader gives up after ten election
            // timeouts), and another change may be in flight first.
            timeout += Duration::from_millis(25 * config.election_timeout_ms);
        }
        let client_id = opts
            .client_id
            .unwrap_or_else(|| format!("client-{}", std::process::id()));
        let client = Client::new(&endpoints, timeout)?;
        Ok(Ctx {
            config,
            nodes: opts.node,
            endpoints,
            timeout,
            client_id,
            request_seq: opts.request_seq,
            json: opts.output == args::Output::Json,
            client,
        })
    }

    /// The value of `write`/`guess` (0-100), and a check of the client id that plays it.
    fn play_value(&self, text: &str) -> Result<u32, ClientError> {
        let value = parse_value(Some(text).filter(|v| !v.is_empty()))?;
        guessgame_core::game::check_client_id(&self.client_id)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(value)
    }
}

impl Ctx {
    /// The number `write`/`guess` goes out as: `--request-seq`, else a new one.
    fn request_seq(&mut self) -> u64 {
        match self.request_seq {
            Some(seq) => seq,
            None => self.client.next_seq(),
        }
    }

    /// `e`, and when the move's outcome is unknown, how to learn it safely: the same move
    /// under the same client id and request number is applied at most once.
    fn retry_hint(&self, e: ClientError, seq: u64, command: &str) -> ClientError {
        if e.kind != ErrorKind::OutcomeUnknown {
            return e;
        }
        let message = format!(
            "{}\nto learn the outcome, or apply it if it never was (never twice), run: \
             guessgame --client-id {} --request-seq {seq} {command}",
            e.message, self.client_id
        );
        ClientError::new(e.kind, message)
    }
}

fn invalid(message: impl Into<String>) -> ClientError {
    ClientError::new(ErrorKind::InvalidArgument, message)
}

fn parse_value(text: Option<&str>) -> Result<u32, ClientError> {
    let text = text.ok_or_else(|| invalid("a value is required (--value N)"))?;
    let n: i64 = text.trim().parse().map_err(|_| {
        invalid(format!(
            "value {text:?} is not an integer: it must be a whole number between 0 and 100"
        ))
    })?;
    guessgame_core::game::check_value(n).map_err(|e| invalid(e.to_string()))
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).expect("serializable"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_whole_numbers_from_0_to_100() {
        assert_eq!(parse_value(Some(" 42 ")).unwrap(), 42);
        assert!(parse_value(None).unwrap_err().message.contains("--value"));
        let e = parse_value(Some("4.5")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("not an integer"), "{}", e.message);
        assert!(parse_value(Some("101")).is_err());
        assert!(parse_value(Some("-1")).is_err());
    }

    #[test]
    fn exit_statuses_say_whether_anything_may_have_been_written() {
        assert_eq!(exit_code(ErrorKind::InvalidArgument), 1);
        assert_eq!(exit_code(ErrorKind::ReconfigRefused), 1);
        assert_eq!(exit_code(ErrorKind::NoLeader), 3);
        assert_eq!(exit_code(ErrorKind::Unavailable), 3);
        assert_eq!(exit_code(ErrorKind::ReconfigBusy), 3);
        assert_eq!(exit_code(ErrorKind::OutcomeUnknown), 4);
        assert_eq!(exit_code(ErrorKind::RequestForgotten), 4);
        assert_eq!(exit_code(ErrorKind::ReconfigPartial), 5);
    }
}
