//! Slow or stalled clients cannot exhaust the server (issue 9 item 5):
//! silent connections are closed after the header timeout, stalled bodies
//! get 408, and with every API connection slot taken builders still
//! connect and hooks are still accepted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sai_testkit::FakeBuilder;
use sai_testkit::hook::{Push, TestPush};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read until the peer closes; the bytes read, or `None` if it is still
/// open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_are_closed_and_builders_and_hooks_are_served_meanwhile() {
    let env = start(|c| {
        c.limits.header_timeout_ms = 3000;
        c.limits.max_api_connections = 20;
    });
    let s = &env.server;
    let token = s.builder_token("host1", &["linux-debian"]).unwrap();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let opened = Instant::now();
    // Let the server accept them all (the first 20 take the API slots).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (st, v) = get(s, "/api/projects").await;
    assert_eq!(st, 503, "API over its connection cap: {v}");
    assert!(
        v["error"].as_str().unwrap().contains("max_api_connections"),
        "{v}"
    );
    let b = FakeBuilder::start(&s.builder_url(), &token, "host1", &[(LINUX, 1)]).await;
    assert!(
        b.is_ok(),
        "a builder connects while the API is full: {:?}",
        b.err()
    );
    let (st, v) = push(s, &Push::new("demo", SMALL)).await;
    assert_eq!(st, 200, "a hook is accepted while the API is full: {v}");
    assert!(
        opened.elapsed() < Duration::from_millis(2500),
        "checks ran before the header timeout ({:?}); the machine is too slow for this test",
        opened.elapsed()
    );

    // Every silent connection is closed after the header timeout.
    for (i, c) in silent.iter_mut().enumerate() {
        let left = Duration::from_secs(15).saturating_sub(opened.elapsed());
        assert!(
            closed_within(c, left).await.is_some(),
            "silent connection {i} still open after {:?}",
            opened.elapsed()
        );
    }
    assert!(opened.elapsed() >= Duration::from_millis(2500));
    let (st, _) = get(s, "/api/projects").await;
    assert_eq!(st, 200, "slots are free again");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_and_stalled_bodies_are_cut() {
    let env = start(|c| {
        c.limits.header_timeout_ms = 1000;
        c.limits.body_timeout_ms = 1000;
    });
    let s = &env.server;
    // One request, then silence on the kept-alive connection.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /api/projects HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    assert!(
        closed_within(&mut c, Duration::from_secs(10))
            .await
            .is_some(),
        "an idle keep-alive connection is closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));

    // A hook body that stops half way.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(
        b"POST /update-hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Authorization: sai sha256=00\r\nContent-Length: 1000\r\n\r\n{\"schema\":",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut c, Duration::from_secs(10))
        .await
        .expect("the stalled request is answered and closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout_ms"), "{text}");
}
