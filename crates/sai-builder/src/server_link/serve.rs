//! Serving one established connection: offers (accepted and started, or
//! declined), cancels, resumed and refused claims, capacity and load
//! reports, and the shutdown that hands the running tasks back.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sai_core::protocol::{BuilderMessage, ServerMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::admit::{Decline, admit};
use super::config::LinkConfig;
use super::job::{Job, run_one};
use super::shared::Shared;
use super::tasks::{Attach, Progress, Running, Stop, Tasks};
use crate::connection::Link;

/// Longest wait for queued messages to leave when closing on shutdown.
const CLOSE_FLUSH: Duration = Duration::from_secs(10);

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The connection broke or the server closed it.
    Lost,
    /// Shutdown: tasks handed back, websocket closed.
    Shutdown,
    /// The server said it was restarting, then the link closed.
    Restarting,
}

/// Serve one established link until it is lost, or the daemon stops and its
/// tasks are gone.
pub(super) async fn serve(
    mut link: Link,
    lc: &LinkConfig,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> Ended {
    let sender = link.sender.clone();
    let mut stopping = false;
    let mut lost = false;
    let mut restarting = false;
    let mut capacity = shared.capacity.subscribe();
    capacity.mark_unchanged();
    let mut load_every = tokio::time::interval(lc.load_every);
    load_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if lost || (stopping && tasks.running.is_empty()) {
            break;
        }
        tokio::select! {
            _ = load_every.tick(), if !stopping => {
                let _ = sender.send(&BuilderMessage::Load(shared.load())).await;
            }
            Ok(()) = capacity.changed(), if !stopping => {
                capacity.mark_unchanged();
                let _ = sender.send(&BuilderMessage::Load(shared.load())).await;
                let platforms = shared.free_capacity(&lc.platforms);
                tracing::debug!(
                    server = lc.url,
                    "reporting free capacity for {} platforms",
                    platforms.len()
                );
                let _ = sender.send(&BuilderMessage::Capacity { platforms }).await;
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                // Said first, so the server offers this link nothing more
                // while its tasks are handed back.
                tracing::info!(server = lc.url, "telling the server this builder is shutting down");
                let _ = sender.send(&BuilderMessage::ShuttingDown).await;
                for r in tasks.running.values() {
                    r.stop(Stop::Shutdown);
                }
            }
            msg = link.incoming.recv() => match msg {
                None => lost = true,
                Some(ServerMessage::Offer { task }) => {
                    let task = *task;
                    let id = task.task_id.clone();
                    let decision = if stopping {
                        Err(Decline("the builder is shutting down".into()))
                    } else if tasks.running.contains_key(&id) {
                        Err(Decline("this task is already running here".into()))
                    } else {
                        admit(&task, lc, shared)
                    };
                    match decision {
                        Err(Decline(reason)) => {
                            tracing::info!(task = %id, %reason, "offer rejected");
                            let _ = sender
                                .send(&BuilderMessage::Reject { task_id: id, reason })
                                .await;
                        }
                        Ok((permit, ctx)) => {
                            if sender
                                .send(&BuilderMessage::Accept { task_id: id.clone() })
                                .await
                                .is_err()
                            {
                                continue;
                            }
                            tracing::info!(
                                task = %id,
                                project = %task.project,
                                platform = %task.offer_platform,
                                attempt = task.attempt,
                                "offer accepted"
                            );
                            let (attach, attached) = mpsc::unbounded_channel();
                            let r = Running {
                                cancel: CancellationToken::new(),
                                stop: Arc::new(OnceLock::new()),
                                offer_platform: task.offer_platform.clone(),
                                progress: Arc::new(Progress::default()),
                                attach,
                            };
                            let job = Job {
                                sender: sender.clone(),
                                cancel: r.cancel.clone(),
                                stop: r.stop.clone(),
                                progress: r.progress.clone(),
                                attached,
                            };
                            let handle = tasks.set.spawn(run_one(
                                task,
                                ctx,
                                job,
                                shared.clone(),
                                permit,
                            ));
                            tasks.ids.insert(handle.id(), id.clone());
                            tasks.running.insert(id, r);
                            let _ = sender.send(&BuilderMessage::Load(shared.load())).await;
                        }
                    }
                }
                Some(ServerMessage::Cancel { task_id, reason }) => match tasks.running.get(&task_id) {
                    Some(r) => {
                        tracing::info!(task = %task_id, %reason, "cancelled by the server");
                        r.stop(Stop::Server);
                    }
                    None => tracing::debug!(task = %task_id, "cancel for a task not running here"),
                },
                Some(ServerMessage::ResumeTask { task_id, log_offset }) => {
                    match tasks.running.get(&task_id) {
                        Some(r) => {
                            tracing::info!(task = %task_id, log_offset, "the server took the task back; resending its log from there");
                            let _ = r.attach.send(Attach { sender: sender.clone(), offset: log_offset });
                        }
                        None => tracing::warn!(task = %task_id, "resume for a task not running here"),
                    }
                }
                Some(ServerMessage::ClaimRefused { task_id, reason }) => {
                    if let Some(r) = tasks.running.remove(&task_id) {
                        tracing::warn!(task = %task_id, %reason, "the server refused the task back: killing it");
                        r.stop(Stop::Refused);
                    }
                }
                Some(ServerMessage::Restarting { grace_secs }) => {
                    restarting = true;
                    tracing::info!(
                        server = lc.url,
                        grace_secs,
                        "the server is restarting; running tasks keep going and are claimed back"
                    );
                }
                Some(ServerMessage::Error { task_id, message }) => {
                    match task_id {
                        Some(t) => tracing::warn!(server = lc.url, "the server reports an error about task {t}: {message}"),
                        None => tracing::warn!(server = lc.url, "the server reports an error: {message}"),
                    }
                }
                Some(other) => tracing::debug!(
                    server = lc.url,
                    "ignored a message this builder does not handle: {}",
                    serde_json::to_string(&other).unwrap_or_default()
                ),
            },
            Some(done) = tasks.set.join_next_with_id(), if !tasks.set.is_empty() => {
                tasks.reaped(done);
            }
        }
    }
    drop(sender);
    if lost {
        link.closed().await;
        if restarting {
            Ended::Restarting
        } else {
            Ended::Lost
        }
    } else {
        // Let the last messages leave, then close the websocket.
        let _ = tokio::time::timeout(CLOSE_FLUSH, link.closed()).await;
        Ended::Shutdown
    }
}
