//! sai-server: signed hook intake, sqlite store, event-driven scheduler,
//! authenticated builder websocket and the operations API.
//!
//! `main.rs` (and `sai up`) resolve the config ([`load_config`],
//! [`Settings::resolve`]), [`bind`] the listener, [`Server::open`] the
//! store and keys, then [`serve()`] until the shutdown token fires. See
//! `docs/server.md` and `docs/protocol.md`.
//!
//! | module | job |
//! |---|---|
//! | [`mod@serve`] | binding the listener, assembling the routes, serving TCP/TLS and the local socket, the background jobs |
//! | [`accept`] | the accept loop (plain and TLS): header timeout, API connection cap |
//! | [`state`] | the running server's shared state and settings; where scheduler effects are applied |
//! | [`hook`] | `POST /update-hook`: the notification ([`sai_core::notification`]) to a stored event |
//! | [`api`] | routing; one module per API resource; the OpenAPI document |
//! | [`error`] | the one HTTP error type and its status mapping |
//! | [`sched`] | the scheduler: a pure state machine, inputs to effects |
//! | [`store`] | the main database, event databases, migrations, on-disk layout |
//! | [`ws`] | the builder websocket: hello, messages, frames, artifacts |
//! | [`link`] | the queues of live builder connections |
//! | [`trim`] | heap memory returned soon after builders leave |
//! | [`logw`] | the batched log writer (credit returned after commit) |
//! | [`push_limits`] | what one push may cost: the caps on expanded tasks |
//! | [`auth`] | PASETO tokens of builders and users |
//! | [`token_cli`] | the `token` subcommand shared with `sai` |
//! | [`metrics`] | `GET /metrics`: Prometheus metrics from published snapshots |
//! | [`outbox`] | the queue of commit statuses and completion webhooks, their targets and requests |
//! | [`delivery`] | sending the outbox's notes, retried in the background |
//!
//! [`Server::sched_do`] is where scheduler inputs go in and their effects
//! (run records, event states, messages, connection closes) are applied.

pub use sai_https::accept;
pub mod api;
pub mod auth;
pub mod changes;
pub mod delivery;
pub mod error;
pub mod eta;
pub mod handle_cache;
pub mod hook;
pub mod link;
pub mod log_download;
pub mod logstore;
pub mod logw;
pub mod metrics;
pub mod outbox;
pub mod push_limits;
pub mod sched;
pub mod serve;
pub mod state;
pub mod store;
pub mod test_reports;
/// TLS termination, shared with sai-web: the `sai-https` crate.
pub use sai_https as tls;
pub mod token_cli;
pub mod trim;
pub mod ws;

pub use crate::serve::{ServeError, bind, routes, serve};
pub use crate::state::{FAULT_ENV, SOFTWARE, Scheduler, Server, Settings, StartError, load_config};
