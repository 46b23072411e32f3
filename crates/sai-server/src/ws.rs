//! Builder websocket endpoint (`/builder`, `/sai/builder`); the protocol is
//! defined in [`sai_core::protocol`] and described in `docs/protocol.md`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sai_core::platform::{Platform, tuple_matches};
use sai_core::protocol::{
    BuilderMessage, CHANNEL_NOTICE, CLOSE_POLICY, CLOSE_PROTOCOL_ERROR, CLOSE_UNSUPPORTED_VERSION,
    FrameKind, MAX_FRAME_PAYLOAD, PROTOCOL_VERSION, ServerMessage, TaskResult, decode_frame,
    hello_version,
};
use sha2::Digest;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use warp::Reply;
use warp::ws::{Message, WebSocket};

use crate::Server;
use crate::auth::{Identity, TokenKind, bearer};
use crate::error::Error;
use crate::link::Outgoing;
use crate::logw::LogChunk;
use crate::sched::{ConnId, GoneCause, Lookup};

/// Handle an upgrade request: authenticate, then upgrade.
pub fn upgrade(
    server: Arc<Server>,
    ws: warp::ws::Ws,
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
    ws.max_message_size(MAX_FRAME_PAYLOAD + 4096)
        .on_upgrade(move |socket| async move {
            connection(server, ident, peer, socket).await;
        })
        .into_response()
}

async fn close(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &str,
) {
    tracing::info!(code, reason, "closing builder connection");
    let _ = sink
        .send(Message::close_with(code, reason.to_string()))
        .await;
    let _ = sink.close().await;
}

fn check_hello(ident: &Identity, text: &str) -> Result<BuilderMessage, (u16, String)> {
    match hello_version(text) {
        Some(v) if v == PROTOCOL_VERSION as u64 => {}
        Some(v) => {
            return Err((
                CLOSE_UNSUPPORTED_VERSION,
                format!("unsupported protocol version {v}; this server speaks {PROTOCOL_VERSION}"),
            ));
        }
        None => {
            return Err((
                CLOSE_PROTOCOL_ERROR,
                "first message must be a hello with protocol_version".into(),
            ));
        }
    }
    let msg: BuilderMessage = serde_json::from_str(text)
        .map_err(|e| (CLOSE_PROTOCOL_ERROR, format!("bad hello: {e}")))?;
    let BuilderMessage::Hello {
        builder, platforms, ..
    } = &msg
    else {
        return Err((CLOSE_PROTOCOL_ERROR, "first message must be a hello".into()));
    };
    if *builder != ident.name {
        return Err((
            CLOSE_POLICY,
            format!(
                "hello names builder {builder:?} but the token is for {:?}",
                ident.name
            ),
        ));
    }
    if platforms.is_empty() {
        return Err((CLOSE_POLICY, "hello offers no platform".into()));
    }
    for p in platforms {
        if Platform::parse(&p.name).is_err() {
            return Err((
                CLOSE_POLICY,
                format!("platform {:?} is not a valid platform name", p.name),
            ));
        }
        if p.instances == 0 || p.instances > 256 {
            return Err((
                CLOSE_POLICY,
                format!("platform {:?}: instances must be 1..=256", p.name),
            ));
        }
        if !ident.platforms.iter().any(|c| tuple_matches(c, &p.name)) {
            return Err((
                CLOSE_POLICY,
                format!("platform {:?} is not allowed by the builder token", p.name),
            ));
        }
    }
    Ok(msg)
}

struct Upload {
    task_id: String,
    name: String,
    size: u64,
    sha256: String,
    written: u64,
    hasher: sha2::Sha256,
    file: std::fs::File,
    part: PathBuf,
    db: Arc<crate::store::EventDb>,
}

struct ConnState {
    server: Arc<Server>,
    cid: ConnId,
    name: String,
    tx: UnboundedSender<Outgoing>,
    credit: i64,
    upload: Option<Upload>,
}

impl ConnState {
    fn send(&self, m: ServerMessage) {
        let _ = self.tx.send(Outgoing::Msg(m));
    }
    fn error(&self, task_id: Option<&str>, message: String) {
        tracing::warn!(builder = %self.name, task = ?task_id, "{message}");
        self.send(ServerMessage::Error {
            task_id: task_id.map(str::to_string),
            message,
        });
    }
    fn lookup(&self, task_id: &str) -> Lookup<Arc<crate::store::EventDb>> {
        self.server.sched().lookup(self.cid, task_id)
    }
    fn not_yours(&self, task_id: &str) {
        self.error(
            Some(task_id),
            format!("task {task_id} is not assigned to this connection"),
        );
    }

