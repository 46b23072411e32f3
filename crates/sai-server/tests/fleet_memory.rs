//! Memory stays flat with a fleet (issue 9): a connected builder costs the
//! server a few KiB (its websocket reads into a small buffer, not
//! tungstenite's 128 KiB default), and what a fleet took is given back
//! once it left.

mod common;

use std::time::Duration;

use sai_server::auth::{TokenKeys, TokenKind};
use sai_testkit::FakeBuilder;

const PLATFORM: &str = "linux-fleet/x86_64-amd/gcc";
const FLEET: usize = 256;

fn rss_kib(pid: u32) -> u64 {
    sai_testkit::proc_status::kib(pid, "VmRSS").expect("the server's VmRSS")
}

async fn connect(url: &str, tokens: &[String], first: usize) -> Vec<FakeBuilder> {
    let mut handles = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let (url, t) = (url.to_string(), t.clone());
        handles.push(tokio::spawn(async move {
            FakeBuilder::start(&url, &t, &format!("fleet{}", first + i), &[(PLATFORM, 1)]).await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_builder_costs_a_few_kib_and_a_departed_fleet_gives_its_memory_back() {
    let env = common::start(|c| {
        // Nobody answers pings here: keep the fleet connected meanwhile.
        c.builder_ping_interval_ms = 600_000;
        c.builder_dead_timeout_ms = 1_200_000;
    });
    let s = &env.server;
    let pid = s.guard.id();
    let keys = TokenKeys::load_or_create(&s.data_dir.join("token.key")).unwrap();
    let tokens: Vec<String> = (0..FLEET + 16)
        .map(|i| {
            keys.mint(
                TokenKind::Builder,
                &format!("fleet{i}"),
                &[PLATFORM.to_string()],
                Duration::from_secs(3600),
            )
            .unwrap()
        })
        .collect();
    let (warm, fleet) = tokens.split_at(16);

    // One-time costs (runtime threads, caches, the scheduler's tables) are
    // paid by a few builders that come and go first.
    for b in connect(&s.builder_url(), warm, 0).await {
        b.close().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);

    let builders = connect(&s.builder_url(), fleet, 16).await;
    sai_testkit::wait_for("the fleet joined", Duration::from_secs(30), || async {
        let (_, b) = common::get(s, "/api/builders").await;
        let online = b
            .as_array()
            .map_or(0, |a| a.iter().filter(|b| b["online"] == true).count());
        (online == FLEET).then_some(())
    })
    .await
    .unwrap();
    let connected = rss_kib(pid);
    let per_builder = connected.saturating_sub(idle) * 1024 / FLEET as u64;
    eprintln!(
        "server RSS: {idle} KiB idle, {connected} KiB with {FLEET} builders ({per_builder} B each)"
    );
    assert!(
        per_builder < 64 * 1024,
        "a connected builder costs the server {per_builder} bytes \
         ({idle} KiB idle, {connected} KiB with {FLEET} builders)"
    );

    for b in builders {
        b.close().await;
    }
    let back = idle + 4 * 1024;
    let rss = sai_testkit::wait_for("memory given back", Duration::from_secs(30), || async {
        let rss = rss_kib(pid);
        (rss <= back).then_some(rss)
    })
    .await;
    eprintln!("server RSS after the fleet left: {} KiB", rss_kib(pid));
    assert!(
        rss.is_ok(),
        "after the fleet left the server holds {} KiB ({idle} KiB before it came, \
         {connected} KiB with it)",
        rss_kib(pid)
    );
}
