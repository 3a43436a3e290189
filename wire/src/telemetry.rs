//! Log output for every binary: `tracing` on stderr, filtered by `GUESSGAME_LOG` or `RUST_LOG`.

/// Sets up `tracing` output on stderr (`RUST_LOG` or `GUESSGAME_LOG` filter, default info).
pub fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("GUESSGAME_LOG")
        .ok()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in files and pipes (node logs, `guessgame-node all`).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
