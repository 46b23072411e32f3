//! Test reports and duration estimates against the real sai-server binary,
//! with a builder speaking the real protocol: hostile JUnit XML is refused
//! with its reason while the rest of the task survives; estimates come from
//! recorded history and lie within its spread, and there are none without.

mod common;

use std::time::Duration;

use common::*;
use sai_core::protocol::TaskResult;
use sai_testkit::FakeBuilder;
use sai_testkit::hook::{Push, TestPush, random_hex};
use sai_testkit::wait_for;
use serde_json::Value;

const SAIFILE: &[u8] = br#"{
  "platforms": { "linux-debian-12/x86_64-amd/gcc": { "build": "ctest" } },
  "configurations": {
    "default": { "test_reports": "build/Testing/**/*.xml" },
    "other": { "platforms": "none, linux-debian-12/x86_64-amd/gcc" }
  }
}"#;

const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="(empty)" tests="2" failures="1">
  <testcase name="adds_up" classname="adds_up" time="0.01" status="run"><system-out>fine</system-out></testcase>
  <testcase name="divides" classname="divides" time="0.02" status="fail"><failure message=""/><system-out>expected 4 but got 5</system-out></testcase>
</testsuite>"#;

const LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuite><testcase name="boom"><failure>&lol9;</failure></testcase></testsuite>"#;

/// The answer conforms to the served OpenAPI schema `name` and
/// deserialises into the `sai_core::api` type (which refuses unknown fields).
async fn conforms<T: serde::de::DeserializeOwned>(
    server: &sai_testkit::TestServer,
    name: &str,
    answer: &Value,
) -> T {
    let (_, doc) = get(server, "/api/openapi.json").await;
    let mut schema = doc.clone();
    schema["$ref"] = serde_json::json!(format!("#/components/schemas/{name}"));
    let v = jsonschema::validator_for(&schema).expect("the served schemas compile");
    let errors: Vec<String> = v.iter_errors(answer).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{answer}");
    serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("{name}: {e}\n{answer}"))
}

async fn builder(server: &sai_testkit::TestServer) -> FakeBuilder {
    fake_builder(server, "b1", &[LINUX], &[(LINUX, 1)]).await
}

fn push_of(hash: &str) -> Push {
    let mut p = Push::new("proj", SAIFILE);
    p.hash = hash.into();
    p
}

