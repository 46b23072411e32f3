//! Shared by the `rack_*` tests: the CI rack (`tests/data/rack-ci.json`)
//! pointed at a real sai-server on loopback, `sai rack` run as a real
//! process, and pushes through the real git hook.
//!
//! The root filesystem, kernel and static binaries these tests use are made
//! once per CI run by `scripts/ci/stages/40-rack-rootfs.sh` (under
//! `target/`); the tests build images from them and time it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sai_testkit::{ProcessGuard, TestServer, wait_for};
use serde_json::{Value, json};

pub const KEY: &str = "5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1";
pub const PROJECT: &str = "rack";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn cache_dir() -> PathBuf {
    repo_root().join("target/rack")
}

pub fn static_bin_dir() -> PathBuf {
    repo_root().join("target/x86_64-unknown-linux-gnu/static")
}

pub fn ci_rack_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rack-ci.json"))
        .unwrap()
}

pub fn bin(name: &str) -> PathBuf {
    let p = sai_testkit::bin_path(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first",
        p.display()
    );
    p
}

/// Fail (never skip) when the shared prerequisites of the CI stage are missing.
pub fn need_prepared(what: &[&str]) {
    for name in what {
        let path = static_bin_dir().join(name);
        assert!(
            path.is_file(),
            "{} is missing: run scripts/ci/stages/40-rack-rootfs.sh (scripts/build-static.sh --profile static)",
            path.display()
        );
    }
    let rootfs = cache_dir().join("rootfs");
    assert!(
        rootfs.is_dir(),
        "{} is missing: run `sai rack build --prepare crates/sai/tests/data/rack-ci.json` (CI stage 40-rack-rootfs)",
        rootfs.display()
    );
}

/// `sai <args>` with the rack's cache, static binaries and containers.conf.
pub fn sai_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("sai"));
    cmd.args(args)
        .env("SAI_RACK_CACHE", cache_dir())
        .env("SAI_RACK_BIN_DIR", static_bin_dir())
        .env(
            "CONTAINERS_CONF",
            repo_root().join("containers/containers.conf"),
        )
        .stdin(Stdio::null());
    cmd
}

