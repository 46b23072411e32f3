//! Response builders (plain text, HTML page, JSON, redirect) and the
//! security headers every response carries.

use maud::Markup;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn secure_headers(h: &mut HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

pub(super) fn plain(status: StatusCode, text: &str) -> Response {
    let mut r = Response::new(text.to_string().into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(super) fn page(status: StatusCode, m: Markup) -> Response {
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

pub(super) fn json_reply(status: StatusCode, v: &serde_json::Value) -> Response {
    let mut r = Response::new(v.to_string().into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

pub(super) fn redirect(to: &str) -> Response {
    let mut r = Response::new(Vec::<u8>::new().into());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert("location", v);
    }
    r
}
