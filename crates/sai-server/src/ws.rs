//! Builder websocket endpoint (`/builder`, `/sai/builder`); the protocol is
//! defined in [`sai_core::protocol`] and described in `docs/protocol.md`.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sai_core::platform::Platform;
use sai_core::protocol::{
    BuilderMessage, CHANNEL_NOTICE, CLOSE_POLICY, CLOSE_PROTOCOL_ERROR, CLOSE_UNSUPPORTED_VERSION,
    FrameKind, MAX_FRAME_PAYLOAD, PROTOCOL_VERSION, ServerMessage, TaskResult, decode_frame,
    hello_version,
};
use sai_https::websocket::{Message, Socket, Upgrade, close_message};
use sha2::Digest;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::auth::{Identity, TokenKind, bearer, token_allows};
use crate::error::Error;
use crate::link::Outgoing;
use crate::logw::LogChunk;
use crate::sched::{ConnId, GoneCause, Hello, Lookup};
use crate::state::Server;
use sai_core::task::TaskState;

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
        if !ident.platforms.iter().any(|g| token_allows(g, &p.name)) {
            return Err((
                CLOSE_POLICY,
                format!("platform {:?} is not allowed by the builder token", p.name),
            ));
        }
    }
    Ok(msg)
}

/// How a builder's result reads in a notice.
fn result_word(r: &TaskResult) -> String {
    match r {
        TaskResult::Success => "success".into(),
        TaskResult::Failed { exit_code, step } => {
            format!("failure (step {} exited with {exit_code})", step + 1)
        }
        TaskResult::Cancelled => "cancelled".into(),
        TaskResult::InfraError { reason } => format!("an infrastructure error ({reason})"),
        TaskResult::HandedBack { reason } => format!("a hand-back ({reason})"),
    }
}

struct Upload {
    task_id: String,
    test_report: bool,
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
    /// Open artifact uploads by task: one per task, any number of tasks.
    uploads: HashMap<String, Upload>,
    /// Artifacts of running tasks that did not arrive, with why.
    lost: HashMap<String, Vec<String>>,
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
    /// An artifact of `task_id` did not arrive: tell the builder, and
    /// remember it for the task's end.
    fn artifact_lost(&mut self, task_id: &str, message: String) {
        self.error(Some(task_id), message.clone());
        self.lost
            .entry(task_id.to_string())
            .or_default()
            .push(message);
    }

    /// A re-run's log starts with a notice, so that it is kept apart from
    /// the log of the attempt before (which stays above it).
    fn attempt_notice(&self, task_id: &str) {
        let Lookup::Assigned(db, _) = self.lookup(task_id) else {
            return;
        };
        let attempt = match db.task(task_id) {
            Ok(Some(t)) => t.run.attempt,
            _ => return,
        };
        if attempt <= 1 {
            return;
        }
        let notice = format!(
            "\nsai-server: ---- attempt {attempt} starts here on builder {}; the log above is from earlier attempts ----\n",
            self.name
        );
        self.server.logs.record(LogChunk {
            db,
            task_id: task_id.to_string(),
            channel: CHANNEL_NOTICE,
            timestamp_us: crate::store::now_ms() * 1000,
            data: notice.into_bytes(),
            credit: None,
        });
    }

