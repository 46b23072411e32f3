//! Real headless Chromium against real sai-server + sai-web (+ a builder
//! speaking the real protocol), on loopback.
//!
//! Screenshots for the README are written to `docs/screenshots/` when
//! `SAI_UPDATE_SCREENSHOTS=1`; otherwise into the test's temp dir.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use sai_core::protocol::TaskResult;
use sai_testkit::browser::Browser;
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::wait_for;
use serde_json::{Value, json};

async fn row_count(b: &Browser) -> u64 {
    b.eval(
        "return document.querySelectorAll('#log .row').length;",
        vec![],
    )
    .await
    .unwrap()
    .as_u64()
    .unwrap()
}

async fn cell_count(b: &Browser) -> Value {
    b.eval(
        "return document.querySelectorAll('#matrix a.cell').length;",
        vec![],
    )
    .await
    .unwrap()
}

/// Click the element with id `id`.
async fn click(b: &Browser, id: &str) {
    b.eval(
        "document.getElementById(arguments[0]).click(); return true;",
        vec![json!(id)],
    )
    .await
    .unwrap_or_else(|e| panic!("clicking #{id}: {e}"));
}

/// Wait until the server says task `task` is in `state`.
async fn task_state_becomes(st: &Stack, task: &str, state: &str) {
    wait_for(&format!("task {state}"), T, || async {
        (st.task(task).await["state"] == state).then_some(())
    })
    .await
    .unwrap();
}

/// Save the page as `name`, best effort: into `docs/screenshots/` when
/// updating them, else into the test's temp dir.
async fn screenshot(b: &Browser, tmp: &tempfile::TempDir, name: &str) {
    let path = if std::env::var("SAI_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/screenshots")
            .join(name)
    } else {
        tmp.path().join(name)
    };
    b.screenshot(&path).await.ok();
}

/// Mark the current document; a reload would lose the mark.
async fn mark(b: &Browser) {
    b.eval("window.__saiMark = 42; return true;", vec![])
        .await
        .unwrap();
}

async fn still_marked(b: &Browser) -> bool {
    b.eval("return window.__saiMark === 42;", vec![])
        .await
        .unwrap()
        == json!(true)
}

