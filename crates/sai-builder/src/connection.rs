//! The websocket link to one server (protocol: `sai_core::protocol`).
//!
//! [`connect`] dials `ws://…/builder` with `Authorization: Bearer <token>`,
//! sends [`BuilderMessage::Hello`] and waits for [`ServerMessage::Welcome`]
//! (a different protocol version closes the link with
//! [`CLOSE_UNSUPPORTED_VERSION`]). It returns a [`Link`]:
//!
//! * [`Link::sender`]: a cloneable [`LinkSender`] for text messages, log
//!   bytes and artifact bytes. Everything goes through one FIFO queue, so a
//!   `task_finished` queued after a task's log bytes is sent after them.
//!   Binary payloads are split into frames of at most the server's
//!   `max_frame_payload` and never beyond the flow-control credit: the writer
//!   waits for [`ServerMessage::Credit`] when the credit is spent (credit
//!   messages are handled here and never reach the caller).
//! * [`Link::incoming`]: every other server message, in order; it ends when
//!   the link closes.
//!
//! Heartbeat: the writer sends a websocket ping every
//! [`ConnectOptions::keepalive`] (the server answers with a pong, and pings
//! on its own); the reader closes the link when nothing at all arrives for
//! [`ConnectOptions::dead_after`], so a silently dead server or network is
//! noticed and the daemon reconnects.
//!
//! `wss://` URLs are verified with [`ConnectOptions::tls`] (see
//! [`crate::tls`]); a refused certificate fails with [`ConnectError::Tls`],
//! which says why (unknown CA, expired, other host name).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sai_core::protocol::{
    BuilderMessage, CLOSE_UNSUPPORTED_VERSION, FrameHeader, FrameKind, HeldTask, MAX_FRAME_PAYLOAD,
    PROTOCOL_VERSION, PlatformOffer, ServerMessage, encode_frame,
};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::artifacts::{Artifact, ChunkReader};
use crate::log::LogChunk;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Default time allowed for connecting and the hello/welcome exchange.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default depth of the outgoing queue (messages, not bytes).
pub const DEFAULT_QUEUE: usize = 256;
/// Default interval of the builder's websocket pings.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);
/// Default time without any frame from the server (pong, ping, message)
/// after which the link is considered dead and closed.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(45);

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or token cannot form an upgrade request.
    #[error("invalid server URL or token for {url}: {reason}")]
    BadRequest {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The server refused the websocket upgrade.
    #[error("{url} refused the connection with HTTP {status} (check the builder token)")]
    Refused {
        /// The URL.
        url: String,
        /// HTTP status code.
        status: u16,
    },
    /// Transport failure.
    #[error("connecting to {url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server speaks another protocol version.
    #[error("{url} speaks builder protocol {theirs}, this builder speaks {ours}")]
    UnsupportedVersion {
        /// The URL.
        url: String,
        /// Our version.
        ours: u32,
        /// Theirs (0 if the server closed the link without telling).
        theirs: u32,
    },
    /// The server closed the link or sent something else than a welcome.
    #[error("{url} did not welcome us: {reason}")]
    NoWelcome {
        /// The URL.
        url: String,
        /// What happened instead.
        reason: String,
    },
    /// Connecting plus the hello/welcome exchange took too long.
    #[error("timed out connecting to {0}")]
    Timeout(String),
    /// The TLS handshake failed, typically because the server's certificate
    /// was refused.
    #[error("connecting to {url}: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// What was wrong, with a hint.
        reason: String,
    },
}

/// The link is closed: the message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server link is closed")]
pub struct LinkClosed;

