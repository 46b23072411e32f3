//! `GET /api/tasks/{id}`, its log and artifacts, `POST .../cancel`.

use std::sync::Arc;

use sai_core::api;
use sai_core::protocol::event_of_task;
use sai_core::task::{Task, TaskState};
use warp::Reply;
use warp::http::HeaderMap;

use super::{Query, Res, ok, query_int, require_user};
use crate::error::Error;
use crate::logstore::LogStart;
use crate::sched::Fleet;
use crate::state::Server;
use crate::store::{ArtifactRow, EventDb};

/// Why a waiting task waits: the attempt it is on after infrastructure
/// failures (of `max_infra`), and what the builders offer.
fn waiting_detail(t: &Task, fleet: &Fleet, max_infra: u32) -> Option<String> {
    let r = &t.run;
    let retry = (r.infra_failures > 0).then(|| {
        let n = r.infra_failures;
        format!(
            "attempt {} of {max_infra} after {} infrastructure failure{}",
            r.attempt + 1,
            if n == 1 {
                "an".to_string()
            } else {
                n.to_string()
            },
            if n == 1 { "" } else { "s" }
        )
    });
    match (retry, fleet.waiting_detail(&t.spec.platform)) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// The API view of a task (without steps and artifacts); a waiting task
/// says why it waits (see [`Fleet::waiting_detail`]).
pub fn view(t: &Task, fleet: &Fleet, max_infra: u32) -> api::Task {
    let r = &t.run;
    api::Task {
        id: t.id.to_string(),
        event_id: t.event_id().to_string(),
        configuration: t.spec.configuration.clone(),
        platform: t.spec.platform.clone(),
        state: r.state,
        detail: (r.state == TaskState::Waiting)
            .then(|| waiting_detail(t, fleet, max_infra))
            .flatten(),
        builder: r.builder.clone(),
        instance: r.instance.clone(),
        exit_code: r.exit_code,
        // Stored as the protocol's 0-based index; people read 1-based
        // numbers, as in the log's "Starting step N" notices.
        failed_step: r.failed_step.map(|s| s + 1),
        reason: r.reason.clone(),
        attempt: r.attempt,
        infra_failures: r.infra_failures,
        build_step: r.build_step,
        step_count: t.spec.steps.len(),
        priority: t.priority,
        created: t.created,
        started: r.started,
        ended: r.ended,
        last_updated: t.last_updated,
        steps: None,
        artifact_globs: None,
        packages: None,
        artifacts: None,
        log_bytes: None,
        log_stored_bytes: None,
        estimate_ms: None,
        step_times: None,
    }
}

fn artifact(a: ArtifactRow) -> api::Artifact {
    api::Artifact {
        name: a.name,
        size: a.size,
        sha256: a.sha256,
        created: a.created,
    }
}

/// The task `id` and its event database, if the caller may see it.
pub fn load(server: &Server, headers: &HeaderMap, id: &str) -> Result<(Arc<EventDb>, Task), Error> {
    let nf = || Error::NotFound("no such task");
    let ev = event_of_task(id).ok_or_else(nf)?;
    super::visible_event(server, headers, ev).map_err(|_| nf())?;
    let db = server.store.event_db(ev)?.ok_or_else(nf)?;
    let t = db.task(id)?.ok_or_else(nf)?;
    Ok((db, t))
}

/// A task with its steps and artifacts.
pub fn get(server: &Server, headers: &HeaderMap, id: &str) -> Res {
    let (db, t) = load(server, headers, id)?;
    let mut v = view(
        &t,
        &server.fleet(),
        server.settings.config.max_infra_attempts,
    );
    if let Some(ev) = server.store.event(db.id.as_str())? {
        v.estimate_ms = super::estimates::Estimator::new(server).task(&ev.project, &t)?;
    }
    v.steps = Some(t.spec.steps);
    v.artifact_globs = Some(t.spec.artifacts);
    v.packages = Some(t.spec.packages);
    v.artifacts = Some(db.artifacts(id)?.into_iter().map(artifact).collect());
    v.log_bytes = Some(db.log_len(id)?);
    v.log_stored_bytes = Some(db.task_log_bytes_stored(id)?);
    v.step_times = Some(match t.run.started {
        Some(since) => server.store.step_times(id, since)?,
        None => Vec::new(),
    });
    ok(&v)
}

fn octets(bytes: Vec<u8>) -> warp::reply::Response {
    let mut resp = warp::http::Response::new(bytes).into_response();
    resp.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// The log's bytes, streamed, with HTTP `Range`.
pub fn log_raw(server: &Server, headers: &HeaderMap, id: &str) -> Res {
    let (db, t) = load(server, headers, id)?;
    let total = db.log_len(id)?.max(0) as u64;
    let range = headers.get("range").and_then(|v| v.to_str().ok());
    let ended = t.run.state.is_terminal();
    Ok(crate::log_download::response(db, id, total, ended, range))
}

/// Log records from `offset` (JSON, or the bytes with `format=raw`).
pub fn log(server: &Server, headers: &HeaderMap, id: &str, q: &Query) -> Res {
    let (db, t) = load(server, headers, id)?;
    let start = match q.get("line") {
        Some(_) => LogStart::Line(query_int(q, "line", 0).max(0)),
        None => LogStart::Offset(query_int(q, "offset", 0).max(0)),
    };
    let max = query_int(q, "max", 1 << 20).clamp(1, 16 << 20);
    let (at, recs, total) = db.log_page(id, start, max)?;
    let offset = match start {
        LogStart::Offset(o) => o,
        LogStart::Line(_) => at.offset,
    };
    let next = recs
        .last()
        .map(|r| r.offset + r.data.len() as i64)
        .unwrap_or(offset.min(total));
    if q.get("format").map(String::as_str) == Some("raw") {
        let mut resp = octets(recs.into_iter().flat_map(|r| r.data).collect());
        for (name, value) in [
            ("x-sai-next-offset", next),
            ("x-sai-offset", at.offset),
            ("x-sai-first-line", at.line),
        ] {
            if let Ok(v) = warp::http::HeaderValue::from_str(&value.to_string()) {
                resp.headers_mut().insert(name, v);
            }
        }
        let complete = t.run.state.is_terminal() && next >= total;
        resp.headers_mut().insert(
            crate::log_download::COMPLETE_HEADER,
            crate::log_download::completeness(complete),
        );
        return Ok(resp);
    }
    let records = recs
        .iter()
        .map(|r| api::LogRecord {
            offset: r.offset,
            channel: r.channel,
            timestamp_us: r.timestamp_us,
            len: r.data.len(),
            text: String::from_utf8_lossy(&r.data).into_owned(),
        })
        .collect();
    ok(&api::Log {
        task_id: id.to_string(),
        offset,
        next_offset: next,
        total,
        complete: t.run.state.is_terminal() && next >= total,
        records,
        first_line: at.line,
        newlines: at.newlines,
        lines: at.lines,
    })
}

/// Download an artifact by its name, a relative path (`out/result.txt`):
/// `Content-Disposition` names the file, `X-Sai-Sha256` and the `ETag`
/// carry its sha256.
pub fn artifact_bytes(server: &Server, headers: &HeaderMap, id: &str, name: &str) -> Res {
    let (db, _) = load(server, headers, id)?;
    let nf = || Error::NotFound("no such artifact");
    sai_core::artifact_name::check(name).map_err(|_| nf())?;
    let row = db
        .artifacts(id)?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(nf)?;
    let bytes = std::fs::read(db.artifact_dir(id).join(name)).map_err(|_| nf())?;
    let mut resp = octets(bytes);
    let h = resp.headers_mut();
    let file = sai_core::artifact_name::file_name(name);
    // Names are made of `A-Z a-z 0-9 . _ + -` and `/` only: safe to quote.
    if let Ok(v) = warp::http::HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert("content-disposition", v);
    }
    if let Ok(v) = warp::http::HeaderValue::from_str(&row.sha256) {
        h.insert("x-sai-sha256", v);
    }
    if let Ok(v) = warp::http::HeaderValue::from_str(&format!("\"{}\"", row.sha256)) {
        h.insert("etag", v);
    }
    Ok(resp)
}

/// Cancel a waiting or running task.
pub fn cancel(server: &Arc<Server>, headers: &HeaderMap, id: &str) -> Res {
    let who = require_user(server, headers)?;
    load(server, headers, id)?;
    server
        .sched_do(|s, now| s.cancel_task(now, id, &who))
        .map_err(|c| Error::Conflict(c.0))?;
    tracing::info!(task = %id, user = %who, "cancel");
    get(server, headers, id)
}
