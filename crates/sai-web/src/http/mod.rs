//! Routes. Every response carries a strict Content-Security-Policy (no
//! inline script or style), and every POST must come from this origin and
//! echo the CSRF token of the session (or of the sign-in form).
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/` | overview |
//! | GET | `/e/{event}` | event matrix |
//! | GET | `/t/{task}` | task page with log viewer |
//! | GET | `/t/{task}/lines?from=N&count=M` or `?tail=M` | rendered log lines (JSON) |
//! | GET | `/t/{task}/search?q=..&from=N` or `?error=1` | next matching line |
//! | GET | `/t/{task}/log.txt` | raw log, HTTP `Range` supported |
//! | GET | `/t/{task}/artifacts/{path}` | artifact download (its relative path) |
//! | GET | `/builders` | builders |
//! | GET | `/status/{project}.svg`, `/status/{project}/{branch}.svg` | badges |
//! | GET/POST | `/signin`, POST `/signout` | sessions |
//! | POST | `/t/{task}/rebuild`, `/t/{task}/cancel`, `/e/{event}/rebuild`, `/e/{event}/delete` | privileged |
//! | GET | `/ws` | the page's websocket |
//! | GET | `/assets/{name}` | embedded assets |

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use maud::Markup;
use serde_json::json;
use warp::Filter;
use warp::Reply;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;

use crate::logview::{self, Needle};
use crate::pages::{self, PageCtx};
use crate::session::{self, Session};
use crate::upstream::{Action, UpstreamError, Viewer, is_hex_id};
use crate::{App, badge};

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest sign-in or action form body.
const MAX_FORM: usize = 8 * 1024;

/// All routes.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    let a1 = app.clone();
    let ws = warp::path("ws")
        .and(warp::path::end())
        .and(sai_https::websocket::upgrade())
        .and(warp::header::headers_cloned())
        .map(
            move |ws: sai_https::websocket::Upgrade, headers: HeaderMap| {
                let app = a1.clone();
                if !same_origin(&headers) {
                    return plain(StatusCode::FORBIDDEN, "cross-origin websocket refused");
                }
                let viewer = request_session(&app, &headers)
                    .map(|s| Viewer::User(s.user))
                    .unwrap_or(Viewer::Anonymous);
                ws.on_upgrade(64 * 1024, move |socket| {
                    crate::live::serve_socket(app, viewer, socket)
                })
            },
        );
    let a2 = app;
    let http = sai_https::request_parts().then(
        move |method: Method,
              path: warp::path::FullPath,
              query: String,
              headers: HeaderMap,
              peer: Option<SocketAddr>,
              body| {
            let app = a2.clone();
            async move {
                let body = read_body(body, MAX_FORM).await;
                let req = Request {
                    method,
                    path: path.as_str().to_string(),
                    query: query_map(&query),
                    headers,
                    peer,
                    body,
                };
                let mut resp = handle(&app, req).await;
                secure_headers(resp.headers_mut());
                resp
            }
        },
    );
    ws.or(http)
        .unify()
        .recover(|_r: warp::Rejection| async {
            let mut r = plain(StatusCode::BAD_REQUEST, "bad request");
            secure_headers(r.headers_mut());
            Ok::<_, std::convert::Infallible>(r)
        })
        .unify()
}

async fn read_body<S, B>(body: S, limit: usize) -> Option<Bytes>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send,
    B: bytes::Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.ok()?;
        while chunk.has_remaining() {
            let c = chunk.chunk();
            if buf.len() + c.len() > limit {
                return None;
            }
            buf.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Some(Bytes::from(buf))
}

/// One HTTP request, read.
pub struct Request {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    /// `None` when over the size limit or unreadable.
    body: Option<Bytes>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decode `application/x-www-form-urlencoded` text.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut r = Response::new(text.to_string().into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn page(status: StatusCode, m: Markup) -> Response {
    let mut r = Response::new(m.into_string().into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn json_reply(status: StatusCode, v: &serde_json::Value) -> Response {
    let mut r = Response::new(v.to_string().into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &str) -> Response {
    let mut r = Response::new(Vec::<u8>::new().into());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert("location", v);
    }
    r
}

/// Whether cookies for this request may be `Secure` (and `__Host-`).
fn secure_context(app: &App, req_headers: &HeaderMap, peer: Option<SocketAddr>) -> bool {
    if app.settings.public_https {
        return true;
    }
    let from_proxy = peer.is_some_and(|p| trusted_proxy(app, p.ip()));
    if from_proxy
        && req_headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
    {
        return true;
    }
    let host = req_headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

fn trusted_proxy(app: &App, ip: IpAddr) -> bool {
    let Some(tp) = &app.settings.config.trusted_proxy else {
        return false;
    };
    tp.addresses.iter().any(|a| match a.split_once('/') {
        None => a.parse::<IpAddr>().is_ok_and(|x| x == ip),
        Some((net, bits)) => match (net.parse::<IpAddr>(), bits.parse::<u32>(), ip) {
            (Ok(IpAddr::V4(n)), Ok(b), IpAddr::V4(i)) if b <= 32 => {
                let mask = if b == 0 { 0 } else { u32::MAX << (32 - b) };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (Ok(IpAddr::V6(n)), Ok(b), IpAddr::V6(i)) if b <= 128 => {
                let mask = if b == 0 { 0 } else { u128::MAX << (128 - b) };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        },
    })
}

/// The client address (the forwarded one only from a trusted proxy).
fn client_ip(app: &App, req: &Request) -> IpAddr {
    let peer = req
        .peer
        .map(|p| p.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if trusted_proxy(app, peer)
        && let Some(tp) = &app.settings.config.trusted_proxy
        && let Some(fwd) = req.header(&tp.header.to_ascii_lowercase())
        && let Some(ip) = fwd.split(',').next().and_then(|s| s.trim().parse().ok())
    {
        return ip;
    }
    peer
}

fn cookie_names(secure: bool) -> (&'static str, &'static str) {
    if secure {
        (session::SECURE_COOKIE, session::SECURE_PRE_COOKIE)
    } else {
        (session::PLAIN_COOKIE, session::PLAIN_PRE_COOKIE)
    }
}

/// The valid session of a request, if any (of a user who still exists).
fn request_session(app: &App, headers: &HeaderMap) -> Option<Session> {
    let cookies = headers.get("cookie").and_then(|v| v.to_str().ok());
    [session::SECURE_COOKIE, session::PLAIN_COOKIE]
        .iter()
        .filter_map(|n| session::cookie(cookies, n))
        .find_map(|tok| app.sessions.open(tok))
        .filter(|s| app.users.read().expect("users lock").exists(&s.user))
}

/// The browser says this request comes from one of our pages: fetch
/// metadata first, else `Origin` matching `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (get("origin"), get("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, h)| h.eq_ignore_ascii_case(host)),
        // Non-browser clients send neither; the CSRF token still applies.
        (None, _) => true,
        _ => false,
    }
}

