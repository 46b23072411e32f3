//! HTTP: the hook endpoint and the JSON operations API (see
//! [`crate::openapi`] for the document served at `/api/openapi.json`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};
use sai_core::protocol::{event_of_task, is_event_id, is_task_id};
use serde_json::{Value, json};
use warp::Reply;
use warp::http::{HeaderMap, Method, StatusCode};

use crate::Server;
use crate::auth::{TokenKind, bearer};
use crate::sched::OpResult;
use crate::store::{ArtifactRow, EventRow, TaskRow, sanitise_artifact_name};

/// A JSON error response `{"error": ..., "detail": ...}`.
pub fn error(status: StatusCode, error: &str, detail: Option<&str>) -> warp::reply::Response {
    let mut body = json!({ "error": error });
    if let Some(d) = detail {
        body["detail"] = json!(d);
    }
    reply(status, &body)
}

/// An API failure: status, short error, optional detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    detail: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: &str, detail: Option<&str>) -> ApiError {
        ApiError {
            status,
            error: error.to_string(),
            detail: detail.map(str::to_string),
        }
    }

    fn into_response(self) -> warp::reply::Response {
        error(self.status, &self.error, self.detail.as_deref())
    }
}

fn reply(status: StatusCode, v: &Value) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

fn ok(v: &Value) -> warp::reply::Response {
    reply(StatusCode::OK, v)
}

fn internal(e: anyhow::Error) -> ApiError {
    tracing::error!(cause = %e, "api: internal error");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", None)
}

async fn read_body<S, B>(body: S, limit: u64) -> Result<bytes::Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "reading body",
                Some(&e.to_string()),
            )
        })?;
        if (buf.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body exceeds {limit} bytes"),
                None,
            ));
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            let n = c.len();
            buf.extend_from_slice(c);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The user of a valid user token in `Authorization: Bearer`.
fn user(server: &Server, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(tok) = bearer(header(headers, "authorization")) else {
        return Ok(None);
    };
    if let Some(for_user) = header(headers, "x-sai-on-behalf-of") {
        return on_behalf_of(server, tok, for_user).map(Some);
    }
    match server
        .keys
        .verify(TokenKind::User, tok, &server.settings.config.revoked_users)
    {
        Ok(id) => {
            if let Err(e) = server.store.touch_user(&id.name) {
                tracing::warn!(cause = %e, "recording user");
            }
            Ok(Some(id.name))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            &e.to_string(),
            None,
        )),
    }
}

/// A service token (sai-web) acting for `for_user`: the user is recorded as
/// the one who acted; revoked users are refused as with their own tokens.
fn on_behalf_of(server: &Server, tok: &str, for_user: &str) -> Result<String, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m, None);
    let service = server
        .keys
        .verify(
            TokenKind::Service,
            tok,
            &server.settings.config.revoked_users,
        )
        .map_err(|e| unauthorized(&e.to_string()))?;
    let valid_name = !for_user.is_empty()
        && for_user.len() <= 64
        && for_user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !valid_name {
        return Err(unauthorized("X-Sai-On-Behalf-Of is not a user name"));
    }
    if server
        .settings
        .config
        .revoked_users
        .iter()
        .any(|r| r == for_user)
    {
        return Err(unauthorized(&format!("user {for_user:?} is revoked")));
    }
    if let Err(e) = server.store.touch_user(for_user) {
        tracing::warn!(cause = %e, "recording user");
    }
    tracing::debug!(user = %for_user, service = %service.name, "request on behalf of a user");
    Ok(for_user.to_string())
}

fn require_user(server: &Server, headers: &HeaderMap) -> Result<String, ApiError> {
    user(server, headers)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "user token required: Authorization: Bearer <token from `sai-server token user`>",
            None,
        )
    })
}

