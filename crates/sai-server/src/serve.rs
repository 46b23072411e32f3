//! Route assembly and serving: binding the listener, the routes of the
//! builder websocket, the change feed and the operations API, the local
//! unix socket, and the background jobs that run while the server serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sai_https::accept;
use warp::Filter;

use crate::state::{Server, StartError};
use crate::{api, auth, changes, delivery, error, metrics, trim, ws};

/// Bind the listening socket. `TCP_NODELAY` is set on it so that accepted
/// connections inherit it (Linux): small protocol messages (offers, credit)
/// must not wait for delayed ACKs.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, StartError> {
    let fail = |e: std::io::Error| StartError::Bind {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await.map_err(fail)? {
        let sock = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(fail)?;
        sock.set_reuseaddr(true).map_err(fail)?;
        sock.set_nodelay(true).map_err(fail)?;
        match sock.bind(a).and_then(|_| sock.listen(1024)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(StartError::Bind {
        addr: addr.to_string(),
        reason: last
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into()),
    })
}

/// How often old events are swept.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// Why [`serve`] could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// rustls refused to build the TLS acceptor for the configured
    /// certificate (e.g. no protocol version its provider supports).
    #[error("setting up TLS: {0}")]
    Tls(rustls::Error),
    /// The local socket (`local_socket`) could not be set up.
    #[error("local_socket {path}: {what}: {source}")]
    LocalSocket {
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Serve an opened server on `listener` until its shutdown token fires,
/// then close builder connections and flush pending logs.
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
) -> Result<(), ServeError> {
    let shutdown = server.shutdown.clone();
    let retention = {
        let s = server.clone();
        tokio::spawn(async move {
            let mut ticker = sai_daemon::ticker::Ticker::new(RETENTION_EVERY, s.shutdown.clone());
            while ticker.tick().await {
                if let Err(e) = s.retention_sweep() {
                    tracing::error!(cause = %e, "retention sweep");
                }
            }
        })
    };
    let figures = {
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let s2 = s.clone();
                let f = tokio::task::spawn_blocking(move || metrics::StoreFigures {
                    events: s2
                        .store
                        .event_state_counts()
                        .map(|v| v.into_iter().collect())
                        .unwrap_or_default(),
                    bytes: metrics::dir_bytes(&s2.settings.data_dir),
                })
                .await;
                if let Ok(f) = f {
                    s.metrics.set_store_figures(f);
                }
                tokio::select! {
                    _ = s.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(metrics::STORE_REFRESH) => {}
                }
            }
        })
    };
    let settle = {
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let s2 = s.clone();
                let r = tokio::task::spawn_blocking(move || s2.store.settle_recent_pushes()).await;
                if let Ok(Err(e)) = r {
                    tracing::error!(cause = %e, "syncing recent pushes");
                }
            }
        })
    };
    let outbox = tokio::spawn(delivery::run(server.clone()));
    let idle = tokio::spawn(trim::keep_idle_small(server.clone()));
    let local = match &server.settings.config.local_socket {
        Some(path) => Some(serve_local_socket(server.clone(), Path::new(path))?),
        None => None,
    };
    let routes = routes(server.clone(), false);
    accept::serve(
        routes,
        listener,
        server.settings.tls.clone(),
        &server.settings.config.limits,
        shutdown.clone(),
    )
    .await
    .map_err(ServeError::Tls)?;
    if let Some((task, path)) = local {
        let _ = task.await;
        let _ = std::fs::remove_file(path);
    }
    server.sched_do(|s, _| s.stop(1001, "sai-server is shutting down"));
    server.logs.flush().await;
    retention.abort();
    figures.abort();
    idle.abort();
    outbox.abort();
    settle.abort();
    tracing::info!("sai-server stopped");
    Ok(())
}

