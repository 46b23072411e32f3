//! Links: a builder started before its server connects (with backoff) once
//! the server is up and reconnects after a server restart; each server is
//! offered exactly the platforms configured for it.

mod daemon_common;

use daemon_common::*;
use serde_json::{Value, json};

/// Servers A and B, with their data in `dir/data-a` and `dir/data-b`.
fn servers_a_and_b(dir: &std::path::Path) -> (sai_testkit::TestServer, sai_testkit::TestServer) {
    (
        start_server(&dir.join("data-a")),
        start_server(&dir.join("data-b")),
    )
}

fn platform_names(builder: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = builder["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["instances"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn builder_started_first_connects_when_the_server_comes_up_and_after_its_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let addr = free_addr();
    let token = mint_builder_token(&data, "b1", "linux");
    std::fs::write(tmp.path().join("s.token"), token).unwrap();
    let s = ServerRef {
        url: format!("ws://{addr}/builder"),
        token_file: "s.token".into(),
    };
    let conf = write_builder_config(tmp.path(), "b1", &[(LINUX, 1, &[&s])]);
    let builder = BuilderProc::start(&conf);
    // Nobody listens yet: the builder fails and schedules another attempt.
    builder.wait_log("cannot connect").await;
    builder.wait_log("reconnecting in").await;

    let (repo, hash) = make_repo(tmp.path());
    let sf = linux_saifile("echo built $SAI_PROJECT");
    let mut server = start_server_at(&data, addr);
    let ev1 = {
        let why = || logs(&builder, &server);
        builder_online(&server, "b1", &why).await;
        let ev = push(&server, "proj", &repo, &hash, &sf).await;
        let e = event_done(&server, &ev, &why).await;
        assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{}", why());
        ev
    };

    // The server restarts on the same address: the builder notices, backs
    // off, reconnects and takes new work.
    let st = server.guard.stop().unwrap();
    assert!(st.success(), "{st:?}");
    builder.wait_log("link lost").await;
    let server = start_server_at(&data, addr);
    let why = || logs(&builder, &server);
    builder_online(&server, "b1", &why).await;
    let (ev, e) = push_new_commit_to_success(
        &server,
        &repo,
        "after the restart\n",
        "echo built $SAI_PROJECT again; cat README",
        &why,
    )
    .await;
    assert_ne!(ev, ev1);
    let log = raw_log(&server, e["tasks"][0]["id"].as_str().unwrap()).await;
    assert!(log.contains("built proj again"), "{log}");
    assert!(log.contains("after the restart"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_server_is_offered_only_its_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = servers_a_and_b(tmp.path());
    // Server A's token does not even allow the esp32 platform: offering it
    // there would get the link refused.
    let sa = server_ref(&a, tmp.path(), "a.token", "b1", &["linux"]);
    let sb = server_ref(&b, tmp.path(), "b.token", "b1", &["linux", "freertos"]);
    let conf = write_builder_config(
        tmp.path(),
        "b1",
        &[(LINUX, 2, &[&sa, &sb]), (ESP32, 1, &[&sb])],
    );
    let builder = BuilderProc::start(&conf);
    let why = || logs_ab(&builder, &a, &b);
    let on_a = builder_online(&a, "b1", &why).await;
    let on_b = builder_online(&b, "b1", &why).await;
    assert_eq!(platform_names(&on_a), vec![(LINUX.to_string(), 2)]);
    assert_eq!(
        platform_names(&on_b),
        vec![(ESP32.to_string(), 1), (LINUX.to_string(), 2)]
    );

    // Both links take work at the same time.
    let (repo, hash) = make_repo(tmp.path());
    let sf_a = linux_saifile("echo on A");
    let sf_b = saifile(ESP32, "echo on B", json!({ "default": { "cmake": "" } }));
    let ev_a = push(&a, "proj", &repo, &hash, &sf_a).await;
    let ev_b = push(&b, "proj", &repo, &hash, &sf_b).await;
    let e_a = event_done(&a, &ev_a, &why).await;
    let e_b = event_done(&b, &ev_b, &why).await;
    assert_eq!(e_a["tasks"][0]["state"], "success", "{e_a}\n{}", why());
    assert_eq!(e_b["tasks"][0]["state"], "success", "{e_b}\n{}", why());
    assert!(
        raw_log(&a, e_a["tasks"][0]["id"].as_str().unwrap())
            .await
            .contains("on A")
    );
    assert!(
        raw_log(&b, e_b["tasks"][0]["id"].as_str().unwrap())
            .await
            .contains("on B")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_shared_by_servers_and_declined_offers_come_back_without_reconnecting() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = servers_a_and_b(tmp.path());
    let sa = server_ref(&a, tmp.path(), "a.token", "b1", &["linux"]);
    let sb = server_ref(&b, tmp.path(), "b.token", "b1", &["linux"]);
    // One instance, taken from both servers.
    let conf = write_builder_config(tmp.path(), "b1", &[(LINUX, 1, &[&sa, &sb])]);
    let builder = BuilderProc::start(&conf);
    let why = || logs_ab(&builder, &a, &b);
    builder_online(&a, "b1", &why).await;
    builder_online(&b, "b1", &why).await;

    // A's task holds the only instance until the go file appears.
    let go = tmp.path().join("go");
    let wait = format!(
        "echo holding; i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo released",
        go.display()
    );
    let (repo, hash) = make_repo(tmp.path());
    let ev_a = push(&a, "proj", &repo, &hash, &linux_saifile(&wait)).await;
    let task_a = first_task(&a, &ev_a).await;
    log_contains(&a, &task_a, "holding", &why).await;

    // B's task is declined: no free instance.
    let ev_b = push(&b, "proj", &repo, &hash, &linux_saifile("echo on B")).await;
    let task_b = first_task(&b, &ev_b).await;
    let t = task_until(
        &b,
        &task_b,
        "offer declined as busy",
        |t| t["reason"].as_str().is_some_and(|r| r.contains("busy")),
        &why,
    )
    .await;
    assert_eq!(t["state"], "waiting", "{t}");

    // Once A's task ends, the freed instance is reported to B (`capacity`)
    // and B offers the declined task again on the same connection.
    std::fs::write(&go, b"").unwrap();
    let e_a = event_done(&a, &ev_a, &why).await;
    assert_eq!(e_a["tasks"][0]["state"], "success", "{e_a}\n{}", why());
    let e_b = event_done(&b, &ev_b, &why).await;
    assert_eq!(e_b["tasks"][0]["state"], "success", "{e_b}\n{}", why());
    assert!(raw_log(&b, &task_b).await.contains("on B"));
    // No reconnect: each server saw exactly one hello from b1.
    for (s, name) in [(&a, "A"), (&b, "B")] {
        let hellos = s.log().matches("builder connected").count();
        assert_eq!(hellos, 1, "server {name} connections\n{}", why());
    }
}
