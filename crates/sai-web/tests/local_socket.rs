//! sai-web reading and acting through sai-server's local unix socket
//! instead of a service token over TCP: the socket is 0660, a signed-in
//! user's action goes through it and is recorded with the user, and the
//! trust given to the socket does not leak to the TCP listener.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use sai_core::config::web::WebUser;
use sai_testkit::TestServer;
use sai_testkit::hook::{HookRequest, Push, TestPush};
use sai_testkit::web::{TestWeb, test_web_config};

/// The next JSON message of a websocket.
async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("a message within the timeout")
            .expect("the socket stays open")
            .unwrap();
        if let Ok(text) = m.to_text()
            && let Ok(v) = serde_json::from_str(text)
        {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sai_web_works_through_the_local_socket_without_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("server.sock");
    let mut c = sai_testkit::test_config(&tmp.path().join("data"), KEY);
    c.local_socket = Some(sock.display().to_string());
    let server = TestServer::start(&sai_testkit::bin_path("sai-server"), &c, &[]).unwrap();
    sai_testkit::wait_for("the local socket", T, || async {
        sock.exists().then_some(())
    })
    .await
    .unwrap();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    let dir = tmp.path().join("web");
    std::fs::create_dir_all(&dir).unwrap();
    let mut wc = test_web_config(&dir, &format!("unix:{}", sock.display()));
    assert!(wc.server_token_file.is_none());
    wc.users = vec![WebUser {
        name: USER.into(),
        password_hash: password_hash(PASSWORD),
    }];
    let web = TestWeb::start(&web_bin(), &dir, &wc).unwrap();

    let ev = push_to(
        &server,
        HookRequest::like_sai_sh(&Push::new("demo", SMALL), KEY),
    )
    .await;
    let c = raw_client();
    let overview = sai_testkit::body_text(c.get(web.url("/"))).await;
    assert!(overview.contains(&ev), "{overview}\n{}", web.log());

    // The change feed over the socket: sai-web follows it without a token,
    // and a change made now arrives through the socket.
    sai_testkit::wait_for("sai-web following the change feed", T, || async {
        web.log()
            .lines()
            .any(|l| {
                l.contains("change feed connected")
                    && l.contains("local_socket")
                    && l.contains("true")
            })
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", web.log()));
    let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (mut feed, _) = tokio_tungstenite::client_async("ws://localhost/api/changes", stream)
        .await
        .unwrap();
    let hello = next_json(&mut feed).await;
    assert_eq!(hello["t"], "hello", "{hello}");
    let second = push_to(
        &server,
        HookRequest::like_sai_sh(&Push::new("demo", SMALL), KEY),
    )
    .await;
    let change = tokio::time::timeout(T, async {
        loop {
            let m = next_json(&mut feed).await;
            if m["t"] == "change" && m.to_string().contains(&second) {
                return m;
            }
        }
    })
    .await
    .expect("the new event's change through the local socket");
    assert!(change["seq"].as_u64().unwrap() > 0, "{change}");

    // A signed-in user's rebuild goes through the socket, without a token,
    // and the server records the user.
    let cookie = sign_in(&web, USER, PASSWORD).await.unwrap();
    let html = page_as(&c, web.url(&format!("/e/{ev}")), &cookie).await;
    let csrf = csrf_of(&html).expect("signed in: action forms");
    let r = post_form_as(
        &c,
        web.url(&format!("/e/{ev}/rebuild")),
        &cookie,
        &format!("http://{}", web.addr),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(r.status(), 303, "{}", web.log());
    let e = server_api(&server, &format!("/api/events/{ev}")).await;
    assert_eq!(
        e["tasks"][0]["reason"],
        "rebuild requested by alice",
        "{e}\n{}",
        server.log()
    );

    // Over TCP, without a token, both are refused: the same rebuild, even
    // with the server's internal marker header forged, and the change feed.
    let tcp = reqwest::Client::new();
    let rebuild = tcp
        .post(server.url(&format!("/api/events/{ev}/rebuild")))
        .header("x-sai-on-behalf-of", "alice")
        .header("x-sai-internal-local-socket", "1");
    let changes = tcp
        .get(server.url("/api/changes"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (what, request) in [("rebuild", rebuild), ("change feed", changes)] {
        assert_eq!(request.send().await.unwrap().status(), 401, "{what}");
    }
}
