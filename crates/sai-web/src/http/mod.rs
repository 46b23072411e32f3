//! Routes. Every response carries a strict Content-Security-Policy (no
//! inline script or style), and every POST must come from this origin and
//! echo the CSRF token of the session (or of the sign-in form).
//!
//! | module | job |
//! |---|---|
//! | this file | the route table: reading each request and dispatching it by method and path; the HTML pages and assets answered here |
//! | `request` | the request as read: its body (size-limited), query and form fields |
//! | `client` | who sent a request and how far to trust it: client address behind trusted proxies, secure context, session cookie, same origin |
//! | `respond` | response builders (text, HTML, JSON, redirect) and the security headers of every response |
//! | `signin` | the sign-in form and its POST, where to go after signing in, and signing out |
//! | `actions` | privileged POSTs forwarded to sai-server (rebuild, cancel, delete) |
//! | `logs` | log endpoints: rendered lines, search, raw log with `Range` |
//! | `artifacts` | artifact downloads streamed from sai-server |
//! | `badges` | status badges per project and branch |
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

mod actions;
mod artifacts;
mod badges;
mod client;
mod logs;
mod request;
mod respond;
mod signin;

use std::net::SocketAddr;
use std::sync::Arc;

use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;

use self::actions::privileged;
use self::artifacts::artifact;
use self::badges::status_badge;
use self::client::{request_session, same_origin};
use self::logs::{lines, raw_log, search};
use self::request::{query_map, read_body};
use self::respond::{page, plain, secure_headers};
use self::signin::{signin, signin_form, signout};
use crate::App;
use crate::pages::{self, PageCtx};
use crate::upstream::{Action, UpstreamError, Viewer, is_hex_id};

pub use self::logs::{Unsatisfiable, parse_range};
pub use self::request::Request;
pub use self::respond::CSP;
pub use self::signin::safe_next;

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
        (Method::POST, ["signout"]) => signout(app, &req, session.as_ref()),
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
