//! `guessgame`: the command-line client.
//!
//! Original lab form: `guessgame --client-id client1 --node node1 --command write --value 50`.
//! Subcommand form:   `guessgame write 50 --node node1`.
//!
//! Exit status: 0 ok; 1 refused or failed (nothing written); 2 bad usage; 3 no leader / no
//! node reachable, or a membership change that cannot be made yet (nothing written, retry); 4
//! outcome unknown (the write may have happened).
//!
//! The subcommands are in [`cli`], one module each.

use clap::Parser;

mod cli;

#[tokio::main]
async fn main() {
    let args = cli::Cli::parse();
    guessgame_wire::telemetry::init_tracing("warn");
    let json = args.json();
    if let Err(e) = cli::run(args).await {
        cli::fail(&e, json);
    }
}
