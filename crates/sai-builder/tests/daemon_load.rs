//! Builder load reports (protocol message `load`) through the real
//! `sai-builder` and `sai-server` binaries: the load shows in
//! `/api/builders`, and a builder below its disk floor is offered nothing
//! while the waiting task says why.

mod daemon_common;

use daemon_common::*;
use serde_json::{Value, json};

async fn builder_with_load(server: &sai_testkit::TestServer, why: &dyn Fn() -> String) -> Value {
    let r = sai_testkit::wait_for("b1 reports its load", T, || async {
        let bs = server.get_json("/api/builders").await;
        bs.as_array()?
            .iter()
            .find(|b| b["name"] == "b1" && b["online"] == true && b["load"].is_object())
            .cloned()
    })
    .await;
    match r {
        Ok(b) => b,
        Err(e) => panic!("{e}\n{}", why()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn builder_load_shows_in_the_builders_api() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr();
    let (server, builder) = start_server_and_builder_with(tmp.path(), 2, |c| {
        c["metrics_listen"] = json!(metrics_addr.to_string());
    });
    let why = || logs(&builder, &server);
    let b = builder_with_load(&server, &why).await;
    let l = &b["load"];
    assert_eq!(l["disk_floor_bytes"], 1024 * 1024, "{b}");
    assert_eq!(l["below_disk_floor"], false, "{b}");
    assert_eq!(l["running_tasks"], 0, "{b}");
    assert!(l["disk_free_bytes"].as_u64().unwrap() > 1024 * 1024, "{b}");
    assert!(l["cpus"].as_u64().unwrap() >= 1, "{b}");
    assert!(l["reported"].as_i64().unwrap() > 0, "{b}");
    #[cfg(target_os = "linux")]
    {
        let total = l["mem_total_bytes"].as_u64().unwrap();
        let avail = l["mem_available_bytes"].as_u64().unwrap();
        assert!(total > 0 && avail <= total, "{b}");
        assert!(l["load_avg_1m_centi"].is_u64(), "{b}");
    }

    // A running task is counted in the next report (sent when it starts).
    let (_repo, _ev, task) = push_waiting_build(&server, tmp.path()).await;
    task_in_state(&server, &task, "running", &why).await;
    wait_until("running_tasks 1", &why, || async {
        let bs = server.get_json("/api/builders").await;
        (bs[0]["load"]["running_tasks"] == 1).then_some(())
    })
    .await;
    std::fs::write(tmp.path().join("go"), b"").unwrap();
    task_in_state(&server, &task, "success", &why).await;

    // The builder's own metrics moved: one task, its step, one mirror fetch.
    let url = format!("http://{metrics_addr}/metrics");
    let m = sai_testkit::wait_for("builder metrics", T, || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let m = sai_testkit::openmetrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (m.value("sai_builder_tasks_total", &[("result", "success")]) == Some(1.0)).then_some(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", why()));
    assert_eq!(
        m.value("sai_builder_step_duration_seconds_count", &[("exit", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "sai_builder_mirror_fetch_duration_seconds_count",
            &[("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert!(
        m.value("sai_builder_step_duration_seconds_sum", &[("exit", "ok")])
            .unwrap()
            > 0.0
    );
    let nf = reqwest::get(format!("http://{metrics_addr}/other"))
        .await
        .unwrap();
    assert_eq!(nf.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_builder_below_its_disk_floor_gets_no_offer_and_the_task_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    // A floor no test machine reaches: 1 PiB.
    let (server, builder) = start_server_and_builder_with(tmp.path(), 1, |c| {
        c["min_free_disk_bytes"] = json!(1u64 << 50);
    });
    let why = || logs(&builder, &server);
    let b = builder_with_load(&server, &why).await;
    assert_eq!(b["load"]["below_disk_floor"], true, "{b}");

    let sf = saifile(LINUX, "true", json!({ "default": {} }));
    let (_, task) = push_new_repo(&server, tmp.path(), &sf).await;
    let t = task_until(
        &server,
        &task,
        "waiting detail names the disk floor",
        |t| {
            t["detail"]
                .as_str()
                .is_some_and(|d| d.contains("is low on disk: b1 has"))
        },
        &why,
    )
    .await;
    let detail = t["detail"].as_str().unwrap();
    assert!(detail.contains("below its floor of 1024 TiB"), "{detail}");
    // Still waiting a while later, never offered (so never declined).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let t = server.get_json(&format!("/api/tasks/{task}")).await;
    assert_eq!(t["state"], "waiting", "{t}");
    assert_eq!(t["attempt"], 0, "{t}");
    assert!(t["reason"].is_null(), "never declined: {t}");
    assert!(!builder.log().contains("offer rejected"), "{}", why());
}
