//! Artifacts of tasks that finish together, on one builder connection, with
//! their uploads interleaved as a real builder's concurrent tasks send them:
//! every one arrives byte-identical, and one that does not arrive fails its
//! task visibly.

mod common;

use common::*;
use sai_core::protocol::{BuilderMessage, TaskResult};
use sai_testkit::FakeBuilder;
use sai_testkit::hook::{Push, TestPush};
use sha2::Digest;

/// Four configurations on one linux platform: four tasks.
const FOUR_LINUX: &[u8] = br#"{
  "schema": "sai-1",
  "platforms": { "linux-debian-12/x86_64-amd/gcc": { "build": "make" } },
  "configurations": {
    "a": { "cmake": "-DA=1" },
    "b": { "cmake": "-DB=1" },
    "c": { "cmake": "-DC=1" },
    "d": { "cmake": "-DD=1" }
  }
}
"#;

fn blob(task: usize, n: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + task * 7 + n * 13) % 251) as u8)
        .collect()
}

async fn begin(b: &mut FakeBuilder, task_id: &str, name: &str, bytes: &[u8]) {
    b.send(&BuilderMessage::ArtifactBegin {
        task_id: task_id.into(),
        name: name.into(),
        size: bytes.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        test_report: false,
    })
    .await
    .unwrap();
}

async fn end(b: &mut FakeBuilder, task_id: &str) {
    b.send(&BuilderMessage::ArtifactEnd {
        task_id: task_id.into(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_of_four_tasks_finishing_together_all_arrive() {
    let env = start(|c| c.log_window_bytes = 256 * 1024);
    let s = &env.server;
    push_ok(s, &Push::new("demo", FOUR_LINUX)).await;
    let mut b = host1(s, 4).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(b.offer(T).await.unwrap().task_id);
    }
    for id in &ids {
        b.accept(id).await.unwrap();
    }
    // Three artifacts per task; each round opens one upload on every task
    // at once and interleaves their chunks (several frames each).
    let len = [100_000, 3, 200_000];
    for (n, &len) in len.iter().enumerate() {
        let blobs: Vec<Vec<u8>> = (0..4).map(|t| blob(t, n, len)).collect();
        for (t, id) in ids.iter().enumerate() {
            begin(&mut b, id, &format!("out-{n}.bin"), &blobs[t]).await;
        }
        let mut at = 0;
        while at < len {
            let next = (at + 40_000).min(len);
            for (t, id) in ids.iter().enumerate() {
                b.artifact_bytes(id, &blobs[t][at..next]).await.unwrap();
            }
            at = next;
        }
        for id in &ids {
            end(&mut b, id).await;
        }
    }
    for id in &ids {
        b.finish(id, TaskResult::Success).await.unwrap();
    }
    for (t, id) in ids.iter().enumerate() {
        let v = task_state(s, id, "success").await;
        let arts = v["artifacts"].as_array().unwrap();
        assert_eq!(arts.len(), 3, "{v}\n{}", s.log());
        for (n, &len) in len.iter().enumerate() {
            let want = blob(t, n, len);
            let got = s
                .get_bytes(&format!("/api/tasks/{id}/artifacts/out-{n}.bin"))
                .await;
            assert_eq!(&got[..], &want[..], "task {t} artifact {n}");
        }
    }
    assert!(
        !s.log().contains("discarded"),
        "no artifact was discarded:\n{}",
        s.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_that_does_not_arrive_fails_its_task_visibly() {
    let env = start(|c| c.max_infra_attempts = 1);
    let s = &env.server;
    push_ok(s, &Push::new("demo", FOUR_LINUX)).await;
    let mut b = host1(s, 2).await;
    let o1 = b.offer(T).await.unwrap();
    let o2 = b.offer(T).await.unwrap();
    b.accept(&o1.task_id).await.unwrap();
    b.accept(&o2.task_id).await.unwrap();
    // Task 1: its upload is cut short by the task's end. Task 2: fine.
    let big = blob(1, 0, 50_000);
    begin(&mut b, &o1.task_id, "half.bin", &big).await;
    b.artifact_bytes(&o1.task_id, &big[..20_000]).await.unwrap();
    b.artifact(&o2.task_id, "whole.bin", &big).await.unwrap();
    for id in [&o1.task_id, &o2.task_id] {
        b.finish(id, TaskResult::Success).await.unwrap();
    }
    let t1 = task_state(s, &o1.task_id, "failed").await;
    let reason = t1["reason"].as_str().unwrap();
    assert!(
        reason.contains("infrastructure failure")
            && reason.contains("artifact half.bin discarded: task finished during the upload"),
        "{reason}"
    );
    assert_eq!(t1["artifacts"].as_array().unwrap().len(), 0);
    let log = String::from_utf8(s.raw_log(&o1.task_id).await).unwrap();
    assert!(
        log.contains("1 artifact(s) did not arrive")
            && log.contains("the builder reported success"),
        "{log}"
    );
    let t2 = task_state(s, &o2.task_id, "success").await;
    assert_eq!(t2["artifacts"][0]["name"], "whole.bin");
    // No partial file is left behind.
    let dir = s.data_dir.join("events");
    let parts = walk(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "part"))
        .count();
    assert_eq!(parts, 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
