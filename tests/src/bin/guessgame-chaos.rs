//! `guessgame-chaos`: fault injection against real processes, with a linearizability and
//! durability check of what the clients saw. Needs root (network namespaces), `ip`, and Go
//! (for the Porcupine checker).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use guessgame_tests::chaos::{self, Report, Rng, Settings};

#[derive(Parser)]
#[command(
    name = "guessgame-chaos",
    about = "Jepsen-style fault injection and checking for guessgame"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Where histories, node logs and reports go (kept for failing schedules).
    #[arg(long, global = true, default_value = "target/chaos")]
    out: PathBuf,
    /// Concurrent clients per schedule.
    #[arg(long, global = true, default_value_t = 4)]
    clients: usize,
    /// Seconds between fault injections.
    #[arg(long, global = true, default_value_t = 4)]
    fault_every_s: u64,
    /// Keep the files of passing schedules too.
    #[arg(long, global = true)]
    keep: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// The CI-sized campaign: several short schedules, each from its own seed.
    Campaign {
        #[arg(long, default_value_t = 4)]
        schedules: u64,
        #[arg(long, default_value_t = 25)]
        duration_s: u64,
        /// Seed of the campaign (schedule seeds derive from it). Default: from the clock.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Bridge cuts, one after another on one ensemble: the leader cut from all followers
    /// but one; prints how long until a write through the four followers commits, and the
    /// epochs started (median and max over the runs).
    Bridge {
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Give up on one run after this many seconds without a committed write.
        #[arg(long, default_value_t = 15)]
        limit_s: u64,
    },
    /// One long schedule (also how to replay a failing seed).
    Soak {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 600)]
        duration_s: u64,
    },
}

fn print_report(r: &Report) {
    println!(
        "seed {:>20}  ops ok {:>5} fail {:>4} unknown {:>3}  faults {:>2}  longest unavailability {:>5} ms  committed held {:>5}  {}",
        r.seed,
        r.ops_ok,
        r.ops_fail,
        r.ops_unknown,
        r.faults.len(),
        r.longest_unavailability_ms,
        r.committed_entries,
        if r.violations.is_empty() { "OK".to_string() } else { format!("{} VIOLATION(S)", r.violations.len()) }
    );
    println!(
        "    snapshots: taken {}, sent {}, installed {}",
        r.snapshots_taken, r.snapshots_sent, r.snapshots_installed
    );
    for f in &r.faults {
        println!("    {:>8.1} s  {}", f.at_us as f64 / 1e6, f.what);
    }
    println!("    checker: {}", r.linearizable);
    for v in &r.violations {
        println!("    VIOLATION: {v}");
    }
}

/// Prints the bridge runs' figures; the exit status says whether every run recovered.
fn bridge_summary(result: anyhow::Result<Vec<chaos::bridge::BridgeRun>>) -> i32 {
    let runs = match result {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("guessgame-chaos bridge: {e:#}");
            return 1;
        }
    };
    let mut ms: Vec<u64> = runs.iter().filter_map(|r| r.recovered_ms).collect();
    ms.sort_unstable();
    let stuck = runs.len() - ms.len();
    let mut epochs: Vec<u64> = runs.iter().map(|r| r.epochs_while_cut).collect();
    epochs.sort_unstable();
    let after: u64 = runs.iter().map(|r| r.epochs_after_heal).sum();
    let at = |v: &[u64], p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or("-".to_string(), |x| x.to_string())
    };
    println!(
        "\nbridge: {} runs; write committed after median {} ms, p90 {} ms, max {} ms; {stuck} without a commit; epochs while cut median {}, max {}; epochs after healing {after} in all",
        runs.len(),
        at(&ms, 0.5),
        at(&ms, 0.9),
        at(&ms, 1.0),
        at(&epochs, 0.5),
        at(&epochs, 1.0),
    );
    i32::from(stuck > 0)
}

fn main() {
    let cli = Cli::parse();
    if !chaos::netns::TestNet::available() {
        eprintln!("guessgame-chaos: cannot create network namespaces (run as root, with iproute2 installed)");
        std::process::exit(2);
    }
    guessgame_tests::ensure_binaries();
    std::fs::create_dir_all(&cli.out).expect("output dir");
    let mut cli = cli;
    cli.out = std::fs::canonicalize(&cli.out).expect("output dir");
    let checker = chaos::build_checker(&cli.out).unwrap_or_else(|e| {
        eprintln!("guessgame-chaos: {e:#}");
        std::process::exit(2);
    });
    eprintln!("checker: {}", checker.display());
    let (seeds, duration) = match cli.cmd {
        Cmd::Campaign {
            schedules,
            duration_s,
            seed,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(1)
            });
            println!("campaign seed {seed}: {schedules} schedules of {duration_s} s");
            let mut rng = Rng::new(seed);
            (
                (0..schedules)
                    .map(|_| rng.next_u64() % 1_000_000_000)
                    .collect::<Vec<_>>(),
                duration_s,
            )
        }
        Cmd::Soak { seed, duration_s } => (vec![seed], duration_s),
        Cmd::Bridge {
            runs,
            seed,
            limit_s,
        } => {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let result = rt.block_on(chaos::bridge::run_bridges(
                cli.out.clone(),
                runs,
                seed,
                Duration::from_secs(limit_s),
            ));
            std::process::exit(bridge_summary(result));
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut totals = (0, 0, 0, 0, 0u64);
    for seed in seeds {
        let settings = Settings {
            seed,
            duration: Duration::from_secs(duration),
            clients: cli.clients,
            fault_every: Duration::from_secs(cli.fault_every_s),
            out: cli.out.clone(),
            checker_timeout_s: 120,
        };
        match rt.block_on(chaos::run_schedule(&settings)) {
            Ok(r) => {
                print_report(&r);
                totals.0 += r.ops_ok;
                totals.1 += r.ops_fail;
                totals.2 += r.ops_unknown;
                totals.3 += r.faults.len();
                totals.4 = totals.4.max(r.longest_unavailability_ms);
                if r.violations.is_empty() {
                    if !cli.keep {
                        let _ = std::fs::remove_dir_all(&r.dir);
                    }
                } else {
                    failed.push((seed, r.dir.clone()));
                }
            }
            Err(e) => {
                println!("seed {seed}: harness error: {e:#}");
                failed.push((seed, format!("{}/seed-{seed}", cli.out.display())));
            }
        }
    }
    println!(
        "\nsummary: ops ok {} / fail {} / unknown {}; faults {}; longest unavailability {} ms; violations in {} schedule(s); {:.0} s",
        totals.0,
        totals.1,
        totals.2,
        totals.3,
        totals.4,
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        for (seed, dir) in &failed {
            println!("FAILED seed {seed}: files in {dir}; replay: cargo run -p guessgame-tests --bin guessgame-chaos -- soak --seed {seed} --duration-s {duration}");
        }
        std::process::exit(1);
    }
}
