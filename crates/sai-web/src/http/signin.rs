//! Sign-in: the form (with its pre-session CSRF cookie), the POST that
//! checks the password under the failed-attempt limiter and issues the
//! session cookie, the safe local path to go to afterwards, and signing
//! out.

use std::sync::Arc;
use std::time::Instant;

use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::Request;
use super::client::{client_ip, cookie_names, same_origin, secure_context};
use super::request::form;
use super::respond::{page, plain, redirect};
use crate::App;
use crate::pages::{self, PageCtx};
use crate::session::{self, Session};

/// A safe local path to go to after sign-in: absolute, one leading slash,
/// no scheme or backslash tricks. Anything else goes to `/`.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.contains("://")
        && next.chars().all(|c| !c.is_control());
    if ok { next } else { "/" }
}

pub(super) fn signin_form(
    app: &App,
    req: &Request,
    ctx: &PageCtx,
    error: Option<&str>,
) -> Response {
    let secure = secure_context(app, &req.headers, req.peer);
    let (_, pre_name) = cookie_names(secure);
    let pre = session::random_token();
    let next = safe_next(req.query.get("next").map(String::as_str).unwrap_or("/")).to_string();
    let mut r = page(
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        pages::signin(ctx, &pre, &next, error),
    );
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(pre_name, &pre, secure, 3600)) {
        r.headers_mut().append("set-cookie", v);
    }
    r
}

pub(super) async fn signin(app: &Arc<App>, req: &Request, ctx: &PageCtx<'_>) -> Response {
    let secure = secure_context(app, &req.headers, req.peer);
    let (name, pre_name) = cookie_names(secure);
    let f = form(req);
    let cookies = req.header("cookie");
    let pre = session::cookie(cookies, pre_name).unwrap_or("");
    let token = f.get("csrf").map(String::as_str).unwrap_or("");
    if !same_origin(&req.headers) || pre.is_empty() || !session::same_token(token, pre) {
        return plain(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: reload the sign-in page",
        );
    }
    let client = client_ip(app, req);
    if let Err(wait) = app.limiter.check(client, Instant::now()) {
        let mut r = signin_form(
            app,
            req,
            ctx,
            Some(&format!(
                "Too many failed sign-ins: try again in {} s.",
                wait.as_secs() + 1
            )),
        );
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return r;
    }
    let user = f.get("name").cloned().unwrap_or_default();
    let password = f.get("password").cloned().unwrap_or_default();
    let app2 = app.clone();
    let u2 = user.clone();
    let ok = tokio::task::spawn_blocking(move || {
        app2.users.read().expect("users lock").check(&u2, &password)
    })
    .await
    .unwrap_or(false);
    if !ok {
        app.limiter.failed(client, Instant::now());
        tracing::warn!(%client, user = %user, "failed sign-in");
        return signin_form(app, req, ctx, Some("Wrong user name or password."));
    }
    app.limiter.succeeded(client);
    let Some((tok, _)) = app.sessions.issue(&user) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not issue a session",
        );
    };
    tracing::info!(user = %user, "signed in");
    let next = safe_next(f.get("next").map(String::as_str).unwrap_or("/"));
    let mut r = redirect(next);
    let lifetime = app.sessions.lifetime().as_secs();
    for c in [
        session::set_cookie(name, &tok, secure, lifetime),
        session::set_cookie(pre_name, "", secure, 0),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append("set-cookie", v);
        }
    }
    r
}

/// End the session: its cookie is cleared (a POST with the session's CSRF
/// token, from this origin).
pub(super) fn signout(app: &App, req: &Request, session: Option<&Session>) -> Response {
    let Some(s) = session else {
        return redirect("/");
    };
    if !same_origin(&req.headers)
        || !session::same_token(
            form(req).get("csrf").map(String::as_str).unwrap_or(""),
            &s.csrf,
        )
    {
        return plain(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
    }
    let secure = secure_context(app, &req.headers, req.peer);
    let (name, _) = cookie_names(secure);
    let mut r = redirect("/");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(name, "", secure, 0)) {
        r.headers_mut().append("set-cookie", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/t/ABC"), "/t/ABC");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "evil",
            "/a\nb",
            "/x?u=http://e",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}
