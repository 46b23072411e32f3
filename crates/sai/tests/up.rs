//! `sai up` (the real binary) against a clone of this very repository: it
//! starts its in-process server and builder, queues the clone's HEAD
//! `.sai.json` and the `fmt` task (`cargo fmt --all -- --check`) succeeds.
//! Also: `sai notify` and `sai token` against the same running `sai up`,
//! secrets and tokens kept across restarts, and a clean exit on SIGTERM.
//! Without `--repo` (in an empty directory, in a repository without a
//! `.sai.json`) it builds its demo project to a result; in a repository with
//! a `.sai.json` it builds that repository; with `--demo` (the README's
//! first command, also in a clone of this repository) always the demo and
//! no hook; with a real outside saifile whose platforms cannot match it
//! says at once why nothing runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sai_testkit::{ProcessGuard, run_ok, wait_for};
use serde_json::Value;

const SAI: &str = env!("CARGO_BIN_EXE_sai");
/// Any x86_64 Linux tuple satisfies the repository's `linux/x86_64`; given
/// explicitly so the test does not depend on the host's detection.
const PLATFORM: &str = "linux-e2e/x86_64/gcc";

fn git(dir: &Path, args: &[&str]) -> String {
    let stdout = run_ok(
        format_args!("git {args:?}"),
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null"),
    );
    stdout.trim().to_string()
}

/// The word after `marker` on the first line of `text` that has it.
fn word_after(text: &str, marker: &str) -> String {
    text.lines()
        .find_map(|l| l.split_once(marker).map(|(_, rest)| rest))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{text}"))
        .to_string()
}

/// A running `sai up` and everything it printed so far.
struct Up {
    guard: ProcessGuard,
    out: Arc<Mutex<String>>,
    err: PathBuf,
}

/// `sai up` arguments: data in `data`, the server on an ephemeral loopback
/// port, then `more`.
fn serving<'a>(data: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--data", data, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(more);
    args
}

impl Up {
    fn start(args: &[&str], err: PathBuf) -> Up {
        Up::start_in(None, args, err)
    }