/// `sai` with the rack's cache, static binaries and containers.conf.
pub fn sai(args: &[&str]) -> Output {
    let start = Instant::now();
    let out = sai_command(args).output().unwrap();
    eprintln!(
        "sai {} ({:.1}s)\n{}{}",
        args.join(" "),
        start.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sai_ok(args: &[&str]) -> String {
    let out = sai(args);
    assert!(
        out.status.success(),
        "sai {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `sai rack render <rack> --out <out>`; its stdout.
pub fn render_rack(rack: &Path, out: &Path) -> String {
    sai_ok(&[
        "rack",
        "render",
        rack.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

pub fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .env(
            "CONTAINERS_CONF",
            repo_root().join("containers/containers.conf"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = sai_testkit::git::git_command(dir, args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "git {args:?}: {stderr}");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr)
}

/// Removes a podman container and its named volume, whatever happens.
pub struct PodmanCleanup {
    pub container: &'static str,
    pub volume: String,
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "2", self.container]);
        let _ = podman(&["volume", "rm", "--force", &self.volume]);
    }
}

/// A saifile whose one platform builds with `${prep}`, one configuration
/// per `(name, prep script)`.
pub fn prep_saifile(platform: &str, configurations: &[(&str, &str)]) -> Value {
    let configurations: serde_json::Map<String, Value> = configurations
        .iter()
        .map(|(name, prep)| (name.to_string(), json!({ "prep": prep })))
        .collect();
    json!({
        "schema": "sai-1",
        "platforms": { platform: { "build": "${prep}" } },
        "configurations": configurations,
    })
}

/// A sai-server on loopback with a bare origin whose real hook notifies it.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub server: TestServer,
    pub origin: PathBuf,
    pub work: PathBuf,
}

impl Lab {
    /// Start the server; the hook tells builders to fetch from `fetch_url`
    /// (default: the origin's path).
    pub fn start(fetch_url: Option<&str>) -> Lab {
        let dir = tempfile::tempdir_in(repo_root().join("target")).unwrap();
        let secret = dir.path().join("hook-secret");
        std::fs::write(&secret, format!("{KEY}\n")).unwrap();
        let mut cfg = sai_testkit::test_config(&dir.path().join("server-data"), KEY);
        cfg.builder_ping_interval_ms = 1000;
        cfg.builder_dead_timeout_ms = 20_000;
        let server = TestServer::start(&bin("sai-server"), &cfg, &[]).unwrap();
        let origin = dir.path().join("origin.git");
        std::fs::create_dir_all(&origin).unwrap();
        git(&origin, &["init", "-q", "--bare"]);
        let hooks = repo_root().join("hooks");
        for h in ["post-receive", "sai-notify"] {
            let to = origin.join("hooks").join(h);
            std::fs::copy(hooks.join(h), &to).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let origin_path = origin.display().to_string();
        let url = server.url("");
        let secret_path = secret.display().to_string();
        for (k, v) in [
            ("sai.url", url.as_str()),
            ("sai.secretFile", secret_path.as_str()),
            ("sai.project", PROJECT),
            ("sai.fetchUrl", fetch_url.unwrap_or(&origin_path)),
        ] {
            git(&origin, &["config", k, v]);
        }
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q"]);
        Lab {
            dir,
            server,
            origin,
            work,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Builders fetch the pushed commits from `url` from now on.
    pub fn set_fetch_url(&self, url: &str) {
        git(&self.origin, &["config", "sai.fetchUrl", url]);
    }

    /// The CI rack with every builder dialling this server (`host` is how
    /// the builder reaches the host's loopback), written into the lab.
    pub fn rack(&self, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let mut rack: Value = serde_json::from_str(&ci_rack_text()).unwrap();
        let port = self.server.addr.port();
        for b in rack["builders"].as_array_mut().unwrap() {
            let host = if b["runs"] == "qemu" {
                "10.0.2.2"
            } else {
                "127.0.0.1"
            };
            for p in b["platforms"].as_array_mut().unwrap() {
                p["servers"][0]["url"] = json!(format!("ws://{host}:{port}/builder"));
            }
        }
        edit(&mut rack);
        let path = self.path().join("rack.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&rack).unwrap()).unwrap();
        path
    }

    /// A lab for a rack builder (the prepared builder binaries checked)
    /// that fetches from a `git daemon` on the host's loopback, which the
    /// builder reaches as `host`.
    pub fn for_builder(host: &str) -> (Lab, GitDaemon) {
        need_prepared(&["sai-builder", "sai-device", "sai-expect"]);
        let lab = Lab::start(None);
        let daemon = GitDaemon::start(lab.path());
        lab.set_fetch_url(&format!("git://{host}:{}/origin.git", daemon.port));
        (lab, daemon)
    }

    /// `sai rack up <rack> <builder>` in the background (it becomes the
    /// container or VM), stdout and stderr to `<name>.out`/`<name>.err` in
    /// the lab; SIGTERM stops it when the guard drops, after `grace`.
    pub fn rack_up(
        &self,
        rack: &Path,
        builder: &str,
        out: &Path,
        name: &str,
        grace: Duration,
    ) -> (ProcessGuard, PathBuf) {
        let stdout = self.path().join(format!("{name}.out"));
        let child = sai_command(&[
            "rack",
            "up",
            rack.to_str().unwrap(),
            builder,
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(self.path().join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap();
        (ProcessGuard::new(child, grace), stdout)
    }

    /// Render the rack and put each builder's token next to its config.
    pub fn render(&self, rack: &Path, builders: &[(&str, &str)]) -> PathBuf {
        let out = self.path().join("render");
        render_rack(rack, &out);
        for (name, platform) in builders {
            let token = self.server.builder_token(name, &[platform]).unwrap();
            std::fs::write(out.join(name).join("token"), format!("{token}\n")).unwrap();
        }
        out
    }

    /// Push a [`prep_saifile`] of `platform` and `configurations` with
    /// `files`; returns the event id.
    pub async fn push_prep(
        &self,
        platform: &str,
        configurations: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> String {
        self.push(&prep_saifile(platform, configurations), files)
            .await
    }

    /// Commit `saifile` (and `files`) and push through the real hook;
    /// returns the event id.
    pub async fn push(&self, saifile: &Value, files: &[(&str, &str)]) -> String {
        std::fs::write(
            self.work.join(".sai.json"),
            serde_json::to_vec_pretty(saifile).unwrap(),
        )
        .unwrap();
        for (name, text) in files {
            std::fs::write(self.work.join(name), text).unwrap();
        }
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", "rack test"]);
        let origin = self.origin.display().to_string();
        let out = git(&self.work, &["push", "-q", &origin, "HEAD:main"]);
        assert!(
            out.contains("sai-notify: notified"),
            "the hook did not notify:\n{out}"
        );
        let events = self.get(&format!("/api/projects/{PROJECT}/events")).await;
        let events = events
            .as_array()
            .or_else(|| events["events"].as_array())
            .unwrap()
            .clone();
        events.last().unwrap()["id"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.server.get_json(path).await
    }

    /// Wait until every task of the event is over; returns the event.
    pub async fn finished(
        &self,
        event: &str,
        tasks: usize,
        timeout: Duration,
        why: impl Fn() -> String,
    ) -> Value {
        let done = wait_for("every task of the push finished", timeout, || async {
            let e = self.get(&format!("/api/events/{event}")).await;
            let list = e["tasks"].as_array()?;
            (list.len() == tasks
                && list.iter().all(|t| {
                    matches!(
                        t["state"].as_str(),
                        Some("success" | "failed" | "cancelled")
                    )
                }))
            .then_some(e)
        })
        .await;
        match done {
            Ok(e) => e,
            Err(err) => panic!("{err}\nserver log:\n{}\n{}", self.server.log(), why()),
        }
    }

    /// Print how long a task took (for BENCHMARKS.md): queued to started,
    /// started to ended.
    pub fn report_timing(&self, what: &str, task: &Value) {
        let ms = |k: &str| task[k].as_u64().unwrap_or(0);
        eprintln!(
            "timing {what}: task {} waited {} ms, ran {} ms (checkout + steps)",
            task["configuration"].as_str().unwrap_or("?"),
            ms("started").saturating_sub(ms("created")),
            ms("ended").saturating_sub(ms("started"))
        );
    }

    /// Text of channels 1 and 2 of a task's log.
    pub async fn log_text(&self, task: &str) -> String {
        let records = self.server.log_records(task, 65536).await;
        records.iter().filter_map(|r| r["text"].as_str()).collect()
    }
}

/// `git daemon` serving the lab's origin on loopback (`git://127.0.0.1:<port>/origin.git`),
/// for builders that cannot see the host's files (containers, VMs).
pub struct GitDaemon {
    pub port: u16,
    _guard: sai_testkit::ProcessGuard,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let guard = sai_testkit::ProcessGuard::new(child, Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        GitDaemon {
            port,
            _guard: guard,
        }
    }
}
