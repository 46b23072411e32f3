//! End to end: a real `git push` into a bare repository runs the real
//! `hooks/post-receive` (POSIX sh + openssl + curl), which notifies the real
//! `sai-server`; two real `sai-builder` processes (two platforms, two
//! instances each) run every task. Checked through the operations API:
//! task states and exit codes, logs (channels 1 and 2, in order, complete)
//! and an artifact's bytes and sha256.
//!
//! Needs the `sai-server` and `sai-builder` binaries of this workspace
//! (`cargo build -p sai-server -p sai-builder`, or any workspace-wide
//! `cargo test`/`cargo nextest run`), and git, curl and openssl.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sai_testkit::{ProcessGuard, TestServer, wait_for};
use serde_json::{Value, json};
use sha2::Digest;

const KEY: &str = "5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1";
const DEBIAN: &str = "linux-debian-12/x86_64/gcc";
const FEDORA: &str = "linux-fedora-40/x86_64/llvm";
const PROJECT: &str = "e2e";
/// Numbered lines each of stdout and stderr of the `logs` configuration.
const LINES: usize = 3000;
const T: Duration = Duration::from_secs(180);

fn bin(name: &str) -> PathBuf {
    let p = sai_testkit::bin_path(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p sai-server -p sai-builder` (or a workspace-wide cargo test) first",
        p.display()
    );
    p
}

fn need(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || Command::new(tool)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{tool} is needed by the git hook (scripts/test.sh installs it)"
    );
}

/// git with a clean, predictable config; returns (stdout, stderr).
fn git(dir: &Path, args: &[&str]) -> (String, String) {
    git_with_path(dir, args, None)
}

/// [`git`] with another `PATH` (for the hooks it runs).
fn git_with_path(dir: &Path, args: &[&str], path: Option<&Path>) -> (String, String) {
    let mut cmd = sai_testkit::git::git_command(dir, args);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "git {args:?}: {stderr}");
    (stdout, stderr)
}

/// A bare repository at `origin` with the real `hook` and `sai-notify` from
/// `hooks/`, configured to notify `server_url` with the secret in `secret`.
fn bare_origin_with_hook(origin: &Path, hook: &str, server_url: &str, secret: &Path) {
    std::fs::create_dir_all(origin).unwrap();
    git(origin, &["init", "-q", "--bare"]);
    let hooks_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hooks");
    for h in [hook, "sai-notify"] {
        let to = origin.join("hooks").join(h);
        std::fs::copy(hooks_src.join(h), &to).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    git(origin, &["config", "sai.url", server_url]);
    git(
        origin,
        &["config", "sai.secretFile", &secret.display().to_string()],
    );
}

/// `<dir>/work`: a repository whose one commit has a one-task `.sai.json`.
fn one_task_work_repo(dir: &Path) -> std::path::PathBuf {
    let saifile = json!({
        "schema": "sai-1",
        "platforms": { DEBIAN: { "build": "true" } },
        "configurations": { "default": {} },
    });
    work_repo(dir, &saifile, "one")
}

/// A repository `dir/work` with one commit (`message`) of `saifile` as
/// its `.sai.json`.
fn work_repo(dir: &Path, saifile: &Value, message: &str) -> std::path::PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(
        work.join(".sai.json"),
        serde_json::to_vec_pretty(saifile).unwrap(),
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", message]);
    work
}

struct Builder {
    _guard: ProcessGuard,
    log: PathBuf,
}

fn start_builder(dir: &Path, server: &TestServer, name: &str, platform: &str) -> Builder {
    let token = server.builder_token(name, &[platform]).unwrap();
    let base = dir.join(name);
    let home = base.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(base.join("token"), format!("{token}\n")).unwrap();
    let conf = base.join("builder.conf");
    let config = json!({
        "schema": "sai-builder",
        "home": home,
        "host": name,
        "platforms": [{
            "name": platform,
            "servers": [{"url": server.builder_url(), "token_file": "token"}],
            "instances": 2,
        }],
        "min_free_disk_bytes": 0,
    });
    std::fs::write(&conf, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let log = base.join("builder.log");
    let child = Command::new(bin("sai-builder"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    Builder {
        _guard: ProcessGuard::new(child, Duration::from_secs(15)),
        log,
    }
}

fn terminal(state: &Value) -> bool {
    matches!(state.as_str(), Some("success" | "failed" | "cancelled"))
}

/// The bytes of one channel, checking records are contiguous byte ranges.
fn channel_text(records: &[Value], channel: u64) -> String {
    let mut expect_offset = None;
    let mut s = String::new();
    for r in records {
        let off = r["offset"].as_u64().unwrap();
        let len = r["len"].as_u64().unwrap();
        if let Some(e) = expect_offset {
            assert_eq!(off, e, "records are not contiguous: {r}");
        }
        expect_offset = Some(off + len);
        if r["channel"].as_u64() == Some(channel) {
            s.push_str(r["text"].as_str().unwrap());
        }
    }
    s
}

/// The numbered lines `<prefix> 1`..`<prefix> N` of a channel, in order.
fn numbered(text: &str, prefix: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|n| n.trim().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn push_through_the_real_hook_runs_every_task_on_two_builders() {
    for tool in ["git", "curl", "openssl"] {
        need(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // The server, with the hook secret in a file the hook reads too.
    let secret = dir.join("hook-secret");
    std::fs::write(&secret, format!("{KEY}\n")).unwrap();
    let mut cfg = sai_testkit::test_config(&dir.join("server-data"), KEY);
    cfg.builder_ping_interval_ms = 1000;
    cfg.builder_dead_timeout_ms = 15_000;
    let server = TestServer::start(&bin("sai-server"), &cfg, &[]).unwrap();

    // Two builders, two platforms, two instances each.
    let b1 = start_builder(dir, &server, "debian", DEBIAN);
    let b2 = start_builder(dir, &server, "fedora", FEDORA);
    let why = || {
        format!(
            "server log:\n{}\ndebian builder log:\n{}\nfedora builder log:\n{}",
            server.log(),
            std::fs::read_to_string(&b1.log).unwrap_or_default(),
            std::fs::read_to_string(&b2.log).unwrap_or_default()
        )
    };

    // The bare repository with the real hooks from hooks/.
    let origin = dir.join("origin.git");
    bare_origin_with_hook(&origin, "post-receive", &server.url(""), &secret);
    let origin_path = origin.display().to_string();
    for (k, v) in [
        ("sai.project", PROJECT),
        ("sai.fetchUrl", origin_path.as_str()),
    ] {
        git(&origin, &["config", k, v]);
    }

    // The project: 2 platforms x 3 configurations.
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    let saifile = json!({
        "schema": "sai-1",
        "platforms": {
            DEBIAN: { "build": "${prep}" },
            FEDORA: { "build": "${prep}" },
        },
        "configurations": {
            "plain": { "prep": "echo plain success on $SAI_PROJECT" },
            "fails": { "prep": "echo about to fail\nexit 3\necho never printed" },
            "logs": {
                "prep": "sh gen.sh\nmkdir -p out\ncp data.bin out/result.bin",
                "artifacts": "out/result.bin",
            },
        },
    });
    std::fs::write(
        work.join(".sai.json"),
        serde_json::to_vec_pretty(&saifile).unwrap(),
    )
    .unwrap();
    std::fs::write(
        work.join("gen.sh"),
        format!(
            "i=1\nwhile [ $i -le {LINES} ]; do\n  echo \"out $i\"\n  echo \"err $i\" >&2\n  i=$((i+1))\ndone\n"
        ),
    )
    .unwrap();
    let mut artifact = vec![0u8; 200 * 1024 + 17];
    for (i, b) in artifact.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(work.join("data.bin"), &artifact).unwrap();
    let artifact_sha = hex::encode(sha2::Sha256::digest(&artifact));
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "e2e"]);
    let (hash, _) = git(&work, &["rev-parse", "HEAD"]);

    // A real push: git runs the post-receive hook, which runs curl.
    let (_, push_err) = git(&work, &["push", &origin_path, "main"]);
    assert!(
        push_err.contains("sai-notify: notified"),
        "the hook did not notify:\n{push_err}\n{}",
        why()
    );

    let events = server
        .get_json(&format!("/api/projects/{PROJECT}/events"))
        .await;
    let events = events
        .as_array()
        .or_else(|| events["events"].as_array())
        .unwrap()
        .clone();
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = events[0]["id"].as_str().unwrap().to_string();
    assert_eq!(events[0]["hash"], hash.as_str());
    assert_eq!(events[0]["ref"], "refs/heads/main");
    assert_eq!(events[0]["fetch_url"], origin_path.as_str());

    let done = wait_for("every task terminal", T, || async {
        let e = server.get_json(&format!("/api/events/{ev}")).await;
        let tasks = e["tasks"].as_array()?;
        (tasks.len() == 6 && tasks.iter().all(|t| terminal(&t["state"]))).then_some(e)
    })
    .await;
    let e = match done {
        Ok(e) => e,
        Err(err) => panic!("{err}\n{}", why()),
    };
    assert_eq!(e["state"], "failed", "{e}");
    let tasks = e["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 6);
    let mut seen = Vec::new();
    for t in tasks {
        let conf = t["configuration"].as_str().unwrap();
        let platform = t["platform"].as_str().unwrap();
        seen.push((conf.to_string(), platform.to_string()));
        let builder = t["builder"].as_str().unwrap_or_default();
        let expected_builder = if platform == DEBIAN {
            "debian"
        } else {
            "fedora"
        };
        assert!(
            builder.starts_with(expected_builder),
            "{conf} on {platform} ran on {builder:?}"
        );
        let id = t["id"].as_str().unwrap();
        let records = server.log_records(id, 4096).await;
        let stdout = channel_text(&records, 1);
        match conf {
            "plain" => {
                assert_eq!(t["state"], "success", "{t}\n{}", why());
                assert_eq!(t["exit_code"], 0, "{t}");
                assert!(
                    stdout.contains(&format!("plain success on {PROJECT}")),
                    "{stdout}"
                );
            }
            "fails" => {
                assert_eq!(t["state"], "failed", "{t}\n{}", why());
                assert_eq!(t["exit_code"], 3, "{t}");
                assert_eq!(t["failed_step"], 2, "{t}");
                assert!(stdout.contains("about to fail"), "{stdout}");
                assert!(!stdout.contains("never printed"), "{stdout}");
            }
            "logs" => {
                assert_eq!(t["state"], "success", "{t}\n{}", why());
                assert_eq!(t["exit_code"], 0, "{t}");
                let stderr = channel_text(&records, 2);
                let want: Vec<usize> = (1..=LINES).collect();
                assert_eq!(numbered(&stdout, "out "), want, "stdout lines");
                assert_eq!(numbered(&stderr, "err "), want, "stderr lines");
                // The raw log is the same bytes, complete.
                let task = server.get_json(&format!("/api/tasks/{id}")).await;
                let raw = server.raw_log(id).await;
                assert_eq!(raw.len() as u64, task["log_bytes"].as_u64().unwrap());
                let total: u64 = records.iter().map(|r| r["len"].as_u64().unwrap()).sum();
                assert_eq!(total, raw.len() as u64);
                // The artifact: listed with its sha256, downloadable.
                let arts = task["artifacts"].as_array().unwrap();
                assert_eq!(arts.len(), 1, "{task}");
                assert_eq!(arts[0]["sha256"], artifact_sha.as_str(), "{task}");
                assert_eq!(arts[0]["size"], artifact.len() as u64, "{task}");
                let name = arts[0]["name"].as_str().unwrap();
                let r = reqwest::get(server.url(&format!("/api/tasks/{id}/artifacts/{name}")))
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let body = r.bytes().await.unwrap();
                assert_eq!(hex::encode(sha2::Sha256::digest(&body)), artifact_sha);
            }
            other => panic!("unexpected configuration {other}"),
        }
    }
    seen.sort();
    let mut want: Vec<(String, String)> = ["fails", "logs", "plain"]
        .iter()
        .flat_map(|c| [DEBIAN, FEDORA].map(|p| (c.to_string(), p.to_string())))
        .collect();
    want.sort();
    assert_eq!(seen, want);
}

/// A server with its data in `dir/server-data` and the hook's secret in
/// `dir/hook-secret`, once the tools the real hook runs are there.
fn server_and_hook_secret(dir: &Path) -> (TestServer, PathBuf) {
    for tool in ["git", "curl", "openssl"] {
        need(tool);
    }
    let secret = dir.join("hook-secret");
    std::fs::write(&secret, format!("{KEY}\n")).unwrap();
    let cfg = sai_testkit::test_config(&dir.join("server-data"), KEY);
    let server = TestServer::start(&bin("sai-server"), &cfg, &[]).unwrap();
    (server, secret)
}

/// A server, and the bare repository `<dir>/<name>` whose real `hook`
/// notifies it.
fn server_and_hooked_origin(dir: &Path, name: &str, hook: &str) -> (TestServer, PathBuf) {
    let (server, secret) = server_and_hook_secret(dir);
    let origin = dir.join(name);
    bare_origin_with_hook(&origin, hook, &server.url(""), &secret);
    (server, origin)
}

/// The `update` variant of the hook, and an annotated tag: the event names
/// the tagged commit (what builders check out), not the tag object.
#[tokio::test(flavor = "multi_thread")]
async fn update_hook_and_annotated_tag_notify_with_the_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, origin) = server_and_hooked_origin(dir, "upd.git", "update");
    let work = one_task_work_repo(dir);
    let (first, _) = git(&work, &["rev-parse", "HEAD"]);
    let origin_s = origin.display().to_string();
    let (_, err) = git(&work, &["push", &origin_s, "main"]);
    assert!(
        err.contains("sai-notify: notified"),
        "{err}\n{}",
        server.log()
    );
    // A second commit, only reachable through an annotated tag.
    std::fs::write(work.join("README"), "two\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "two"]);
    let (second, _) = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["tag", "-a", "-m", "release", "v1"]);
    let (tag_object, _) = git(&work, &["rev-parse", "v1"]);
    assert_ne!(tag_object, second);
    let (_, err) = git(&work, &["push", &origin_s, "v1"]);
    assert!(
        err.contains("sai-notify: notified"),
        "{err}\n{}",
        server.log()
    );

    // Project name defaults to the bare repository's name without .git.
    let events = server.get_json("/api/projects/upd/events").await;
    let mut refs: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["fetch_url"], origin_s.as_str());
            (
                e["ref"].as_str().unwrap().to_string(),
                e["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        [
            ("refs/heads/main".to_string(), first),
            ("refs/tags/v1".to_string(), second)
        ]
    );
}

/// Without openssl on `PATH`, `hooks/sai-notify` hands over to `sai notify`.
#[tokio::test(flavor = "multi_thread")]
async fn hook_without_openssl_uses_sai_notify() {
    need("git");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let secret = dir.join("hook-secret");
    std::fs::write(&secret, format!("{KEY}\n")).unwrap();
    let cfg = sai_testkit::test_config(&dir.join("server-data"), KEY);
    let server = TestServer::start(&bin("sai-server"), &cfg, &[]).unwrap();

    // A PATH with every tool of the system's PATH but openssl, plus sai.
    let tools = dir.join("bin");
    std::fs::create_dir_all(&tools).unwrap();
    let system_path = std::env::var("PATH").unwrap_or_default();
    for d in std::env::split_paths(&system_path) {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name == "openssl" || tools.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), tools.join(&name));
        }
    }
    let _ = std::fs::remove_file(tools.join("sai"));
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sai"), tools.join("sai")).unwrap();

    let origin = dir.join("nossl.git");
    bare_origin_with_hook(&origin, "post-receive", &server.url(""), &secret);
    let work = one_task_work_repo(dir);
    let (hash, _) = git(&work, &["rev-parse", "HEAD"]);
    let origin_s = origin.display().to_string();
    let (_, err) = git_with_path(&work, &["push", &origin_s, "main"], Some(&tools));
    assert!(
        err.contains("sai notify: queued"),
        "{err}\n{}",
        server.log()
    );

    let events = server.get_json("/api/projects/nossl/events").await;
    let e = &events.as_array().unwrap()[0];
    assert_eq!(e["hash"], hash.as_str());
    assert_eq!(e["ref"], "refs/heads/main");
    assert_eq!(e["fetch_url"], origin_s.as_str());
}

/// A misspelt key in the pushed `.sai.json` (`"biuld"` for `"build"`) is
/// not only in the server's log: the hook's answer carries the warning and
/// the real `hooks/sai-notify` prints it, so `git push` shows it as a
/// `remote:` line.
#[tokio::test(flavor = "multi_thread")]
async fn a_saifile_typo_is_printed_by_git_push() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, origin) = server_and_hooked_origin(dir, "typo.git", "post-receive");
    let saifile = json!({
        "schema": "sai-1",
        "platforms": {
            DEBIAN: { "build": "true" },
            FEDORA: { "biuld": "true" },
        },
        "configurations": { "default": {} },
    });
    let work = work_repo(dir, &saifile, "typo");
    let (_, err) = git(&work, &["push", &origin.display().to_string(), "main"]);
    let warning = err
        .lines()
        .find(|l| l.starts_with("remote: sai-notify: warning: ") && l.contains("biuld"))
        .unwrap_or_else(|| panic!("no warning in the push output:\n{err}\n{}", server.log()));
    assert!(
        warning.contains("unknown key \"biuld\"") && warning.contains(FEDORA),
        "{warning}"
    );
    assert!(err.contains("sai-notify: notified"), "{err}");
}