async fn until_state(server: &sai_testkit::TestServer, task_id: &str, state: &str) -> Value {
    wait_for(&format!("task {state}"), T, || async {
        let t = task(server, task_id).await;
        (t["state"] == state).then_some(t)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_reports_are_refused_with_a_reason_and_nothing_else_of_the_task_is_lost() {
    let env = start(|c| {
        c.log_window_bytes = 32 << 20;
        patient_builders(c);
    });
    let s = &env.server;
    let ev = push_ok(s, &push_of(&random_hex(20))).await;
    let mut b = builder(s).await;
    let offer = b.offer(T).await.unwrap();
    assert_eq!(offer.test_reports, ["build/Testing/**/*.xml"], "offered");
    let id = offer.task_id.clone();
    b.accept(&id).await.unwrap();
    b.step_started(&id, 0).await.unwrap();
    b.log(&id, 1, b"line before the reports\n").await.unwrap();
    b.artifact(&id, "keep.bin", b"artifact bytes")
        .await
        .unwrap();
    let deep = format!(
        "<testsuite>{}{}</testsuite>",
        "<x>".repeat(50_000),
        "</x>".repeat(50_000)
    );
    let huge = format!(
        "<testsuite>{}</testsuite>",
        "<testcase name=\"t\"/>".repeat(500_000)
    );
    assert!(huge.len() > 8 << 20);
    let reports: [(&str, &[u8]); 5] = [
        ("good.xml", GOOD.as_bytes()),
        ("laughs.xml", LAUGHS.as_bytes()),
        ("deep.xml", deep.as_bytes()),
        (
            "broken.xml",
            b"<testsuite><testcase name=\"x\"></testsuite>",
        ),
        ("huge.xml", huge.as_bytes()),
    ];
    for (name, bytes) in reports {
        b.test_report(&id, name, bytes).await.unwrap();
    }
    b.log(&id, 2, b"line after the reports\n").await.unwrap();
    b.step_finished(&id, 0, 8, 5).await.unwrap();
    b.finish(
        &id,
        TaskResult::Failed {
            exit_code: 8,
            step: 0,
        },
    )
    .await
    .unwrap();
    let t = until_state(s, &id, "failed").await;

    // The task itself is intact: state, exit code, every artifact.
    assert_eq!(t["exit_code"], 8);
    let mut names: Vec<&str> = t["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "broken.xml",
            "deep.xml",
            "good.xml",
            "huge.xml",
            "keep.bin",
            "laughs.xml"
        ]
    );
    let (st, keep) = get(s, &format!("/api/tasks/{id}")).await;
    assert_eq!(st, 200, "{keep}");

    // Each refused report says why; the good one's cases are stored.
    let (st, tests) = get(s, &format!("/api/tasks/{id}/tests")).await;
    assert_eq!(st, 200, "{tests}");
    let _: sai_core::api::TaskTests = conforms(s, "TaskTests", &tests).await;
    let refused = |name: &str| -> String {
        tests["reports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {tests}"))["refused"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(refused("good.xml"), "");
    assert!(refused("laughs.xml").contains("<!DOCTYPE>"), "{tests}");
    assert!(
        refused("deep.xml").contains("nested deeper than 32"),
        "{tests}"
    );
    assert!(
        refused("broken.xml").contains("not well-formed XML at byte"),
        "{tests}"
    );
    assert!(
        refused("huge.xml").contains("more than the limit"),
        "{tests}"
    );
    let cases = tests["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "{tests}");
    assert_eq!(cases[0]["name"], "divides", "failed first: {tests}");
    assert_eq!(cases[0]["result"], "fail");
    assert_eq!(cases[0]["message"], "expected 4 but got 5");
    assert_eq!(cases[1]["result"], "pass");
    assert_eq!(tests["counts"]["fail"], 1);

    // The log has everything sent, and the reasons as notices.
    let log = String::from_utf8_lossy(&s.raw_log(&id).await).into_owned();
    for needle in [
        "line before the reports",
        "line after the reports",
        "test report good.xml: 2 test cases, 1 failed",
        "test report laughs.xml refused: the report has a <!DOCTYPE>",
        "test report huge.xml refused:",
    ] {
        assert!(log.contains(needle), "{needle:?} missing from:\n{log}");
    }

    // The event lists the failing test with its platform.
    let (_, et) = get(s, &format!("/api/events/{ev}/tests")).await;
    let _: sai_core::api::EventTests = conforms(s, "EventTests", &et).await;
    let failed = et["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{et}");
    assert_eq!(failed[0]["name"], "divides");
    assert_eq!(failed[0]["platforms"], serde_json::json!([LINUX]));
    assert_eq!(failed[0]["flaky"], false);

    // The history: one failed run, at this commit, not flaky.
    let (st, h) = get(s, "/api/projects/proj/tests?suite=divides&name=divides").await;
    assert_eq!(st, 200, "{h}");
    let h: sai_core::api::TestHistory = conforms(s, "TestHistory", &h).await;
    assert_eq!(h.runs.len(), 1);
    assert_eq!(h.runs[0].task_id, id);
    assert!(!h.flaky);
    let (st, e) = get(s, "/api/projects/proj/tests?suite=divides").await;
    assert_eq!(st, 400, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("name="), "{e}");
}

/// Accept the next offer, wait `ms`, report success; returns the task id.
async fn run_for(b: &mut FakeBuilder, ms: u64) -> String {
    let offer = accept_next(b).await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    b.finish(&offer.task_id, TaskResult::Success).await.unwrap();
    offer.task_id
}

fn default_task(ev: &Value) -> &Value {
    ev["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["configuration"] == "default")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn estimates_come_from_recorded_history_within_its_spread_and_none_without() {
    let env = start(patient_builders);
    let s = &env.server;
    let mut b = builder(s).await;

    // No history yet: neither the running task nor the event has an estimate.
    let first = push_ok(s, &push_of(&random_hex(20))).await;
    let offer = accept_next(&mut b).await;
    let e = event(s, &first).await;
    assert!(e.get("expected_finish").is_none(), "{e}");
    assert!(e["tasks"][0].get("estimate_ms").is_none(), "{e}");
    b.finish(&offer.task_id, TaskResult::Success).await.unwrap();
    run_for(&mut b, 10).await;
    let t = until_state(s, &offer.task_id, "success").await;
    let mut durations = vec![t["ended"].as_i64().unwrap() - t["started"].as_i64().unwrap()];

    // History: three more successful runs of different lengths per
    // configuration ("other" shares the platform: the queue is one).
    for ms in [300, 700, 1100] {
        let ev = push_ok(s, &push_of(&random_hex(20))).await;
        let a = run_for(&mut b, ms).await;
        let c = run_for(&mut b, 50).await;
        for id in [a, c] {
            let t = until_state(s, &id, "success").await;
            if t["configuration"] == "default" {
                durations.push(t["ended"].as_i64().unwrap() - t["started"].as_i64().unwrap());
            }
        }
        let done = event(s, &ev).await;
        assert!(done.get("expected_finish").is_none(), "finished: {done}");
        assert!(
            default_task(&done).get("estimate_ms").is_none(),
            "ended tasks have none"
        );
    }
    let (lo, hi) = (
        *durations.iter().min().unwrap(),
        *durations.iter().max().unwrap(),
    );

    // A new event: its running task's estimate lies within the spread, and
    // the event is expected to end within it too.
    let ev = push_ok(s, &push_of(&random_hex(20))).await;
    let offer = accept_next(&mut b).await;
    let e = event(s, &ev).await;
    let _: sai_core::api::Event = conforms(s, "Event", &e).await;
    let t = default_task(&e);
    assert_eq!(t["id"], offer.task_id.as_str(), "default runs first");
    let est = t["estimate_ms"].as_i64().unwrap_or_else(|| panic!("{e}"));
    assert!((lo..=hi).contains(&est), "{est} within {durations:?}");
    let started = t["started"].as_i64().unwrap();
    let finish = e["expected_finish"]
        .as_i64()
        .unwrap_or_else(|| panic!("{e}"));
    // `other` waits for the one instance after `default`: its ~50 ms
    // estimate is added to what is left of `default`.
    let other = e["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["configuration"] == "other")
        .unwrap();
    let other_est = other["estimate_ms"].as_i64().unwrap();
    assert!(
        finish >= started + est + other_est - 50 && finish <= started + hi + other_est + 2_000,
        "finish {finish}, started {started}, estimate {est}, other {other_est}, spread {durations:?}"
    );
    b.close().await;
}
