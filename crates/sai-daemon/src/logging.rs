//! Log output of a daemon: human-readable lines on stderr (which systemd
//! hands to the journal), filtered by `RUST_LOG`, `info` when it is unset.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Send the process's `tracing` events to stderr. Colours only when stderr
/// is a terminal, so the journal and test logs get plain text.
pub fn init() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}
