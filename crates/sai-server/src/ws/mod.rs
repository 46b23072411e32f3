//! Builder websocket endpoint (`/builder`, `/sai/builder`); the protocol is
//! defined in [`sai_core::protocol`] and described in `docs/protocol.md`.
//!
//! | module | job |
//! |---|---|
//! | this file | authenticating the upgrade; one connection's state (`ConnState`) and loop: hello, welcome, claims, pings, the dead timeout, outgoing messages and credit, the end |
//! | `hello` | checking the hello against the token; answering the tasks claimed back in it |
//! | `messages` | what each builder message and frame does (scheduler, logs, store) |
//! | `artifacts` | artifact and test report uploads: announced, streamed, checked, stored |

mod artifacts;
mod hello;
mod messages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sai_core::protocol::{
    BuilderMessage, CLOSE_PROTOCOL_ERROR, MAX_FRAME_PAYLOAD, PROTOCOL_VERSION, ServerMessage,
};
use sai_https::websocket::{Message, Socket, Upgrade, close_message};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use self::artifacts::Upload;
use self::hello::{check_hello, resume_answer};
use crate::auth::{Identity, TokenKind, bearer};
use crate::error::Error;
use crate::link::Outgoing;
use crate::sched::{ConnId, GoneCause, Hello};
use crate::state::Server;

/// One connected builder, as its messages and frames need it.
struct ConnState {
    server: Arc<Server>,
    cid: ConnId,
    name: String,
    tx: UnboundedSender<Outgoing>,
    /// Frame bytes the builder may still send (flow control); refilled as
    /// the server stores what arrived.
    credit: i64,
    /// Open artifact uploads by task: one per task, any number of tasks.
    uploads: HashMap<String, Upload>,
    /// Artifacts of running tasks that did not arrive, with why.
    lost: HashMap<String, Vec<String>>,
}

/// Handle an upgrade request: authenticate, then upgrade.
pub fn upgrade(
    server: Arc<Server>,
    ws: Upgrade,
    path: &str,
    authz: Option<String>,
    peer: Option<SocketAddr>,
) -> warp::reply::Response {
    if path != "/builder" && path != "/sai/builder" {
        return Error::NotFound("no websocket here").into_response();
    }
    let Some(token) = bearer(authz.as_deref()) else {
        return Error::Unauthorized("builder token required: Authorization: Bearer <token>".into())
            .into_response();
    };
    let ident = match server.keys.verify(
        TokenKind::Builder,
        token,
        &server.settings.config.revoked_builders,
    ) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(peer = ?peer, cause = %e, "builder refused");
            return Error::Unauthorized(e.to_string()).into_response();
        }
    };
    ws.on_upgrade(MAX_FRAME_PAYLOAD + 4096, move |socket| async move {
        connection(server, ident, peer, socket).await;
    })
}

async fn close(
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
    code: u16,
    reason: &str,
) {
    tracing::info!(code, reason, "closing builder connection");
    let _ = sink.send(close_message(code, reason)).await;
    let _ = sink.close().await;
}

