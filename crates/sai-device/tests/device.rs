//! Runs the real `sai-device` binary against real pty devices.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sai-device");

/// A pty pair; the slave path is the "board's" tty.
struct Pty {
    _master: OwnedFd,
    _slave: OwnedFd,
    path: PathBuf,
}

impl Pty {
    fn new() -> Pty {
        let p = nix::pty::openpty(None, None).unwrap();
        let path = nix::unistd::ttyname(&p.slave).unwrap();
        Pty {
            _master: p.master,
            _slave: p.slave,
            path,
        }
    }
}

struct Setup {
    dir: tempfile::TempDir,
    _ptys: Vec<Pty>,
    config: PathBuf,
}

impl Setup {
    /// `n` devices of type "board", each with one pty; device i is `dev<i>`.
    fn new(n: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ptys: Vec<Pty> = (0..n).map(|_| Pty::new()).collect();
        let devices: Vec<serde_json::Value> = ptys
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::json!({
                    "name": format!("dev{i}"),
                    "type": "board",
                    "compatible": ["board-family", "other"],
                    "ttys": [
                        {"name": "console", "tty": p.path, "rate": 921600},
                        {"name": "aux", "tty": "/dev/null", "lock": false}
                    ]
                })
            })
            .collect();
        let config = dir.path().join("devices.conf");
        let text = format!(
            "# test devices\n{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "schema": "sai-device",
                "home": dir.path().join("state"),
                "devices": devices
            }))
            .unwrap()
        );
        std::fs::write(&config, text).unwrap();
        Setup {
            dir,
            _ptys: ptys,
            config,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("SAI_LOGPROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn spawn_sh(&self, extra: &[&str], script: &str) -> Child {
        let mut args: Vec<&str> = vec!["board"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        self.cmd(&args).spawn().unwrap()
    }

    fn queue_len(&self) -> usize {
        std::fs::read_dir(self.path("state").join("queue"))
            .map(|d| {
                d.filter(|e| {
                    !e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with('.')
                })
                .count()
            })
            .unwrap_or(0)
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the binary with `args` (and no device set-up): its exit code and
/// stderr.
fn run_bin(args: &[&str]) -> (i32, String) {
    code_and_stderr(Command::new(BIN).args(args).output().unwrap())
}

fn output(child: Child) -> (i32, String) {
    code_and_stderr(child.wait_with_output().unwrap())
}

fn code_and_stderr(out: Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exports_env_and_passes_exit_code_through() {
    let s = Setup::new(1);
    let child = s.spawn_sh(
        &["CON=0", "AUX_ALIAS=1"],
        "echo \"$SAI_DEVICE_TTY0|$SAI_DEVICE_CONSOLE|$CON|$SAI_DEVICE_TTY1|$AUX_ALIAS|$SAI_DEVICE_NAME|$SAI_DEVICE_TTY0_RATE|${SAI_DEVICE_SHIM_PARENT:-unset}\" > env.txt; exit 42",
    );
    let (code, stderr) = output(child);
    assert_eq!(code, 42, "{stderr}");
    let pty = s._ptys[0].path.display().to_string();
    assert_eq!(
        std::fs::read_to_string(s.path("env.txt")).unwrap().trim(),
        format!("{pty}|{pty}|{pty}|/dev/null|/dev/null|dev0|921600|unset")
    );
    assert!(stderr.contains("acquired device 'dev0'"), "{stderr}");

    // a compatible token other than the type matches too
    let (code, _) = output(
        s.cmd(&["other", "--", "sh", "-c", "exit 0"])
            .spawn()
            .unwrap(),
    );
    assert_eq!(code, 0);
}

#[test]
fn signalled_program_gives_128_plus_signal() {
    let s = Setup::new(1);
    let (code, _) = output(s.spawn_sh(&[], "kill -TERM $$"));
    assert_eq!(code, 128 + 15);
}

#[test]
fn two_devices_are_used_exclusively_by_concurrent_waiters() {
    let s = Setup::new(2);
    let script = "echo \"start $SAI_DEVICE_NAME $SAI_DEVICE_TTY0\" >> log; sleep 0.3; echo \"end $SAI_DEVICE_NAME $SAI_DEVICE_TTY0\" >> log";
    let children: Vec<Child> = (0..6).map(|_| s.spawn_sh(&[], script)).collect();
    for c in children {
        let (code, stderr) = output(c);
        assert_eq!(code, 0, "{stderr}");
    }
    let log = std::fs::read_to_string(s.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 12, "{log}");
    let mut busy = std::collections::HashMap::new();
    let mut used = std::collections::HashSet::new();
    for l in &lines {
        let parts: Vec<&str> = l.split(' ').collect();
        let (what, dev, tty) = (parts[0], parts[1], parts[2]);
        let idx: usize = dev.trim_start_matches("dev").parse().unwrap();
        assert_eq!(tty, s._ptys[idx].path.to_str().unwrap());
        used.insert(dev.to_string());
        let b = busy.entry(dev.to_string()).or_insert(false);
        match what {
            "start" => {
                assert!(!*b, "device {dev} used twice at once:\n{log}");
                *b = true;
            }
            _ => {
                assert!(*b, "{log}");
                *b = false;
            }
        }
    }
    assert_eq!(used.len(), 2, "both devices should be used:\n{log}");
}

#[test]
fn sigkill_of_holder_frees_the_device_for_the_next_waiter() {
    let s = Setup::new(1);
    let mut holder = s.spawn_sh(&[], "echo $$ > holder.pid; exec sleep 60");
    wait_for("holder to start", Duration::from_secs(10), || {
        std::fs::read_to_string(s.path("holder.pid")).is_ok_and(|t| t.ends_with('\n'))
    });
    let waiter = s.spawn_sh(&[], "touch got-it");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !s.path("got-it").exists(),
        "waiter ran while the device was held"
    );

    holder.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    holder.wait().unwrap();
    wait_for("waiter to get the device", Duration::from_secs(3), || {
        s.path("got-it").exists()
    });
    assert!(killed_at.elapsed() < Duration::from_secs(2));
    let (code, stderr) = output(waiter);
    assert_eq!(code, 0, "{stderr}");

    // The killed holder's program got its parent-death SIGTERM.
    let pid: i32 = std::fs::read_to_string(s.path("holder.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "orphaned program to end",
        Duration::from_secs(3),
        || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z')),
        },
    );
}

#[test]
fn timeout_gives_124_with_a_message() {
    let s = Setup::new(1);
    let mut holder = s.spawn_sh(&[], "touch held; sleep 30");
    wait_for("holder", Duration::from_secs(10), || {
        s.path("held").exists()
    });
    let start = Instant::now();
    let (code, stderr) = output(s.spawn_sh(&["--timeout", "0.5"], "touch ran"));
    let took = start.elapsed();
    assert_eq!(code, 124, "{stderr}");
    assert!(stderr.contains("timed out after"), "{stderr}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(!s.path("ran").exists());
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let s = Setup::new(1);
    let mut holder = s.spawn_sh(
        &[],
        "touch held; while [ ! -e release ]; do sleep 0.02; done",
    );
    wait_for("holder", Duration::from_secs(10), || {
        s.path("held").exists()
    });
    let mut waiters = Vec::new();
    for n in 1..=3 {
        waiters.push(s.spawn_sh(&[], &format!("echo w{n} >> order; sleep 0.1")));
        wait_for("ticket", Duration::from_secs(10), || s.queue_len() == n);
    }
    std::fs::write(s.path("release"), "").unwrap();
    assert_eq!(holder.wait().unwrap().code(), Some(0));
    for w in waiters {
        let (code, stderr) = output(w);
        assert_eq!(code, 0, "{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(s.path("order")).unwrap(),
        "w1\nw2\nw3\n"
    );
    assert_eq!(s.queue_len(), 0, "tickets must be gone");
}

#[test]
fn stale_ticket_of_a_dead_waiter_does_not_block() {
    let s = Setup::new(1);
    let q = s.path("state").join("queue");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::write(q.join(format!("{:020}-999999", 0)), "board").unwrap();
    let (code, stderr) = output(
        s.cmd(&["--timeout", "2", "board", "--", "true"])
            .spawn()
            .unwrap(),
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn notices_go_to_the_log_proxy() {
    let s = Setup::new(1);
    let sock = s.path("logproxy.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let child = s
        .cmd(&["board", "--", "true"])
        .env("SAI_LOGPROXY", &sock)
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let (code, stderr) = output(child);
    assert_eq!(code, 0);
    assert!(
        !stderr.contains("acquired"),
        "notices went to stderr: {stderr}"
    );
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert!(
        got.contains("queueing for device compatible with 'board'"),
        "{got}"
    );
    assert!(got.contains("acquired device 'dev0' (board)"), "{got}");
}

#[test]
fn config_and_program_errors_have_distinct_codes() {
    let s = Setup::new(1);
    // program not found / not executable
    let (code, stderr) = output(s.cmd(&["board", "--", "no-such-prog-xyz"]).spawn().unwrap());
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    std::fs::write(s.path("plain"), "x").unwrap();
    let plain = s.path("plain");
    let (code, _) = output(
        s.cmd(&["board", "--", plain.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );
    assert_eq!(code, 126);
    // unknown type
    let (code, stderr) = output(s.cmd(&["nosuchtype", "--", "true"]).spawn().unwrap());
    assert_eq!(code, 125);
    assert!(
        stderr.contains("no device in the config is compatible"),
        "{stderr}"
    );
    // usage
    let (code, _) = output(s.cmd(&["board"]).spawn().unwrap());
    assert_eq!(code, 125);
    // alias to a tty the device lacks
    let (code, stderr) = output(s.cmd(&["board", "X=5", "--", "true"]).spawn().unwrap());
    assert_eq!(code, 125);
    assert!(stderr.contains("has only 2 tty"), "{stderr}");
    // bad config: unknown field, reported with file:line:col
    let bad = s.path("bad.conf");
    std::fs::write(&bad, "{\n  \"devices\": [],\n  \"colour\": 1\n}\n").unwrap();
    let (code, stderr) = run_bin(&["--config", bad.to_str().unwrap(), "board", "--", "true"]);
    assert_eq!(code, 125);
    assert!(stderr.contains("bad.conf:3:"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
    // missing config
    let (code, _) = run_bin(&["--config", "/nonexistent/conf", "board", "--", "true"]);
    assert_eq!(code, 125);
    // semantically invalid config lists every problem
    std::fs::write(
        &bad,
        r#"{"devices": [{"name": "a", "type": "t", "ttys": []}, {"name": "a", "type": "t", "ttys": [{"name": "c", "tty": "rel"}]}]}"#,
    )
    .unwrap();
    let (code, stderr) = run_bin(&["--config", bad.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 125);
    assert!(stderr.contains("needs at least one tty"), "{stderr}");
    assert!(stderr.contains("duplicate device name"), "{stderr}");
    assert!(stderr.contains("must be absolute"), "{stderr}");
}

#[test]
fn missing_tty_is_reported_once_and_another_device_is_used() {
    let s = Setup::new(2);
    // dev0's tty goes missing (board unplugged): dev1 serves, and the log says why.
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(s._ptys[0].path.to_str().unwrap(), "/dev/sai-test-unplugged");
    std::fs::write(&s.config, text).unwrap();
    let (code, stderr) = output(s.spawn_sh(&[], "echo $SAI_DEVICE_NAME > name"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(s.path("name")).unwrap(), "dev1\n");
    assert!(
        stderr.contains("device 'dev0' is unavailable: cannot open /dev/sai-test-unplugged"),
        "{stderr}"
    );
    // With only the missing one it keeps waiting, saying so once.
    let s = Setup::new(1);
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(s._ptys[0].path.to_str().unwrap(), "/dev/sai-test-unplugged");
    std::fs::write(&s.config, text).unwrap();
    let (code, stderr) = output(s.spawn_sh(&["--timeout", "0.5"], "true"));
    assert_eq!(code, 124, "{stderr}");
    assert_eq!(stderr.matches("is unavailable").count(), 1, "{stderr}");
}
