//! The I/O plumbing every Sai daemon needs around its own work (sai-core
//! stays sans-I/O, so it lives here):
//!
//! | module | job |
//! |---|---|
//! | [`supervise`] | systemd readiness, stopping and watchdog keep-alives |
//! | [`signals`] | waiting for the signal that asks a daemon to stop |
//! | [`ticker`] | periodic work until shutdown |
//! | [`memory`] | handing freed heap memory back to the system |
//! | [`logging`] | log lines on stderr, filtered by `RUST_LOG` |
//! | [`private_file`] | a new secret file only its owner can read |
//! | [`cli`] | the subcommands every serving daemon has (`run`, `check-config`) |

pub mod cli;
pub mod logging;
pub mod memory;
pub mod private_file;
pub mod signals;
pub mod supervise;
pub mod ticker;
