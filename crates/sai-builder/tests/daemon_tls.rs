//! TLS end to end: the real `sai-server` terminating TLS with certificates
//! made here by a private CA (`rcgen`), the real `sai-builder` dialing
//! `wss://`, and a real HTTPS git server (`git http-backend` behind rustls)
//! for the fetch.

mod daemon_common;

use std::path::Path;

use daemon_common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sai_core::config::server::ServerTlsConfig;
use sai_testkit::git::GitRepo;
use sai_testkit::https_git::HttpsGitServer;
use sai_testkit::tls::{TestCa, Validity};
use sai_testkit::{TestServer, wait_for};
use serde_json::{Value, json};

/// A client trusting only `ca_pem`.
fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// A TLS server with the certificate files `dir/server.pem` + `dir/server.key`.
fn start_tls_server(dir: &Path) -> TestServer {
    let mut c = server_config(&dir.join("data"));
    c.tls = Some(ServerTlsConfig {
        certificate_chain_file: dir.join("server.pem").display().to_string(),
        private_key_file: dir.join("server.key").display().to_string(),
    });
    let s = TestServer::start(&server_bin(), &c, &[]).unwrap();
    assert!(s.tls, "the server says it listens on https://");
    s
}

async fn api(c: &reqwest::Client, server: &TestServer, path: &str) -> Value {
    let r = c.get(server.url(path)).send().await.unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.unwrap()
}

async fn online(c: &reqwest::Client, server: &TestServer, name: &str) -> bool {
    api(c, server, "/api/builders")
        .await
        .as_array()
        .is_some_and(|bs| bs.iter().any(|b| b["name"] == name && b["online"] == true))
}

async fn push_over(
    c: &reqwest::Client,
    server: &TestServer,
    fetch_url: &str,
    hash: &str,
    build: &str,
) -> String {
    let saifile = linux_saifile(build);
    push_with(c, server, "proj", fetch_url, hash, &saifile).await
}

/// Make the server reload its certificate files (SIGHUP) and wait until it
/// says it did.
async fn reload_certificate(server: &TestServer) -> anyhow::Result<()> {
    kill(Pid::from_raw(server.guard.id() as i32), Signal::SIGHUP)?;
    wait_for("certificate reloaded", T, || async {
        server
            .log()
            .contains("TLS certificate reloaded")
            .then_some(())
    })
    .await
}