async fn connection(
    server: Arc<Server>,
    ident: Identity,
    peer: Option<SocketAddr>,
    socket: Socket,
) {
    let (mut sink, mut stream) = socket.split();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.as_str().to_string(),
        _ => {
            close(
                &mut sink,
                CLOSE_PROTOCOL_ERROR,
                "first message must be a hello text frame",
            )
            .await;
            return;
        }
    };
    let (platforms, software, held) = match check_hello(&ident, &text) {
        Ok(BuilderMessage::Hello {
            platforms,
            software,
            held,
            ..
        }) => (platforms, software, held),
        Ok(_) => return,
        Err((code, reason)) => {
            tracing::warn!(builder = %ident.name, %reason, "hello refused");
            close(&mut sink, code, &reason).await;
            return;
        }
    };
    let cfg = &server.settings.config;
    let welcome = ServerMessage::Welcome {
        protocol_version: PROTOCOL_VERSION,
        server: crate::state::SOFTWARE.into(),
        log_window: cfg.log_window_bytes,
        max_frame_payload: MAX_FRAME_PAYLOAD as u32,
    };
    if sink
        .send(Message::text(
            serde_json::to_string(&welcome).unwrap_or_default(),
        ))
        .await
        .is_err()
    {
        return;
    }
    let peer_s = peer.map(|p| p.to_string());
    if let Err(e) = server.store.upsert_builder(
        &ident.name,
        &serde_json::to_string(&platforms).unwrap_or_default(),
        &software,
        peer_s.as_deref(),
    ) {
        tracing::error!(cause = %e, "recording builder");
    }
    let (tx, mut rx) = unbounded_channel();
    let cid = server.new_conn_id();
    server.links.insert(cid, tx.clone());
    let name = ident.name.clone();
    // Tasks the builder kept running across a restart are claimed before
    // its free slots are filled.
    let claims = server.sched_do(|s, now| {
        let hello = Hello {
            name,
            peer: peer_s,
            software,
            platforms,
        };
        let joined = s.join(now, cid, hello);
        let claims: Vec<_> = held
            .iter()
            .map(|h| (h, s.claim(now, cid, &h.task_id, &h.offer_platform)))
            .collect();
        s.joined(now, cid, joined);
        claims
    });
    for (h, claim) in claims {
        let answer = resume_answer(&server, cid, &ident.name, h, claim).await;
        let text = serde_json::to_string(&answer).unwrap_or_default();
        if sink.send(Message::text(text)).await.is_err() {
            break;
        }
    }
    server
        .changes
        .publish(crate::changes::Change::BuilderChanged {
            builder: ident.name.clone(),
            online: true,
        });
    tracing::info!(builder = %ident.name, conn = cid, "builder connected");
    let mut st = ConnState {
        server: server.clone(),
        cid,
        name: ident.name.clone(),
        tx,
        credit: cfg.log_window_bytes as i64,
        uploads: HashMap::new(),
        lost: HashMap::new(),
    };
    let ping_every = Duration::from_millis(cfg.builder_ping_interval_ms);
    let dead_after = Duration::from_millis(cfg.builder_dead_timeout_ms);
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    let why: GoneCause = loop {
        tokio::select! {
            _ = server.shutdown.cancelled() => {
                let restarting = ServerMessage::Restarting {
                    grace_secs: cfg.restart_grace_secs,
                };
                let _ = sink
                    .send(Message::text(serde_json::to_string(&restarting).unwrap_or_default()))
                    .await;
                close(&mut sink, 1001, "sai-server is shutting down").await;
                break GoneCause::ServerShutdown;
            }
            _ = tokio::time::sleep_until((last_rx + dead_after).into()) => {
                close(&mut sink, 1001, "no traffic within the dead timeout").await;
                break GoneCause::Silent { ms: dead_after.as_millis() as u64 };
            }
            _ = ping.tick() => {
                if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                    break GoneCause::WriteFailed(e.to_string());
                }
            }
            out = rx.recv() => match out {
                Some(Outgoing::Msg(m)) => {
                    let text = serde_json::to_string(&m).unwrap_or_default();
                    if let Err(e) = sink.send(Message::text(text)).await {
                        break GoneCause::WriteFailed(e.to_string());
                    }
                }
                Some(Outgoing::Credit(n)) => {
                    st.credit += n as i64;
                    let text = serde_json::to_string(&ServerMessage::Credit { bytes: n }).unwrap_or_default();
                    if let Err(e) = sink.send(Message::text(text)).await {
                        break GoneCause::WriteFailed(e.to_string());
                    }
                }
                Some(Outgoing::Close(code, reason)) => {
                    close(&mut sink, code, &reason).await;
                    break if server.shutdown.is_cancelled() {
                        GoneCause::ServerShutdown
                    } else {
                        GoneCause::Refused(reason)
                    };
                }
                None => break GoneCause::Disconnected,
            },
            inc = stream.next() => {
                let m = match inc {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break GoneCause::ReadFailed(e.to_string()),
                    None => break GoneCause::Disconnected,
                };
                last_rx = Instant::now();
                let res = match m {
                    Message::Text(t) => st.text(t.as_str()).await,
                    Message::Binary(b) => st.binary(&b),
                    Message::Close(_) => break GoneCause::Disconnected,
                    _ => Ok(()),
                };
                if let Err((code, reason)) = res {
                    close(&mut sink, code, &reason).await;
                    break GoneCause::Refused(reason);
                }
            }
        }
    };
    if matches!(why, GoneCause::WriteFailed(_) | GoneCause::ServerShutdown) {
        // Writing failed (the peer may have closed after its last messages),
        // or we closed on shutdown while the builder may be handing its tasks
        // back: still honour what it sent, e.g. a final task_finished.
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout(Duration::from_secs(2), stream.next()).await
        {
            let res = match &m {
                Message::Text(t) => st.text(t.as_str()).await,
                Message::Binary(b) => st.binary(b),
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if res.is_err() {
                break;
            }
        }
    }
    st.abort_all_uploads("connection ended");
    tracing::info!(builder = %ident.name, conn = cid, reason = %why, "builder disconnected");
    server.sched_do(|s, now| s.builder_gone(now, cid, &why));
    crate::trim::after_disconnect();
    server
        .changes
        .publish(crate::changes::Change::BuilderChanged {
            builder: ident.name.clone(),
            online: false,
        });
}
