//! Follows sai-server's change feed (`/api/changes`, with the service
//! token) and wakes the live watchers a change concerns, so pages update
//! as soon as the server changes instead of at the next poll. Without the
//! feed (no service token, server down, older server) watchers poll.
//!
//! Resuming: the last sequence number seen is sent on reconnect; a new
//! server process (new `epoch`) or a `resync` wakes every watcher, which
//! re-reads its state from the API, so nothing is missed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::App;

/// The feed's messages, over TCP (maybe TLS) or the local socket.
type Messages = futures_util::stream::BoxStream<
    'static,
    Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
>;

/// Follow the feed until shutdown.
pub async fn follow(app: Arc<App>) {
    let base = app
        .settings
        .config
        .server_url
        .trim_end_matches('/')
        .to_string();
    let socket = crate::upstream::unix_socket_of(&base).map(str::to_string);
    let token = app.settings.service_token.clone();
    if token.is_none() && socket.is_none() {
        return;
    }
    let ws_base = if socket.is_some() {
        "ws://localhost".to_string()
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        tracing::info!("change feed: server_url {base} is not http(s); polling instead");
        return;
    };
    let mut epoch = String::new();
    let mut seq: u64 = 0;
    let mut delay = Duration::from_millis(200);
    loop {
        let url = format!("{ws_base}/api/changes?after={seq}");
        let connected = async {
            let mut req = url.as_str().into_client_request()?;
            if let Some(token) = &token {
                req.headers_mut()
                    .insert("authorization", format!("Bearer {token}").parse()?);
            }
            let ws: Messages = match &socket {
                // The local socket: its permissions stand for the token.
                Some(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    tokio_tungstenite::client_async(req, stream)
                        .await?
                        .0
                        .boxed()
                }
                None => tokio_tungstenite::connect_async(req).await?.0.boxed(),
            };
            anyhow::Ok(ws)
        };
        let ws = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            r = connected => r,
        };
        match ws {
            Ok(mut ws) => {
                delay = Duration::from_millis(200);
                loop {
                    let msg = tokio::select! {
                        _ = app.shutdown.cancelled() => return,
                        m = ws.next() => m,
                    };
                    let Some(Ok(msg)) = msg else { break };
                    let Ok(text) = msg.to_text() else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(text) else {
                        continue;
                    };
                    match v["t"].as_str() {
                        Some("hello") => {
                            let e = v["epoch"].as_str().unwrap_or_default().to_string();
                            if e != epoch {
                                // A new server process: its numbers restart.
                                epoch = e;
                                seq = v["seq"].as_u64().unwrap_or(0);
                            }
                            tracing::info!(
                                local_socket = socket.is_some(),
                                "change feed connected"
                            );
                            app.hub.feed_live.store(true, Ordering::SeqCst);
                            app.hub.wake_all();
                        }
                        Some("resync") => {
                            seq = v["seq"].as_u64().unwrap_or(seq);
                            app.hub.wake_all();
                        }
                        Some("change") => {
                            seq = v["seq"].as_u64().unwrap_or(seq);
                            app.hub.wake_for(&v["change"]);
                        }
                        _ => {}
                    }
                }
                app.hub.feed_live.store(false, Ordering::SeqCst);
                app.hub.wake_all();
                tracing::info!("change feed closed; polling until it is back");
            }
            Err(e) => {
                tracing::debug!(cause = %e, "change feed: connecting");
            }
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(4));
    }
}