    /// The builder's `result`, unless something of the task did not
    /// arrive (`missing` says what): then an infrastructure failure, with a
    /// notice in the task's log. Hand-backs and infrastructure errors stay.
    fn infra_unless_whole(
        &self,
        db: &Arc<crate::store::EventDb>,
        task_id: &str,
        result: TaskResult,
        missing: Option<String>,
    ) -> TaskResult {
        let Some(what) = missing else {
            return result;
        };
        if matches!(
            result,
            TaskResult::HandedBack { .. } | TaskResult::InfraError { .. }
        ) {
            return result;
        }
        let notice = format!(
            "sai-server: {what}; the builder reported {}, but the task ends as an infrastructure failure\n",
            result_word(&result)
        );
        self.server.logs.record(LogChunk {
            db: db.clone(),
            task_id: task_id.to_string(),
            channel: CHANNEL_NOTICE,
            timestamp_us: crate::store::now_ms() * 1000,
            data: notice.into_bytes(),
            credit: None,
        });
        TaskResult::InfraError { reason: what }
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
                } else {
                    if let Lookup::Assigned(db, _) = self.lookup(&task_id) {
                        server.logs.new_attempt(db, task_id.clone());
                    }
                    self.attempt_notice(&task_id);
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
            BuilderMessage::Load(load) => {
                tracing::debug!(builder = %self.name, ?load, "load");
                server.sched_do(|s, now| s.builder_load(now, cid, load));
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
                test_report,
            } => self.artifact_begin(task_id, name, size, sha256, test_report),
            BuilderMessage::ArtifactEnd { task_id } => self.artifact_end(&task_id).await,
            BuilderMessage::TaskFinished { task_id, result } => {
                match self.lookup(&task_id) {
                    Lookup::Assigned(db, project) => {
                        self.abort_upload(&task_id, "task finished during the upload");
                        let lost = self.lost.remove(&task_id).unwrap_or_default();
                        let missing = (!lost.is_empty()).then(|| {
                            format!(
                                "{} artifact(s) did not arrive: {}",
                                lost.len(),
                                lost.join("; ")
                            )
                        });
                        let result = self.infra_unless_whole(&db, &task_id, result, missing);
                        // Everything logged before this message is stored
                        // first; a log that cannot be stored makes the task
                        // an infrastructure failure, never a result with a hole.
                        let unstored = server
                            .logs
                            .finish_task(db.clone(), task_id.clone())
                            .await
                            .err();
                        let result = self.infra_unless_whole(
                            &db,
                            &task_id,
                            result,
                            unstored.map(|u| u.to_string()),
                        );
                        if let TaskResult::HandedBack { reason } = &result {
                            let notice = format!(
                                "sai-server: task handed back by builder {}: {reason}; requeued without counting an attempt\n",
                                self.name
                            );
                            server.logs.record(LogChunk {
                                db: db.clone(),
                                task_id: task_id.clone(),
                                channel: CHANNEL_NOTICE,
                                timestamp_us: crate::store::now_ms() * 1000,
                                data: notice.into_bytes(),
                                credit: None,
                            });
                        }
                        server.sched_do(|s, now| s.finished(now, cid, &task_id, &result));
                        record_duration(&server, &db, &project, &task_id);
                    }
                    Lookup::Cancelled => {
                        self.abort_upload(&task_id, "the task was cancelled");
                        self.lost.remove(&task_id);
                    }
                    Lookup::Unknown => self.not_yours(&task_id),
                }
            }
        }
        Ok(())
    }

    fn artifact_begin(
        &mut self,
        task_id: String,
        name: String,
        size: u64,
        sha256: String,
        test_report: bool,
    ) {
        let Lookup::Assigned(db, _) = self.lookup(&task_id) else {
            return self.not_yours(&task_id);
        };
        let shown = format!("{name:?}");
        if let Some(open) = self.uploads.get(&task_id) {
            let open = open.name.clone();
            self.abort_upload(&task_id, &format!("artifact {shown} began before it ended"));
            return self.artifact_lost(
                &task_id,
                format!("artifact {shown} discarded: artifact {open} of the task was still open"),
            );
        }
        if let Err(e) = sai_core::artifact_name::check(&name) {
            return self.artifact_lost(&task_id, format!("artifact refused: {e}"));
        }
        if size > self.server.settings.config.max_artifact_bytes {
            return self.artifact_lost(
                &task_id,
                format!(
                    "artifact {name} of {size} bytes exceeds the limit of {} bytes",
                    self.server.settings.config.max_artifact_bytes
                ),
            );
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.artifact_lost(
                &task_id,
                format!("artifact {name}: sha256 must be 64 hex characters"),
            );
        }
        // Beside the task's artifact tree, so it can collide with no name.
        let dir = db.artifact_dir(&task_id);
        let part = dir.with_extension("part");
        let file = std::fs::create_dir_all(&dir).and_then(|_| std::fs::File::create(&part));
        match file {
            Ok(file) => {
                self.uploads.insert(
                    task_id.clone(),
                    Upload {
                        task_id,
                        test_report,
                        name,
                        size,
                        sha256: sha256.to_ascii_lowercase(),
                        written: 0,
                        hasher: sha2::Sha256::new(),
                        file,
                        part,
                        db,
                    },
                );
            }
            Err(e) => self.artifact_lost(&task_id, format!("cannot store artifact {name}: {e}")),
        }
    }

    /// Discard the task's open upload, if any.
    fn abort_upload(&mut self, task_id: &str, why: &str) {
        if let Some(u) = self.uploads.remove(task_id) {
            let _ = std::fs::remove_file(&u.part);
            self.artifact_lost(&u.task_id, format!("artifact {} discarded: {why}", u.name));
        }
    }

    /// Discard every open upload (the connection ended).
    fn abort_all_uploads(&mut self, why: &str) {
        let open: Vec<String> = self.uploads.keys().cloned().collect();
        for task_id in open {
            self.abort_upload(&task_id, why);
        }
    }

    async fn artifact_end(&mut self, task_id: &str) {
        let Some(u) = self.uploads.remove(task_id) else {
            if matches!(self.lookup(task_id), Lookup::Assigned(..)) {
                // Its begin was refused (and reported) already.
                return self.error(
                    Some(task_id),
                    "no artifact upload open for this task".into(),
                );
            }
            return self.not_yours(task_id);
        };
        let digest = hex::encode(u.hasher.finalize());
        if u.written != u.size || digest != u.sha256 {
            let _ = std::fs::remove_file(&u.part);
            return self.artifact_lost(
                task_id,
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
            let _ = std::fs::remove_file(&u.part);
            self.artifact_lost(task_id, format!("storing artifact {}: {e}", u.name));
        } else if u.test_report {
            crate::test_reports::ingest(&self.server, &u.db, task_id, &u.name, fin).await;
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
                    self.server.metrics.log_bytes(len);
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
                    let Some(u) = self.uploads.get_mut(&h.task_id) else {
                        // The begin was refused and reported: nothing to add.
                        return Ok(());
                    };
                    u.written += len;
                    u.hasher.update(payload);
                    if u.written > u.size {
                        self.abort_upload(&h.task_id, "more bytes than announced");
                    } else if let Err(e) = u.file.write_all(payload) {
                        self.abort_upload(&h.task_id, &format!("write failed: {e}"));
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

/// The answer to one task a builder claims back in its hello: resume its
/// log from the builder bytes stored, or refuse (the builder kills it). A
/// claim whose stored log cannot be read is handed back (requeued without
/// counting) and refused.
async fn resume_answer(
    server: &Arc<Server>,
    cid: ConnId,
    builder: &str,
    held: &sai_core::protocol::HeldTask,
    claim: Result<(), String>,
) -> ServerMessage {
    let task_id = held.task_id.clone();
    let refuse = |reason: String| {
        tracing::info!(builder, task = %task_id, %reason, "claim refused");
        ServerMessage::ClaimRefused {
            task_id: task_id.clone(),
            reason,
        }
    };
    if let Err(reason) = claim {
        return refuse(reason);
    }
    let lookup = server.sched().lookup(cid, &task_id);
    let stored = match lookup {
        Lookup::Assigned(db, _) => server
            .logs
            .received(db, task_id.clone())
            .await
            .map_err(|e| e.to_string()),
        _ => Err("the task was taken back meanwhile".into()),
    };
    match stored {
        Ok(offset) if offset <= held.log_bytes => {
            tracing::info!(builder, task = %task_id, offset, "task claimed back after a restart");
            ServerMessage::ResumeTask {
                task_id,
                log_offset: offset,
            }
        }
        other => {
            let reason = match other {
                Ok(offset) => format!(
                    "the server stored {offset} bytes of its log, the builder says it produced {}",
                    held.log_bytes
                ),
                Err(e) => format!("its stored log cannot be read: {e}"),
            };
            let back = TaskResult::HandedBack {
                reason: reason.clone(),
            };
            server.sched_do(|s, now| s.finished(now, cid, &task_id, &back));
            refuse(reason)
        }
    }
}

/// Add a task that just ended (passed or failed) to its duration history.
fn record_duration(server: &Server, db: &crate::store::EventDb, project: &str, task_id: &str) {
    let task = match db.task(task_id) {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => return tracing::error!(cause = %e, "reading finished task"),
    };
    let run = &task.run;
    let (Some(started), Some(ended)) = (run.started, run.ended) else {
        return;
    };
    if !matches!(run.state, TaskState::Success | TaskState::Failed) || ended < started {
        return;
    }
    let key = crate::store::durations::DurationKey {
        project,
        configuration: &task.spec.configuration,
        platform: &task.spec.platform,
    };
    if let Err(e) = server
        .store
        .record_duration(key, task_id, run.state, ended - started, ended)
    {
        tracing::error!(cause = %e, "recording task duration");
    }
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
