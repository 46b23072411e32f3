//! Who sent a request and how far to trust it: the client address (the
//! forwarded one only from a trusted proxy), whether cookies may be
//! `Secure`, the session cookie, and whether the browser says the request
//! comes from one of our pages.

use std::net::{IpAddr, SocketAddr};

use warp::http::HeaderMap;

use super::Request;
use crate::App;
use crate::session::{self, Session};

/// Whether cookies for this request may be `Secure` (and `__Host-`).
pub(super) fn secure_context(app: &App, req_headers: &HeaderMap, peer: Option<SocketAddr>) -> bool {
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
pub(super) fn client_ip(app: &App, req: &Request) -> IpAddr {
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

pub(super) fn cookie_names(secure: bool) -> (&'static str, &'static str) {
    if secure {
        (session::SECURE_COOKIE, session::SECURE_PRE_COOKIE)
    } else {
        (session::PLAIN_COOKIE, session::PLAIN_PRE_COOKIE)
    }
}

/// The valid session of a request, if any (of a user who still exists).
pub(super) fn request_session(app: &App, headers: &HeaderMap) -> Option<Session> {
    let cookies = headers.get("cookie").and_then(|v| v.to_str().ok());
    [session::SECURE_COOKIE, session::PLAIN_COOKIE]
        .iter()
        .filter_map(|n| session::cookie(cookies, n))
        .find_map(|tok| app.sessions.open(tok))
        .filter(|s| app.users.read().expect("users lock").exists(&s.user))
}

/// The browser says this request comes from one of our pages: fetch
/// metadata first, else `Origin` matching `Host`.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
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
