//! The one accept loop of sai-server, plain and TLS alike (issue 9 item 5):
//! every connection gets the same header timeout, and HTTP API
//! connections are capped apart from builder websockets and the hook.
//!
//! * A connection must send a request's headers within
//!   `limits.header_timeout_ms`, also between keep-alive requests (hyper's
//!   header read timeout), else it is closed: silent connections cannot pile
//!   up. Request bodies have `limits.body_timeout_ms` (sai-server's `api` module).
//! * Up to `limits.max_api_connections` connections hold an API slot from
//!   accept until they upgrade to a websocket (which gives the slot back). A
//!   connection accepted while every slot is taken is still served, but only
//!   for a builder websocket or the hook; anything else gets 503 (see
//!   [`ConnSlot::admits`]). So builders and hooks stay served while the API
//!   is under pressure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use sai_core::config::server::ServerLimits;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use warp::Filter;

use crate::{self as tls, CertificateStore};

/// Longest time a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection's hold on an API slot, shared by its requests.
#[derive(Debug, Clone)]
pub struct ConnSlot {
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    peer: SocketAddr,
}

impl ConnSlot {
    /// The peer address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn holds_slot(&self) -> bool {
        self.permit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// May a request to `path` be served on this connection? Always for a
    /// builder websocket and the hook; anything else only with a slot.
    pub fn admits(&self, path: &str) -> bool {
        let p = path.trim_matches('/');
        let exempt = matches!(
            p,
            "builder" | "sai/builder" | "update-hook" | "sai/update-hook"
        );
        exempt || self.holds_slot()
    }

    /// Give the slot back (the connection became a websocket).
    pub fn release(&self) {
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The connection slot of the request, when served by [`serve`].
pub fn conn_slot() -> impl Filter<Extract = (Option<ConnSlot>,), Error = Infallible> + Clone {
    warp::ext::optional::<ConnSlot>()
}

#[derive(Clone)]
struct WithSlot<S> {
    inner: S,
    slot: ConnSlot,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for WithSlot<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: warp::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.slot.clone());
        self.inner.call(req)
    }
}

/// Serve `filter` on `listener` (over TLS with `tls`) until `shutdown`
/// fires, then wait for in-flight HTTP requests (not upgraded websockets).
pub async fn serve<F>(
    filter: F,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<CertificateStore>>,
    limits: &ServerLimits,
    shutdown: CancellationToken,
) -> Result<(), rustls::Error>
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let acceptor = match &tls {
        Some(store) => Some(store.acceptor()?),
        None => None,
    };
    tls::reload_on_sighup(tls, shutdown.clone());
    let slots = Arc::new(Semaphore::new(limits.max_api_connections as usize));
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = ConnSlot {
            permit: Arc::new(Mutex::new(slots.clone().try_acquire_owned().ok())),
            peer,
        };
        let service = WithSlot {
            inner: warp::service(filter.clone()),
            slot,
        };
        let stop = shutdown.clone();
        let acceptor = acceptor.clone();
        tasks.spawn(async move {
            let io: Box<dyn Io> = match acceptor {
                None => Box::new(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer, cause = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(service);
            // HTTP/1 only: hyper-util's auto builder first reads the
            // protocol preface without any timeout.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(peer = %peer, cause = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// A plain or TLS stream.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
