//! systemd supervision of the real `sai-server` binary, with a fake
//! `NOTIFY_SOCKET`: READY=1 only once the store is open and the port is
//! bound, WATCHDOG=1 keep-alives at half of WATCHDOG_USEC, STOPPING=1 on
//! SIGTERM; and no READY=1 from a server that cannot open its store.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use sai_testkit::TestServer;
use sai_testkit::notify_socket::FakeNotifySocket;

#[test]
fn ready_when_serving_then_watchdog_keepalives_then_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sock = FakeNotifySocket::bind().unwrap();
    let config = config_in(tmp.path().join("data"));
    let mut server = TestServer::start(
        &bin(),
        &config,
        &[("NOTIFY_SOCKET", sock.path()), ("WATCHDOG_USEC", "400000")],
    )
    .unwrap();
    let ready = sock
        .wait_for(T, |m| m.contains("READY=1"))
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(
        ready.contains(&format!("STATUS=listening on http://{}", server.addr)),
        "{ready}"
    );
    assert_eq!(
        sock.received.len(),
        1,
        "READY=1 comes first: {:?}",
        sock.received
    );
    // Really serving when READY=1 arrived: the port answers.
    std::net::TcpStream::connect(server.addr).expect("the port accepts at READY=1");

    // Keep-alives every 200 ms (half of WATCHDOG_USEC), not faster.
    std::thread::sleep(Duration::from_millis(1000));
    let mut n = 0;
    while sock
        .wait_for(Duration::from_millis(5), |m| m.trim() == "WATCHDOG=1")
        .is_ok()
    {
        n += 1;
    }
    assert!(
        (2..=8).contains(&n),
        "{n} keep-alives in ~1 s: {:?}",
        sock.received
    );

    server.guard.stop();
    sock.wait_for(T, |m| m.contains("STOPPING=1")).unwrap();
}

#[test]
fn no_ready_when_the_store_cannot_be_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sock = FakeNotifySocket::bind().unwrap();
    // The data dir would be inside a regular file.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let config = config_in(blocker.join("data"));
    let conf = tmp.path().join("server.conf");
    std::fs::write(&conf, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = Command::new(bin())
        .args(["-c", conf.to_str().unwrap(), "run"])
        .env("NOTIFY_SOCKET", sock.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server cannot start");
    let got = sock.wait_for(Duration::from_millis(500), |m| m.contains("READY=1"));
    assert!(got.is_err(), "no READY=1 was sent: {:?}", sock.received);
}