    /// `sai up` with `cwd` as its current directory.
    fn start_in(cwd: Option<&Path>, args: &[&str], err: PathBuf) -> Up {
        let mut cmd = Command::new(SAI);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd
            .arg("up")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).unwrap())
            .env("RUST_LOG", "info")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
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

    /// Stop it (SIGTERM) and check that it exits 0.
    fn stop_cleanly(&mut self) {
        let st = self.guard.stop().unwrap();
        assert!(st.success(), "{st:?}\n{}", self.why());
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
        self.line_after_within(prefix, Duration::from_secs(60))
            .await
    }

    async fn line_after_within(&self, prefix: &str, within: Duration) -> String {
        let r = wait_for(prefix, within, || async {
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

/// A clone of this repository in `dir/sai`.
fn clone_this_repository(dir: &Path) -> PathBuf {
    let top = git(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["rev-parse", "--show-toplevel"],
    );
    let clone = dir.join("sai");
    run_ok(
        "git clone",
        Command::new("git")
            .args(["clone", "-q", "--no-hardlinks", &top])
            .arg(&clone),
    );
    clone
}

async fn get(url: &str) -> Value {
    let r = reqwest::get(url).await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

/// The raw log of task `id` from the server at `url`.
async fn raw_log(url: &str, id: &str) -> String {
    let r = reqwest::get(format!("{url}/api/tasks/{id}/log?format=raw"))
        .await
        .unwrap();
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sai_up_builds_this_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let clone = clone_this_repository(tmp.path());
    // Not `main`: the heavy `tests` configuration (branches: main) is
    // filtered out.
    git(&clone, &["checkout", "-q", "-b", "sai-up-e2e"]);
    let data = tmp.path().join("data");
    let data_s = data.display().to_string();
    let clone_s = clone.display().to_string();
    let args = serving(
        &data_s,
        &[
            "--no-install-hook",
            "--repo",
            &clone_s,
            "--platform",
            PLATFORM,
            "--instances",
            "1",
            "--web",
            "127.0.0.1:0",
        ],
    );
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
    let log = raw_log(&url, &fmt_id).await;
    assert_eq!(t["state"], "success", "{t}\nlog:\n{log}\n{}", up.why());

    // `sai notify` against the running `sai up`: the same commit again is a
    // duplicate of the queued event.
    let stdout = run_ok(
        "sai notify",
        Command::new(SAI)
            .args(["notify", "--url", &url, "--secret-file"])
            .arg(data.join("hook-secret"))
            .arg("--repo")
            .arg(&clone),
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
    let token = run_ok(
        "sai token",
        Command::new(SAI).args([
            "token", "user", "--name", "ops", "--ttl", "1h", "--data", &data_s,
        ]),
    )
    .trim()
    .to_string();
    assert!(token.starts_with("v4.public."), "{token}");
    let r = reqwest::Client::new()
        .post(format!("{url}/api/tasks/{fmt_id}/cancel"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "finished task: conflict, not 401");

    // SIGTERM: clean shutdown, exit 0.
    up.stop_cleanly();
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
    up2.stop_cleanly();
}

/// `sai up` without `--repo` (plus `extra` flags) in `cwd`: the demo
/// project runs to a result, printed as sentences on plain lines (stdout is
/// a pipe here: no ANSI codes), with the failed task's reason and a log URL
/// that serves its log.
async fn demo_runs_to_a_result(cwd: &Path, tmp: &Path, name: &str, extra: &[&str]) -> Up {
    let data = tmp.join(format!("{name}-data"));
    let data_s = data.display().to_string();
    let mut args = serving(&data_s, &["--platform", PLATFORM, "--instances", "2"]);
    args.extend_from_slice(extra);
    let up = Up::start_in(Some(cwd), &args, tmp.join(format!("{name}.err")));
    let url = up.line_after("sai up: server listening on ").await;
    up.line_after("building the demo project").await;
    let result = up
        .line_after_within(" finished: ", Duration::from_secs(120))
        .await;
    let out = up.stdout();
    assert_eq!(result, "failed (3 passed, 1 failed)", "{}", up.why());
    assert!(
        out.contains("sai up: event ") && out.contains("(demo main): "),
        "no progress lines: {}",
        up.why()
    );
    assert!(
        !out.contains('\x1b'),
        "ANSI codes in redirected output: {out:?}"
    );
    let failed = up.line_after("  fails on ").await;
    let (why, log_url) = failed.split_once("; log: ").expect(&failed);
    assert_eq!(
        why,
        format!("{PLATFORM} failed: step 2 exited with 3"),
        "{}",
        up.why()
    );
    assert!(log_url.starts_with(&url), "{log_url}");
    let log = reqwest::get(log_url).await.unwrap().text().await.unwrap();
    assert!(log.contains("error: this step fails on purpose"), "{log}");
    assert!(!log.contains("never printed"), "{log}");
    // The artifact task uploaded its file.
    let ev = word_after(&out, "sai up: event ");
    let e = get(&format!("{url}/api/events/{ev}")).await;
    let art = e["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["configuration"] == "artifact")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = get(&format!("{url}/api/tasks/{art}")).await;
    assert_eq!(t["state"], "success", "{t}");
    assert_eq!(t["artifacts"].as_array().map(Vec::len), Some(1), "{t}");
    // The daemons' log lines (stderr) read as sentences: no Rust debug forms.
    let err = std::fs::read_to_string(&up.err).unwrap();
    for debug_form in ["Failed {", "exit_code:", "AlreadyPresent", "Some(", "None,"] {
        assert!(
            !err.contains(debug_form),
            "{debug_form:?} in the log:\n{err}"
        );
    }
    up
}

#[tokio::test(flavor = "multi_thread")]
async fn sai_up_without_repo_runs_the_demo_in_an_empty_directory_and_in_a_repository() {
    let tmp = tempfile::tempdir().unwrap();
    // An empty directory outside any repository.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut up = demo_runs_to_a_result(&empty, tmp.path(), "empty", &[]).await;

    // `sai notify` in the demo repository finds the server through the git
    // config `sai up` wrote; the seen commit is a duplicate, and --rebuild
    // (with the user token from that config) builds it again.
    let demo = tmp.path().join("empty-data/demo");
    let notify = |extra: &[&str]| {
        let out = Command::new(SAI)
            .arg("notify")
            .args(extra)
            .current_dir(&demo)
            .env_remove("SAI_URL")
            .env_remove("SAI_SECRET_FILE")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    };
    let again = notify(&[]);
    assert!(
        again.contains("was already queued as event") && again.contains("sai notify --rebuild"),
        "{again}"
    );
    let before = up.stdout().matches(" finished: ").count();
    let old_id = again
        .split("was already queued as event ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .to_string();
    let rebuilt = notify(&["--rebuild"]);
    assert!(
        rebuilt.contains("building demo refs/heads/main again as event ")
            && rebuilt.contains(&format!("(a rebuild of event {old_id})"))
            && rebuilt.contains("4 tasks"),
        "{rebuilt}"
    );
    let new_id = word_after(&rebuilt, "again as event ");
    assert_ne!(new_id, old_id, "a new event, not the old one reset");
    let r = wait_for(
        "the rebuilt event's result",
        Duration::from_secs(120),
        || async { (up.stdout().matches(" finished: ").count() > before).then_some(()) },
    )
    .await;
    if let Err(e) = r {
        panic!("{e}\n{}", up.why());
    }
    up.stop_cleanly();

    // A repository without a .sai.json: the demo, and the repository is
    // left alone (no hook).
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    git(&plain, &["init", "-q"]);
    std::fs::write(plain.join("README"), "hello\n").unwrap();
    git(&plain, &["add", "."]);
    git(&plain, &["commit", "-q", "-m", "one"]);
    let mut up = demo_runs_to_a_result(&plain, tmp.path(), "plain", &[]).await;
    assert!(!plain.join(".git/hooks/post-receive").exists());
    assert!(
        up.stdout()
            .contains("(no repository with a .sai.json here)"),
        "{}",
        up.why()
    );
    up.stop_cleanly();
}

/// The README's first command, typed in this checkout.
#[tokio::test(flavor = "multi_thread")]
async fn sai_up_demo_typed_in_this_checkout_runs_the_demo_not_sais_own_ci() {
    let tmp = tempfile::tempdir().unwrap();
    let clone = clone_this_repository(tmp.path());
    // On `main`, where this repository's .sai.json would run scripts/test.sh.
    git(&clone, &["checkout", "-q", "-B", "main"]);
    let readme = std::fs::read_to_string(clone.join("README.md")).unwrap();
    assert!(
        readme.contains("```sh\ncargo run --release -p sai -- up --demo\n```"),
        "the README's first command is `sai up --demo`"
    );
    let mut up = demo_runs_to_a_result(&clone, tmp.path(), "checkout", &["--demo"]).await;
    let out = up.stdout();
    assert!(
        out.contains(&format!(
            "{} has a .sai.json: left alone (--demo)",
            clone.display()
        )),
        "{out}"
    );
    assert!(out.contains("(--demo): passes: "), "{out}");
    assert!(!clone.join(".git/hooks/post-receive").exists());
    let url = up.line_after("sai up: server listening on ").await;
    let projects = get(&format!("{url}/api/projects")).await;
    let names = sai_testkit::field_of_each(&projects, "name");
    assert_eq!(names, ["demo"], "only the demo was queued");
    up.stop_cleanly();
}

/// A small repository of one's own with a `.sai.json` for `PLATFORM`
/// whose one task runs git in its checkout.
fn repository_with_a_saifile(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let saifile = serde_json::json!({
        "schema": "sai-1",
        "platforms": { PLATFORM: { "build": "${prep}" } },
        "configurations": {
            "mine": { "prep": "echo built my own project\ngit log --oneline -1\ntest -f hello.txt" }
        }
    });
    std::fs::write(dir.join(".sai.json"), saifile.to_string()).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "my first commit"]);
}

/// Plain `sai up` typed in a repository with a `.sai.json` hooks it up and
/// builds it to a result (as `--repo .` does); no demo.
#[tokio::test(flavor = "multi_thread")]
async fn sai_up_typed_in_a_repository_with_a_saifile_builds_that_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("mine");
    repository_with_a_saifile(&repo);
    // In a subdirectory of it: the repository is still found.
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    let data = tmp.path().join("data");
    let data_s = data.display().to_string();
    let mut up = Up::start_in(
        Some(&repo.join("sub")),
        &serving(&data_s, &["--platform", PLATFORM]),
        tmp.path().join("up.err"),
    );
    let url = up.line_after("sai up: server listening on ").await;
    let result = up
        .line_after_within(" finished: ", Duration::from_secs(120))
        .await;
    let out = up.stdout();
    assert!(
        out.contains("(mine main) finished: ") && result.starts_with("success"),
        "{result}\n{}",
        up.why()
    );
    assert!(
        out.contains(&format!(
            "sai up: building {} (its HEAD has a .sai.json; `sai up --demo` builds the demo instead)",
            repo.display()
        )),
        "{}",
        up.why()
    );
    assert!(!out.contains("demo project"), "no demo: {}", up.why());
    assert!(
        repo.join(".git/hooks/post-receive").exists(),
        "the hook is installed as with --repo ."
    );
    assert!(!data.join("demo").exists());
    let projects = get(&format!("{url}/api/projects")).await;
    let names: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"], "only this repository was queued");
    let ev = word_after(&out, " as event ");
    let e = get(&format!("{url}/api/events/{ev}")).await;
    let id = e["tasks"][0]["id"].as_str().unwrap().to_string();
    let log = raw_log(&url, &id).await;
    assert!(log.contains("built my own project"), "{log}");
    assert!(log.contains("my first commit"), "{log}");
    up.stop_cleanly();

    // `sai up --demo` in the same repository: the demo, and this repository
    // is left alone (no hook, not queued).
    std::fs::remove_file(repo.join(".git/hooks/post-receive")).unwrap();
    let mut up = demo_runs_to_a_result(&repo, tmp.path(), "mine-demo", &["--demo"]).await;
    assert!(!repo.join(".git/hooks/post-receive").exists());
    assert!(
        !up.stdout().contains("(mine main)"),
        "this repository was not queued: {}",
        up.why()
    );
    up.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn sai_up_says_within_a_second_why_an_outside_saifile_cannot_run_here() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("fixdiff");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let saifile = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/saifiles/fixdiff/20250722-e0a97a7b9d.sai.json");
    std::fs::copy(&saifile, repo.join(".sai.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", saifile.display()));
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "fixdiff's saifile"]);
    let data = tmp.path().join("data");
    let (data_s, repo_s) = (data.display().to_string(), repo.display().to_string());
    let mut up = Up::start(
        &serving(
            &data_s,
            &[
                "--repo",
                &repo_s,
                "--no-install-hook",
                "--platform",
                PLATFORM,
            ],
        ),
        tmp.path().join("up.err"),
    );
    up.line_after(" as event ").await;
    let queued = std::time::Instant::now();
    let why = up
        .line_after_within(" cannot run here: ", Duration::from_secs(1))
        .await;
    let took = queued.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    for wanted in [
        "rocky9/aarch64-a72a55-rk3588/gcc",
        "rocky9/x86_64-amd/gcc",
        "ubuntu-noble/riscv64/gcc",
        "linux-ubuntu-2404/aarch64-a72-bcm2711-rpi4/gcc",
        "netbsd-OSX-bigsur/x86_64-intel-i3/llvm",
    ] {
        assert!(why.contains(wanted), "{wanted} missing: {why}");
    }
    assert!(
        why.contains(&format!("this builder offers {PLATFORM}")),
        "{why}"
    );
    assert!(why.contains("sai up --platform"), "{why}");
    assert!(
        up.stdout()
            .contains("(fixdiff main): 7 of 7 tasks cannot run here"),
        "{}",
        up.why()
    );
    up.stop_cleanly();
}

/// On a terminal the progress is a live block redrawn in place (cursor up,
/// erase line), and the result lines still come through.
#[tokio::test(flavor = "multi_thread")]
async fn sai_up_on_a_terminal_redraws_one_progress_line_per_event() {
    let tmp = tempfile::tempdir().unwrap();
    let pty = nix::pty::openpty(None, None).unwrap();
    let data = tmp.path().join("data");
    let child = Command::new(SAI)
        .current_dir(tmp.path())
        .args(["up", "--listen", "127.0.0.1:0", "--platform", PLATFORM])
        .arg("--data")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(std::fs::File::from(pty.slave))
        .stderr(std::fs::File::create(tmp.path().join("up.err")).unwrap())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .spawn()
        .unwrap();
    let mut guard = ProcessGuard::new(child, Duration::from_secs(30));
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    sai_testkit::copy_in_background(std::fs::File::from(pty.master), out.clone());
    let text = || String::from_utf8_lossy(&out.lock().unwrap()).to_string();
    let r = wait_for("the demo's result", Duration::from_secs(120), || async {
        text()
            .contains("(demo main) finished: failed")
            .then_some(())
    })
    .await;
    if let Err(e) = r {
        panic!(
            "{e}\n{:?}\n{}",
            text(),
            std::fs::read_to_string(tmp.path().join("up.err")).unwrap_or_default()
        );
    }
    let t = text();
    // Progress lines are drawn indented under the messages and erased
    // before the next redraw; they are not printed as `sai up:` lines.
    assert!(t.contains("\x1b[1A\x1b[2K"), "{t:?}");
    assert!(
        t.contains("\n  event ") || t.contains("\r  event "),
        "{t:?}"
    );
    assert!(
        t.split("sai up: event ").skip(1).all(|rest| rest
            .lines()
            .next()
            .unwrap_or("")
            .contains(" finished: ")),
        "progress came as plain lines on a terminal: {t:?}"
    );
    let st = guard.stop().unwrap();
    assert!(st.success(), "{st:?}");
}
