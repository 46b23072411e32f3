//! The tasks of one server link, which outlive its connections: why one
//! was stopped, how far it got (for the claims in the next hello) and the
//! channel that hands it a new link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sai_core::protocol::HeldTask;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connection::LinkSender;

/// Why a running task was stopped (the first reason wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The server sent `cancel`.
    Server,
    /// The daemon is shutting down.
    Shutdown,
    /// The server refused our claim after a lost link: not ours any more.
    Refused,
}

/// How far a running task got, for the claim in the next hello.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) log_bytes: AtomicU64,
    pub(super) finished: AtomicBool,
}

/// A new link for a task that kept running: resend from `offset`.
#[derive(Debug)]
pub(super) struct Attach {
    pub(super) sender: LinkSender,
    pub(super) offset: u64,
}

#[derive(Debug)]
pub(super) struct Running {
    pub(super) cancel: CancellationToken,
    pub(super) stop: Arc<OnceLock<Stop>>,
    pub(super) offer_platform: String,
    pub(super) progress: Arc<Progress>,
    pub(super) attach: mpsc::UnboundedSender<Attach>,
}

impl Running {
    pub(super) fn stop(&self, why: Stop) {
        let _ = self.stop.set(why);
        self.cancel.cancel();
    }
}

/// The tasks of one server link; they outlive its connections.
#[derive(Debug, Default)]
pub(super) struct Tasks {
    pub(super) running: HashMap<String, Running>,
    pub(super) ids: HashMap<tokio::task::Id, String>,
    pub(super) set: JoinSet<()>,
}

impl Tasks {
    /// Forget a task whose runner ended.
    pub(super) fn reaped(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let tid = match done {
            Ok((tid, ())) => tid,
            Err(e) => {
                tracing::error!("task runner failed: {e}");
                e.id()
            }
        };
        if let Some(id) = self.ids.remove(&tid) {
            self.running.remove(&id);
        }
    }

    /// Forget every task whose runner ended, without waiting.
    pub(super) fn reap(&mut self) {
        while let Some(done) = self.set.try_join_next_with_id() {
            self.reaped(done);
        }
    }

    /// What the next hello claims.
    pub(super) fn held(&self) -> Vec<HeldTask> {
        self.running
            .iter()
            .filter(|(_, r)| r.stop.get().is_none())
            .map(|(id, r)| HeldTask {
                task_id: id.clone(),
                offer_platform: r.offer_platform.clone(),
                log_bytes: r.progress.log_bytes.load(Ordering::SeqCst),
                finished: r.progress.finished.load(Ordering::SeqCst),
            })
            .collect()
    }
}
