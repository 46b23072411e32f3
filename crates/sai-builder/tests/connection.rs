//! The server link against an in-process websocket server on 127.0.0.1:0.

// tungstenite's handshake callback type returns its large `ErrorResponse`.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sai_builder::connection::{ConnectError, ConnectOptions, connect};
use sai_builder::log::{CH_STDERR, LogChunk};
use sai_core::protocol::{
    BuilderMessage, CLOSE_UNSUPPORTED_VERSION, FrameKind, PROTOCOL_VERSION, PlatformOffer,
    ServerMessage, TaskResult, decode_frame,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

const TID: &str = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF";
const TOKEN: &str = "test-token";

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/builder", l.local_addr().unwrap());
    (l, url)
}

/// Accept one websocket, requiring the bearer token.
async fn accept(l: &TcpListener) -> WebSocketStream<TcpStream> {
    let (tcp, _) = l.accept().await.unwrap();
    tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth == Some(&format!("Bearer {TOKEN}")) {
            Ok(resp)
        } else {
            Err(unauthorized())
        }
    })
    .await
    .unwrap()
}

/// The refusal of a bad token: 401.
fn unauthorized() -> ErrorResponse {
    let mut e = ErrorResponse::new(Some("bad token".into()));
    *e.status_mut() = StatusCode::UNAUTHORIZED;
    e
}