    /// Handle a text frame; `Err` closes the connection.
    async fn text(&mut self, text: &str) -> Result<(), (u16, String)> {
        let msg: BuilderMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                self.error(None, format!("unreadable message: {e}"));
                return Ok(());
            }
        };
        let server = self.server.clone();
        let cid = self.cid;
        match msg {
            BuilderMessage::Hello { .. } => self.error(None, "hello was already received".into()),
            BuilderMessage::Accept { task_id } => {
                if !server.sched_do(|s, _| s.accept(cid, &task_id)) {
                    self.not_yours(&task_id);
                }
            }
            BuilderMessage::Reject { task_id, reason } => {
                if !server.sched_do(|s, now| s.reject(now, cid, &task_id, &reason)) {
                    self.not_yours(&task_id);
                }
            }
            BuilderMessage::Capacity { platforms } => {
                tracing::debug!(builder = %self.name, ?platforms, "capacity");
                server.sched_do(|s, now| s.capacity(now, cid, &platforms));
            }
            BuilderMessage::ShuttingDown => {
                tracing::info!(builder = %self.name, "builder is shutting down");
                server.sched_do(|s, _| s.shutting_down(cid));
            }
            BuilderMessage::StepStarted { task_id, step } => {
                if !server.sched_do(|s, _| s.step_started(cid, &task_id, step)) {
                    self.not_yours(&task_id);
                }
            }
            BuilderMessage::StepFinished {
                task_id,
                step,
                exit_code,
                duration_ms,
            } => match self.lookup(&task_id) {
                Lookup::Assigned(_, project) => {
                    if let Err(e) = server.store.add_metric(
                        &task_id,
                        &project,
                        &self.name,
                        step,
                        exit_code,
                        duration_ms,
                    ) {
                        tracing::error!(cause = %e, "writing metric");
                    }
                }
                Lookup::Cancelled => {}
                Lookup::Unknown => self.not_yours(&task_id),
            },
            BuilderMessage::ArtifactBegin {
                task_id,
                name,
                size,
                sha256,
            } => self.artifact_begin(task_id, name, size, sha256),
            BuilderMessage::ArtifactEnd { task_id } => self.artifact_end(&task_id).await,
            BuilderMessage::TaskFinished { task_id, result } => {
                match self.lookup(&task_id) {
                    Lookup::Assigned(db, _) => {
                        if self.upload.as_ref().is_some_and(|u| u.task_id == task_id) {
                            self.abort_upload("task finished during the upload");
                        }
                        // Everything logged before this message is stored first.
                        server.logs.flush().await;
                        if let TaskResult::HandedBack { reason } = &result {
                            let notice = format!(
                                "sai-server: task handed back by builder {}: {reason}; requeued without counting an attempt\n",
                                self.name
                            );
                            server.logs.record(LogChunk {
                                db,
                                task_id: task_id.clone(),
                                channel: CHANNEL_NOTICE,
                                timestamp_us: crate::store::now_ms() * 1000,
                                data: notice.into_bytes(),
                                credit: None,
                            });
                        }
                        server.sched_do(|s, now| s.finished(now, cid, &task_id, &result));
                    }
                    Lookup::Cancelled => {}
                    Lookup::Unknown => self.not_yours(&task_id),
                }
            }
        }
        Ok(())
    }

    fn artifact_begin(&mut self, task_id: String, name: String, size: u64, sha256: String) {
        let Lookup::Assigned(db, _) = self.lookup(&task_id) else {
            return self.not_yours(&task_id);
        };
        if self.upload.is_some() {
            return self.error(Some(&task_id), "another artifact upload is open".into());
        }
        if let Err(e) = sai_core::artifact_name::check(&name) {
            return self.error(Some(&task_id), format!("artifact refused: {e}"));
        }
        if size > self.server.settings.config.max_artifact_bytes {
            return self.error(
                Some(&task_id),
                format!("artifact of {size} bytes exceeds the limit"),
            );
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.error(Some(&task_id), "sha256 must be 64 hex characters".into());
        }
        // Beside the task's artifact tree, so it can collide with no name.
        let dir = db.artifact_dir(&task_id);
        let part = dir.with_extension("part");
        let file = std::fs::create_dir_all(&dir).and_then(|_| std::fs::File::create(&part));
        match file {
            Ok(file) => {
                self.upload = Some(Upload {
                    task_id,
                    name,
                    size,
                    sha256: sha256.to_ascii_lowercase(),
                    written: 0,
                    hasher: sha2::Sha256::new(),
                    file,
                    part,
                    db,
                })
            }
            Err(e) => self.error(Some(&task_id), format!("cannot store artifact: {e}")),
        }
    }

    fn abort_upload(&mut self, why: &str) {
        if let Some(u) = self.upload.take() {
            let _ = std::fs::remove_file(&u.part);
            self.error(
                Some(&u.task_id),
                format!("artifact {} discarded: {why}", u.name),
            );
        }
    }

    async fn artifact_end(&mut self, task_id: &str) {
        let Some(u) = self.upload.take_if(|u| u.task_id == task_id) else {
            return self.error(
                Some(task_id),
                "no artifact upload open for this task".into(),
            );
        };
        let digest = hex::encode(u.hasher.finalize());
        if u.written != u.size || digest != u.sha256 {
            let _ = std::fs::remove_file(&u.part);
            return self.error(
                Some(task_id),
                format!(
                    "artifact {} discarded: got {} bytes sha256 {digest}, announced {} bytes sha256 {}",
                    u.name, u.written, u.size, u.sha256
                ),
            );
        }
        // The name was checked (relative, no `.`/`..`), so this stays in
        // the task's artifact folder.
        let fin = u.db.artifact_dir(task_id).join(&u.name);
        let res = u
            .file
            .sync_all()
            .and_then(|_| match fin.parent() {
                Some(p) => std::fs::create_dir_all(p),
                None => Ok(()),
            })
            .and_then(|_| std::fs::rename(&u.part, &fin))
            .map_err(|e| e.to_string())
            .and_then(|_| {
                u.db.add_artifact(task_id, &u.name, u.size, &u.sha256)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = res {
            self.error(Some(task_id), format!("storing artifact {}: {e}", u.name));
        }
    }

    /// Handle a binary frame; `Err` closes the connection.
    fn binary(&mut self, bytes: &[u8]) -> Result<(), (u16, String)> {
        let (h, payload) =
            decode_frame(bytes).map_err(|e| (CLOSE_PROTOCOL_ERROR, e.to_string()))?;
        let len = payload.len() as u64;
        self.credit -= len as i64;
        if self.credit < 0 {
            return Err((CLOSE_POLICY, "flow-control credit exceeded".into()));
        }
        match self.lookup(&h.task_id) {
            Lookup::Assigned(db, _) => match h.kind {
                FrameKind::Log => {
                    self.server.logs.record(LogChunk {
                        db,
                        task_id: h.task_id,
                        channel: h.channel,
                        timestamp_us: h.timestamp_us as i64,
                        data: payload.to_vec(),
                        credit: Some((self.cid, self.tx.clone())),
                    });
                }
                FrameKind::Artifact => {
                    let _ = self.tx.send(Outgoing::Credit(len));
                    let Some(u) = self.upload.as_mut().filter(|u| u.task_id == h.task_id) else {
                        self.error(
                            Some(&h.task_id),
                            "artifact bytes without artifact_begin".into(),
                        );
                        return Ok(());
                    };
                    u.written += len;
                    u.hasher.update(payload);
                    if u.written > u.size {
                        self.abort_upload("more bytes than announced");
                    } else if let Err(e) = u.file.write_all(payload) {
                        self.abort_upload(&format!("write failed: {e}"));
                    }
                }
            },
            Lookup::Cancelled => {
                let _ = self.tx.send(Outgoing::Credit(len));
            }
            Lookup::Unknown => {
                let _ = self.tx.send(Outgoing::Credit(len));
                self.not_yours(&h.task_id);
            }
        }
        Ok(())
    }
}

async fn connection(
    server: Arc<Server>,
    ident: Identity,
    peer: Option<SocketAddr>,
    socket: WebSocket,
) {
    let (mut sink, mut stream) = socket.split();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
    let text = match first {
        Ok(Some(Ok(m))) if m.is_text() => m.to_str().unwrap_or_default().to_string(),
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
    let (platforms, software) = match check_hello(&ident, &text) {
        Ok(BuilderMessage::Hello {
            platforms,
            software,
            ..
        }) => (platforms, software),
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
        server: crate::SOFTWARE.into(),
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
    server.sched_do(|s, now| s.builder_hello(now, cid, name, peer_s, software, platforms));
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
        upload: None,
    };
    let ping_every = Duration::from_millis(cfg.builder_ping_interval_ms);
    let dead_after = Duration::from_millis(cfg.builder_dead_timeout_ms);
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    let why: GoneCause = loop {
        tokio::select! {
            _ = server.shutdown.cancelled() => {
                close(&mut sink, 1001, "sai-server is shutting down").await;
                break GoneCause::ServerShutdown;
            }
            _ = tokio::time::sleep_until((last_rx + dead_after).into()) => {
                close(&mut sink, 1001, "no traffic within the dead timeout").await;
                break GoneCause::Silent { ms: dead_after.as_millis() as u64 };
            }
            _ = ping.tick() => {
                if let Err(e) = sink.send(Message::ping(Vec::new())).await {
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
                let res = if m.is_text() {
                    let t = m.to_str().unwrap_or_default().to_string();
                    st.text(&t).await
                } else if m.is_binary() {
                    st.binary(m.as_bytes())
                } else if m.is_close() {
                    break GoneCause::Disconnected;
                } else {
                    Ok(())
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
            let res = if m.is_text() {
                let t = m.to_str().unwrap_or_default().to_string();
                st.text(&t).await
            } else if m.is_binary() {
                st.binary(m.as_bytes())
            } else {
                Ok(())
            };
            if res.is_err() || m.is_close() {
                break;
            }
        }
    }
    st.abort_upload("connection ended");
    tracing::info!(builder = %ident.name, conn = cid, reason = %why, "builder disconnected");
    server.sched_do(|s, now| s.builder_gone(now, cid, &why));
    server
        .changes
        .publish(crate::changes::Change::BuilderChanged {
            builder: ident.name.clone(),
            online: false,
        });
}
