//! `GET /api/projects`, `GET /api/projects/{name}/events`.

use sai_core::api::Project;
use warp::http::HeaderMap;

use super::{Query, Res, ok, query_int, user};
use crate::error::Error;
use crate::state::Server;

/// Response header naming the `cursor` of the next page of a listing.
pub const NEXT_CURSOR: &str = "x-sai-next-cursor";

/// Every project with its number of events. Anonymous callers see only
/// projects with public events, and only those events' count and URL.
pub fn list(server: &Server, headers: &HeaderMap) -> Res {
    let rows = if user(server, headers)?.is_some() {
        server.store.projects()?
    } else {
        server.store.public_projects()?
    };
    let v: Vec<Project> = rows
        .into_iter()
        .map(|p| Project {
            name: p.name,
            fetch_url: p.fetch_url,
            created: p.created,
            event_count: p.event_count,
        })
        .collect();
    ok(&v)
}

/// A project's events, newest first (private ones with a user token only):
/// one page of `limit` (default 50, at most `limits.max_page`) from
/// `cursor`; a full page carries the next cursor in `x-sai-next-cursor`.
pub fn events(server: &Server, headers: &HeaderMap, p: &str, q: &Query) -> Res {
    let authed = user(server, headers)?.is_some();
    let visible = if authed {
        server.store.project_exists(p)?
    } else {
        server.store.project_is_public(p)?
    };
    if !visible {
        return Err(Error::NotFound("no such project"));
    }
    let max = i64::from(server.settings.config.limits.max_page);
    let limit = query_int(q, "limit", 50).clamp(1, max);
    let before = match q.get("cursor") {
        Some(c) => c.parse::<i64>().map_err(|_| {
            Error::bad_request(
                "cursor must be an x-sai-next-cursor of a previous page",
                None,
            )
        })?,
        None => i64::MAX,
    };
    let rows = server.store.events_of(p, limit, before, authed)?;
    let v: Vec<_> = rows.iter().map(sai_core::api::Event::from).collect();
    let mut res = ok(&v)?;
    if rows.len() as i64 == limit
        && let Some(last) = rows.last()
    {
        res.headers_mut()
            .insert(NEXT_CURSOR, warp::http::HeaderValue::from(last.seq));
    }
    Ok(res)
}
