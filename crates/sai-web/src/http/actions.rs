//! Privileged POSTs (rebuild or cancel a task, rebuild or delete an
//! event): checked against the session and its CSRF token, then forwarded
//! to sai-server in the user's name.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;

use super::Request;
use super::client::same_origin;
use super::request::form;
use super::respond::{plain, redirect};
use crate::App;
use crate::session::{self, Session};
use crate::upstream::{Action, UpstreamError};

pub(super) async fn privileged(
    app: &Arc<App>,
    req: &Request,
    session: Option<&Session>,
    action: Action,
) -> Response {
    let Some(s) = session else {
        return plain(StatusCode::UNAUTHORIZED, "sign in first");
    };
    let token = form(req).get("csrf").cloned().unwrap_or_default();
    if !same_origin(&req.headers) || !session::same_token(&token, &s.csrf) {
        return plain(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
    }
    let back = match &action {
        Action::RebuildTask(t) | Action::CancelTask(t) => format!("/t/{t}"),
        Action::RebuildEvent(e) => format!("/e/{e}"),
        Action::DeleteEvent(_) => "/".to_string(),
    };
    match app.upstream.act(&action, &s.user).await {
        Ok(()) => {
            tracing::info!(user = %s.user, ?action, "action forwarded");
            redirect(&back)
        }
        Err(UpstreamError::NotFound) => plain(StatusCode::NOT_FOUND, "no such task or event"),
        Err(UpstreamError::Status(code, msg)) => plain(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            &format!("sai-server refused: {msg}"),
        ),
        Err(e) => plain(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}
