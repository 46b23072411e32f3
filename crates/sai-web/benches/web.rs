//! `cargo bench -p sai-web --bench web`: real sai-server, real sai-web and
//! real headless Chromium on loopback; prints a table (BENCHMARKS.md).
//!
//! 1. A line printed by a running step (sent by a builder speaking the real
//!    protocol) until it is in the open task page's DOM: p50/p95 over 100
//!    lines. The page records `Date.now()` when each line appears
//!    (MutationObserver); the bench records the wall clock when it sends.
//! 2. A finished 100 MB log: navigation until the last line is painted,
//!    and until the first line is painted after jumping to the top.
//! 3. The 548-task libwebsockets event page: navigation until all cells are
//!    in the DOM; the page's JS heap.
//! 4. sai-web RSS idle, and with 50 browser websockets open.
//!
//! `SAI_BENCH_LOG_LINES` (default 1,048,576 lines of 100 bytes) sizes the
//! big log, for a quick smoke run; `SAI_BENCH_SERVER_BIN` and
//! `SAI_BENCH_WEB_BIN` run other builds of the two daemons (e.g. the code
//! before a change) under the same bench.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use sai_core::protocol::TaskResult;
use sai_testkit::browser::Browser;
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::proc_status::rss_kib;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn wait_js(b: &Browser, js: &str, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    b.wait_for(js, timeout, js).await.unwrap();
    t0.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let mut rows: Vec<(String, String)> = Vec::new();
    let st = Stack::start(|c| c.log_window_bytes = 32 << 20);
    let b = Browser::start().await?;

    // 4a. Idle RSS (after start and one page).
    b.goto(&st.url("/")).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rows.push((
        "sai-web RSS, idle".into(),
        format!("{:.1} MiB", rss_kib(st.web.guard.id()) as f64 / 1024.0),
    ));

    // 1. Line latency.
    st.push(&Push::new("demo", SMALL)).await;
    let mut builder = st.builder("b1", &[(LINUX, 1)]).await;
    let offer = builder.offer(T).await?;
    let id = offer.task_id.clone();
    builder.accept(&id).await?;
    builder.step_started(&id, 0).await?;
    builder.log(&id, 1, b"start\n").await?;
    b.goto(&st.url(&format!("/t/{id}"))).await?;
    b.wait_for(
        "page live",
        T,
        "return document.body.dataset.live === 'connected';",
    )
    .await?;
    b.eval(
        "window.__seen = {}; new MutationObserver(() => { for (const t of document.querySelectorAll('#log-rows .tx')) { const m = /^bench-line-(\\d+)$/.exec(t.textContent); if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = Date.now(); } }).observe(document.getElementById('log-rows'), {childList: true, subtree: true}); return true;",
        vec![],
    )
    .await?;
    let mut sent = Vec::new();
    for i in 0..100 {
        sent.push(now_ms());
        builder
            .log(&id, 1, format!("bench-line-{i}\n").as_bytes())
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.wait_for(
        "all lines seen",
        T,
        "return Object.keys(window.__seen).length === 100;",
    )
    .await?;
    let seen = b.eval("return window.__seen;", vec![]).await?;
    let mut lat: Vec<f64> = (0..100)
        .map(|i| seen[i.to_string()].as_f64().unwrap() - sent[i])
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows.push((
        "step line -> in the open page's DOM, p50 / p95 / max (100 lines, 50 ms apart)".into(),
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            lat[99]
        ),
    ));
    builder.finish(&id, TaskResult::Success).await?;

    // 2. 100 MB log.
    let o = builder.offer(T).await?;
    let lines: usize = std::env::var("SAI_BENCH_LOG_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_048_576);
    let mb = (lines * 100) >> 20;
    let log = sai_testkit::fixtures::numbered_log(lines);
    let bytes = log.len() as u64;
    let t_store = Instant::now();
    builder.run_task(&o, &log, TaskResult::Success).await?;
    drop(log);
    sai_testkit::wait_for("100 MB stored", Duration::from_secs(300), || async {
        let t = st.task(&o.task_id).await;
        (t["state"] == "success" && t["log_bytes"] == json!(bytes)).then_some(())
    })
    .await?;
    eprintln!(
        "{mb} MiB log sent and stored in {} ms",
        t_store.elapsed().as_millis()
    );
    let last = format!("line {lines:>9} ");
    let last_js = format!(
        "return [...document.querySelectorAll('#log-rows .row .tx')].some(t => t.textContent.startsWith('{last}'));"
    );
    for label in ["first open", "second open"] {
        let t0 = Instant::now();
        b.goto(&st.url(&format!("/t/{}", o.task_id))).await?;
        b.wait_for("last line", Duration::from_secs(120), &last_js)
            .await?;
        rows.push((
            format!("{mb} MiB log: navigation -> last line painted, {label}"),
            format!("{} ms", t0.elapsed().as_millis()),
        ));
    }
    b.eval(
        "document.getElementById('log').scrollTop = 0; return true;",
        vec![],
    )
    .await?;
    let d = wait_js(
        &b,
        "const r = document.querySelector('#log-rows .row'); return !!r && r.querySelector('.ln').textContent === '1' && !r.classList.contains('pending');",
        Duration::from_secs(60),
    )
    .await;
    rows.push((
        format!("{mb} MiB log: jump to top -> first line painted"),
        format!("{} ms", d.as_millis()),
    ));

    // 3. 548 tasks.
    let ev = st.push(&Push::new("libwebsockets", &lws_saifile())).await;
    let t0 = Instant::now();
    b.goto(&st.url(&format!("/e/{ev}"))).await?;
    b.wait_for(
        "548 cells",
        T,
        "return document.querySelectorAll('#matrix a.cell').length === 548;",
    )
    .await?;
    let in_dom = t0.elapsed();
    // Painted: the page's own first contentful paint (the matrix is in
    // the server-rendered HTML), and one animation frame after the DOM
    // check for the wall clock.
    b.eval(
        "window.__painted = false; requestAnimationFrame(() => requestAnimationFrame(() => { window.__painted = true; })); return true;",
        vec![],
    )
    .await?;
    b.wait_for("a frame painted", T, "return window.__painted;")
        .await?;
    let painted = t0.elapsed();
    let fcp = b
        .eval(
            "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null;",
            vec![],
        )
        .await?;
    rows.push((
        "548-task event page: navigation -> full matrix in the DOM / painted (next frame) / first contentful paint".into(),
        format!(
            "{} / {} / {} ms",
            in_dom.as_millis(),
            painted.as_millis(),
            fcp.as_f64().map_or("-".to_string(), |v| format!("{v:.0}"))
        ),
    ));
    let heap = b
        .eval(
            "return performance.memory ? performance.memory.usedJSHeapSize : null;",
            vec![],
        )
        .await?;
    let nodes = b
        .eval("return document.getElementsByTagName('*').length;", vec![])
        .await?;
    rows.push((
        "548-task event page: JS heap used / DOM elements".into(),
        format!(
            "{:.1} MiB / {}",
            heap.as_f64().unwrap_or(0.0) / 1048576.0,
            nodes
        ),
    ));

    // 4b. 50 browser websockets on the overview.
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{}/ws", st.web.addr),
            )?;
        req.headers_mut()
            .insert("origin", format!("http://{}", st.web.addr).parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
        ws.send(Message::text(r#"{"watch":"overview"}"#)).await?;
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push((
        "sai-web RSS, 50 websockets on the overview".into(),
        format!("{:.1} MiB", rss_kib(st.web.guard.id()) as f64 / 1024.0),
    ));
    drop(sockets);
    b.close().await?;

    println!("| measure | value |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    Ok(())
}
