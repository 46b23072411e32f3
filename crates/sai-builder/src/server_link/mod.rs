//! The link to one server: connect, serve offers, reconnect forever.
//!
//! [`run_link`] runs for the life of the daemon, one per distinct server URL:
//!
//! 1. reads the server's token (a `token_file` is re-read on every attempt,
//!    so a rotated token is picked up without a restart) and connects
//!    ([`crate::connection::connect`]), saying hello with exactly the
//!    platforms configured for this server and their instance counts;
//! 2. answers every [`ServerMessage::Offer`]: `reject` when the builder is
//!    stopping, the platform is not offered on this link, the disk under the
//!    home has less than `min_free_disk_bytes` free
//!    ([`crate::housekeeping::has_room`]) or every instance of the platform
//!    is busy (instances are shared by all links, so two servers offering
//!    the same platform cannot overbook it); otherwise `accept` and run
//!    [`crate::task::run_task`] in its own tokio task, translating its
//!    [`TaskEvent`]s to `step_started` / `step_finished` / log frames /
//!    artifact uploads and its result to `task_finished`;
//! 3. [`ServerMessage::Cancel`] cancels that task (its process group is
//!    killed; the result is `cancelled`);
//! 4. when the link is lost (the server restarts: it says
//!    [`ServerMessage::Restarting`] first; or it was killed, or the network
//!    dropped), the tasks bound to it keep running: their log is kept
//!    ([`crate::spool`]), their other messages and their result wait. The
//!    link reconnects after an exponential, jittered delay
//!    ([`crate::backoff`]), reset when the previous connection stayed up for
//!    [`LinkConfig::stable_after`] or the server said it was restarting, and
//!    claims the tasks it holds in its hello
//!    ([`sai_core::protocol::HeldTask`]). The server answers
//!    [`ServerMessage::ResumeTask`] (the task resends its log from the
//!    offset the server stored, then what waited, and carries on) or
//!    [`ServerMessage::ClaimRefused`] (the task is killed and reported to
//!    nobody). A finished task's result waits at most [`HOLD_RESULT`] for
//!    the server to come back;
//! 5. on shutdown, the link first says `shutting_down` (the server offers
//!    it nothing more), offers still in flight are rejected, running tasks
//!    are killed and reported as `handed_back` (the server requeues them at
//!    once, without counting an attempt or an infrastructure failure), and
//!    the websocket is closed cleanly.
//!
//! Declined offers: the server does not offer a task this link declined
//! again until one of the link's tasks finishes or the link reports free
//! capacity. Whenever capacity frees up anywhere in the builder (a task on
//! any link ends and releases its instance, housekeeping frees disk:
//! [`Shared::capacity_changed`]) every link sends
//! [`BuilderMessage::Capacity`] with the free instances of its platforms, and
//! the server offers the declined tasks again on the same connection.
//!
//! Load: every link reports [`BuilderMessage::Load`] ([`Shared::load`]:
//! load average, memory, disk free under the job directories, running
//! tasks) when it connects, every [`LinkConfig::load_every`], when one of
//! its tasks starts and whenever capacity frees up.
//!
//! | module | job |
//! |---|---|
//! | this file | the reconnect loop ([`run_link`]): connect with the held tasks' claims, serve, back off, stop what is left at the end |
//! | `shared` | what every link shares: the platforms' instance slots, free capacity, the load report |
//! | `config` | one link's settings: URL, trust, token source, platforms, timings |
//! | `tasks` | one link's running tasks, which outlive its connections: stop reasons, progress for the claims, new links |
//! | `serve` | one connection's messages: offers, cancels, resumes, refused claims, capacity and load reports, shutdown |
//! | `admit` | accepting or declining an offer: platform offered here, free disk, a free instance |
//! | `outlet` | where a task's events go: to the server while the link is up, kept and resent once it is back |
//! | `job` | running one accepted task and reporting its result |
//!
//! [`ServerMessage::Offer`]: sai_core::protocol::ServerMessage::Offer
//! [`ServerMessage::Cancel`]: sai_core::protocol::ServerMessage::Cancel
//! [`ServerMessage::Restarting`]: sai_core::protocol::ServerMessage::Restarting
//! [`ServerMessage::ResumeTask`]: sai_core::protocol::ServerMessage::ResumeTask
//! [`ServerMessage::ClaimRefused`]: sai_core::protocol::ServerMessage::ClaimRefused
//! [`BuilderMessage::Capacity`]: sai_core::protocol::BuilderMessage::Capacity
//! [`BuilderMessage::Load`]: sai_core::protocol::BuilderMessage::Load
//! [`TaskEvent`]: crate::task::TaskEvent

