//! A full data disk, for real: the server's data dir is a small tmpfs that
//! the test fills with a filler file. Log credit follows stored bytes only,
//! nothing is lost when space returns, a task whose log cannot be stored is
//! an infrastructure failure with a notice, and a push is refused with 507
//! leaving nothing behind. (Mounting needs root, as CI has.)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use sai_core::protocol::{ServerMessage, TaskResult};
use sai_testkit::fixtures::incompressible;
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::{FakeBuilder, wait_for};

/// One linux task only.
const ONE_LINUX: &[u8] = br#"{
  "schema": "sai-1",
  "platforms": { "linux-debian-12/x86_64-amd/gcc": { "build": "echo one" } },
  "configurations": { "default": { "cmake": "" } }
}
"#;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("running mount");
        assert!(
            st.success(),
            "mount -t tmpfs failed ({st}): this test needs root, as CI has"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the file system holding `dir` with a filler file; returns its path.
fn fill_disk(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for size in [1 << 20, 64 << 10, 4 << 10, 512] {
        let block = vec![0xa5u8; size];
        while f.write_all(&block).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

/// Credit received by `b` within `d`, other messages kept.
async fn credit_within(b: &mut FakeBuilder, d: Duration) -> u64 {
    let before = b.credit_received;
    let end = tokio::time::Instant::now() + d;
    let mut kept = Vec::new();
    while let Some(m) = b
        .poll(end.saturating_duration_since(tokio::time::Instant::now()))
        .await
        .unwrap()
    {
        kept.push(m);
        if tokio::time::Instant::now() >= end {
            break;
        }
    }
    assert!(
        kept.iter()
            .all(|m| !matches!(m, ServerMessage::Offer { .. })),
        "{kept:?}"
    );
    b.credit_received - before
}

/// Send log bytes as credit allows until the server stops returning credit
/// (free space inside sqlite's files is used up first); appends them to
/// `sent`. Afterwards `window - credit` bytes are received and unstored.
async fn log_until_refused(b: &mut FakeBuilder, task_id: &str, seed: u64, sent: &mut Vec<u8>) {
    for round in 0..60 {
        let n = b.credit as usize;
        if n > 0 {
            let bytes = incompressible(seed * 1000 + round, n);
            b.log(task_id, 2, &bytes).await.unwrap();
            sent.extend_from_slice(&bytes);
        }
        if credit_within(b, Duration::from_secs(2)).await == 0 {
            assert!(b.credit < b.window, "nothing outstanding");
            return;
        }
    }
    panic!("the server kept returning credit on a full disk");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_credit_follows_stored_bytes_on_a_full_disk_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _fs = Tmpfs::mount(&data, "24m");
    let mut c = config_in(data.clone());
    c.log_window_bytes = 256 * 1024;
    c.log_flush_ms = 50;
    c.max_infra_attempts = 1;
    patient_builders(&mut c);
    let s = sai_testkit::TestServer::start(&bin(), &c, &[]).unwrap();
    let ev = push_ok(&s, &Push::new("demo", ONE_LINUX)).await;
    let mut b = host1(&s, 1).await;
    let o = accept_next(&mut b).await;

    // A healthy disk: credit comes back once stored.
    let mut sent = incompressible(1, 100 * 1024);
    b.log(&o.task_id, 1, &sent).await.unwrap();
    b.acknowledged(T).await.unwrap();
    assert_eq!(task(&s, &o.task_id).await["log_bytes"], sent.len());

    // Full: bytes are received but not stored, so their credit stays out.
    let filler = fill_disk(&data);
    log_until_refused(&mut b, &o.task_id, 2, &mut sent).await;
    let unstored = (b.window - b.credit) as usize;
    assert_eq!(
        credit_within(&mut b, Duration::from_secs(2)).await,
        0,
        "credit returned for bytes that are not stored"
    );
    assert_eq!(
        task(&s, &o.task_id).await["log_bytes"],
        sent.len() - unstored,
        "log_bytes counts stored bytes only"
    );

    // A push while full is refused and leaves nothing behind.
    let folders = event_folders(&s);
    let (st, v) = push(&s, &Push::new("demo", SMALL)).await;
    assert_eq!(st, 507, "{v}\n{}", s.log());
    assert!(v["error"].as_str().unwrap().contains("disk is full"), "{v}");
    assert_eq!(event_folders(&s), folders);

    // Space returns: the writer retries, every byte is stored, credit flows.
    std::fs::remove_file(&filler).unwrap();
    b.acknowledged(T).await.unwrap();
    assert_eq!(s.raw_log(&o.task_id).await, sent);
    assert_eq!(task(&s, &o.task_id).await["log_bytes"], sent.len());
    assert_eq!(event_count(&s).await, 1);

    // Full again when the task ends: it cannot end `success` with a hole.
    let filler = fill_disk(&data);
    log_until_refused(&mut b, &o.task_id, 3, &mut sent).await;
    b.finish(&o.task_id, TaskResult::Success).await.unwrap();
    // Nothing can be written now, the task state neither: it is not
    // `success`, and its end is stored once there is space again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(task(&s, &o.task_id).await["state"], "success");
    std::fs::remove_file(&filler).unwrap();
    let t = task_state(&s, &o.task_id, "failed").await;
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("infrastructure failure") && reason.contains("could not be stored"),
        "{reason}"
    );
    assert_eq!(event(&s, &ev).await["state"], "failed");

    // The log is whole, the notice last.
    let id = o.task_id.clone();
    let full = wait_for("log stored after space returned", T, || {
        let (s, id, n) = (&s, id.clone(), sent.len());
        async move {
            let raw = s.raw_log(&id).await;
            (raw.len() > n).then_some(raw)
        }
    })
    .await
    .unwrap();
    assert_eq!(&full[..sent.len()], &sent[..]);
    let notice = String::from_utf8_lossy(&full[sent.len()..]);
    assert!(
        notice.contains("could not be stored")
            && notice.contains("ends as an infrastructure failure"),
        "{notice}"
    );
}