/// A fake server for one builder: it accepts the builder, reads its hello,
/// and hands the socket to `then`. Its URL and its task.
async fn fake_server<F, Fut>(then: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: FnOnce(WebSocketStream<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (l, url) = listener().await;
    let server = tokio::spawn(async move {
        let mut ws = accept(&l).await;
        next_text(&mut ws).await;
        then(ws).await
    });
    (url, server)
}

/// The next message, within 30 s.
async fn next_message(
    ws: &mut WebSocketStream<TcpStream>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .unwrap()
}

async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> String {
    loop {
        match next_message(ws).await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

async fn next_binary(ws: &mut WebSocketStream<TcpStream>) -> Vec<u8> {
    match next_message(ws).await {
        Some(Ok(Message::Binary(b))) => b.to_vec(),
        other => panic!("expected binary, got {other:?}"),
    }
}

fn welcome(version: u32, window: u64, max: u32) -> Message {
    Message::text(
        serde_json::to_string(&ServerMessage::Welcome {
            protocol_version: version,
            server: "test".into(),
            log_window: window,
            max_frame_payload: max,
        })
        .unwrap(),
    )
}

fn options(url: &str, token: &str) -> ConnectOptions {
    ConnectOptions::new(
        url,
        token,
        "host1",
        vec![PlatformOffer {
            name: "linux-debian-12/x86_64/gcc".into(),
            instances: 2,
        }],
    )
}

#[tokio::test]
async fn hello_welcome_credit_and_ordering() {
    let (l, url) = listener().await;
    let server = tokio::spawn(async move {
        let mut ws = accept(&l).await;
        let hello: BuilderMessage = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        match hello {
            BuilderMessage::Hello {
                protocol_version,
                builder,
                platforms,
                ..
            } => {
                assert_eq!(protocol_version, PROTOCOL_VERSION);
                assert_eq!(builder, "host1");
                assert_eq!(platforms[0].instances, 2);
            }
            other => panic!("{other:?}"),
        }
        // A window of 10 bytes, frames of at most 4.
        ws.send(welcome(PROTOCOL_VERSION, 10, 4)).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 10 {
            let frame = next_binary(&mut ws).await;
            let (h, payload) = decode_frame(&frame).unwrap();
            assert_eq!(h.kind, FrameKind::Log);
            assert_eq!(h.channel, CH_STDERR);
            assert_eq!(h.task_id, TID);
            assert!(payload.len() <= 4);
            got.extend_from_slice(payload);
        }
        assert_eq!(got, b"abcdefghij", "no byte beyond the credit");
        // Nothing more may come until credit is returned.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), ws.next())
                .await
                .is_err(),
            "frame sent without credit"
        );
        ws.send(Message::text(
            serde_json::to_string(&ServerMessage::Credit { bytes: 1000 }).unwrap(),
        ))
        .await
        .unwrap();
        while got.len() < 26 {
            let frame = next_binary(&mut ws).await;
            got.extend_from_slice(decode_frame(&frame).unwrap().1);
        }
        assert_eq!(got, b"abcdefghijklmnopqrstuvwxyz");
        // The text message queued after the log bytes comes after them.
        let done: BuilderMessage = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert!(matches!(done, BuilderMessage::TaskFinished { .. }));
        ws.send(Message::text(
            serde_json::to_string(&ServerMessage::Cancel {
                task_id: TID.into(),
                reason: "test".into(),
            })
            .unwrap(),
        ))
        .await
        .unwrap();
        ws.close(None).await.unwrap();
    });

    let mut link = connect(&options(&url, TOKEN)).await.unwrap();
    assert_eq!(link.welcome.log_window, 10);
    assert_eq!(link.welcome.max_frame_payload, 4);
    link.sender
        .send_log(
            TID,
            LogChunk {
                channel: CH_STDERR,
                bytes: Bytes::from_static(b"abcdefghijklmnopqrstuvwxyz"),
            },
        )
        .await
        .unwrap();
    link.sender
        .send(&BuilderMessage::TaskFinished {
            task_id: TID.into(),
            result: TaskResult::Success,
        })
        .await
        .unwrap();
    // Credit is consumed internally; the cancel is the first message we see.
    let msg = tokio::time::timeout(Duration::from_secs(30), link.incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(msg, ServerMessage::Cancel { .. }), "{msg:?}");
    assert!(
        tokio::time::timeout(Duration::from_secs(30), link.incoming.recv())
            .await
            .unwrap()
            .is_none(),
        "incoming ends when the server closes"
    );
    server.await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), link.closed())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bad_token_is_refused() {
    let (l, url) = listener().await;
    let server =
        tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let r = tokio_tungstenite::accept_hdr_async(tcp, |_: &Request, _: Response| {
                Err(unauthorized())
            })
            .await;
            assert!(r.is_err());
        });
    match connect(&options(&url, "wrong")).await {
        Err(ConnectError::Refused { status, .. }) => assert_eq!(status, 401),
        other => panic!("expected Refused, got {other:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn another_protocol_version_is_rejected_with_4001() {
    let (url, server) = fake_server(|mut ws| async move {
        ws.send(welcome(PROTOCOL_VERSION + 1, 10, 4)).await.unwrap();
        match next_message(&mut ws).await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), CLOSE_UNSUPPORTED_VERSION)
            }
            other => panic!("expected close 4001, got {other:?}"),
        }
    })
    .await;
    match connect(&options(&url, TOKEN)).await {
        Err(ConnectError::UnsupportedVersion { ours, theirs, .. }) => {
            assert_eq!(ours, PROTOCOL_VERSION);
            assert_eq!(theirs, PROTOCOL_VERSION + 1);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn a_server_closing_instead_of_welcoming_is_an_error() {
    let (url, server) = fake_server(|mut ws| async move {
        ws.close(None).await.unwrap();
    })
    .await;
    assert!(matches!(
        connect(&options(&url, TOKEN)).await,
        Err(ConnectError::NoWelcome { .. })
    ));
    server.await.unwrap();
}

#[tokio::test]
async fn nothing_listening_is_a_transport_error() {
    let (l, url) = listener().await;
    drop(l);
    assert!(matches!(
        connect(&options(&url, TOKEN)).await,
        Err(ConnectError::Transport { .. })
    ));
}

#[tokio::test]
async fn artifacts_are_sent_as_begin_frames_end() {
    use sai_builder::artifacts::scan;
    use sha2::{Digest, Sha256};

    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::create_dir_all(tmp.path().join("build")).unwrap();
    std::fs::write(tmp.path().join("build/big.bin"), &data).unwrap();
    let found = scan(tmp.path(), &["build/*.bin".to_string()]);
    let artifact = found.artifacts[0].clone();

    let expected = data.clone();
    let (url, server) = fake_server(|mut ws| async move {
        ws.send(welcome(PROTOCOL_VERSION, 1 << 20, 64 * 1024))
            .await
            .unwrap();
        let begin: BuilderMessage = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        // The relative path is kept; a plain artifact is not a test report.
        let size = expected.len() as u64;
        let sha256 = hex::encode(Sha256::digest(&expected));
        let announced = BuilderMessage::ArtifactBegin {
            task_id: TID.into(),
            name: "build/big.bin".into(),
            size,
            sha256: sha256.clone(),
            test_report: false,
        };
        assert_eq!(begin, announced);
        let mut body = Vec::new();
        while (body.len() as u64) < size {
            let frame = next_binary(&mut ws).await;
            let (h, p) = decode_frame(&frame).unwrap();
            assert_eq!(h.kind, FrameKind::Artifact);
            assert_eq!(h.channel, 0);
            body.extend_from_slice(p);
        }
        assert_eq!(body, expected);
        assert_eq!(sha256, hex::encode(Sha256::digest(&body)));
        let end: BuilderMessage = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert!(matches!(end, BuilderMessage::ArtifactEnd { .. }));
    })
    .await;
    let link = connect(&options(&url, TOKEN)).await.unwrap();
    link.sender.send_artifact(TID, &artifact).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn pings_are_sent_and_a_silent_server_is_dropped() {
    let (seen_ping_tx, seen_ping_rx) = tokio::sync::oneshot::channel();
    let (url, server) = fake_server(|mut ws| async move {
        ws.send(welcome(PROTOCOL_VERSION, 1024, 1024))
            .await
            .unwrap();
        // The builder's heartbeat arrives without any message from it.
        match next_message(&mut ws).await {
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a ping, got {other:?}"),
        }
        let _ = seen_ping_tx.send(());
        // Then the server goes silent: it holds the socket and reads nothing
        // (so it answers no further ping) until the builder gives up.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(ws);
    })
    .await;
    let mut opts = options(&url, TOKEN);
    opts.keepalive = Duration::from_millis(100);
    opts.dead_after = Duration::from_millis(800);
    let mut link = connect(&opts).await.unwrap();
    seen_ping_rx.await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), link.incoming.recv())
        .await
        .expect("the dead link is noticed");
    assert!(ended.is_none());
    // The writer side follows: senders see the link closed.
    tokio::time::timeout(Duration::from_secs(30), async {
        while !link.sender.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("sender closed");
    server.abort();
}
