//! Where a running task's events go: translated to messages, frames and
//! uploads for the server while its link is up; kept (the log in the
//! spool, the rest in a queue) while it is down, and resent when the server
//! takes the task back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sai_core::protocol::BuilderMessage;

use super::tasks::{Attach, Progress};
use crate::connection::{ArtifactSendError, LinkClosed, LinkSender};
use crate::log::LogChunk;
use crate::spool::Spool;
use crate::task::TaskEvent;

/// Send one task event to the server.
async fn forward(ev: TaskEvent, id: &str, sender: &LinkSender) -> Result<(), LinkClosed> {
    let test_report = matches!(ev, TaskEvent::TestReport(_));
    match ev {
        TaskEvent::Log(chunk) => sender.send_log(id, chunk).await,
        TaskEvent::StepStarted { step } => {
            sender
                .send(&BuilderMessage::StepStarted {
                    task_id: id.to_string(),
                    step,
                })
                .await
        }
        TaskEvent::StepFinished {
            step,
            exit_code,
            duration,
        } => {
            crate::metrics::metrics().step(exit_code, duration);
            sender
                .send(&BuilderMessage::StepFinished {
                    task_id: id.to_string(),
                    step,
                    exit_code,
                    duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                })
                .await
        }
        TaskEvent::Artifact(a) | TaskEvent::TestReport(a) => {
            match sender.send_upload(id, &a, test_report).await {
                Ok(()) => Ok(()),
                Err(ArtifactSendError::Closed(c)) => Err(c),
                Err(e) => {
                    let what = if test_report {
                        "test report"
                    } else {
                        "artifact"
                    };
                    tracing::warn!(task = id, artifact = %a.name, "{what} not uploaded: {e}");
                    sender
                        .send_log(
                            id,
                            LogChunk::notice(format!("{what} {} not uploaded: {e}", a.name)),
                        )
                        .await
                }
            }
        }
    }
}

/// Where a task's events go: the link while it is up; the spool and a
/// queue while it is down, resent when the server takes the task back.
pub(super) struct Outlet {
    pub(super) id: String,
    pub(super) link: Option<LinkSender>,
    pub(super) spool: Spool,
    /// Events other than log bytes that wait for the link.
    pub(super) waiting: VecDeque<TaskEvent>,
    pub(super) progress: Arc<Progress>,
}

impl Outlet {
    fn detach(&mut self) {
        if self.link.take().is_some() {
            tracing::warn!(task = %self.id, "link lost: the task keeps running, its log is kept");
        }
    }

    pub(super) async fn event(&mut self, ev: TaskEvent) {
        if let TaskEvent::Log(chunk) = &ev {
            if let Err(e) = self.spool.append(chunk) {
                tracing::warn!(task = %self.id, "cannot keep the log for a resend: {e}");
            }
            self.progress
                .log_bytes
                .store(self.spool.len(), Ordering::SeqCst);
            if let Some(s) = &self.link
                && let TaskEvent::Log(chunk) = ev
                && s.send_log(&self.id, chunk).await.is_err()
            {
                self.detach();
            }
            return;
        }
        match &self.link {
            Some(s) if self.waiting.is_empty() => {
                if forward(ev, &self.id, s).await.is_err() {
                    self.detach();
                }
            }
            _ => self.waiting.push_back(ev),
        }
    }

    /// A new link: resend the log from `offset`, then what waited.
    pub(super) async fn attach(&mut self, a: Attach) {
        let chunks = match self.spool.read_from(a.offset) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(task = %self.id, "cannot read the kept log: {e}");
                Vec::new()
            }
        };
        for chunk in chunks {
            if a.sender.send_log(&self.id, chunk).await.is_err() {
                return;
            }
        }
        while let Some(ev) = self.waiting.pop_front() {
            if forward(ev, &self.id, &a.sender).await.is_err() {
                return;
            }
        }
        self.link = Some(a.sender);
    }
}
