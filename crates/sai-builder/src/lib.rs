//! sai-builder library: the I/O building blocks of the builder daemon.
//!
//! Each module does one job and is usable (and tested) on its own;
//! [`daemon::run`] wires them to the server websockets.
//!
//! | module | job |
//! |---|---|
//! | [`jobdir`] | on-disk layout under the builder home (`jobs/<VN>/src`, `run/<VN>`, `git-mirror/`) |
//! | [`log`] | [`log::LogChunk`]: bytes on a log channel (1 stdout, 2 stderr, 3 notices, 4/5 tty) |
//! | [`git_mirror`] | per-project bare mirror, fetch-once, network-free checkout |
//! | `worktree_sweep` | (Unix) what of a previous task's checkout can stay when the instance's next task reuses it |
//! | [`instances`] | `SAI_INSTANCE_IDX` allocation per platform |
//! | [`env`](mod@env) | the environment of a build step |
//! | [`step_runner`] | runs one step in its own process group with timeout, log cap and cancel |
//! | [`logproxy`] | per-task unix sockets whose bytes become log records on channels 3, 4, 5 |
//! | [`connection`] | websocket link to a server: hello/welcome, credit-limited binary frames |
//! | [`tls`] | trust roots for `wss://` servers (CA file or system roots), certificate errors explained |
//! | [`artifacts`] | saifile artifact globs rooted at `src/`, hashed, read in chunks |
//! | [`housekeeping`] | removal of old job dirs, free-disk checks |
//! | [`platform`] | what differs between operating systems: step shell and process tree, user switching, disk space |
//! | [`task`] | one task from offer to result, composed of the modules above |
//! | [`backoff`] | exponential reconnect delays with jitter |
//! | [`server_link`] | one server: connect, accept/reject offers, run tasks, reconnect |
//! | [`spool`] | a running task's log kept for resending after a server restart |
//! | [`daemon`] | config loading, the links, hourly housekeeping, shutdown |
//! | [`metrics`] | Prometheus metrics and their optional local listener |

pub mod artifacts;
pub mod backoff;
pub mod connection;
pub mod daemon;
pub mod env;
pub mod git_mirror;
pub mod housekeeping;
pub mod instances;
pub mod jobdir;
pub mod log;
pub mod logproxy;
pub mod metrics;
pub mod platform;
pub mod server_link;
pub mod spool;
pub mod step_runner;
pub mod task;
pub mod tls;
#[cfg(unix)]
pub mod worktree_sweep;