/// Serve the routes on the unix socket `path` (replacing a stale socket
/// file), mode 0660, until shutdown; requests on it are marked local
/// ([`api::LOCAL_SOCKET_MARK`]).
fn serve_local_socket(
    server: Arc<Server>,
    path: &Path,
) -> Result<(tokio::task::JoinHandle<()>, PathBuf), ServeError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let failed = |what| {
        move |source| ServeError::LocalSocket {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path).map_err(failed("removing the stale socket"))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(failed("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(failed("chmod 0660"))?;
    tracing::info!(path = %path.display(), "serving the operations API on the local socket");
    let sd = server.shutdown.clone();
    let task = tokio::spawn(
        warp::serve(routes(server, true))
            .incoming(listener)
            .graceful(async move { sd.cancelled().await })
            .run(),
    );
    Ok((task, path.to_path_buf()))
}

/// All routes. `local`: they serve the local unix socket, whose peers act
/// as the service credential does.
pub fn routes(
    server: Arc<Server>,
    local: bool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let s0 = server.clone();
    let changes = warp::path!("api" / "changes")
        .and(warp::ws())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(accept::conn_slot())
        .map(
            move |ws: warp::ws::Ws,
                  authz: Option<String>,
                  query: String,
                  slot: Option<accept::ConnSlot>| {
                if let Some(slot) = slot {
                    slot.release();
                }
                changes_upgrade(s0.clone(), ws, authz, &query, local)
            },
        );
    let s1 = server.clone();
    let builder = sai_https::websocket::upgrade()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(sai_https::remote_addr())
        .and(accept::conn_slot())
        .map(
            move |ws: sai_https::websocket::Upgrade,
                  path: warp::path::FullPath,
                  authz: Option<String>,
                  peer: Option<SocketAddr>,
                  slot: Option<accept::ConnSlot>| {
                if let Some(slot) = slot {
                    slot.release();
                }
                ws::upgrade(s1.clone(), ws, path.as_str(), authz, peer)
            },
        );
    let s2 = server;
    let http = sai_https::request_parts().and(accept::conn_slot()).then(
        move |method,
              path: warp::path::FullPath,
              query,
              mut headers: warp::http::HeaderMap,
              peer,
              body,
              slot: Option<accept::ConnSlot>| {
            let s = s2.clone();
            let busy = slot.is_some_and(|c| !c.admits(path.as_str()));
            if local {
                headers.insert(
                    api::LOCAL_SOCKET_MARK,
                    warp::http::HeaderValue::from_static("1"),
                );
            } else {
                headers.remove(api::LOCAL_SOCKET_MARK);
            }
            async move {
                if busy {
                    return error::Error::Busy(s.settings.config.limits.max_api_connections)
                        .into_response();
                }
                api::handle(
                    s,
                    method,
                    path.as_str().to_string(),
                    query,
                    headers,
                    peer,
                    body,
                )
                .await
            }
        },
    );
    changes
        .or(builder)
        .unify()
        .or(http)
        .unify()
        .recover(|_r: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(
                error::Error::bad_request("bad request", None).into_response(),
            )
        })
        .unify()
}

/// `GET /api/changes?after=SEQ` (websocket): the change feed, for holders of
/// a service token (sai-web) only.
fn changes_upgrade(
    server: Arc<Server>,
    ws: warp::ws::Ws,
    authz: Option<String>,
    query: &str,
    local: bool,
) -> warp::reply::Response {
    use warp::Reply;
    let token = auth::bearer(authz.as_deref());
    let ok = local
        || token.is_some_and(|t| server.keys.verify(auth::TokenKind::Service, t, &[]).is_ok());
    if !ok {
        return error::Error::Unauthorized(
            "service token required: Authorization: Bearer <token from `sai-server token service`>"
                .into(),
        )
        .into_response();
    }
    let after = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| server.changes.newest());
    let feed = server.changes.clone();
    let shutdown = server.shutdown.clone();
    ws.on_upgrade(move |socket| changes::serve_subscriber(feed, socket, after, shutdown))
        .into_response()
}

#[cfg(test)]
mod serve_error_tests {
    use super::ServeError;

    #[test]
    fn serve_error_is_typed_and_names_the_tls_setup() {
        let e = ServeError::Tls(rustls::Error::General("no protocol versions".into()));
        assert!(matches!(e, ServeError::Tls(_)));
        assert_eq!(
            e.to_string(),
            "setting up TLS: unexpected error: no protocol versions"
        );
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(
            source, None,
            "the cause is in the message, not repeated as source"
        );
    }
}
