//! `GET /api/projects`, `GET /api/projects/{name}/events`.

use sai_core::api::Project;
use warp::http::HeaderMap;

use super::{Query, Res, ok, query_int, user};
use crate::Server;
use crate::error::Error;

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

/// A project's events, newest first (private ones with a user token only).
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
    let limit = query_int(q, "limit", 50).clamp(1, 1000);
    let rows = server.store.events_of(p, limit)?;
    let v: Vec<_> = rows
        .iter()
        .filter(|e| authed || !e.sec)
        .map(super::events::view)
        .collect();
    ok(&v)
}
