//! systemd supervision of the real `sai-builder` binary, with a fake
//! `NOTIFY_SOCKET`: READY=1 once its server link has connected, or has
//! failed and is retrying (a builder waiting for its server is up, not
//! stuck), WATCHDOG=1 keep-alives, STOPPING=1 on SIGTERM.

mod daemon_common;

use std::time::Duration;

use daemon_common::*;
use sai_testkit::notify_socket::FakeNotifySocket;

const NOTIFY_T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn ready_once_connected_with_watchdog_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(&tmp.path().join("data"));
    let conf = one_server_config(&server, tmp.path(), 1);
    let mut sock = FakeNotifySocket::bind().unwrap();
    let mut builder = BuilderProc::start_with_env(
        &conf,
        &[("NOTIFY_SOCKET", sock.path()), ("WATCHDOG_USEC", "400000")],
    );
    let ready = tokio::task::block_in_place(|| sock.wait_for(NOTIFY_T, |m| m.contains("READY=1")))
        .unwrap_or_else(|e| panic!("{e}\n{}", builder.log()));
    assert!(ready.contains("STATUS=serving 1 server link(s)"), "{ready}");
    assert!(
        builder.log().contains(" connected"),
        "READY=1 after the link connected:\n{}",
        builder.log()
    );
    for _ in 0..2 {
        tokio::task::block_in_place(|| {
            sock.wait_for(Duration::from_secs(5), |m| m.trim() == "WATCHDOG=1")
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", builder.log()));
    }
    builder.guard.stop();
    tokio::task::block_in_place(|| sock.wait_for(NOTIFY_T, |m| m.contains("STOPPING=1"))).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_while_retrying_an_unreachable_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = mint_builder_token(&data, "b1", "linux");
    std::fs::write(tmp.path().join("s.token"), token).unwrap();
    // Nothing listens there.
    let url = format!("ws://{}/builder", free_addr());
    let s = ServerRef {
        url,
        token_file: "s.token".into(),
    };
    let conf = write_builder_config(tmp.path(), "b1", &[(LINUX, 1, &[&s])]);
    let mut sock = FakeNotifySocket::bind().unwrap();
    let builder = BuilderProc::start_with_env(&conf, &[("NOTIFY_SOCKET", sock.path())]);
    tokio::task::block_in_place(|| sock.wait_for(NOTIFY_T, |m| m.contains("READY=1")))
        .unwrap_or_else(|e| panic!("{e}\n{}", builder.log()));
    let log = builder.log();
    assert!(
        log.contains("cannot connect"),
        "READY=1 after the first failed attempt:\n{log}"
    );
    assert!(!log.contains(" connected"), "{log}");
    // No watchdog configured: no keep-alives.
    let none = tokio::task::block_in_place(|| {
        sock.wait_for(Duration::from_millis(800), |m| m.contains("WATCHDOG=1"))
    });
    assert!(none.is_err(), "{:?}", sock.received);
}
