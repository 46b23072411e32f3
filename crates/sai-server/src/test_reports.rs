//! A task's uploaded JUnit XML report: parsed within bounds
//! ([`sai_core::junit`]) and its test cases recorded (the task's event
//! database, and the project's test history), or the reason it was refused
//! recorded. Either way the task's log says so in a notice. The report file
//! itself stays among the task's artifacts, and nothing else of the task
//! (log, artifacts, state) depends on the outcome.

use std::path::PathBuf;
use std::sync::Arc;

use sai_core::junit::{self, Limits, TestCase};
use sai_core::protocol::CHANNEL_NOTICE;

use crate::logw::LogChunk;
use crate::state::Server;
use crate::store::test_results::RunPlace;
use crate::store::{EventDb, now_ms};

/// The bounds applied to reports.
pub fn limits() -> Limits {
    Limits::default()
}

fn notice(server: &Server, db: &Arc<EventDb>, task_id: &str, text: String) {
    server.logs.record(LogChunk {
        db: db.clone(),
        task_id: task_id.to_string(),
        channel: CHANNEL_NOTICE,
        timestamp_us: now_ms() * 1000,
        data: format!("sai-server: {text}\n").into_bytes(),
        credit: None,
    });
}

fn read_and_parse(path: PathBuf, limits: Limits) -> Result<Vec<TestCase>, String> {
    let size = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    if size > limits.max_bytes as u64 {
        return Err(junit::ReportError::TooLarge {
            size: size as usize,
            max: limits.max_bytes,
        }
        .to_string());
    }
    let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
    junit::parse(&bytes, &limits).map_err(|e| e.to_string())
}

/// Parse the stored report `name` at `path` of `task_id` and record the
/// outcome.
pub async fn ingest(
    server: &Arc<Server>,
    db: &Arc<EventDb>,
    task_id: &str,
    name: &str,
    path: PathBuf,
) {
    let parsed = tokio::task::spawn_blocking(move || read_and_parse(path, limits()))
        .await
        .unwrap_or_else(|e| Err(format!("parser worker: {e}")));
    let stored = match &parsed {
        Ok(cases) => db.add_test_report(task_id, name, Ok(cases)),
        Err(why) => db.add_test_report(task_id, name, Err(why)),
    };
    if let Err(e) = stored {
        tracing::error!(task = %task_id, cause = %e, "storing test report");
        notice(
            server,
            db,
            task_id,
            format!("test report {name} could not be stored: {e}"),
        );
        return;
    }
    match parsed {
        Ok(cases) => {
            let failed = cases.iter().filter(|c| c.outcome.is_failure()).count();
            notice(
                server,
                db,
                task_id,
                format!(
                    "test report {name}: {} test cases, {failed} failed",
                    cases.len()
                ),
            );
            if let Err(e) = record_history(server, db, task_id, &cases) {
                tracing::error!(task = %task_id, cause = %e, "recording test history");
            }
        }
        Err(why) => {
            tracing::warn!(task = %task_id, report = %name, %why, "test report refused");
            notice(
                server,
                db,
                task_id,
                format!("test report {name} refused: {why}"),
            );
        }
    }
}

fn record_history(
    server: &Server,
    db: &EventDb,
    task_id: &str,
    cases: &[TestCase],
) -> Result<(), crate::store::StoreError> {
    let (Some(ev), Some(task)) = (server.store.event(db.id.as_str())?, db.task(task_id)?) else {
        return Ok(());
    };
    let place = RunPlace {
        project: ev.project,
        event_id: ev.id.to_string(),
        task_id: task_id.to_string(),
        hash: ev.hash,
        git_ref: ev.git_ref,
        configuration: task.spec.configuration,
        platform: task.spec.platform,
    };
    server.store.record_test_runs(&place, cases)
}
