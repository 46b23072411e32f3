//! One builder connection's messages (text) and frames (binary): what each
//! does to the scheduler, the task logs and the store.

use std::sync::Arc;

use sai_core::protocol::{
    BuilderMessage, CHANNEL_NOTICE, CLOSE_POLICY, CLOSE_PROTOCOL_ERROR, FrameKind, ServerMessage,
    TaskResult, decode_frame,
};
use sai_core::task::TaskState;

use super::ConnState;
use crate::link::Outgoing;
use crate::logw::LogChunk;
use crate::sched::Lookup;
use crate::state::Server;

impl ConnState {
    fn send(&self, m: ServerMessage) {
        let _ = self.tx.send(Outgoing::Msg(m));
    }
    pub(super) fn error(&self, task_id: Option<&str>, message: String) {
        tracing::warn!(builder = %self.name, task = ?task_id, "{message}");
        self.send(ServerMessage::Error {
            task_id: task_id.map(str::to_string),
            message,
        });
    }
    pub(super) fn lookup(&self, task_id: &str) -> Lookup<Arc<crate::store::EventDb>> {
        self.server.sched().lookup(self.cid, task_id)
    }
    /// A re-run's log starts with a notice, so that it is kept apart from
    /// the log of the attempt before (which stays above it).
    fn attempt_notice(&self, task_id: &str) {
        let Lookup::Assigned(db, _) = self.lookup(task_id) else {
            return;
        };
        let attempt = match db.task(task_id) {
            Ok(Some(t)) => t.run.attempt,
            _ => return,
        };
        if attempt <= 1 {
            return;
        }
        let notice = format!(
            "\nsai-server: ---- attempt {attempt} starts here on builder {}; the log above is from earlier attempts ----\n",
            self.name
        );
        self.server.logs.record(LogChunk {
            db,
            task_id: task_id.to_string(),
            channel: CHANNEL_NOTICE,
            timestamp_us: crate::store::now_ms() * 1000,
            data: notice.into_bytes(),
            credit: None,
        });
    }

    /// The builder's `result`, unless something of the task did not
    /// arrive (`missing` says what): then an infrastructure failure, with a
    /// notice in the task's log. Hand-backs and infrastructure errors stay.
    fn infra_unless_whole(
        &self,
        db: &Arc<crate::store::EventDb>,
        task_id: &str,
        result: TaskResult,
        missing: Option<String>,
    ) -> TaskResult {
        let Some(what) = missing else {
            return result;
        };
        if matches!(
            result,
            TaskResult::HandedBack { .. } | TaskResult::InfraError { .. }
        ) {
            return result;
        }
        let notice = format!(
            "sai-server: {what}; the builder reported {}, but the task ends as an infrastructure failure\n",
            result_word(&result)
        );
        self.server.logs.record(LogChunk {
            db: db.clone(),
            task_id: task_id.to_string(),
            channel: CHANNEL_NOTICE,
            timestamp_us: crate::store::now_ms() * 1000,
            data: notice.into_bytes(),
            credit: None,
        });
        TaskResult::InfraError { reason: what }
    }

    pub(super) fn not_yours(&self, task_id: &str) {
        self.error(
            Some(task_id),
            format!("task {task_id} is not assigned to this connection"),
        );
    }

