//! Status badges (`/status/{project}.svg`, `/status/{project}/{branch}.svg`):
//! the state of the newest public event, as SVG.

use std::sync::Arc;

use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::respond::plain;
use crate::upstream::{UpstreamError, Viewer};
use crate::{App, badge};

pub(super) async fn status_badge(app: &Arc<App>, rest: &[&str]) -> Response {
    let joined = rest.join("/");
    let Some(spec) = joined.strip_suffix(".svg") else {
        return plain(StatusCode::NOT_FOUND, "badges end in .svg");
    };
    let (project, branch) = match spec.split_once('/') {
        Some((p, b)) => (p.to_string(), Some(b.to_string())),
        None => (spec.to_string(), None),
    };
    // Badges are public: only what an anonymous visitor may see counts.
    let status = match app.upstream.events(&project, 50, &Viewer::Anonymous).await {
        Ok(events) => badge::Status::of(badge::latest(&events, branch.as_deref())),
        Err(UpstreamError::NotFound) => badge::Status::Unknown,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let mut r = Response::new(badge::svg(status).into());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("image/svg+xml"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}
