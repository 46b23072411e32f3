//! A protocol-level fake builder: speaks [`sai_core::protocol`] over a real
//! websocket, honours flow-control credit, and lets tests script offers,
//! logs, artifacts and results.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use sai_core::protocol::{
    BuilderMessage, FrameHeader, FrameKind, MAX_FRAME_PAYLOAD, PROTOCOL_VERSION, PlatformOffer,
    ServerMessage, TaskOffer, TaskResult, encode_frame,
};
use sha2::Digest;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Refusal of the websocket upgrade.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status (401 for bad tokens).
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// A connected fake builder.
pub struct FakeBuilder {
    ws: Ws,
    /// Remaining flow-control credit in bytes.
    pub credit: u64,
    /// Every `credit` message total received.
    pub credit_received: u64,
    /// Flow-control window announced in `welcome`.
    pub window: u64,
    queue: VecDeque<ServerMessage>,
    /// Close frame received, if any.
    pub closed: Option<(u16, String)>,
}

/// Unix microseconds now.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl FakeBuilder {
    /// Open the websocket with an optional bearer token; `Err(Refused)` when
    /// the server answers the upgrade with an HTTP error.
    pub async fn connect(
        url: &str,
        token: Option<&str>,
    ) -> Result<std::result::Result<FakeBuilder, Refused>> {
        let mut req = url.into_client_request()?;
        if let Some(t) = token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse()?);
        }
        match tokio_tungstenite::connect_async_with_config(req, None, true).await {
            Ok((ws, _)) => Ok(Ok(FakeBuilder {
                ws,
                credit: 0,
                credit_received: 0,
                window: 0,
                queue: VecDeque::new(),
                closed: None,
            })),
            Err(WsError::Http(resp)) => Ok(Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default(),
            })),
            Err(e) => Err(e.into()),
        }
    }

    /// Connect, send a hello and wait for the welcome.
    pub async fn start(
        url: &str,
        token: &str,
        name: &str,
        platforms: &[(&str, u32)],
    ) -> Result<FakeBuilder> {
        let mut b = match FakeBuilder::connect(url, Some(token)).await? {
            Ok(b) => b,
            Err(r) => bail!("upgrade refused: {} {}", r.status, r.body),
        };
        b.hello(PROTOCOL_VERSION, name, platforms).await?;
        match b.next(Duration::from_secs(30)).await? {
            ServerMessage::Welcome {
                protocol_version,
                log_window,
                ..
            } => {
                anyhow::ensure!(
                    protocol_version == PROTOCOL_VERSION,
                    "welcome with version {protocol_version}"
                );
                b.credit = log_window;
                b.window = log_window;
            }
            m => bail!("expected welcome, got {m:?}"),
        }
        Ok(b)
    }

    /// Send a hello with any version.
    pub async fn hello(
        &mut self,
        version: u32,
        name: &str,
        platforms: &[(&str, u32)],
    ) -> Result<()> {
        self.send(&BuilderMessage::Hello {
            protocol_version: version,
            builder: name.into(),
            platforms: platforms
                .iter()
                .map(|(n, i)| PlatformOffer {
                    name: n.to_string(),
                    instances: *i,
                })
                .collect(),
            software: "sai-testkit fake builder".into(),
            held: Vec::new(),
        })
        .await
    }

    /// Send one message.
    pub async fn send(&mut self, m: &BuilderMessage) -> Result<()> {
        self.ws
            .send(Message::text(serde_json::to_string(m)?))
            .await?;
        Ok(())
    }

    /// Receive the next non-credit message from the socket (credit is
    /// accounted on the way); `None` when the connection closed.
    async fn recv_raw(&mut self) -> Result<Option<ServerMessage>> {
        loop {
            match self.recv_one().await? {
                Some(ServerMessage::Credit { .. }) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Receive the next message, credit included (already accounted);
    /// `None` when the connection closed (see [`FakeBuilder::closed`]).
    async fn recv_one(&mut self) -> Result<Option<ServerMessage>> {
        loop {
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(None),
                Some(Err(WsError::Protocol(_))) if self.closed.is_some() => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => {
                    let m: ServerMessage =
                        serde_json::from_str(&t).with_context(|| format!("server sent {t}"))?;
                    if let ServerMessage::Credit { bytes } = m {
                        self.credit += bytes;
                        self.credit_received += bytes;
                    }
                    return Ok(Some(m));
                }
                Some(Ok(Message::Close(f))) => {
                    self.closed = Some(
                        f.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    return Ok(None);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Next non-credit message within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<ServerMessage> {
        if let Some(m) = self.queue.pop_front() {
            return Ok(m);
        }
        match tokio::time::timeout(timeout, self.recv_raw()).await {
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => bail!("connection closed: {:?}", self.closed),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("no message within {timeout:?}"),
        }
    }

    /// Wait for an offer (other messages are kept for [`FakeBuilder::next`]).
    pub async fn offer(&mut self, timeout: Duration) -> Result<TaskOffer> {
        if let Some(i) = self
            .queue
            .iter()
            .position(|m| matches!(m, ServerMessage::Offer { .. }))
            && let Some(ServerMessage::Offer { task }) = self.queue.remove(i)
        {
            return Ok(*task);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.recv_raw()).await {
                Ok(Ok(Some(ServerMessage::Offer { task }))) => return Ok(*task),
                Ok(Ok(Some(m))) => self.queue.push_back(m),
                Ok(Ok(None)) => bail!("connection closed: {:?}", self.closed),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("no offer within {timeout:?}"),
            }
        }
    }

    /// Is another message (offer or otherwise) available within `timeout`?
    pub async fn poll(&mut self, timeout: Duration) -> Result<Option<ServerMessage>> {
        if let Some(m) = self.queue.pop_front() {
            return Ok(Some(m));
        }
        match tokio::time::timeout(timeout, self.recv_raw()).await {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }

    /// Wait until the server closes the connection; returns its close code and reason.
    pub async fn closed_by_server(&mut self, timeout: Duration) -> Result<(u16, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(c) = &self.closed {
                return Ok(c.clone());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.recv_raw()).await {
                Ok(Ok(Some(m))) => self.queue.push_back(m),
                Ok(Ok(None)) => return Ok(self.closed.clone().unwrap_or((1006, "dropped".into()))),
                Ok(Err(_)) => return Ok(self.closed.clone().unwrap_or((1006, "error".into()))),
                Err(_) => bail!("server did not close within {timeout:?}"),
            }
        }
    }

    async fn wait_credit(&mut self, need: u64) -> Result<()> {
        self.credit_at_least(need, Duration::from_secs(60)).await
    }

    /// Wait until the server returned all credit: every log byte sent so
    /// far is stored (acknowledged).
    pub async fn acknowledged(&mut self, timeout: Duration) -> Result<()> {
        self.credit_at_least(self.window, timeout).await
    }

    /// Read (queueing other messages) until the credit is at least `need`.
    async fn credit_at_least(&mut self, need: u64, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.credit < need {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.recv_one()).await {
                Ok(Ok(Some(ServerMessage::Credit { .. }))) => {}
                Ok(Ok(Some(m))) => self.queue.push_back(m),
                Ok(Ok(None)) => bail!("connection closed while waiting for credit"),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("credit not returned within {timeout:?}"),
            }
        }
        Ok(())
    }

    async fn frames(
        &mut self,
        kind: FrameKind,
        task_id: &str,
        channel: u8,
        bytes: &[u8],
    ) -> Result<()> {
        for chunk in bytes.chunks(MAX_FRAME_PAYLOAD) {
            self.wait_credit(chunk.len() as u64).await?;
            let frame = encode_frame(
                &FrameHeader {
                    kind,
                    channel,
                    timestamp_us: now_us(),
                    task_id: task_id.into(),
                },
                chunk,
            );
            self.credit -= chunk.len() as u64;
            self.ws.send(Message::binary(frame)).await?;
        }
        Ok(())
    }

    /// Send log bytes on a channel, split into frames, within credit.
    pub async fn log(&mut self, task_id: &str, channel: u8, bytes: &[u8]) -> Result<()> {
        self.frames(FrameKind::Log, task_id, channel, bytes).await
    }

    /// Send a raw binary frame, ignoring credit (for misbehaviour tests).
    pub async fn raw_binary(&mut self, frame: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(frame)).await?;
        Ok(())
    }

    /// Send bytes of the task's open artifact upload (after an
    /// `artifact_begin`), split into frames, within credit.
    pub async fn artifact_bytes(&mut self, task_id: &str, bytes: &[u8]) -> Result<()> {
        self.frames(FrameKind::Artifact, task_id, 0, bytes).await
    }

    /// Upload an artifact.
    pub async fn artifact(&mut self, task_id: &str, name: &str, bytes: &[u8]) -> Result<()> {
        self.upload(task_id, name, bytes, false).await
    }

    /// Upload a JUnit XML test report (`artifact_begin.test_report`).
    pub async fn test_report(&mut self, task_id: &str, name: &str, bytes: &[u8]) -> Result<()> {
        self.upload(task_id, name, bytes, true).await
    }

    async fn upload(
        &mut self,
        task_id: &str,
        name: &str,
        bytes: &[u8],
        test_report: bool,
    ) -> Result<()> {
        self.send(&BuilderMessage::ArtifactBegin {
            task_id: task_id.into(),
            name: name.into(),
            size: bytes.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(bytes)),
            test_report,
        })
        .await?;
        self.frames(FrameKind::Artifact, task_id, 0, bytes).await?;
        self.send(&BuilderMessage::ArtifactEnd {
            task_id: task_id.into(),
        })
        .await
    }

    /// Accept an offered task.
    pub async fn accept(&mut self, task_id: &str) -> Result<()> {
        self.send(&BuilderMessage::Accept {
            task_id: task_id.into(),
        })
        .await
    }

    /// Decline an offered task, saying why.
    pub async fn reject(&mut self, task_id: &str, reason: &str) -> Result<()> {
        self.send(&BuilderMessage::Reject {
            task_id: task_id.into(),
            reason: reason.into(),
        })
        .await
    }

    /// Step `step` (0-based) of a task started.
    pub async fn step_started(&mut self, task_id: &str, step: u32) -> Result<()> {
        self.send(&BuilderMessage::StepStarted {
            task_id: task_id.into(),
            step,
        })
        .await
    }

    /// Step `step` of a task ended with `exit_code` after `duration_ms`.
    pub async fn step_finished(
        &mut self,
        task_id: &str,
        step: u32,
        exit_code: i32,
        duration_ms: u64,
    ) -> Result<()> {
        self.send(&BuilderMessage::StepFinished {
            task_id: task_id.into(),
            step,
            exit_code,
            duration_ms,
        })
        .await
    }

    /// A task ended with `result`.
    pub async fn finish(&mut self, task_id: &str, result: TaskResult) -> Result<()> {
        self.send(&BuilderMessage::TaskFinished {
            task_id: task_id.into(),
            result,
        })
        .await
    }

    /// [`run_task`](Self::run_task) ending `failed` with `exit_code` in step 0.
    pub async fn fail_task(&mut self, offer: &TaskOffer, log: &[u8], exit_code: i32) -> Result<()> {
        let result = TaskResult::Failed { exit_code, step: 0 };
        self.run_task(offer, log, result).await
    }

    /// Accept, run each step (started/finished), log `log`, end with `result`.
    pub async fn run_task(
        &mut self,
        offer: &TaskOffer,
        log: &[u8],
        result: TaskResult,
    ) -> Result<()> {
        let id = offer.task_id.clone();
        self.accept(&id).await?;
        self.step_started(&id, 0).await?;
        if !log.is_empty() {
            self.log(&id, 1, log).await?;
        }
        let exit_code = match &result {
            TaskResult::Failed { exit_code, .. } => *exit_code,
            _ => 0,
        };
        self.step_finished(&id, 0, exit_code, 1).await?;
        self.finish(&id, result).await
    }

    /// Close the websocket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Drop the TCP connection without a close frame.
    pub fn drop_connection(self) {
        drop(self.ws);
    }
}