/// Route one HTTP request.
pub async fn handle<S, B>(
    server: Arc<Server>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    body: S,
) -> warp::reply::Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let q = query_map(&query);
    if path == "/update-hook" || path == "/sai/update-hook" {
        if method != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "POST only", None);
        }
        let body = match read_body(body, server.settings.config.max_body_bytes).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        let source_ip = header(&headers, "x-forwarded-for")
            .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
            .or_else(|| peer.map(|p| p.ip().to_string()));
        return match crate::hook::handle(
            &server,
            header(&headers, "authorization"),
            header(&headers, "content-type"),
            source_ip,
            body,
        )
        .await
        {
            Ok((status, v)) => reply(status, &v),
            Err(crate::hook::HookError(status, e, detail)) => {
                tracing::warn!(%status, error = %e, detail = ?detail, "hook refused");
                error(status, &e, detail.as_deref())
            }
        };
    }
    let res = match (method.clone(), segs.as_slice()) {
        (Method::GET, ["api", "openapi.json"]) => Ok(ok(&crate::openapi::document())),
        (Method::GET, ["api", "projects"]) => projects(&server),
        (Method::GET, ["api", "projects", p, "events"]) => project_events(&server, &headers, p, &q),
        (Method::GET, ["api", "events", id]) => get_event(&server, &headers, id),
        (Method::DELETE, ["api", "events", id]) => delete_event(&server, &headers, id),
        (Method::POST, ["api", "events", id, "rebuild"]) => {
            rebuild(&server, &headers, id, None).await
        }
        (Method::GET, ["api", "tasks", id]) => get_task(&server, &headers, id),
        (Method::GET, ["api", "tasks", id, "log"]) => get_log(&server, &headers, id, &q),
        (Method::GET, ["api", "tasks", id, "artifacts", name]) => {
            get_artifact(&server, &headers, id, name)
        }
        (Method::POST, ["api", "tasks", id, "rebuild"]) => match event_of_task(id) {
            Some(ev) => rebuild(&server, &headers, ev, Some(id)).await,
            None => Err(ApiError::new(StatusCode::NOT_FOUND, "no such task", None)),
        },
        (Method::POST, ["api", "tasks", id, "cancel"]) => cancel(&server, &headers, id),
        (Method::GET, ["api", "builders"]) => builders(&server),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not found", None)),
    };
    match res {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

type Res = Result<warp::reply::Response, ApiError>;

fn event_json(e: &EventRow) -> Value {
    json!({
        "id": e.id, "project": e.project, "ref": e.git_ref, "hash": e.hash,
        "fetch_url": e.fetch_url, "source_ip": e.source_ip, "created": e.created,
        "last_updated": e.last_updated, "state": e.state, "sec": e.sec,
        "task_count": e.task_count,
    })
}

fn task_json(t: &TaskRow, detail: Option<String>, uploads: Option<Vec<ArtifactRow>>) -> Value {
    let mut v = json!({
        "id": t.id, "event_id": t.event_id, "configuration": t.configuration,
        "platform": t.platform, "state": t.state, "builder": t.builder,
        "exit_code": t.exit_code, "failed_step": t.failed_step, "reason": t.reason,
        "attempt": t.attempt, "infra_failures": t.infra_failures,
        "build_step": t.build_step, "step_count": t.steps.len(), "priority": t.priority,
        "created": t.created, "started": t.started, "ended": t.ended,
        "last_updated": t.last_updated,
    });
    if let Some(d) = detail {
        v["detail"] = json!(d);
    }
    if let Some(u) = uploads {
        v["steps"] = json!(t.steps);
        v["artifact_globs"] = json!(t.artifacts);
        v["packages"] = json!(t.packages);
        v["artifacts"] = serde_json::to_value(u).unwrap_or_default();
    }
    v
}

fn visible(server: &Server, headers: &HeaderMap, e: &EventRow) -> Result<(), ApiError> {
    if e.sec && user(server, headers)?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such event", None));
    }
    Ok(())
}

fn projects(server: &Server) -> Res {
    let rows = server.store.projects().map_err(internal)?;
    let v: Vec<Value> = rows
        .into_iter()
        .map(|(name, fetch_url, created, events)| {
            json!({"name": name, "fetch_url": fetch_url, "created": created, "event_count": events})
        })
        .collect();
    Ok(ok(&json!(v)))
}

