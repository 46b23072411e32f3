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
//! `timestamp` outside the replay window (403), saifile size and base64
//! (413/400), a nonce seen before whose commit has no event (409: a replay
//! after deletion or retention), replay of a known hash (200, nothing new),
//! saifile parse and expansion (422, with `file:line:col`), the caps of
//! `limits` on the expanded tasks (422, with the numbers), store (500).

use std::sync::Arc;

use sai_core::api::HookReply;
use sai_core::notification::{self, Received};
use sai_core::task::{Event, EventId, EventState};

use crate::error::Error;
use crate::state::Server;
use crate::store::now_ms;

/// Extract the notification bytes (the file part, or the whole JSON body).
pub async fn notification_bytes(
    content_type: Option<&str>,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, Error> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(content_type.unwrap_or(""))
            .map_err(|e| Error::bad_request(format!("bad multipart header: {e}"), None))?;
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut first: Option<bytes::Bytes> = None;
        let bad_body =
            |e: multer::Error| Error::bad_request(format!("bad multipart body: {e}"), None);
        while let Some(field) = mp.next_field().await.map_err(bad_body)? {
            let is_file = field.file_name().is_some();
            let data = field.bytes().await.map_err(bad_body)?;
            if is_file {
                return Ok(data);
            }
            first.get_or_insert(data);
        }
        first.ok_or_else(|| Error::bad_request("multipart body has no part", None))
    } else if ct.starts_with("application/json") || ct.is_empty() {
        Ok(body)
    } else {
        Err(Error::UnsupportedMediaType)
    }
}

/// 16 random bytes, for event and task ids.
pub(crate) fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand::fill(&mut b[..]);
    b
}

/// Handle a hook request.
pub async fn handle(
    server: &Arc<Server>,
    authorization: Option<&str>,
    content_type: Option<&str>,
    source_ip: Option<String>,
    body: bytes::Bytes,
) -> Result<HookReply, Error> {
    let settings = &server.settings;
    let file = notification_bytes(content_type, body).await?;
    notification::parse_signature(authorization).map_err(Error::Signature)?;
    let parsed = Received::parse(&file);
    let project = parsed
        .as_ref()
        .ok()
        .and_then(|n| n.project().map(str::to_string));
    let (key, known) = settings.hook_key(project.as_deref());
    let Some(key) = key else {
        return Err(Error::UnknownProject(None));
    };
    notification::verify(authorization, key, &file).map_err(Error::Signature)?;
    let n = parsed.map_err(|e| Error::NotJson(e.to_string()))?;
    if !known {
        return Err(Error::UnknownProject(Some(project.unwrap_or_default())));
    }
    let n = n.check().map_err(Error::Field)?;
    if let Some(why) = n.ignored() {
        tracing::info!(project = %n.project, git_ref = %n.git_ref, "ignoring push to a branch starting with _");
        return Ok(HookReply::Ignored { ignored: why });
    }
    let limits = &settings.config.limits;
    let expires = notification::replay_window(
        n.timestamp,
        now_ms() / 1000,
        limits.hook_window_secs,
        limits.hook_require_timestamp,
    )
    .map_err(Error::Replay)?;
    let saifile = n
        .saifile(settings.config.max_saifile_base64)
        .map_err(Error::Field)?;
    let fresh = server
        .store
        .remember_nonce(&n.nonce, expires.map(|s| s.saturating_mul(1000)))?;
    let existing = server
        .store
        .event_by_hash(&n.project, &n.git_ref, &n.hash)?;
    if !fresh && existing.is_none() {
        tracing::warn!(project = %n.project, git_ref = %n.git_ref, "replayed notification refused");
        return Err(Error::Conflict(
            "notification replayed: its nonce was used before (send a new notification)".into(),
        ));
    }
    if let Some(existing) = existing {
        return Ok(HookReply::Duplicate {
            event_id: Some(existing),
            duplicate: true,
        });
    }
    let source = format!(
        "{}@{}:.sai.json",
        n.project,
        &n.hash[..n.hash.len().min(12)]
    );
    let parsed = sai_core::saifile::parse(&source, &saifile).map_err(|e| Error::Saifile {
        stage: "parse",
        detail: e.to_string(),
    })?;
    let mut warnings = Vec::new();
    for w in parsed.warnings() {
        tracing::warn!(project = %n.project, "{source}: {w}");
        warnings.push(format!("{source}:{w}"));
    }
    let specs = parsed
        .expand(Some(&n.git_ref))
        .map_err(|e| Error::Saifile {
            stage: "expand",
            detail: e.to_string(),
        })?;
    crate::push_limits::check(&specs, limits)?;
    let id = EventId::from_bytes(random16());
    let ev = Event::new(
        id.clone(),
        &n.project,
        &n.git_ref,
        &n.hash,
        &n.fetch_url,
        source_ip,
        n.sec,
    );
    let fault = cfg!(debug_assertions)
        && std::env::var(crate::state::FAULT_ENV).is_ok_and(|v| v == "abort-after-event-db");
    let srv = server.clone();
    let ntasks = specs.len();
    let created = tokio::task::spawn_blocking(move || {
        let prev = srv.store.previous_failures(&ev.project, &ev.git_ref)?;
        let tasks: Vec<_> = specs
            .into_iter()
            .map(|t| {
                let prio = prev.contains(&(t.configuration.clone(), t.platform.clone()));
                (ev.id.task(random16()), t, prio)
            })
            .collect();
        srv.store.create_event(ev, tasks, fault)
    })
    .await??;
    let Some(created) = created else {
        return Ok(HookReply::Duplicate {
            event_id: server
                .store
                .event_by_hash(&n.project, &n.git_ref, &n.hash)?,
            duplicate: true,
        });
    };
    // Queued before the scheduler sees the event, so that an event ending
    // at once reports its end after this.
    server.outbox.note(&id, EventState::Waiting);
    server.schedule_created(created);
    tracing::info!(event = %id, project = %n.project, git_ref = %n.git_ref, tasks = ntasks, "push accepted");
    server
        .changes
        .publish(crate::changes::Change::EventCreated {
            event: id.to_string(),
            project: n.project.clone(),
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
    Ok(HookReply::Accepted {
        event_id: id.to_string(),
        tasks: ntasks,
        warnings,
    })
}
