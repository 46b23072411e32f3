//! A real ctest run through the real stack: a tiny CMake project made here
//! (one passing test, one that fails on its first run and passes after),
//! pushed to the real sai-server, built by the real sai-builder with
//! `ctest --output-junit`; the failing test's name and message appear in the
//! API and, in headless Chromium, on the task and event pages; a rebuild of
//! the same commit that passes marks the test flaky.
//!
//! Needs the sai-server and sai-builder binaries of this workspace (a
//! workspace-wide build), cmake (ctest >= 3.21), git and Chromium.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use sai_testkit::browser::Browser;
use sai_testkit::git::GitRepo;
use sai_testkit::hook::{HookRequest, Push};
use sai_testkit::{ProcessGuard, TestServer, wait_for};
use serde_json::{Value, json};

const BUILD_T: Duration = Duration::from_secs(120);

/// The CMake project: `adds_up` passes; `divides_by_zero` fails (with its
/// message on stdout, which ctest puts in the JUnit report) until `marker`
/// exists, and creates it: a flaky test.
fn cmake_project(repo: &GitRepo, marker: &Path) {
    let m = marker.display();
    repo.write(
        "CMakeLists.txt",
        format!(
            r#"cmake_minimum_required(VERSION 3.21)
project(tiny NONE)
enable_testing()
add_test(NAME adds_up COMMAND sh -c "echo 2+2 is 4")
add_test(NAME divides_by_zero COMMAND sh -c "if [ -e {m} ]; then echo ok; else touch {m}; echo 'expected 4 but got 5'; exit 1; fi")
"#
        ),
    );
    let saifile = json!({
        "schema": "sai-1",
        "platforms": { LINUX: { "build": "cmake -S . -B build\ncd build && ctest --output-junit Testing/junit.xml" } },
        "configurations": { "default": { "test_reports": "build/Testing/**/*.xml" } },
    });
    repo.write(".sai.json", serde_json::to_vec_pretty(&saifile).unwrap());
}

fn start_builder(dir: &Path, server: &TestServer) -> (ProcessGuard, std::path::PathBuf) {
    let bin = sai_testkit::bin_path("sai-builder");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first",
        bin.display()
    );
    let token = server.builder_token("b1", &[LINUX]).unwrap();
    std::fs::create_dir_all(dir.join("home")).unwrap();
    std::fs::write(dir.join("s.token"), format!("{token}\n")).unwrap();
    let conf = json!({
        "schema": "sai-builder",
        "home": dir.join("home"),
        "host": "b1",
        "platforms": [{"name": LINUX, "instances": 1,
                       "servers": [{"url": server.builder_url(), "token_file": "s.token"}]}],
        "min_free_disk_bytes": 0,
        "step_timeout_secs": 120,
    });
    let path = dir.join("builder.conf");
    std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    let log = dir.join("builder.log");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (ProcessGuard::new(child, Duration::from_secs(20)), log)
}

async fn task_ends(server: &TestServer, id: &str, state: &str, why: &dyn Fn() -> String) -> Value {
    wait_for(&format!("task {state}"), BUILD_T, || async {
        let t = server.get_json(&format!("/api/tasks/{id}")).await;
        (t["state"] == state).then_some(t)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", why()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_ctest_shows_in_the_api_and_pages_and_a_passing_rebuild_marks_it_flaky() {
    let st = Stack::start(|c| {
        c.builder_ping_interval_ms = 1000;
        c.builder_dead_timeout_ms = 15_000;
    });
    let dir = st.tmp.path();
    let repo = GitRepo::init(dir.join("repo"));
    cmake_project(&repo, &dir.join("flaky-marker"));
    let hash = repo.commit("tiny cmake project");
    let push = Push {
        project: "tiny".into(),
        fetch_url: repo.url(),
        git_ref: "refs/heads/main".into(),
        hash: hash.clone(),
        saifile: std::fs::read(repo.path().join(".sai.json")).unwrap(),
    };
    let ev = push_to(&st.server, HookRequest::like_sai_sh(&push, KEY)).await;
    let bdir = dir.join("builder");
    std::fs::create_dir_all(&bdir).unwrap();
    let (_builder, blog) = start_builder(&bdir, &st.server);
    let why = || {
        format!(
            "builder log:\n{}\nserver log:\n{}",
            std::fs::read_to_string(&blog).unwrap_or_default(),
            st.server.log()
        )
    };
    let e = st.server.get_json(&format!("/api/events/{ev}")).await;
    let id = e["tasks"][0]["id"].as_str().unwrap().to_string();

    // ctest failed, so the step and the task failed; the report still came.
    let t = task_ends(&st.server, &id, "failed", &why).await;
    assert_eq!(t["failed_step"], 2, "the second step (ctest), from 1: {t}");
    let tests = st.server.get_json(&format!("/api/tasks/{id}/tests")).await;
    let cases = tests["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "{tests}\n{}", why());
    assert_eq!(cases[0]["name"], "divides_by_zero", "failed first: {tests}");
    assert_eq!(cases[0]["result"], "fail");
    assert!(
        cases[0]["message"]
            .as_str()
            .unwrap()
            .contains("expected 4 but got 5"),
        "{tests}"
    );
    assert_eq!(cases[1]["name"], "adds_up");
    assert_eq!(cases[1]["result"], "pass");
    let et = st.server.get_json(&format!("/api/events/{ev}/tests")).await;
    assert_eq!(et["failed"][0]["name"], "divides_by_zero", "{et}");
    assert_eq!(et["failed"][0]["platforms"], json!([LINUX]));

    // The pages, in a real browser.
    let b = Browser::start().await.unwrap();
    b.goto(&st.url(&format!("/t/{id}"))).await.unwrap();
    let row = page_shows(&b, "the failed test on the task page", "const r = document.querySelector('#tests tr.failed'); return r ? [r.querySelector('.name').textContent, r.querySelector('pre.msg').textContent] : null;").await;
    assert_eq!(row[0], "divides_by_zero");
    assert!(
        row[1].as_str().unwrap().contains("expected 4 but got 5"),
        "{row}"
    );
    let counts = b
        .eval(
            "return document.getElementById('test-counts').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(counts, "1 passed, 1 failed, 0 skipped");
    b.goto(&st.url(&format!("/e/{ev}"))).await.unwrap();
    let failed = page_shows(&b, "the failed test on the event page", "const r = document.querySelector('#failed-tests tr.test'); return r ? [r.querySelector('.name').textContent, r.querySelector('.platforms').textContent.trim()] : null;").await;
    assert_eq!(failed, json!(["divides_by_zero", LINUX]));
    b.close().await.unwrap();

    // Rebuild the same commit: the test passes now, so it is flaky.
    let token = st.server.user_token("ops").unwrap();
    let r = reqwest::Client::new()
        .post(st.server.url(&format!("/api/tasks/{id}/rebuild")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    task_ends(&st.server, &id, "success", &why).await;
    let h = st
        .server
        .get_json("/api/projects/tiny/tests?suite=divides_by_zero&name=divides_by_zero")
        .await;
    assert_eq!(h["flaky"], true, "{h}");
    assert_eq!(h["flaky_commits"], json!([hash]));
    let results: Vec<&str> = h["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["pass", "fail"], "newest first: {h}");
    let steady = st
        .server
        .get_json("/api/projects/tiny/tests?suite=adds_up&name=adds_up")
        .await;
    assert_eq!(steady["flaky"], false, "{steady}");
    let now = st.server.get_json(&format!("/api/tasks/{id}/tests")).await;
    assert_eq!(
        now["counts"],
        json!({"pass": 2}),
        "the rebuild's results replace the first run's"
    );
}