fn project_events(
    server: &Server,
    headers: &HeaderMap,
    p: &str,
    q: &HashMap<String, String>,
) -> Res {
    if !server.store.project_exists(p).map_err(internal)? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such project",
            None,
        ));
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(50i64)
        .clamp(1, 1000);
    let authed = user(server, headers)?.is_some();
    let rows = server.store.events_of(p, limit).map_err(internal)?;
    let v: Vec<Value> = rows
        .iter()
        .filter(|e| authed || !e.sec)
        .map(event_json)
        .collect();
    Ok(ok(&json!(v)))
}

fn load_event(server: &Server, headers: &HeaderMap, id: &str) -> Result<EventRow, ApiError> {
    if !is_event_id(id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such event", None));
    }
    let e = server
        .store
        .event(id)
        .map_err(internal)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such event", None))?;
    visible(server, headers, &e)?;
    Ok(e)
}

fn get_event(server: &Server, headers: &HeaderMap, id: &str) -> Res {
    let e = load_event(server, headers, id)?;
    let db = server
        .store
        .event_db(id)
        .map_err(internal)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such event", None))?;
    let tasks = db.tasks().map_err(internal)?;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let sched = server.sched();
    let tj: Vec<Value> = tasks
        .iter()
        .map(|t| {
            *counts.entry(t.state.as_str()).or_default() += 1;
            let detail = (t.state == "waiting")
                .then(|| sched.waiting_detail(&t.platform))
                .flatten();
            task_json(t, detail, None)
        })
        .collect();
    drop(sched);
    let mut v = event_json(&e);
    v["tasks"] = json!(tj);
    v["task_states"] = json!(counts);
    Ok(ok(&v))
}

fn load_task(
    server: &Server,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Arc<crate::store::EventDb>, TaskRow), ApiError> {
    let nf = || ApiError::new(StatusCode::NOT_FOUND, "no such task", None);
    let ev = event_of_task(id).ok_or_else(nf)?;
    load_event(server, headers, ev).map_err(|_| nf())?;
    let db = server
        .store
        .event_db(ev)
        .map_err(internal)?
        .ok_or_else(nf)?;
    let t = db.task(id).map_err(internal)?.ok_or_else(nf)?;
    Ok((db, t))
}

fn get_task(server: &Server, headers: &HeaderMap, id: &str) -> Res {
    let (db, t) = load_task(server, headers, id)?;
    let uploads = db.artifacts(id).map_err(internal)?;
    let detail = (t.state == "waiting")
        .then(|| server.sched().waiting_detail(&t.platform))
        .flatten();
    let mut v = task_json(&t, detail, Some(uploads));
    v["log_bytes"] = json!(db.log_len(id).map_err(internal)?);
    Ok(ok(&v))
}

