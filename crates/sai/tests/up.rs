//! `sai up` (the real binary) against a clone of this very repository: it
//! starts its in-process server and builder, queues the clone's HEAD
//! `.sai.json` and the `fmt` task (`cargo fmt --all -- --check`) succeeds.
//! Also: `sai notify` and `sai token` against the same running `sai up`,
//! secrets and tokens kept across restarts, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sai_testkit::{ProcessGuard, wait_for};
use serde_json::Value;

const SAI: &str = env!("CARGO_BIN_EXE_sai");
/// Any x86_64 Linux tuple satisfies the repository's `linux/x86_64`; given
/// explicitly so the test does not depend on the host's detection.
const PLATFORM: &str = "linux-e2e/x86_64/gcc";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running `sai up` and everything it printed so far.
struct Up {
    guard: ProcessGuard,
    out: Arc<Mutex<String>>,
    err: PathBuf,
}

impl Up {
    fn start(args: &[&str], err: PathBuf) -> Up {
        let mut child = Command::new(SAI)
            .arg("up")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).unwrap())
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut o = o.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        Up {
            guard: ProcessGuard::new(child, Duration::from_secs(30)),
            out,
            err,
        }
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn why(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// The text after `prefix` on the first stdout line that has it.
    async fn line_after(&self, prefix: &str) -> String {
        let r = wait_for(prefix, Duration::from_secs(60), || async {
            self.stdout()
                .lines()
                .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest.to_string()))
        })
        .await;
        match r {
            Ok(s) => s,
            Err(e) => panic!("{e}\n{}", self.why()),
        }
    }
}

async fn get(url: &str) -> Value {
    let r = reqwest::get(url).await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sai_up_builds_this_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let top = git(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["rev-parse", "--show-toplevel"],
    );
    let clone = tmp.path().join("sai");
    let out = Command::new("git")
        .args(["clone", "-q", "--no-hardlinks", &top])
        .arg(&clone)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not `main`: the heavy `tests` configuration (branches: main) is
    // filtered out.
    git(&clone, &["checkout", "-q", "-b", "sai-up-e2e"]);
    let data = tmp.path().join("data");
    let data_s = data.display().to_string();
    let clone_s = clone.display().to_string();
    let args = [
        "--data",
        &data_s,
        "--listen",
        "127.0.0.1:0",
        "--no-install-hook",
        "--repo",
        &clone_s,
        "--platform",
        PLATFORM,
        "--instances",
        "1",
        "--web",
        "127.0.0.1:0",
    ];
    let mut up = Up::start(&args, tmp.path().join("up1.err"));
    let url = up.line_after("sai up: server listening on ").await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let ev = up.line_after(" as event ").await;
    let ev = ev.split(' ').next().unwrap().to_string();
    let web = up.line_after("sai up: web UI: ").await;
    assert!(web.starts_with("http://127.0.0.1:"), "{web}");
    let overview = reqwest::get(&web).await.unwrap().text().await.unwrap();
    assert!(overview.contains(&ev), "the web UI shows the queued event");
    assert!(
        up.stdout()
            .contains("hook not installed (--no-install-hook)")
    );
    assert!(!clone.join(".git/hooks/post-receive").exists());

    // Generated files, secrets private.
    for f in [
        "server.conf",
        "builder.conf",
        "hook-secret",
        "builder.token",
        "user.token",
        "token.key",
    ] {
        assert!(data.join(f).exists(), "{f} missing\n{}", up.why());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("hook-secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(data.join("hook-secret")).unwrap();
    assert_eq!(secret.trim().len(), 64);
    let builder_token = std::fs::read_to_string(data.join("builder.token")).unwrap();

    // Only fmt and schemas (tests is for main only); cancel schemas (it
    // compiles the workspace) with the user token `sai up` minted.
    let e = get(&format!("{url}/api/events/{ev}")).await;
    let tasks = e["tasks"].as_array().unwrap().clone();
    let mut confs: Vec<&str> = tasks
        .iter()
        .map(|t| t["configuration"].as_str().unwrap())
        .collect();
    confs.sort();
    assert_eq!(confs, ["fmt", "schemas"], "{e}");
    let user = std::fs::read_to_string(data.join("user.token")).unwrap();
    for t in &tasks {
        if t["configuration"] == "schemas" {
            let id = t["id"].as_str().unwrap();
            let r = reqwest::Client::new()
                .post(format!("{url}/api/tasks/{id}/cancel"))
                .bearer_auth(user.trim())
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            assert!(
                st == 200 || st == 409,
                "cancel: {st} {}",
                r.text().await.unwrap_or_default()
            );
        }
    }
    let fmt = tasks.iter().find(|t| t["configuration"] == "fmt").unwrap();
    let fmt_id = fmt["id"].as_str().unwrap().to_string();
    let done = wait_for("fmt task done", Duration::from_secs(300), || async {
        let t = get(&format!("{url}/api/tasks/{fmt_id}")).await;
        matches!(
            t["state"].as_str(),
            Some("success" | "failed" | "cancelled")
        )
        .then_some(t)
    })
    .await;
    let t = match done {
        Ok(t) => t,
        Err(e) => panic!("{e}\n{}", up.why()),
    };
    let log = reqwest::get(format!("{url}/api/tasks/{fmt_id}/log?format=raw"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(t["state"], "success", "{t}\nlog:\n{log}\n{}", up.why());

    // `sai notify` against the running `sai up`: the same commit again is a
    // duplicate of the queued event.
    let out = Command::new(SAI)
        .args(["notify", "--url", &url, "--secret-file"])
        .arg(data.join("hook-secret"))
        .arg("--repo")
        .arg(&clone)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("already queued as event {ev}")),
        "{stdout}"
    );
    // A wrong secret is refused.
    let bad = tmp.path().join("bad-secret");
    std::fs::write(&bad, "nope\n").unwrap();
    let out = Command::new(SAI)
        .args(["notify", "--url", &url, "--secret-file"])
        .arg(&bad)
        .arg("--repo")
        .arg(&clone)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));

    // `sai token` with the data dir's key mints tokens the server accepts.
    let out = Command::new(SAI)
        .args([
            "token", "user", "--name", "ops", "--ttl", "1h", "--data", &data_s,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("v4.public."), "{token}");
    let r = reqwest::Client::new()
        .post(format!("{url}/api/tasks/{fmt_id}/cancel"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "finished task: conflict, not 401");

    // SIGTERM: clean shutdown, exit 0.
    let st = up.guard.stop().unwrap();
    assert!(st.success(), "{st:?}\n{}", up.why());
    assert!(up.stdout().contains("sai up: stopped"), "{}", up.why());

    // A second start keeps the secret and the tokens.
    let mut args2 = args.to_vec();
    args2.push("--no-queue");
    let mut up2 = Up::start(&args2, tmp.path().join("up2.err"));
    up2.line_after("sai up: running").await;
    assert_eq!(
        std::fs::read_to_string(data.join("hook-secret")).unwrap(),
        secret
    );
    assert_eq!(
        std::fs::read_to_string(data.join("builder.token")).unwrap(),
        builder_token
    );
    let st = up2.guard.stop().unwrap();
    assert!(st.success(), "{st:?}\n{}", up2.why());
}