/// An artifact upload that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactSendError {
    /// The link closed.
    #[error(transparent)]
    Closed(#[from] LinkClosed),
    /// The file could not be read.
    #[error("reading the artifact: {0}")]
    Read(#[from] std::io::Error),
    /// The file changed size since it was scanned.
    #[error("artifact {path} changed size after it was scanned")]
    Changed {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// How to reach a server and what to say in the hello.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `ws://` or `wss://host[:port][/prefix]/builder`.
    pub url: String,
    /// Trust settings for a `wss://` URL; `None` uses the system roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Builder token, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Builder name (must equal the token's subject).
    pub builder: String,
    /// Platforms offered on this link.
    pub platforms: Vec<PlatformOffer>,
    /// Software name and version for the hello.
    pub software: String,
    /// Limit for connecting plus hello/welcome.
    pub handshake_timeout: Duration,
    /// Depth of the outgoing queue.
    pub queue: usize,
    /// Interval of the websocket pings this side sends (heartbeat).
    pub keepalive: Duration,
    /// The link is closed when nothing arrives from the server for this long.
    pub dead_after: Duration,
    /// Tasks kept running from an earlier connection, claimed in the hello.
    pub held: Vec<HeldTask>,
}

impl ConnectOptions {
    /// Options with the default timeout and queue depth, and this crate's
    /// name and version as `software`.
    pub fn new(
        url: impl Into<String>,
        token: impl Into<String>,
        builder: impl Into<String>,
        platforms: Vec<PlatformOffer>,
    ) -> Self {
        Self {
            url: url.into(),
            tls: None,
            token: token.into(),
            builder: builder.into(),
            platforms,
            software: format!("sai-builder {}", env!("CARGO_PKG_VERSION")),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            queue: DEFAULT_QUEUE,
            keepalive: DEFAULT_KEEPALIVE,
            dead_after: DEFAULT_DEAD_AFTER,
            held: Vec::new(),
        }
    }
}

/// What the server said in its welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Server software.
    pub server: String,
    /// Initial flow-control credit in payload bytes.
    pub log_window: u64,
    /// Largest payload of one binary frame we will send (the smaller of the
    /// server's and ours).
    pub max_frame_payload: usize,
}

enum Outbound {
    Text(String),
    Frame {
        kind: FrameKind,
        channel: u8,
        task_id: String,
        payload: Bytes,
    },
}

/// Sends to the server; cheap to clone. See the module doc.
#[derive(Debug, Clone)]
pub struct LinkSender {
    tx: mpsc::Sender<Outbound>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outbound::Text(t) => write!(f, "Text({t})"),
            Outbound::Frame { kind, payload, .. } => {
                write!(f, "Frame({kind:?}, {} bytes)", payload.len())
            }
        }
    }
}

impl LinkSender {
    /// Queue a text message.
    pub async fn send(&self, msg: &BuilderMessage) -> Result<(), LinkClosed> {
        // Serialising these plain enums cannot fail.
        let text = serde_json::to_string(msg).map_err(|_| LinkClosed)?;
        self.tx
            .send(Outbound::Text(text))
            .await
            .map_err(|_| LinkClosed)
    }

    /// Queue log bytes of `task_id` (a 64-hex task id).
    pub async fn send_log(&self, task_id: &str, chunk: LogChunk) -> Result<(), LinkClosed> {
        self.frame(FrameKind::Log, chunk.channel, task_id, chunk.bytes)
            .await
    }

    /// Queue bytes of the task's open artifact (between `artifact_begin` and
    /// `artifact_end`).
    pub async fn send_artifact_bytes(&self, task_id: &str, bytes: Bytes) -> Result<(), LinkClosed> {
        self.frame(FrameKind::Artifact, 0, task_id, bytes).await
    }

    async fn frame(
        &self,
        kind: FrameKind,
        channel: u8,
        task_id: &str,
        payload: Bytes,
    ) -> Result<(), LinkClosed> {
        if payload.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Outbound::Frame {
                kind,
                channel,
                task_id: task_id.to_string(),
                payload,
            })
            .await
            .map_err(|_| LinkClosed)
    }

    /// Upload one artifact: `artifact_begin` (with [`Artifact::name`],
    /// size and sha256), its bytes in chunks of at most
    /// [`MAX_FRAME_PAYLOAD`], then `artifact_end`. Only one artifact per task
    /// may be open at a time, so callers upload a task's artifacts one after
    /// another.
    pub async fn send_artifact(
        &self,
        task_id: &str,
        artifact: &Artifact,
    ) -> Result<(), ArtifactSendError> {
        self.send_upload(task_id, artifact, false).await
    }

    /// [`Self::send_artifact`], with `artifact_begin.test_report` set when
    /// the file is a JUnit XML test report.
    pub async fn send_upload(
        &self,
        task_id: &str,
        artifact: &Artifact,
        test_report: bool,
    ) -> Result<(), ArtifactSendError> {
        self.send(&BuilderMessage::ArtifactBegin {
            task_id: task_id.to_string(),
            name: artifact.name.clone(),
            size: artifact.size,
            sha256: artifact.sha256.clone(),
            test_report,
        })
        .await?;
        let mut reader = ChunkReader::open(&artifact.path, MAX_FRAME_PAYLOAD).await?;
        let mut sent = 0u64;
        while let Some(chunk) = reader.next_chunk().await? {
            let room = artifact.size - sent;
            let chunk = if chunk.len() as u64 > room {
                chunk.slice(..usize::try_from(room).unwrap_or(0))
            } else {
                chunk
            };
            if chunk.is_empty() {
                break;
            }
            sent += chunk.len() as u64;
            self.send_artifact_bytes(task_id, chunk).await?;
        }
        // Closed in any case so the next artifact can begin; a file that
        // shrank after the scan arrives short and the server rejects it.
        self.send(&BuilderMessage::ArtifactEnd {
            task_id: task_id.to_string(),
        })
        .await?;
        if sent != artifact.size {
            return Err(ArtifactSendError::Changed {
                path: artifact.path.clone(),
            });
        }
        Ok(())
    }

    /// Whether the link is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// An established link; see the module doc. Dropping it (and every clone of