fn get_log(server: &Server, headers: &HeaderMap, id: &str, q: &HashMap<String, String>) -> Res {
    let (db, t) = load_task(server, headers, id)?;
    let offset: i64 = q
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
        .max(0);
    let max: i64 = q
        .get("max")
        .and_then(|o| o.parse().ok())
        .unwrap_or(1 << 20)
        .clamp(1, 16 << 20);
    let recs = db.logs(id, offset, max).map_err(internal)?;
    let total = db.log_len(id).map_err(internal)?;
    let next = recs
        .last()
        .map(|r| r.offset + r.data.len() as i64)
        .unwrap_or(offset.min(total));
    if q.get("format").map(String::as_str) == Some("raw") {
        let mut out = Vec::new();
        for r in &recs {
            out.extend_from_slice(&r.data);
        }
        let mut resp = warp::http::Response::new(out).into_response();
        resp.headers_mut().insert(
            "content-type",
            warp::http::HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(v) = warp::http::HeaderValue::from_str(&next.to_string()) {
            resp.headers_mut().insert("x-sai-next-offset", v);
        }
        return Ok(resp);
    }
    let terminal = matches!(t.state.as_str(), "success" | "failed" | "cancelled");
    let records: Vec<Value> = recs
        .iter()
        .map(|r| {
            json!({"offset": r.offset, "channel": r.channel, "timestamp_us": r.timestamp_us,
                   "len": r.data.len(), "text": String::from_utf8_lossy(&r.data)})
        })
        .collect();
    Ok(ok(&json!({
        "task_id": id, "offset": offset, "next_offset": next, "total": total,
        "complete": terminal && next >= total, "records": records,
    })))
}

fn get_artifact(server: &Server, headers: &HeaderMap, id: &str, name: &str) -> Res {
    let (db, _) = load_task(server, headers, id)?;
    let nf = || ApiError::new(StatusCode::NOT_FOUND, "no such artifact", None);
    let clean = sanitise_artifact_name(name).ok_or_else(nf)?;
    if clean != name
        || !db
            .artifacts(id)
            .map_err(internal)?
            .iter()
            .any(|a| a.name == clean)
    {
        return Err(nf());
    }
    let bytes = std::fs::read(db.artifact_dir(id).join(&clean)).map_err(|_| nf())?;
    let mut resp = warp::http::Response::new(bytes).into_response();
    resp.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

fn builders(server: &Server) -> Res {
    let online = server.sched().builders();
    let mut out: Vec<Value> = online
        .iter()
        .map(|b| serde_json::to_value(b).unwrap_or_default())
        .collect();
    for b in server.store.builders().map_err(internal)? {
        if online.iter().any(|o| o.name == b.name) {
            continue;
        }
        let platforms: Value = serde_json::from_str(&b.platforms).unwrap_or_default();
        out.push(
            json!({"name": b.name, "online": false, "peer": b.peer, "software": b.software,
                        "platforms": platforms, "since": b.last_seen}),
        );
    }
    Ok(ok(&json!(out)))
}

async fn rebuild(server: &Arc<Server>, headers: &HeaderMap, ev: &str, task: Option<&str>) -> Res {
    let who = require_user(server, headers)?;
    let row = load_event(server, headers, ev)?;
    let db = server
        .store
        .event_db(ev)
        .map_err(internal)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such event", None))?;
    if let Some(t) = task
        && (!is_task_id(t) || db.task(t).map_err(internal)?.is_none())
    {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such task", None));
    }
    let ids: Option<Vec<String>> = task.map(|t| vec![t.to_string()]);
    {
        let mut sched = server.sched();
        if !sched.has_event(ev) {
            sched
                .add_event(&server.store, row, db.clone(), Instant::now(), true)
                .map_err(internal)?;
        }
        let reset = sched.reset_tasks(&server.store, ev, ids.as_deref(), &who);
        for id in reset {
            server.logs.clear(db.clone(), id);
        }
    }
    // Answer only once the old logs are gone, so no reader sees them after
    // a successful rebuild.
    server.logs.flush().await;
    server.kick();
    tracing::info!(event = %ev, task = ?task, user = %who, "rebuild");
    match task {
        Some(t) => get_task(server, headers, t),
        None => get_event(server, headers, ev),
    }
}

fn cancel(server: &Arc<Server>, headers: &HeaderMap, id: &str) -> Res {
    let who = require_user(server, headers)?;
    load_task(server, headers, id)?;
    let r = server.sched().cancel_task(&server.store, id, &who);
    match r {
        OpResult::Done => {
            server.kick();
            tracing::info!(task = %id, user = %who, "cancel");
            get_task(server, headers, id)
        }
        OpResult::Conflict(m) => Err(ApiError::new(StatusCode::CONFLICT, &m, None)),
    }
}

fn delete_event(server: &Arc<Server>, headers: &HeaderMap, id: &str) -> Res {
    let who = require_user(server, headers)?;
    load_event(server, headers, id)?;
    if server.delete_event(id).map_err(internal)? {
        server.kick();
        tracing::info!(event = %id, user = %who, "event deleted");
        Ok(ok(&json!({"deleted": id})))
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "no such event", None))
    }
}
