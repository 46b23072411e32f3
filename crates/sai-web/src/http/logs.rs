//! The log endpoints of a task: rendered lines and search (JSON, for the
//! log viewer) and the raw log with HTTP `Range` support.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use warp::Reply;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::Request;
use super::request::Query;
use super::respond::{json_reply, plain};
use crate::App;
use crate::logview::{self, Needle};
use crate::upstream::{UpstreamError, Viewer};

fn num(q: &Query, k: &str) -> Option<u64> {
    q.get(k).and_then(|v| v.parse().ok())
}

/// A task and the size of its log now.
async fn sized(
    app: &Arc<App>,
    viewer: &Viewer,
    id: &str,
) -> Result<(crate::upstream::Task, logview::LogSize), UpstreamError> {
    tokio::try_join!(
        app.upstream.task(id, viewer),
        logview::size(&app.upstream, id, viewer)
    )
}

fn upstream_json_error(e: UpstreamError) -> Response {
    match e {
        UpstreamError::NotFound => {
            json_reply(StatusCode::NOT_FOUND, &json!({"error": "no such task"}))
        }
        e => json_reply(StatusCode::BAD_GATEWAY, &json!({"error": e.to_string()})),
    }
}

pub(super) async fn lines(app: &Arc<App>, viewer: &Viewer, id: &str, q: &Query) -> Response {
    let (t, size) = match sized(app, viewer, id).await {
        Ok(x) => x,
        Err(e) => return upstream_json_error(e),
    };
    let total = size.lines;
    let (from, count) = match num(q, "tail") {
        Some(n) => (
            total.saturating_sub(n.min(logview::MAX_WINDOW)),
            n.min(logview::MAX_WINDOW),
        ),
        None => (num(q, "from").unwrap_or(0), num(q, "count").unwrap_or(100)),
    };
    let epoch_us = t.started.unwrap_or(t.created) * 1000;
    match logview::window(&app.upstream, id, viewer, &size, from, count, epoch_us).await {
        Ok(rows) => json_reply(
            StatusCode::OK,
            &json!({"lines": total, "complete_lines": size.newlines, "bytes": size.bytes, "complete": t.state.is_terminal(), "rows": rows}),
        ),
        Err(e) => upstream_json_error(e),
    }
}

pub(super) async fn search(app: &Arc<App>, viewer: &Viewer, id: &str, q: &Query) -> Response {
    let needle = if q.contains_key("error") {
        Needle::Error
    } else {
        match q.get("q").map(|s| s.trim().to_lowercase()) {
            Some(s) if !s.is_empty() => Needle::Text(s),
            _ => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "give q=<text> or error=1"}),
                );
            }
        }
    };
    let (_, size) = match sized(app, viewer, id).await {
        Ok(x) => x,
        Err(e) => return upstream_json_error(e),
    };
    let from = num(q, "from").unwrap_or(0);
    match logview::search(&app.upstream, id, viewer, &size, from, &needle).await {
        Ok(line) => json_reply(StatusCode::OK, &json!({"line": line})),
        Err(e) => upstream_json_error(e),
    }
}

/// A `Range` header that cannot be satisfied (answer 416).
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parse `Range: bytes=a-b`, `a-` or `-n` against `total`: the inclusive
/// byte range, `None` to send everything.
pub fn parse_range(header: Option<&str>, total: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 {
                return Err(Unsatisfiable);
            }
            (total.saturating_sub(n), total.saturating_sub(1))
        }
        (a, "") => (
            a.parse().map_err(|_| Unsatisfiable)?,
            total.saturating_sub(1),
        ),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| Unsatisfiable)?;
            let b: u64 = b.parse().map_err(|_| Unsatisfiable)?;
            if b < a {
                return Err(Unsatisfiable);
            }
            (a, b.min(total.saturating_sub(1)))
        }
    };
    if start >= total {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

pub(super) async fn raw_log(app: &Arc<App>, viewer: &Viewer, id: &str, req: &Request) -> Response {
    let t = match app.upstream.task(id, viewer).await {
        Ok(t) => t,
        Err(UpstreamError::NotFound) => return plain(StatusCode::NOT_FOUND, "no such task"),
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let total = crate::upstream::log_len(&t);
    let (start, end, status) = match parse_range(req.header("range"), total) {
        Ok(Some((a, b))) => (a, b + 1, StatusCode::PARTIAL_CONTENT),
        Ok(None) => (0, total, StatusCode::OK),
        Err(Unsatisfiable) => {
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                r.headers_mut().insert("content-range", v);
            }
            r.headers_mut()
                .insert(LOG_COMPLETE, log_completeness(t.state.is_terminal()));
            return r;
        }
    };
    let up = app.upstream.clone();
    let (id2, viewer2) = (id.to_string(), viewer.clone());
    let chunks = futures_util::stream::unfold(start, move |pos| {
        let (up, id, viewer) = (up.clone(), id2.clone(), viewer2.clone());
        async move {
            if pos >= end {
                return None;
            }
            match up
                .log_raw(&id, pos, (end - pos).min(4 << 20), &viewer)
                .await
            {
                Ok(b) if !b.is_empty() => {
                    let take = b.len().min((end - pos) as usize);
                    Some((
                        Ok::<Bytes, std::io::Error>(b.slice(..take)),
                        pos + take as u64,
                    ))
                }
                Ok(_) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), end)),
            }
        }
    });
    let mut r = warp::reply::stream(chunks).into_response();
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert("content-length", v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1))
    {
        h.insert("content-range", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{}.log\"", &id[32..])) {
        h.insert("content-disposition", v);
    }
    h.insert(
        LOG_COMPLETE,
        log_completeness(t.state.is_terminal() && end == total),
    );
    r
}

/// Says, as sai-server's raw log does, whether the bytes reach the end of
/// a finished task's log (`complete`) or more may come (`growing`).
const LOG_COMPLETE: &str = "x-sai-log-complete";

fn log_completeness(complete: bool) -> HeaderValue {
    HeaderValue::from_static(if complete { "complete" } else { "growing" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(Unsatisfiable));
    }
}