mod admit;
mod config;
mod job;
mod outlet;
mod serve;
mod shared;
mod tasks;

use std::sync::Arc;
use std::time::Instant;

use sai_core::protocol::PlatformOffer;
use tokio_util::sync::CancellationToken;

use self::serve::{Ended, serve};
use self::tasks::{Stop, Tasks};
use crate::backoff::Backoff;
use crate::connection::{ConnectOptions, connect};

pub use self::config::{DEFAULT_STABLE_AFTER, LinkConfig, TokenSource};
pub use self::job::HOLD_RESULT;
pub use self::shared::{PlatformSlots, Shared};

/// Connect to one server and serve it until `shutdown`; see the module doc.
pub async fn run_link(mut lc: LinkConfig, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut first_attempt = lc.first_attempt.take();
    let mut backoff = Backoff::with_bounds(lc.backoff_initial, lc.backoff_cap);
    let offers: Vec<PlatformOffer> = lc
        .platforms
        .iter()
        .map(|name| PlatformOffer {
            name: name.clone(),
            instances: shared.platforms.get(name).map_or(1, |p| p.instances),
        })
        .collect();
    let url = lc.url.as_str();
    let mut tasks = Tasks::default();
    while !shutdown.is_cancelled() {
        tasks.reap();
        let held = tasks.held();
        let attempt = async {
            let token = lc.token.read()?;
            let mut opts = ConnectOptions::new(url, token, &shared.host, offers.clone());
            opts.tls = lc.tls.clone();
            opts.handshake_timeout = lc.handshake_timeout;
            opts.keepalive = lc.keepalive;
            opts.dead_after = lc.dead_after;
            opts.held = held;
            anyhow::Ok(connect(&opts).await?)
        };
        let connected = tokio::select! {
            r = attempt => r,
            _ = shutdown.cancelled() => break,
        };
        let mut attempted = || {
            if let Some(tx) = first_attempt.take() {
                let _ = tx.send(url.to_string());
            }
        };
        match connected {
            Ok(link) => {
                tracing::info!(
                    server = url,
                    software = %link.welcome.server,
                    "connected to {url}, offering {}",
                    lc.platforms.join(", ")
                );
                attempted();
                let up = Instant::now();
                let ended = serve(link, &lc, &shared, &shutdown, &mut tasks).await;
                if shutdown.is_cancelled() || ended == Ended::Shutdown {
                    tracing::info!(server = url, "link closed for shutdown");
                    break;
                }
                if !tasks.running.is_empty() {
                    tracing::warn!(
                        server = url,
                        "link lost; {} task(s) keep running and are claimed back on reconnecting",
                        tasks.running.len()
                    );
                } else {
                    tracing::warn!(server = url, "link lost");
                }
                if up.elapsed() >= lc.stable_after || ended == Ended::Restarting {
                    backoff.reset();
                }
            }
            Err(e) => {
                tracing::warn!(server = url, "cannot connect: {e:#}");
                attempted();
            }
        }
        let delay = backoff.next_delay();
        tracing::info!(server = url, "reconnecting in {:.1} s", delay.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Tasks still held for a server that did not come back: stop them.
    for r in tasks.running.values() {
        r.stop(Stop::Shutdown);
    }
    tasks.running.clear();
    while let Some(done) = tasks.set.join_next_with_id().await {
        tasks.reaped(done);
    }
}