fn form(req: &Request) -> HashMap<String, String> {
    req.body
        .as_ref()
        .map(|b| query_map(&String::from_utf8_lossy(b)))
        .unwrap_or_default()
}

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

async fn handle(app: &Arc<App>, req: Request) -> Response {
    let session = request_session(app, &req.headers);
    let viewer = session
        .as_ref()
        .map(|s| Viewer::User(s.user.clone()))
        .unwrap_or(Viewer::Anonymous);
    let ctx = PageCtx {
        session: session.as_ref(),
        now_ms: crate::now_ms(),
    };
    let path = req.path.clone();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || {
        page(
            StatusCode::NOT_FOUND,
            pages::message(
                &ctx,
                "Not found",
                "There is nothing here, or it is not visible to you.",
            ),
        )
    };
    let upstream_failed = |e: UpstreamError| match e {
        UpstreamError::NotFound => not_found(),
        e => page(
            StatusCode::BAD_GATEWAY,
            pages::message(&ctx, "sai-server unavailable", &e.to_string()),
        ),
    };
    match (req.method.clone(), segs.as_slice()) {
        (Method::GET, [""]) => {
            let data = crate::overview_data(app, &viewer).await;
            let builders = app.upstream.builders(&viewer).await;
            match (data, builders) {
                (Ok(d), Ok(b)) => page(StatusCode::OK, pages::overview(&ctx, &d, &b)),
                (Err(e), _) | (_, Err(e)) => upstream_failed(e),
            }
        }
        (Method::GET, ["e", id]) => match app.upstream.event_all(id, &viewer).await {
            Ok(d) => {
                let tests = app.upstream.event_tests(id, &viewer).await.ok();
                page(StatusCode::OK, pages::event(&ctx, &d, tests.as_ref()))
            }
            Err(e) => upstream_failed(e),
        },
        (Method::GET, ["t", id]) => match app.upstream.task(id, &viewer).await {
            Ok(t) => {
                let builders = app.upstream.builders(&viewer).await.unwrap_or_default();
                let tests = app.upstream.task_tests(id, &viewer).await.ok();
                page(
                    StatusCode::OK,
                    pages::task(&ctx, &t, &builders, tests.as_ref()),
                )
            }
            Err(e) => upstream_failed(e),
        },
        (Method::GET, ["t", id, "lines"]) => lines(app, &viewer, id, &req.query).await,
        (Method::GET, ["t", id, "search"]) => search(app, &viewer, id, &req.query).await,
        (Method::GET, ["t", id, "log.txt"]) => raw_log(app, &viewer, id, &req).await,
        (Method::GET, ["t", id, "artifacts", path @ ..]) if !path.is_empty() => {
            artifact(app, &viewer, id, &path.join("/")).await
        }
        (Method::GET, ["builders"]) => match app.upstream.builders(&viewer).await {
            Ok(b) => page(StatusCode::OK, pages::builders(&ctx, &b)),
            Err(e) => upstream_failed(e),
        },
        (Method::GET, ["status", rest @ ..]) => status_badge(app, rest).await,
        (Method::GET, ["assets", name]) => match crate::assets::get(name) {
            Some(a) => {
                let mut r = Response::new(a.body.clone().into());
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static(a.content_type));
                r.headers_mut().insert(
                    "cache-control",
                    HeaderValue::from_static("public, max-age=3600"),
                );
                r
            }
            None => plain(StatusCode::NOT_FOUND, "no such asset"),
        },
        (Method::GET, ["signin"]) => signin_form(app, &req, &ctx, None),
        (Method::POST, ["signin"]) => signin(app, &req, &ctx).await,
        (Method::POST, ["signout"]) => {
            let Some(s) = session.as_ref() else {
                return redirect("/");
            };
            if !same_origin(&req.headers)
                || !session::same_token(
                    form(&req).get("csrf").map(String::as_str).unwrap_or(""),
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
        (Method::POST, [kind @ ("t" | "e"), id, op]) => {
            let action = match (*kind, *op) {
                ("t", "rebuild") if is_hex_id(id, 64) => Action::RebuildTask(id.to_string()),
                ("t", "cancel") if is_hex_id(id, 64) => Action::CancelTask(id.to_string()),
                ("e", "rebuild") if is_hex_id(id, 32) => Action::RebuildEvent(id.to_string()),
                ("e", "delete") if is_hex_id(id, 32) => Action::DeleteEvent(id.to_string()),
                _ => return not_found(),
            };
            privileged(app, &req, session.as_ref(), action).await
        }
        _ => not_found(),
    }
}

async fn privileged(
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

fn signin_form(app: &App, req: &Request, ctx: &PageCtx, error: Option<&str>) -> Response {
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

async fn signin(app: &Arc<App>, req: &Request, ctx: &PageCtx<'_>) -> Response {
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

fn num(q: &HashMap<String, String>, k: &str) -> Option<u64> {
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

async fn lines(app: &Arc<App>, viewer: &Viewer, id: &str, q: &HashMap<String, String>) -> Response {
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

async fn search(
    app: &Arc<App>,
    viewer: &Viewer,
    id: &str,
    q: &HashMap<String, String>,
) -> Response {
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

async fn raw_log(app: &Arc<App>, viewer: &Viewer, id: &str, req: &Request) -> Response {
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

async fn artifact(app: &Arc<App>, viewer: &Viewer, id: &str, name: &str) -> Response {
    match app.upstream.artifact(id, name, viewer).await {
        Ok(resp) => {
            let len = resp.content_length();
            let sha256 = resp.headers().get("x-sai-sha256").cloned();
            let body = futures_util::stream::unfold(Some(resp), |resp| async move {
                let mut resp = resp?;
                match resp.chunk().await {
                    Ok(Some(c)) => Some((Ok::<Bytes, std::io::Error>(c), Some(resp))),
                    Ok(None) => None,
                    Err(e) => Some((Err(std::io::Error::other(e)), None)),
                }
            });
            let mut r = warp::reply::stream(body).into_response();
            let h = r.headers_mut();
            h.insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Some(l) = len
                && let Ok(v) = HeaderValue::from_str(&l.to_string())
            {
                h.insert("content-length", v);
            }
            let file = sai_core::artifact_name::file_name(name);
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
                h.insert("content-disposition", v);
            }
            if let Some(v) = sha256 {
                h.insert("x-sai-sha256", v);
            }
            r
        }
        Err(UpstreamError::NotFound) => plain(StatusCode::NOT_FOUND, "no such artifact"),
        Err(e) => plain(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

async fn status_badge(app: &Arc<App>, rest: &[&str]) -> Response {
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

    #[test]
    fn form_decoding() {
        assert_eq!(percent_decode("a+b%2Fc%zz%4"), "a b/c%zz%4");
    }
}