async fn connected(b: &Browser) {
    page_shows(
        b,
        "page websocket",
        "return document.body.dataset.live === 'connected';",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_appears_on_the_overview_and_matrix_cells_change_live() {
    let st = Stack::start(|_| {});
    let first = st.push(&Push::new("demo", SMALL)).await;
    let b = Browser::start().await.unwrap();
    b.goto(&st.url("/")).await.unwrap();
    connected(&b).await;
    mark(&b).await;
    let second = st.push(&Push::new("demo", SMALL)).await;
    page_shows(
        &b,
        "the new push on the overview",
        &format!("return !!document.getElementById('ev-{second}');"),
    )
    .await;
    assert!(still_marked(&b).await, "no reload");
    screenshot(&b, &st.tmp, "overview.png").await;
    assert!(
        b.eval(
            &format!("return !!document.getElementById('ev-{first}');"),
            vec![]
        )
        .await
        .unwrap()
            == json!(true)
    );

    // The event page: 4 cells waiting; a builder runs one, the cell turns.
    b.goto(&st.url(&format!("/e/{second}"))).await.unwrap();
    connected(&b).await;
    mark(&b).await;
    assert_eq!(cell_count(&b).await, json!(4));
    let mut builder = st.builder("b1", &[(LINUX, 1)]).await;
    let mut offer = builder.offer(T).await.unwrap();
    while offer.event_id != second {
        builder
            .run_task(&offer, b"", TaskResult::Success)
            .await
            .unwrap();
        offer = builder.offer(T).await.unwrap();
    }
    builder.accept(&offer.task_id).await.unwrap();
    let cell = format!(
        "document.getElementById('c-{}').dataset.state",
        offer.task_id
    );
    page_shows(&b, "cell running", &format!("return {cell} === 'running';")).await;
    builder
        .finish(
            &offer.task_id,
            TaskResult::Failed {
                exit_code: 1,
                step: 0,
            },
        )
        .await
        .unwrap();
    page_shows(&b, "cell failed", &format!("return {cell} === 'failed';")).await;
    assert!(still_marked(&b).await, "no reload");
    let summary = b
        .eval(
            "return document.querySelector('#event-card .summary').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(summary.as_str().unwrap().contains("1 failed"), "{summary}");
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_printed_by_a_running_step_shows_in_the_open_task_page() {
    let st = Stack::start(|_| {});
    let ev = st.push(&Push::new("demo", SMALL)).await;
    let mut builder = st.builder("b1", &[(LINUX, 1)]).await;
    let offer = builder.offer(T).await.unwrap();
    assert_eq!(offer.event_id, ev);
    let id = offer.task_id.clone();
    builder.accept(&id).await.unwrap();
    builder.step_started(&id, 0).await.unwrap();
    builder
        .log(&id, 1, b"configuring\n\x1b[32mgreen\x1b[0m done\n")
        .await
        .unwrap();
    let b = Browser::start().await.unwrap();
    b.goto(&st.url(&format!("/t/{id}"))).await.unwrap();
    connected(&b).await;
    page_shows(
        &b,
        "first lines",
        "return document.querySelectorAll('#log-rows .row').length === 2;",
    )
    .await;
    let green = b
        .eval(
            "return document.querySelector('#log-rows .row:nth-child(2) .tx span').className;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(green, json!("f2"), "ANSI green became a class");
    mark(&b).await;
    builder
        .log(&id, 2, b"warning: from stderr\n")
        .await
        .unwrap();
    let row = match b
        .wait_for(
            "the live line",
            T,
            "const r = [...document.querySelectorAll('#log-rows .row')].find(r => r.textContent.includes('warning: from stderr')); return r ? [r.className, r.querySelector('.ln').textContent] : null;",
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let state = b
                .eval("return [window.__saiMsgs, document.getElementById('log').outerHTML];", vec![])
                .await;
            panic!("{e}\npage: {state:?}\nsai-web log:\n{}\ntask: {}", st.web.log(), st.task(&id).await);
        }
    };
    assert_eq!(row, json!(["row ch2", "3"]), "stderr channel, line 3");
    assert!(still_marked(&b).await);
    // The first step ends and the second starts: its duration appears live.
    builder.step_finished(&id, 0, 0, 1500).await.unwrap();
    builder.step_started(&id, 1).await.unwrap();
    let took = b
        .wait_for(
            "the first step's duration",
            T,
            "const t = document.querySelector('ol.steps li:nth-child(1) .step-time'); return t ? t.textContent : null;",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\nsai-web log:\n{}", st.web.log()));
    assert_eq!(took, json!("1.5s"));
    assert!(still_marked(&b).await, "updated without a reload");
    screenshot(&b, &st.tmp, "task-log.png").await;
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_100_mb_log_opens_at_its_last_line_and_scrolls_to_its_first() {
    let st = Stack::start(|c| c.log_window_bytes = 32 << 20);
    st.push(&Push::new("demo", SMALL)).await;
    let mut builder = st.builder("b1", &[(LINUX, 1)]).await;
    let offer = builder.offer(T).await.unwrap();
    let id = offer.task_id.clone();
    // 100 MiB: 1,048,576 lines of 100 bytes.
    let lines = 1_048_576usize;
    let log = sai_testkit::fixtures::numbered_log(lines);
    assert_eq!(log.len(), 100 << 20);
    builder
        .run_task(&offer, &log, TaskResult::Success)
        .await
        .unwrap();
    drop(log);
    wait_for("the whole log stored", Duration::from_secs(120), || async {
        let t = st.task(&id).await;
        (t["state"] == "success" && t["log_bytes"] == json!(100u64 << 20)).then_some(())
    })
    .await
    .unwrap();
    let b = Browser::start().await.unwrap();
    b.goto(&st.url(&format!("/t/{id}"))).await.unwrap();
    let last = format!("line {lines:>9} ");
    // Numbered exactly (sai-server counts lines from its block index).
    let number = b
        .wait_for(
            "the last line",
            Duration::from_secs(60),
            &format!("const r = [...document.querySelectorAll('#log-rows .row')].find(r => r.querySelector('.tx').textContent.startsWith('{last}')); return r ? r.querySelector('.ln').textContent : null;"),
        )
        .await
        .unwrap();
    assert_eq!(number, json!(lines.to_string()));
    assert!(row_count(&b).await < 200, "only visible rows in the DOM");
    b.eval(
        "document.getElementById('log').scrollTop = 0; return true;",
        vec![],
    )
    .await
    .unwrap();
    b.wait_for(
        "the first line after scrolling to the top",
        Duration::from_secs(30),
        "const r = document.querySelector('#log-rows .row'); return r && r.querySelector('.ln').textContent === '1' && r.querySelector('.tx').textContent.startsWith('line         1 ');",
    )
    .await
    .unwrap();
    assert!(row_count(&b).await < 200, "still bounded");
    // Jump to the middle by search.
    b.eval("document.getElementById('search').value = 'line    524288 '; document.getElementById('search-next').click(); return true;", vec![])
        .await
        .unwrap();
    b.wait_for(
        "the search hit",
        Duration::from_secs(60),
        "const r = document.querySelector('#log-rows .row.hit'); return r ? r.querySelector('.ln').textContent : null;",
    )
    .await
    .map(|v| assert_eq!(v, json!("524288")))
    .unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_548_task_push_renders_its_full_matrix_and_stays_live() {
    let st = Stack::start(|_| {});
    let mut p = Push::new("libwebsockets", &lws_saifile());
    p.git_ref = "refs/heads/main".into();
    let ev = st.push(&p).await;
    let tasks: Vec<Value> = st.event(&ev).await["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 548);
    let platform = tasks[0]["platform"].as_str().unwrap().to_string();
    let b = Browser::start().await.unwrap();
    b.goto(&st.url(&format!("/e/{ev}"))).await.unwrap();
    connected(&b).await;
    assert_eq!(cell_count(&b).await, json!(548));
    mark(&b).await;
    let mut builder = st.builder("b1", &[(&platform, 4)]).await;
    let mut done = Vec::new();
    for _ in 0..4 {
        let o = builder.offer(T).await.unwrap();
        builder
            .run_task(&o, b"ok\n", TaskResult::Success)
            .await
            .unwrap();
        done.push(o.task_id);
    }
    let check = format!(
        "return {}.every(id => document.getElementById('c-' + id).dataset.state === 'success');",
        serde_json::to_string(&done).unwrap()
    );
    page_shows(&b, "four cells passed", &check).await;
    assert!(still_marked(&b).await);
    screenshot(&b, &st.tmp, "event-matrix.png").await;
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_in_rebuild_and_cancel_work_from_the_page_and_sign_out_removes_them() {
    let st = Stack::start(|_| {});
    let ev = st.push(&Push::new("demo", SMALL)).await;
    let task = st.first_task(&ev).await;
    let b = Browser::start().await.unwrap();
    b.goto(&st.url(&format!("/t/{task}"))).await.unwrap();
    let controls = "return !!document.getElementById('cancel-task');";
    assert_eq!(b.eval(controls, vec![]).await.unwrap(), json!(false));
    // Sign in through the form.
    click(&b, "signin").await;
    page_shows(
        &b,
        "sign-in form",
        "return !!document.getElementById('password');",
    )
    .await;
    b.eval(
        "document.getElementById('name').value = arguments[0]; document.getElementById('password').value = arguments[1]; document.getElementById('signin-submit').click(); return true;",
        vec![json!(USER), json!(PASSWORD)],
    )
    .await
    .unwrap();
    page_shows(&b, "back on the task page, signed in", controls).await;
    click(&b, "cancel-task").await;
    task_state_becomes(&st, &task, "cancelled").await;
    page_shows(
        &b,
        "page shows cancelled",
        "return document.getElementById('task-state').textContent === 'cancelled';",
    )
    .await;
    click(&b, "rebuild-task").await;
    task_state_becomes(&st, &task, "waiting").await;
    page_shows(
        &b,
        "signed-out page",
        "return !!document.getElementById('signout');",
    )
    .await;
    click(&b, "signout").await;
    page_shows(
        &b,
        "controls gone",
        "return !document.getElementById('signout') && !!document.getElementById('signin');",
    )
    .await;
    b.goto(&st.url(&format!("/t/{task}"))).await.unwrap();
    assert_eq!(b.eval(controls, vec![]).await.unwrap(), json!(false));
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_and_restarting_sai_server_reconnects_the_open_page_without_reload() {
    let mut st = Stack::start(|_| {});
    let ev = st.push(&Push::new("demo", SMALL)).await;
    let tasks = st.event(&ev).await["tasks"].as_array().unwrap().clone();
    let b = Browser::start().await.unwrap();
    b.goto(&st.url(&format!("/e/{ev}"))).await.unwrap();
    connected(&b).await;
    mark(&b).await;
    let addr = st.server.addr;
    st.server.guard.kill();
    page_shows(&b, "the page says it is reconnecting", "const c = document.getElementById('conn'); return !c.hidden && c.textContent.includes('reconnecting');").await;
    // Restart on the same address with the same data; change state meanwhile.
    let mut c = sai_testkit::test_config(&st.tmp.path().join("data"), KEY);
    c.listen = addr.to_string();
    c.builder_ping_interval_ms = 10_000;
    c.builder_dead_timeout_ms = 120_000;
    st.server =
        sai_testkit::TestServer::start(&sai_testkit::bin_path("sai-server"), &c, &[]).unwrap();
    let mut builder = st.builder("b1", &[(LINUX, 2)]).await;
    let o = builder.offer(T).await.unwrap();
    builder
        .run_task(&o, b"ok\n", TaskResult::Success)
        .await
        .unwrap();
    page_shows(&b, "caught up", &format!("return document.getElementById('conn').hidden && document.getElementById('c-{}').dataset.state === 'success';", o.task_id)).await;
    assert!(still_marked(&b).await, "no reload");
    assert_eq!(
        b.eval(
            "return document.querySelectorAll('#matrix a.cell').length;",
            vec![]
        )
        .await
        .unwrap(),
        json!(tasks.len())
    );
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_of_more_than_one_page_of_tasks_shows_every_task_and_stays_live() {
    let st = Stack::start(|_| {});
    // 1,100 tasks on a platform no builder offers: more than one page of
    // the server's 1,000.
    let configs: Vec<String> = (0..1100)
        .map(|i| format!("\"c{i:04}\": {{\"cmake\": \"\"}}"))
        .collect();
    let saifile = format!(
        r#"{{"schema": "sai-1", "platforms": {{"linux-fedora-32/x86_64/gcc": {{"build": "true"}}}}, "configurations": {{{}}}}}"#,
        configs.join(",")
    );
    let ev = st.push(&Push::new("big", saifile.as_bytes())).await;
    let first = st.event(&ev).await;
    assert_eq!(first["task_count"], 1100);
    let mut tasks = first["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1000, "the server pages the tasks");
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = st.event(&format!("{ev}?cursor={cursor}")).await;
    tasks.extend(rest["tasks"].as_array().unwrap().iter().cloned());
    let ids: Vec<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1100);

    // The page as served holds every task's cell, and no "showing N of M".
    let html = reqwest::get(st.url(&format!("/e/{ev}")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !html.contains(&format!("id=\"c-{id}\"")))
        .collect();
    assert!(missing.is_empty(), "{} cells missing", missing.len());
    assert!(!html.contains("matrix-partial"));

    // In Chromium, and live: a task of the second page changes state.
    let b = Browser::start().await.unwrap();
    b.goto(&st.url(&format!("/e/{ev}"))).await.unwrap();
    connected(&b).await;
    let cells = b
        .eval(
            "return document.querySelectorAll('#matrix a.cell').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(cells, json!(1100));
    mark(&b).await;
    let last = ids.last().unwrap();
    let r = reqwest::Client::new()
        .post(st.server.url(&format!("/api/tasks/{last}/cancel")))
        .bearer_auth(st.server.user_token("ops").unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    page_shows(
        &b,
        "the last task's cell turns cancelled",
        &format!("return document.getElementById('c-{last}').dataset.state === 'cancelled';"),
    )
    .await;
    assert!(still_marked(&b).await, "updated without a reload");
    b.close().await.unwrap();
}