    /// Handle a text frame; `Err` closes the connection.
    pub(super) async fn text(&mut self, text: &str) -> Result<(), (u16, String)> {
        let msg: BuilderMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                self.error(None, format!("unreadable message: {e}"));
                return Ok(());
            }
        };
        let server = self.server.clone();
        let cid = self.cid;
        match msg {
            BuilderMessage::Hello { .. } => self.error(None, "hello was already received".into()),
            BuilderMessage::Accept { task_id } => {
                if !server.sched_do(|s, _| s.accept(cid, &task_id)) {
                    self.not_yours(&task_id);
                } else {
                    if let Lookup::Assigned(db, _) = self.lookup(&task_id) {
                        server.logs.new_attempt(db, task_id.clone());
                    }
                    self.attempt_notice(&task_id);
                }
            }
            BuilderMessage::Reject { task_id, reason } => {
                if !server.sched_do(|s, now| s.reject(now, cid, &task_id, &reason)) {
                    self.not_yours(&task_id);
                }
            }
            BuilderMessage::Capacity { platforms } => {
                tracing::debug!(builder = %self.name, ?platforms, "capacity");
                server.sched_do(|s, now| s.capacity(now, cid, &platforms));
            }
            BuilderMessage::Load(load) => {
                tracing::debug!(builder = %self.name, ?load, "load");
                server.sched_do(|s, now| s.builder_load(now, cid, load));
            }
            BuilderMessage::ShuttingDown => {
                tracing::info!(builder = %self.name, "builder is shutting down");
                server.sched_do(|s, _| s.shutting_down(cid));
            }
            BuilderMessage::StepStarted { task_id, step } => {
                if !server.sched_do(|s, _| s.step_started(cid, &task_id, step)) {
                    self.not_yours(&task_id);
                }
            }
            BuilderMessage::StepFinished {
                task_id,
                step,
                exit_code,
                duration_ms,
            } => match self.lookup(&task_id) {
                Lookup::Assigned(_, project) => {
                    if let Err(e) = server.store.add_metric(
                        &task_id,
                        &project,
                        &self.name,
                        step,
                        exit_code,
                        duration_ms,
                    ) {
                        tracing::error!(cause = %e, "writing metric");
                    }
                }
                Lookup::Cancelled => {}
                Lookup::Unknown => self.not_yours(&task_id),
            },
            BuilderMessage::ArtifactBegin {
                task_id,
                name,
                size,
                sha256,
                test_report,
            } => self.artifact_begin(task_id, name, size, sha256, test_report),
            BuilderMessage::ArtifactEnd { task_id } => self.artifact_end(&task_id).await,
            BuilderMessage::TaskFinished { task_id, result } => {
                match self.lookup(&task_id) {
                    Lookup::Assigned(db, project) => {
                        self.abort_upload(&task_id, "task finished during the upload");
                        let lost = self.lost.remove(&task_id).unwrap_or_default();
                        let missing = (!lost.is_empty()).then(|| {
                            format!(
                                "{} artifact(s) did not arrive: {}",
                                lost.len(),
                                lost.join("; ")
                            )
                        });
                        let result = self.infra_unless_whole(&db, &task_id, result, missing);
                        // Everything logged before this message is stored
                        // first; a log that cannot be stored makes the task
                        // an infrastructure failure, never a result with a hole.
                        let unstored = server
                            .logs
                            .finish_task(db.clone(), task_id.clone())
                            .await
                            .err();
                        let result = self.infra_unless_whole(
                            &db,
                            &task_id,
                            result,
                            unstored.map(|u| u.to_string()),
                        );
                        if let TaskResult::HandedBack { reason } = &result {
                            let notice = format!(
                                "sai-server: task handed back by builder {}: {reason}; requeued without counting an attempt\n",
                                self.name
                            );
                            server.logs.record(LogChunk {
                                db: db.clone(),
                                task_id: task_id.clone(),
                                channel: CHANNEL_NOTICE,
                                timestamp_us: crate::store::now_ms() * 1000,
                                data: notice.into_bytes(),
                                credit: None,
                            });
                        }
                        server.sched_do(|s, now| s.finished(now, cid, &task_id, &result));
                        record_duration(&server, &db, &project, &task_id);
                    }
                    Lookup::Cancelled => {
                        self.abort_upload(&task_id, "the task was cancelled");
                        self.lost.remove(&task_id);
                    }
                    Lookup::Unknown => self.not_yours(&task_id),
                }
            }
        }
        Ok(())
    }

    /// Handle a binary frame; `Err` closes the connection.
    pub(super) fn binary(&mut self, bytes: &[u8]) -> Result<(), (u16, String)> {
        let (h, payload) =
            decode_frame(bytes).map_err(|e| (CLOSE_PROTOCOL_ERROR, e.to_string()))?;
        let len = payload.len() as u64;
        self.credit -= len as i64;
        if self.credit < 0 {
            return Err((CLOSE_POLICY, "flow-control credit exceeded".into()));
        }
        match self.lookup(&h.task_id) {
            Lookup::Assigned(db, _) => match h.kind {
                FrameKind::Log => {
                    self.server.metrics.log_bytes(len);
                    self.server.logs.record(LogChunk {
                        db,
                        task_id: h.task_id,
                        channel: h.channel,
                        timestamp_us: h.timestamp_us as i64,
                        data: payload.to_vec(),
                        credit: Some((self.cid, self.tx.clone())),
                    });
                }
                FrameKind::Artifact => {
                    let _ = self.tx.send(Outgoing::Credit(len));
                    self.artifact_bytes(&h.task_id, payload);
                }
            },
            Lookup::Cancelled => {
                let _ = self.tx.send(Outgoing::Credit(len));
            }
            Lookup::Unknown => {
                let _ = self.tx.send(Outgoing::Credit(len));
                self.not_yours(&h.task_id);
            }
        }
        Ok(())
    }
}

/// How a builder's result reads in a notice.
fn result_word(r: &TaskResult) -> String {
    match r {
        TaskResult::Success => "success".into(),
        TaskResult::Failed { exit_code, step } => {
            format!("failure (step {} exited with {exit_code})", step + 1)
        }
        TaskResult::Cancelled => "cancelled".into(),
        TaskResult::InfraError { reason } => format!("an infrastructure error ({reason})"),
        TaskResult::HandedBack { reason } => format!("a hand-back ({reason})"),
    }
}

/// Add a task that just ended (passed or failed) to its duration history.
fn record_duration(server: &Server, db: &crate::store::EventDb, project: &str, task_id: &str) {
    let task = match db.task(task_id) {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => return tracing::error!(cause = %e, "reading finished task"),
    };
    let run = &task.run;
    let (Some(started), Some(ended)) = (run.started, run.ended) else {
        return;
    };
    if !matches!(run.state, TaskState::Success | TaskState::Failed) || ended < started {
        return;
    }
    let key = crate::store::durations::DurationKey {
        project,
        configuration: &task.spec.configuration,
        platform: &task.spec.platform,
    };
    if let Err(e) = server
        .store
        .record_duration(key, task_id, run.state, ended - started, ended)
    {
        tracing::error!(cause = %e, "recording task duration");
    }
}
