//! Websocket upgrades with small per-connection buffers, for both daemons.
//!
//! warp's own `Ws` lets tungstenite allocate (and zero-fill) a 128 KiB read
//! buffer per connection and has no setting for it: 1,000 connected
//! builders held ~137 KiB each, 130 MiB for connections that mostly sit
//! idle. [`upgrade`] does the same upgrade (warp's filter still checks the
//! request) and builds the socket with a [`WebSocketConfig`] of our own:
//! [`READ_BUFFER`] bytes to read into (a frame larger than that still
//! arrives whole: tungstenite reserves its length) and no write buffering
//! beyond the frame being sent.

use std::future::Future;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};

pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// An upgraded server-side websocket.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Bytes a connection reads into at a time (tungstenite's default: 128 KiB).
pub const READ_BUFFER: usize = 8 * 1024;

/// A websocket upgrade request that passed warp's checks (GET, `Upgrade:
/// websocket`, version 13, a key).
pub struct Upgrade {
    key: String,
    on_upgrade: OnUpgrade,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgrade")
    }
}

/// Matches websocket upgrade requests, as `warp::ws()` does.
pub fn upgrade() -> impl Filter<Extract = (Upgrade,), Error = warp::Rejection> + Clone {
    // Taken before `warp::ws()` removes it from the request.
    warp::ext::optional::<OnUpgrade>()
        .and(warp::ws())
        .and(warp::header::<String>("sec-websocket-key"))
        .and_then(
            |on_upgrade: Option<OnUpgrade>, _checked: warp::ws::Ws, key: String| async move {
                match on_upgrade {
                    Some(on_upgrade) => Ok(Upgrade { key, on_upgrade }),
                    None => Err(warp::reject()),
                }
            },
        )
}

/// The configuration every upgraded socket gets: small buffers, and the
/// largest message the caller accepts (frames keep tungstenite's limit).
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
}

impl Upgrade {
    /// Answer `101 Switching Protocols` and run `handle` on the socket once
    /// the connection is upgraded, with [`config`]`(max_message)`.
    pub fn on_upgrade<F, U>(self, max_message: usize, handle: F) -> warp::reply::Response
    where
        F: FnOnce(Socket) -> U + Send + 'static,
        U: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config(max_message)),
                    )
                    .await;
                    handle(socket).await;
                }
                Err(e) => tracing::debug!(cause = %e, "websocket upgrade failed"),
            }
        });
        let mut res = warp::reply::Response::default();
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        res
    }
}

/// A close frame with `code` and `reason`.
pub fn close_message(code: u16, reason: impl Into<String>) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into().into(),
    }))
}