/// Wait until the event's only task is terminal; returns the task.
async fn task_done(
    c: &reqwest::Client,
    server: &TestServer,
    ev: &str,
    why: &dyn Fn() -> String,
) -> Value {
    let r = wait_for(&format!("event {ev} done"), T, || async {
        let e = api(c, server, &format!("/api/events/{ev}")).await;
        let t = e["tasks"].as_array()?.first()?.clone();
        matches!(
            t["state"].as_str(),
            Some("success" | "failed" | "cancelled")
        )
        .then_some(t)
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}\n{}", why()))
}

async fn raw_log_over(c: &reqwest::Client, server: &TestServer, task: &str) -> String {
    let r = c
        .get(server.url(&format!("/api/tasks/{task}/log?format=raw")))
        .send()
        .await
        .unwrap();
    String::from_utf8_lossy(&r.bytes().await.unwrap()).to_string()
}

/// Builder `b1` for `server` with `edit` applied to its one server entry.
fn builder_config(
    server: &TestServer,
    dir: &Path,
    edit: impl FnOnce(&mut Value),
) -> std::path::PathBuf {
    one_server_config_with(server, dir, 1, |conf| {
        edit(&mut conf["platforms"][0]["servers"][0]);
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn builder_over_wss_with_a_private_ca_runs_a_task_fetched_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = TestCa::new("Sai rack CA").unwrap();
    let ca_path = ca.write(dir, "ca.pem").unwrap();
    let cert = ca
        .server_cert(&["127.0.0.1", "localhost"], Validity::Current)
        .unwrap();
    cert.write(dir, "server").unwrap();
    let server = start_tls_server(dir);
    assert!(server.builder_url().starts_with("wss://127.0.0.1:"));
    let c = client(&ca.cert_pem);

    // The repository is only reachable over https://.
    let (repo, hash) = make_repo(dir);
    let git_root = dir.join("git");
    GitRepo::open(&repo).bare_clone(git_root.join("proj.git"));
    let git = HttpsGitServer::start(&git_root, &cert).await.unwrap();

    // ca_file relative to the config's folder; SSL_CERT_FILE makes the same
    // CA a system root for the git transport.
    let conf = builder_config(&server, dir, |s| s["ca_file"] = json!("ca.pem"));
    let builder =
        BuilderProc::start_with_env(&conf, &[("SSL_CERT_FILE", ca_path.to_str().unwrap())]);
    let why = || logs(&builder, &server);
    wait_for("builder online over wss", T, || async {
        online(&c, &server, "b1").await.then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", why()));

    let ev = push_over(&c, &server, &git.url("proj.git"), &hash, "cat README").await;
    let t = task_done(&c, &server, &ev, &why).await;
    assert_eq!(t["state"], "success", "{t}\n{}", why());
    let id = t["id"].as_str().unwrap();
    let log = raw_log_over(&c, &server, id).await;
    assert!(
        log.contains("the readme of the test project"),
        "{log}\n{}",
        why()
    );
    assert!(
        git.requests() >= 2,
        "the checkout came from the HTTPS git server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn builder_refuses_a_wrong_ca_a_wrong_name_and_an_expired_certificate_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = TestCa::new("Sai rack CA").unwrap();
    ca.write(dir, "ca.pem").unwrap();
    let other = TestCa::new("Someone else's CA").unwrap();
    // Valid for the IP address only.
    ca.server_cert(&["127.0.0.1"], Validity::Current)
        .unwrap()
        .write(dir, "server")
        .unwrap();
    let server = start_tls_server(dir);
    let c = client(&ca.cert_pem);
    let port = server.addr.port();

    // (case, CA the builder trusts, URL host, what the log must say)
    let cases = [
        (
            "wrong-ca",
            &other,
            "127.0.0.1",
            "not signed by a trusted CA",
        ),
        ("wrong-name", &ca, "localhost", "for another host name"),
    ];
    for (case, trusted, host, says) in cases {
        let bdir = dir.join(case);
        std::fs::create_dir_all(&bdir).unwrap();
        trusted.write(&bdir, "ca.pem").unwrap();
        let url = format!("wss://{host}:{port}/builder");
        let conf = builder_config(&server, &bdir, |s| {
            s["ca_file"] = json!("ca.pem");
            s["url"] = json!(url);
        });
        let mut builder = BuilderProc::start(&conf);
        builder.wait_log(says).await;
        let log = builder.log();
        assert!(log.contains("cannot connect"), "{case}: {log}");
        assert!(!online(&c, &server, "b1").await, "{case}: not online");
        builder.guard.stop();
    }

    // An expired certificate, put in place with SIGHUP.
    ca.server_cert(&["127.0.0.1"], Validity::Expired)
        .unwrap()
        .write(dir, "server")
        .unwrap();
    reload_certificate(&server).await.unwrap();
    let bdir = dir.join("expired");
    std::fs::create_dir_all(&bdir).unwrap();
    ca.write(&bdir, "ca.pem").unwrap();
    let conf = builder_config(&server, &bdir, |s| s["ca_file"] = json!("ca.pem"));
    let builder = BuilderProc::start(&conf);
    builder.wait_log("has expired").await;
    assert!(
        builder.log().contains("cannot connect"),
        "{}",
        builder.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_the_builder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old_ca = TestCa::new("Old CA").unwrap();
    let new_ca = TestCa::new("New CA").unwrap();
    old_ca.write(dir, "ca.pem").unwrap();
    old_ca
        .server_cert(&["127.0.0.1"], Validity::Current)
        .unwrap()
        .write(dir, "server")
        .unwrap();
    let server = start_tls_server(dir);
    let old_client = client(&old_ca.cert_pem);
    let new_client = client(&new_ca.cert_pem);

    // The builder trusts the old CA only: a reconnect after the reload
    // would fail, so a task done after it proves the link stayed up.
    let conf = builder_config(&server, dir, |s| s["ca_file"] = json!("ca.pem"));
    let builder = BuilderProc::start(&conf);
    let why = || logs(&builder, &server);
    wait_for("builder online", T, || async {
        online(&old_client, &server, "b1").await.then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", why()));

    new_ca
        .server_cert(&["127.0.0.1"], Validity::Current)
        .unwrap()
        .write(dir, "server")
        .unwrap();
    reload_certificate(&server)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", why()));

    // New connections get the new certificate...
    assert!(online(&new_client, &server, "b1").await, "{}", why());
    // (A fresh client: `old_client`'s pooled connection from before the
    // reload still works, like the builder's.)
    let refused = client(&old_ca.cert_pem)
        .get(server.url("/api/builders"))
        .send()
        .await;
    let err = format!("{:?}", refused.expect_err("the old CA no longer matches"));
    assert!(err.contains("UnknownIssuer"), "{err}");

    // ...and the builder, connected before, still takes and finishes work.
    let (repo, hash) = make_repo(dir);
    let ev = push_over(
        &new_client,
        &server,
        &repo.display().to_string(),
        &hash,
        "echo still-here",
    )
    .await;
    let t = task_done(&new_client, &server, &ev, &why).await;
    assert_eq!(t["state"], "success", "{t}\n{}", why());
    let log = builder.log();
    assert_eq!(
        log.matches(" connected").count(),
        1,
        "one connection only:\n{log}"
    );
    assert!(!log.contains("link lost"), "{log}");
}

#[test]
fn check_config_names_a_missing_or_empty_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("s.token"), "t\n").unwrap();
    std::fs::write(dir.join("empty.pem"), "no certificates here\n").unwrap();
    for (ca, says) in [
        ("missing.pem", "No such file"),
        ("empty.pem", "no CERTIFICATE in the file"),
    ] {
        let s = ServerRef {
            url: "wss://127.0.0.1:9/builder".into(),
            token_file: "s.token".into(),
        };
        let conf = write_builder_config_with(dir, "b1", &[(LINUX, 1, &[&s])], |c| {
            c["platforms"][0]["servers"][0]["ca_file"] = json!(ca);
        });
        let out = builder_command()
            .arg("--check-config")
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("CA file {}", dir.join(ca).display())),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
        assert!(
            err.contains("wss://127.0.0.1:9/builder"),
            "names the server: {err}"
        );
    }
}