/// its sender) closes the websocket.
#[derive(Debug)]
pub struct Link {
    /// The server's welcome.
    pub welcome: Welcome,
    /// Outgoing side.
    pub sender: LinkSender,
    /// Server messages other than credit, in order; `None` once closed.
    pub incoming: mpsc::Receiver<ServerMessage>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Link {
    /// Wait until both directions have ended (the server closed the link, or
    /// every sender was dropped and the close was sent).
    pub async fn closed(self) {
        drop(self.sender);
        drop(self.incoming);
        let _ = self.writer.await;
        self.reader.abort();
        let _ = self.reader.await;
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Connect, say hello and wait for the welcome; see the module doc.
pub async fn connect(opts: &ConnectOptions) -> Result<Link, ConnectError> {
    let url = opts.url.clone();
    match tokio::time::timeout(opts.handshake_timeout, handshake(opts)).await {
        Ok(Ok((ws, welcome))) => Ok(start(ws, welcome, opts)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::Timeout(url)),
    }
}

async fn handshake(opts: &ConnectOptions) -> Result<(Ws, Welcome), ConnectError> {
    let url = &opts.url;
    let bad = |reason: String| ConnectError::BadRequest {
        url: url.clone(),
        reason,
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| bad(e.to_string()))?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", opts.token))
        .map_err(|_| bad("the token is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", auth);
    let connector = if url.starts_with("wss://") {
        let config = match &opts.tls {
            Some(c) => c.clone(),
            None => crate::tls::client_config(None).map_err(|e| ConnectError::Tls {
                url: url.clone(),
                reason: e.to_string(),
            })?,
        };
        Some(tokio_tungstenite::Connector::Rustls(config))
    } else {
        None
    };
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
    let (mut ws, _response) = match connecting.await {
        Ok(ok) => ok,
        Err(e) if crate::tls::rustls_error(&e).is_some() => {
            let reason = crate::tls::rustls_error(&e).map(crate::tls::explain);
            return Err(ConnectError::Tls {
                url: url.clone(),
                reason: reason.unwrap_or_default(),
            });
        }
        Err(tungstenite::Error::Http(resp)) => {
            return Err(ConnectError::Refused {
                url: url.clone(),
                status: resp.status().as_u16(),
            });
        }
        Err(e) => {
            return Err(ConnectError::Transport {
                url: url.clone(),
                reason: e.to_string(),
            });
        }
    };
    let hello = BuilderMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        builder: opts.builder.clone(),
        platforms: opts.platforms.clone(),
        software: opts.software.clone(),
        held: opts.held.clone(),
    };
    let text = serde_json::to_string(&hello).map_err(|e| bad(e.to_string()))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| ConnectError::Transport {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let no_welcome = |reason: String| ConnectError::NoWelcome {
        url: url.clone(),
        reason,
    };
    loop {
        let msg = match ws.next().await {
            None => return Err(no_welcome("the connection ended".into())),
            Some(Err(e)) => return Err(no_welcome(e.to_string())),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(t) => match serde_json::from_str::<ServerMessage>(&t) {
                Ok(ServerMessage::Welcome {
                    protocol_version,
                    server,
                    log_window,
                    max_frame_payload,
                }) => {
                    if protocol_version != PROTOCOL_VERSION {
                        let _ = ws
                            .close(Some(CloseFrame {
                                code: CloseCode::from(CLOSE_UNSUPPORTED_VERSION),
                                reason: format!("builder speaks protocol {PROTOCOL_VERSION}")
                                    .into(),
                            }))
                            .await;
                        return Err(ConnectError::UnsupportedVersion {
                            url: url.clone(),
                            ours: PROTOCOL_VERSION,
                            theirs: protocol_version,
                        });
                    }
                    let max = usize::try_from(max_frame_payload)
                        .unwrap_or(MAX_FRAME_PAYLOAD)
                        .clamp(1, MAX_FRAME_PAYLOAD);
                    return Ok((
                        ws,
                        Welcome {
                            server,
                            log_window,
                            max_frame_payload: max,
                        },
                    ));
                }
                Ok(other) => return Err(no_welcome(format!("got {other:?}"))),
                Err(e) => return Err(no_welcome(format!("unreadable message: {e}"))),
            },
            Message::Close(frame) => {
                if let Some(f) = &frame
                    && u16::from(f.code) == CLOSE_UNSUPPORTED_VERSION
                {
                    return Err(ConnectError::UnsupportedVersion {
                        url: url.clone(),
                        ours: PROTOCOL_VERSION,
                        theirs: 0,
                    });
                }
                let why = frame
                    .map(|f| format!("closed: {} {}", u16::from(f.code), f.reason))
                    .unwrap_or_else(|| "closed".into());
                return Err(no_welcome(why));
            }
            // Ping/pong are answered by tungstenite; binary is not expected.
            _ => {}
        }
    }
}

fn start(ws: Ws, welcome: Welcome, opts: &ConnectOptions) -> Link {
    let queue = opts.queue;
    let (sink, stream) = ws.split();
    let credit = Arc::new(Semaphore::new(0));
    credit.add_permits(
        usize::try_from(welcome.log_window)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS),
    );
    let (out_tx, out_rx) = mpsc::channel(queue.max(1));
    let (in_tx, in_rx) = mpsc::channel(queue.max(1));
    let gone = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        sink,
        out_rx,
        credit.clone(),
        welcome.max_frame_payload,
        gone.clone(),
        opts.keepalive,
    ));
    let reader = tokio::spawn(read_loop(stream, in_tx, credit, gone, opts.dead_after));
    Link {
        welcome,
        sender: LinkSender { tx: out_tx },
        incoming: in_rx,
        reader,
        writer,
    }
}

/// Take up to `want` bytes of credit, waiting while there is none.
/// `None` once the link is closed.
async fn take_credit(credit: &Semaphore, want: usize) -> Option<usize> {
    let first = credit.acquire().await.ok()?;
    first.forget();
    let more = credit.available_permits().min(want - 1);
    if more > 0 {
        // Only this task takes permits, so they are still there.
        let p = u32::try_from(more).unwrap_or(u32::MAX);
        if let Ok(permits) = credit.try_acquire_many(p) {
            permits.forget();
            return Some(1 + p as usize);
        }
    }
    Some(1)
}

/// Send one message; `false` when it failed or the link was declared gone
/// meanwhile (a dead peer can block a send for as long as TCP retries).
async fn send_or_gone(
    sink: &mut SplitSink<Ws, Message>,
    msg: Message,
    gone: &CancellationToken,
) -> bool {
    tokio::select! {
        r = sink.send(msg) => r.is_ok(),
        _ = gone.cancelled() => false,
    }
}

async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    credit: Arc<Semaphore>,
    max_payload: usize,
    gone: CancellationToken,
    keepalive: Duration,
) {
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + keepalive,
        keepalive.max(Duration::from_millis(10)),
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let out = tokio::select! {
            out = rx.recv() => match out {
                Some(out) => out,
                None => break,
            },
            _ = ping.tick() => {
                if !send_or_gone(&mut sink, Message::Ping(Bytes::new()), &gone).await {
                    break;
                }
                continue;
            }
            _ = gone.cancelled() => return,
        };
        match out {
            Outbound::Text(text) => {
                if !send_or_gone(&mut sink, Message::text(text), &gone).await {
                    break;
                }
            }
            Outbound::Frame {
                kind,
                channel,
                task_id,
                mut payload,
            } => {
                let timestamp_us = now_us();
                while !payload.is_empty() {
                    let Some(n) = take_credit(&credit, payload.len().min(max_payload)).await else {
                        return;
                    };
                    let part = payload.split_to(n);
                    let header = FrameHeader {
                        kind,
                        channel,
                        timestamp_us,
                        task_id: task_id.clone(),
                    };
                    let frame = Message::binary(encode_frame(&header, &part));
                    if !send_or_gone(&mut sink, frame, &gone).await {
                        credit.close();
                        return;
                    }
                }
            }
        }
    }
    // A clean close, unless the link is dead (then the socket just drops).
    tokio::select! {
        _ = tokio::time::timeout(Duration::from_secs(10), sink.close()) => {}
        _ = gone.cancelled() => {}
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    tx: mpsc::Sender<ServerMessage>,
    credit: Arc<Semaphore>,
    gone: CancellationToken,
    dead_after: Duration,
) {
    loop {
        let msg = match tokio::time::timeout(dead_after, stream.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    "nothing heard from the server for {:.1} s; closing the link",
                    dead_after.as_secs_f64()
                );
                break;
            }
        };
        match msg {
            Ok(Message::Text(t)) => match serde_json::from_str::<ServerMessage>(&t) {
                Ok(ServerMessage::Credit { bytes }) => {
                    let room = Semaphore::MAX_PERMITS.saturating_sub(credit.available_permits());
                    credit.add_permits(usize::try_from(bytes).unwrap_or(usize::MAX).min(room));
                }
                Ok(m) => {
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable server message ignored"),
            },
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Wakes a writer waiting for credit or for messages: the link is gone.
    credit.close();
    gone.cancel();
}
