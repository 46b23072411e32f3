//! HTTP: routing of the hook endpoint ([`crate::hook`]) and the JSON
//! operations API, one module per resource. Answers are the types of
//! [`sai_core::api`]; failures are [`crate::error::Error`].
//!
//! | module | routes |
//! |---|---|
//! | [`projects`] | `GET /api/projects`, `GET /api/projects/{name}/events` |
//! | [`events`] | `GET`/`DELETE /api/events/{id}`, `POST /api/events/{id}/rebuild`, `POST /api/events/{id}/again` |
//! | [`tasks`] | `GET /api/tasks/{id}`, `.../log`, `.../artifacts/{path}`, `POST .../rebuild`, `.../cancel` |
//! | [`builders`] | `GET /api/builders` |
//! | [`test_results`] | `GET /api/tasks/{id}/tests`, `GET /api/events/{id}/tests`, `GET /api/projects/{name}/tests` |
//! | [`openapi`] | `GET /api/openapi.json`, generated from the types |

pub mod builders;
pub mod estimates;
pub mod events;
pub mod openapi;
pub mod projects;
pub mod tasks;
pub mod test_results;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};
use sai_core::protocol::event_of_task;
use sai_core::task::{Event, EventId};
use serde::Serialize;
use warp::Reply;
use warp::http::{HeaderMap, Method, StatusCode};

use crate::auth::{TokenKind, bearer};
use crate::error::Error;
use crate::state::Server;

/// A handler's outcome.
pub type Res = Result<warp::reply::Response, Error>;

/// A JSON response.
pub fn reply<T: Serialize>(status: StatusCode, v: &T) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

/// A 200 JSON response.
pub fn ok<T: Serialize>(v: &T) -> Res {
    Ok(reply(StatusCode::OK, v))
}

