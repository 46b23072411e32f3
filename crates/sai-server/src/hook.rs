//! Git hook intake: `POST /update-hook` (and `/sai/update-hook`).
//!
//! Accepts exactly what the original `hooks/sai.sh` sends: a
//! `multipart/form-data` body with one file part holding the notification
//! JSON plus a trailing newline, and `Authorization: sai sha256=<hex>` (also
//! `sha384`, `sha512`): an HMAC over the exact bytes of the file part, keyed
//! with the ASCII bytes of the configured secret. A plain
//! `application/json` body is accepted too (MAC over the whole body). Bytes
//! after the first JSON object are ignored.
//!
//! Order of checks: body size (413), content type (415), signature header
//! present and well formed (401), HMAC (403), project known (404), schema
//! and action (400), fields (400), `_`-branch rule (200, ignored), saifile
//! size and base64 (413/400), replay of a known hash (200, nothing new),
//! saifile parse and expansion (422, with `file:line:col`), store (500).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;

use crate::Server;
use crate::auth::{SigError, parse_hook_signature, verify_hook_signature};
use crate::store::NewEvent;

/// The notification's schema name.
pub const NOTIFICATION_SCHEMA: &str = "com-warmcat-sai-notification";

/// Failure of a hook request: HTTP status, short error, optional detail.
#[derive(Debug)]
pub struct HookError(pub StatusCode, pub String, pub Option<String>);

fn fail(status: StatusCode, error: impl Into<String>) -> HookError {
    HookError(status, error.into(), None)
}

#[derive(Deserialize)]
struct Repository {
    name: Option<String>,
    fetchurl: Option<String>,
}

#[derive(Deserialize)]
struct Notification {
    schema: Option<String>,
    action: Option<String>,
    repository: Option<Repository>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    hash: Option<String>,
    saifile_len: Option<u64>,
    saifile: Option<String>,
    sec: Option<serde_json::Value>,
}

/// Extract the notification bytes (the file part, or the whole JSON body).
pub async fn notification_bytes(
    content_type: Option<&str>,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, HookError> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(content_type.unwrap_or("")).map_err(|e| {
            fail(
                StatusCode::BAD_REQUEST,
                format!("bad multipart header: {e}"),
            )
        })?;
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut first: Option<bytes::Bytes> = None;
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")))?
        {
            let is_file = field.file_name().is_some();
            let data = field
                .bytes()
                .await
                .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")))?;
            if is_file {
                return Ok(data);
            }
            first.get_or_insert(data);
        }
        first.ok_or_else(|| fail(StatusCode::BAD_REQUEST, "multipart body has no part"))
    } else if ct.starts_with("application/json") || ct.is_empty() {
        Ok(body)
    } else {
        Err(fail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected multipart/form-data or application/json",
        ))
    }
}

/// Parse the first JSON object of `bytes`, ignoring what follows.
fn first_object(bytes: &[u8]) -> Result<Notification, serde_json::Error> {
    let mut it = serde_json::Deserializer::from_slice(bytes).into_iter::<Notification>();
    match it.next() {
        Some(r) => r,
        None => Err(serde::de::Error::custom("empty body")),
    }
}

fn valid_ref(r: &str) -> bool {
    r.starts_with("refs/")
        && r.len() <= 255
        && !r.contains("..")
        && r.bytes().all(|b| b.is_ascii_graphic())
}

