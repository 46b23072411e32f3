//! Running one accepted task: its events through an outlet, its result
//! (handed back on shutdown, held while the server is away) to the server,
//! and its instance freed at the end.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sai_core::protocol::{BuilderMessage, TaskOffer, TaskResult};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::outlet::Outlet;
use super::shared::Shared;
use super::tasks::{Attach, Progress, Stop};
use crate::connection::LinkSender;
use crate::jobdir::vn;
use crate::spool::Spool;
use crate::task::{TaskContext, TaskEvent, run_task};

/// How long a task that ended while its server was away keeps its result
/// for the server to come back and claim it.
pub const HOLD_RESULT: Duration = Duration::from_secs(15 * 60);

/// What ties a running task to its server link.
pub(super) struct Job {
    /// The link it was accepted on.
    pub(super) sender: LinkSender,
    pub(super) cancel: CancellationToken,
    pub(super) stop: Arc<OnceLock<Stop>>,
    pub(super) progress: Arc<Progress>,
    /// New links after a lost one.
    pub(super) attached: mpsc::UnboundedReceiver<Attach>,
}

/// Run one accepted task and report it; see the `server_link` module doc.
pub(super) async fn run_one(
    offer: TaskOffer,
    ctx: TaskContext,
    job: Job,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let Job {
        sender,
        cancel,
        stop,
        progress,
        mut attached,
    } = job;
    let id = offer.task_id.clone();
    let task_vn = vn(&id).ok();
    if let Some(v) = &task_vn {
        shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(v.clone());
    }
    let spool_path = shared
        .layout
        .home()
        .join("spool")
        .join(format!("{}.log", task_vn.as_deref().unwrap_or("task")));
    let mut out = Outlet {
        id: id.clone(),
        link: Some(sender),
        spool: Spool::new(spool_path),
        waiting: VecDeque::new(),
        progress: progress.clone(),
    };
    let (tx, mut rx) = mpsc::channel::<TaskEvent>(256);
    let run = async {
        let r = run_task(&ctx, &offer, &tx, &cancel).await;
        drop(tx);
        r
    };
    let relay = async {
        let mut can_attach = true;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => out.event(ev).await,
                    None => break,
                },
                a = attached.recv(), if can_attach => match a {
                    Some(a) => out.attach(a).await,
                    None => can_attach = false,
                },
            }
        }
        can_attach
    };
    let (result, can_attach) = tokio::join!(run, relay);
    progress.finished.store(true, Ordering::SeqCst);
    let result = match (stop.get(), result) {
        (Some(Stop::Shutdown), TaskResult::Cancelled) => TaskResult::HandedBack {
            reason: format!(
                "sai-builder on {} shut down during the task (operator request)",
                shared.host
            ),
        },
        (_, r) => r,
    };
    tracing::info!(
        task = %id,
        "task {id} {}",
        crate::task::describe_result(&result)
    );
    crate::metrics::metrics().task(&result);
    if stop.get() != Some(&Stop::Refused) {
        // Without a link, the result waits for the server to take the
        // task back (or for the daemon to give up on it).
        if out.link.is_none() && can_attach {
            tracing::info!(task = %id, "holding the result until the server is back");
            if let Ok(Some(a)) = tokio::time::timeout(HOLD_RESULT, attached.recv()).await {
                out.attach(a).await;
            }
        }
        match &out.link {
            Some(s) => {
                let _ = s
                    .send(&BuilderMessage::TaskFinished {
                        task_id: id.clone(),
                        result,
                    })
                    .await;
            }
            None => {
                tracing::warn!(task = %id, "the server did not take the task back; its result is dropped")
            }
        }
    }
    let idle = {
        let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = &task_vn {
            active.remove(v);
        }
        active.is_empty()
    };
    drop(permit);
    shared.capacity_changed();
    if idle {
        // The last running task ended: hand what the task's buffers, git
        // and checkout freed back to the kernel now (the periodic trimmer
        // waits for 2 MiB), so the idle builder stays small.
        sai_daemon::memory::trim();
    }
}
