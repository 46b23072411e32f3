//! The subcommands every serving daemon (sai-server, sai-web) has; a
//! daemon's own `Subcommand` enum flattens them in beside its own.

/// `run` (the default when no subcommand is given) and `check-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum ServeCmd {
    /// Serve (the default).
    Run,
    /// Load and validate the config, then exit.
    CheckConfig,
}