fn valid_hash(h: &str) -> bool {
    (7..=64).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new random id of `n` bytes as uppercase hex.
pub fn new_id(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    hex::encode_upper(b)
}

/// Handle a hook request. Returns the status and JSON body.
pub async fn handle(
    server: &Arc<Server>,
    authorization: Option<&str>,
    content_type: Option<&str>,
    source_ip: Option<String>,
    body: bytes::Bytes,
) -> Result<(StatusCode, serde_json::Value), HookError> {
    let settings = &server.settings;
    let file = notification_bytes(content_type, body).await?;
    match parse_hook_signature(authorization) {
        Ok(_) => {}
        Err(SigError::Missing) => {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "missing Authorization: sai shaNNN=<hex> header",
            ));
        }
        Err(_) => {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "malformed Authorization header: expected sai sha256|sha384|sha512=<hex>",
            ));
        }
    }
    let parsed = first_object(&file);
    let project = parsed
        .as_ref()
        .ok()
        .and_then(|n| n.repository.as_ref())
        .and_then(|r| r.name.clone());
    let (key, known) = settings.hook_key(project.as_deref());
    let Some(key) = key else {
        return Err(fail(StatusCode::NOT_FOUND, "unknown project"));
    };
    match verify_hook_signature(authorization, key, &file) {
        Ok(()) => {}
        Err(SigError::Mismatch) => return Err(fail(StatusCode::FORBIDDEN, "signature mismatch")),
        Err(_) => {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "malformed Authorization header",
            ));
        }
    }
    let n = parsed.map_err(|e| {
        HookError(
            StatusCode::BAD_REQUEST,
            "notification is not valid JSON".into(),
            Some(e.to_string()),
        )
    })?;
    if !known {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("unknown project {:?}", project.unwrap_or_default()),
        ));
    }
    if n.schema.as_deref() != Some(NOTIFICATION_SCHEMA) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("schema must be {NOTIFICATION_SCHEMA:?}"),
        ));
    }
    if n.action.as_deref() != Some("repo-update") {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "action must be \"repo-update\"",
        ));
    }
    let repo = n
        .repository
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "repository missing"))?;
    let project = repo.name.unwrap_or_default();
    if !sai_core::config::server::valid_project_name(&project) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "repository.name must be 1-64 characters of A-Z a-z 0-9 - _ .",
        ));
    }
    let fetch_url = repo.fetchurl.unwrap_or_default();
    if fetch_url.is_empty() || fetch_url.len() > 1024 || fetch_url.chars().any(|c| c.is_control()) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "repository.fetchurl missing or invalid",
        ));
    }
    let git_ref = n.git_ref.unwrap_or_default();
    if !valid_ref(&git_ref) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "ref must be refs/... (at most 255 printable characters)",
        ));
    }
    let hash = n.hash.unwrap_or_default();
    if !valid_hash(&hash) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "hash must be 7-64 hex characters",
        ));
    }
    if let Some(branch) = git_ref.strip_prefix("refs/heads/")
        && branch.starts_with('_')
    {
        tracing::info!(%project, %git_ref, "ignoring push to a branch starting with _");
        return Ok((
            StatusCode::OK,
            json!({"ignored": format!("branch {branch:?} starts with '_'")}),
        ));
    }
    let b64 = n.saifile.unwrap_or_default();
    if b64.is_empty() {
        return Err(fail(StatusCode::BAD_REQUEST, "saifile missing"));
    }
    if b64.len() as u64 > settings.config.max_saifile_base64 {
        return Err(fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "saifile is {} base64 characters, limit {}",
                b64.len(),
                settings.config.max_saifile_base64
            ),
        ));
    }
    if let Some(l) = n.saifile_len
        && l != b64.len() as u64
    {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!(
                "saifile_len {l} does not match the saifile's {} characters",
                b64.len()
            ),
        ));
    }
    let saifile = base64::engine::general_purpose::STANDARD
        .decode(b64.trim_end())
        .map_err(|e| {
            HookError(
                StatusCode::BAD_REQUEST,
                "saifile is not base64".into(),
                Some(e.to_string()),
            )
        })?;
    if let Some(existing) = server
        .store
        .event_by_hash(&project, &hash)
        .map_err(internal)?
    {
        return Ok((
            StatusCode::OK,
            json!({"event_id": existing, "duplicate": true}),
        ));
    }
    let source = format!("{project}@{}:.sai.json", &hash[..hash.len().min(12)]);
    let parsed = sai_core::saifile::parse(&source, &saifile).map_err(|e| {
        HookError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "saifile does not parse".into(),
            Some(e.to_string()),
        )
    })?;
    for w in parsed.warnings() {
        tracing::warn!(%project, "{source}: {w}");
    }
    let specs = parsed.expand(Some(&git_ref)).map_err(|e| {
        HookError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "saifile does not expand".into(),
            Some(e.to_string()),
        )
    })?;
    let id = new_id(16);
    let ev = NewEvent {
        id: id.clone(),
        project: project.clone(),
        git_ref: git_ref.clone(),
        hash,
        fetch_url,
        source_ip,
        sec: n
            .sec
            .is_some_and(|v| !v.is_null() && v != json!(false) && v != json!(0)),
    };
    let fault = cfg!(debug_assertions)
        && std::env::var(crate::FAULT_ENV).is_ok_and(|v| v == "abort-after-event-db");
    let hash = ev.hash.clone();
    let srv = server.clone();
    let ntasks = specs.len();
    let created = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let prev = srv.store.previous_failures(&ev.project, &ev.git_ref)?;
        let tasks: Vec<_> = specs
            .into_iter()
            .map(|t| {
                let prio = prev.contains(&(t.configuration.clone(), t.platform.clone()));
                (format!("{}{}", ev.id, new_id(16)), t, prio)
            })
            .collect();
        srv.store.create_event(&ev, &tasks, fault)
    })
    .await
    .map_err(|e| internal(anyhow::anyhow!(e)))?
    .map_err(internal)?;
    if !created {
        let existing = server
            .store
            .event_by_hash(&project, &hash)
            .map_err(internal)?;
        return Ok((
            StatusCode::OK,
            json!({"event_id": existing, "duplicate": true}),
        ));
    }
    let row = server
        .store
        .event(&id)
        .map_err(internal)?
        .ok_or_else(|| internal(anyhow::anyhow!("event vanished")))?;
    let db = server
        .store
        .event_db(&id)
        .map_err(internal)?
        .ok_or_else(|| internal(anyhow::anyhow!("event db vanished")))?;
    let ready = Instant::now() + Duration::from_millis(settings.config.dispatch_grace_ms);
    server
        .sched()
        .add_event(&server.store, row, db, ready, false)
        .map_err(internal)?;
    server.kick();
    tracing::info!(event = %id, %project, %git_ref, tasks = ntasks, "push accepted");
    server
        .changes
        .publish(crate::changes::Change::EventCreated {
            event: id.clone(),
            project: project.clone(),
        });
    let r = &settings.config.retention;
    if r.keep_events_per_project.is_some() || r.max_age_days.is_some() {
        let srv = server.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = srv.retention_sweep() {
                tracing::error!(cause = %e, "retention sweep");
            }
        });
    }
    Ok((StatusCode::OK, json!({"event_id": id, "tasks": ntasks})))
}

fn internal(e: anyhow::Error) -> HookError {
    tracing::error!(cause = %e, "hook: internal error");
    HookError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error".into(),
        None,
    )
}