async fn read_body<S, B>(body: S, limit: u64) -> Result<bytes::Bytes, Error>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| Error::bad_request("reading body", Some(e.to_string())))?;
        if (buf.len() + chunk.remaining()) as u64 > limit {
            return Err(Error::BodyTooLarge { limit });
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

/// Query parameters.
pub type Query = HashMap<String, String>;

fn query_map(q: &str) -> Query {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// An integer query parameter.
pub fn query_int(q: &Query, name: &str, default: i64) -> i64 {
    q.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Header the server itself sets on requests that came through its local
/// unix socket ([`crate::serve::serve`]) and strips from every other request.
pub const LOCAL_SOCKET_MARK: &str = "x-sai-internal-local-socket";

/// The user of a valid user token in `Authorization: Bearer`, or the user a
/// service (a service token, or a peer on the local socket) acts for.
pub fn user(server: &Server, headers: &HeaderMap) -> Result<Option<String>, Error> {
    let local = headers.contains_key(LOCAL_SOCKET_MARK);
    let Some(tok) = bearer(header(headers, "authorization")) else {
        return match header(headers, "x-sai-on-behalf-of") {
            Some(for_user) if local => act_for(server, for_user, "local socket").map(Some),
            _ => Ok(None),
        };
    };
    if let Some(for_user) = header(headers, "x-sai-on-behalf-of") {
        return on_behalf_of(server, tok, for_user).map(Some);
    }
    let id = server
        .keys
        .verify(TokenKind::User, tok, &server.settings.config.revoked_users)
        .map_err(|e| Error::Unauthorized(e.to_string()))?;
    if let Err(e) = server.store.touch_user(&id.name) {
        tracing::warn!(cause = %e, "recording user");
    }
    Ok(Some(id.name))
}

/// A service token (sai-web) acting for `for_user`: the user is recorded as
/// the one who acted; revoked users are refused as with their own tokens.
fn on_behalf_of(server: &Server, tok: &str, for_user: &str) -> Result<String, Error> {
    let revoked = &server.settings.config.revoked_users;
    let service = server
        .keys
        .verify(TokenKind::Service, tok, revoked)
        .map_err(|e| Error::Unauthorized(e.to_string()))?;
    act_for(server, for_user, &service.name)
}

/// `service` acts for `for_user`: a valid, unrevoked user name, recorded.
fn act_for(server: &Server, for_user: &str, service: &str) -> Result<String, Error> {
    let revoked = &server.settings.config.revoked_users;
    if sai_core::config::web::check_user_name(for_user).is_err() {
        return Err(Error::Unauthorized(
            "X-Sai-On-Behalf-Of is not a user name".into(),
        ));
    }
    if revoked.iter().any(|r| r == for_user) {
        return Err(Error::Unauthorized(format!("user {for_user:?} is revoked")));
    }
    if let Err(e) = server.store.touch_user(for_user) {
        tracing::warn!(cause = %e, "recording user");
    }
    tracing::debug!(user = %for_user, %service, "request on behalf of a user");
    Ok(for_user.to_string())
}

/// The event `id` if it exists and the caller may see it.
pub fn visible_event(server: &Server, headers: &HeaderMap, id: &str) -> Result<Event, Error> {
    let nf = Error::NotFound("no such event");
    let Ok(id) = EventId::parse(id) else {
        return Err(nf);
    };
    let e = server.store.event(&id)?.ok_or(nf)?;
    if e.sec && user(server, headers)?.is_none() {
        return Err(Error::NotFound("no such event"));
    }
    Ok(e)
}

/// A [`visible_event`] and its event database.
pub fn visible_event_db(
    server: &Server,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Event, Arc<crate::store::EventDb>), Error> {
    let e = visible_event(server, headers, id)?;
    let db = server
        .store
        .event_db(id)?
        .ok_or(Error::NotFound("no such event"))?;
    Ok((e, db))
}

/// The user of a required user token.
pub fn require_user(server: &Server, headers: &HeaderMap) -> Result<String, Error> {
    user(server, headers)?.ok_or_else(|| {
        Error::Unauthorized(
            "user token required: Authorization: Bearer <token from `sai-server token user`>"
                .into(),
        )
    })
}

async fn hook<S, B>(
    server: Arc<Server>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    body: S,
) -> Res
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let limits = &server.settings.config.limits;
    let body = tokio::time::timeout(
        std::time::Duration::from_millis(limits.body_timeout_ms),
        read_body(body, server.settings.config.max_body_bytes),
    )
    .await
    .map_err(|_| Error::BodyTimeout(limits.body_timeout_ms))??;
    let source_ip = header(&headers, "x-forwarded-for")
        .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
        .or_else(|| peer.map(|p| p.ip().to_string()));
    let answer = crate::hook::handle(
        &server,
        header(&headers, "authorization"),
        header(&headers, "content-type"),
        source_ip,
        body,
    )
    .await;
    let result = match &answer {
        Ok(sai_core::api::HookReply::Accepted { .. }) => "accepted",
        Ok(sai_core::api::HookReply::Duplicate { .. }) => "duplicate",
        Ok(sai_core::api::HookReply::Ignored { .. }) => "ignored",
        Err(_) => "refused",
    };
    server.metrics.hook(result);
    match answer {
        Ok(a) => ok(&a),
        Err(e) => {
            tracing::warn!(status = %e.status(), error = %e, "hook refused");
            Err(e)
        }
    }
}

/// `GET /metrics`: the text exposition, from published snapshots only.
fn metrics(server: &Server, headers: &HeaderMap) -> Res {
    if let Some(want) = &server.settings.metrics_token {
        let got = bearer(header(headers, "authorization")).unwrap_or("");
        let same: bool = subtle_eq(got.as_bytes(), want.as_bytes());
        if !same {
            return Err(Error::Unauthorized(
                "metrics token required: Authorization: Bearer <token of metrics_token_file>"
                    .into(),
            ));
        }
    }
    let body = server
        .metrics
        .render(&server.fleet(), &server.queue(), crate::store::now_ms());
    Ok(
        warp::reply::with_header(body, "content-type", crate::metrics::CONTENT_TYPE)
            .into_response(),
    )
}

/// Constant-time equality of two byte strings.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    use hmac::Mac;
    // Compare HMACs of both under a fixed key: equal length, constant time.
    let mac = |x: &[u8]| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"sai-metrics").expect("any key");
        m.update(x);
        m.finalize()
    };
    mac(a) == mac(b)
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
    let s = &server;
    let h = &headers;
    let res = match (method, segs.as_slice()) {
        (Method::POST, ["update-hook"] | ["sai", "update-hook"]) => {
            hook(server.clone(), headers.clone(), peer, body).await
        }
        (_, ["update-hook"] | ["sai", "update-hook"]) => Err(Error::MethodNotAllowed("POST only")),
        (Method::GET, ["api", "openapi.json"]) => ok(&openapi::document()),
        (Method::GET, ["api", "projects"]) => projects::list(s, h),
        (Method::GET, ["api", "projects", p, "events"]) => projects::events(s, h, p, &q),
        (Method::GET, ["api", "events", id]) => events::get(s, h, id, &q),
        (Method::GET, ["api", "events", id, "tests"]) => test_results::of_event(s, h, id),
        (Method::GET, ["api", "tasks", id, "tests"]) => test_results::of_task(s, h, id),
        (Method::GET, ["api", "projects", p, "tests"]) => test_results::history(s, h, p, &q),
        (Method::DELETE, ["api", "events", id]) => events::delete(s, h, id),
        (Method::POST, ["api", "events", id, "rebuild"]) => events::rebuild(s, h, id, None).await,
        (Method::POST, ["api", "events", id, "again"]) => events::again(s, h, id).await,
        (Method::GET, ["api", "tasks", id]) => tasks::get(s, h, id),
        (Method::GET, ["api", "tasks", id, "log"]) => tasks::log(s, h, id, &q),
        (Method::GET, ["api", "tasks", id, "log", "raw"]) => tasks::log_raw(s, h, id),
        (Method::GET, ["api", "tasks", id, "artifacts", name @ ..]) if !name.is_empty() => {
            tasks::artifact_bytes(s, h, id, &name.join("/"))
        }
        (Method::POST, ["api", "tasks", id, "rebuild"]) => match event_of_task(id) {
            Some(ev) => events::rebuild(s, h, ev, Some(id)).await,
            None => Err(Error::NotFound("no such task")),
        },
        (Method::POST, ["api", "tasks", id, "cancel"]) => tasks::cancel(s, h, id),
        (Method::GET, ["api", "builders"]) => builders::list(s, h),
        (Method::GET, ["metrics"]) => metrics(s, h),
        _ => Err(Error::NotFound("not found")),
    };
    res.unwrap_or_else(Error::into_response)
}
