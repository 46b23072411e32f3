//! The real `sai-builder` binary against the real `sai-server` binary: a
//! push of a real git repository, tasks that succeed and fail, logs and
//! artifacts through the server's `/api`; and config checking.

mod daemon_common;

use daemon_common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn builder_runs_pushed_tasks_to_success_and_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, builder) = start_server_and_online_builder(tmp.path(), 2).await;
    let why = || logs(&builder, &server);

    let (repo, hash) = make_repo(tmp.path());
    let build = [
        "echo \"hello from $SAI_PROJECT at $SAI_REMOTE_REF\"",
        "cat README; echo oops >&2",
        "sh -c 'exit ${cmake}'",
        "echo END-${cmake} | tee out.txt",
    ]
    .join("\n");
    let sf = saifile(
        LINUX,
        &build,
        json!({
            "good": { "cmake": "0", "artifacts": "out.txt" },
            "bad": { "cmake": "3" },
        }),
    );
    let ev = push(&server, "proj", &repo, &hash, &sf).await;
    let e = event_done(&server, &ev, &why).await;
    let tasks = e["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{e}");
    let good = tasks.iter().find(|t| t["configuration"] == "good").unwrap();
    let bad = tasks.iter().find(|t| t["configuration"] == "bad").unwrap();
    let good_id = good["id"].as_str().unwrap();
    let bad_id = bad["id"].as_str().unwrap();

    let g = server.get_json(&format!("/api/tasks/{good_id}")).await;
    assert_eq!(g["state"], "success", "{g}\n{}", why());
    assert_eq!(g["exit_code"], 0);
    assert_eq!(g["builder"], "b1");
    let log = raw_log(&server, good_id).await;
    assert!(log.contains("hello from proj at main"), "{log}");
    assert!(log.contains("the readme of the test project"), "{log}");
    assert!(log.contains("oops"), "stderr arrives too: {log}");
    assert!(log.contains("END-0"), "{log}");
    // Channel-tagged records: stdout, stderr and builder notices.
    let records = server.get_json(&format!("/api/tasks/{good_id}/log")).await;
    let channels: std::collections::BTreeSet<i64> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["channel"].as_i64().unwrap())
        .collect();
    assert!(
        channels.contains(&1) && channels.contains(&2) && channels.contains(&3),
        "{channels:?}"
    );
    // The artifact arrived with its content.
    let arts = g["artifacts"].as_array().cloned().unwrap_or_default();
    assert_eq!(arts.len(), 1, "{g}\n{}", why());
    let name = arts[0]["name"].as_str().unwrap();
    let body = server
        .get_bytes(&format!("/api/tasks/{good_id}/artifacts/{name}"))
        .await;
    assert_eq!(&body[..], b"END-0\n");

    let b = server.get_json(&format!("/api/tasks/{bad_id}")).await;
    assert_eq!(b["state"], "failed", "{b}\n{}", why());
    assert_eq!(b["exit_code"], 3);
    assert_eq!(b["failed_step"], 3);
    // Each step that ran has its times, numbered as the log numbers them.
    let times = b["step_times"].as_array().cloned().unwrap_or_default();
    let steps: Vec<(i64, i64)> = times
        .iter()
        .map(|t| {
            (
                t["step"].as_i64().unwrap(),
                t["exit_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, [(1, 0), (2, 0), (3, 3)], "{b}");
    for t in &times {
        let (s, e, d) = (
            t["started"].as_i64().unwrap(),
            t["ended"].as_i64().unwrap(),
            t["duration_ms"].as_i64().unwrap(),
        );
        assert!(d >= 0 && e - s == d, "{t}");
        assert!(s >= b["started"].as_i64().unwrap() - 1000, "{t} {b}");
    }
    let g_times = g["step_times"].as_array().map_or(0, Vec::len);
    assert_eq!(g_times, 4, "{g}");
    let log = raw_log(&server, bad_id).await;
    assert!(log.contains("hello from proj at main"), "{log}");
    assert!(
        !log.contains("END-"),
        "no step after the failing one: {log}"
    );

    // A second push of the same repository reuses the mirror.
    let hash2 = new_commit(&repo, "second version\n");
    let sf2 = linux_saifile("cat README");
    let ev2 = push(&server, "proj", &repo, &hash2, &sf2).await;
    let e2 = event_done(&server, &ev2, &why).await;
    let t = &e2["tasks"][0];
    assert_eq!(t["state"], "success", "{e2}\n{}", why());
    let log = raw_log(&server, t["id"].as_str().unwrap()).await;
    assert!(log.contains("second version"), "{log}");
}

/// `sai-builder --check-config -c <config>`.
fn check_config(config: &std::path::Path) -> std::process::Output {
    builder_command()
        .args(["--check-config", "-c"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn check_config_reports_problems_with_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let s = ServerRef {
        url: "ws://127.0.0.1:1/builder".into(),
        token_file: "t".into(),
    };
    let good = write_builder_config(tmp.path(), "b1", &[(LINUX, 1, &[&s])]);
    let out = check_config(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config ok");

    // A semantic problem (instances 0) on line 3 of the file.
    let bad = tmp.path().join("bad.conf");
    std::fs::write(
        &bad,
        format!(
            "{{\"home\": \"{}\", \"host\": \"b1\",\n \"platforms\": [{{\"name\": \"{LINUX}\",\n   \"instances\": 0,\n   \"servers\": [{{\"url\": \"ws://127.0.0.1:1/builder\", \"token\": \"x\"}}]}}]}}\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    let out = check_config(&bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:4: platforms[0].instances", bad.display())),
        "{err}"
    );

    // Plain ws:// to a host that is not loopback: refused unless the
    // config says "insecure": true.
    let remote = ServerRef {
        url: "ws://ci.example.org/sai/builder".into(),
        token_file: "t".into(),
    };
    let conf = write_builder_config(tmp.path(), "b1", &[(LINUX, 1, &[&remote])]);
    let out = check_config(&conf);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("platforms[0].servers[0].url") && err.contains("not loopback"),
        "{err}"
    );
    let conf = write_builder_config_with(tmp.path(), "b1", &[(LINUX, 1, &[&remote])], |c| {
        c["platforms"][0]["servers"][0]["insecure"] = json!(true);
    });
    let out = check_config(&conf);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A syntax problem: an unknown key.
    std::fs::write(&bad, "{\n  \"hme\": \"/x\"\n}\n").unwrap();
    let out = check_config(&bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");
    assert!(err.contains("hme"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn as_root_steps_run_as_the_run_as_user() {
    if !nix::unistd::geteuid().is_root()
        || nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .is_none()
    {
        eprintln!("skipped: needs root and a nobody user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The step user must be able to reach the home.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (server, builder) = start_server_and_builder_with(tmp.path(), 1, |c| {
        c["run_as"] = json!("nobody");
    });
    let why = || logs(&builder, &server);
    let build = "echo \"user=$(id -un)\"; cat README; touch made-by-step";
    let (e, log) = run_build(&server, tmp.path(), build, &why).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{}", why());
    assert!(log.contains("user=nobody"), "{log}");
    assert!(log.contains("the readme of the test project"), "{log}");
    assert!(builder.log().contains("build steps run as this user"));
}

#[tokio::test(flavor = "multi_thread")]
async fn old_job_dirs_go_at_start_and_sigterm_stops_an_unconnected_builder() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens here: the builder keeps backing off.
    let s = ServerRef {
        url: format!("ws://{}/builder", free_addr()),
        token_file: "s.token".into(),
    };
    std::fs::write(tmp.path().join("s.token"), "unused").unwrap();
    let conf = write_builder_config_with(tmp.path(), "b1", &[(LINUX, 1, &[&s])], |c| {
        c["job_retention_secs"] = json!(3600);
    });
    let jobs = tmp.path().join("home/jobs");
    for name in ["OLD0OLD0", "NEW0NEW0", "not-a-job-dir"] {
        std::fs::create_dir_all(jobs.join(name).join("src")).unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for name in ["OLD0OLD0", "not-a-job-dir"] {
        std::fs::File::open(jobs.join(name))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let mut builder = BuilderProc::start(&conf);
    builder.wait_log("removed 1 old job dirs").await;
    assert!(!jobs.join("OLD0OLD0").exists());
    assert!(jobs.join("NEW0NEW0").exists());
    assert!(jobs.join("not-a-job-dir").exists());
    builder.wait_log("reconnecting in").await;
    let st = builder.guard.stop().unwrap();
    assert!(st.success(), "{st:?}\n{}", builder.log());
    assert!(builder.log().contains("sai-builder stopped"));
}

/// `examples/builder.conf` (which `sai validate` passes) is also accepted
/// by sai-builder itself, `wss://` servers included: with its home and
/// step user swapped for ones that exist here, `--check-config` says ok.
#[test]
fn the_example_builder_config_is_accepted_by_sai_builder() {
    let tmp = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/builder.conf");
    let mut config = sai_builder::daemon::load_config(std::path::Path::new(example)).unwrap();
    assert!(
        config
            .platforms
            .iter()
            .flat_map(|p| &p.servers)
            .any(|s| s.url.starts_with("wss://")),
        "the example no longer shows a wss:// server"
    );
    config.home = tmp.path().display().to_string();
    config.run_as = None;
    let conf = tmp.path().join("builder.conf");
    std::fs::write(&conf, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let out = check_config(&conf);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
