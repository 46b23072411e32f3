//! Runs the real `sai-expect` binary against pty "boards" held by the test.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sai_testkit::copy_in_background;

const BIN: &str = env!("CARGO_BIN_EXE_sai-expect");

/// A pty pair: the test is the board on the master side.
struct Board {
    master: File,
    _slave: OwnedFd,
    path: PathBuf,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Board {
    fn new() -> Board {
        use nix::sys::termios;
        let p = nix::pty::openpty(None, None).unwrap();
        let mut t = termios::tcgetattr(&p.slave).unwrap();
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&p.slave, termios::SetArg::TCSANOW, &t).unwrap();
        let path = nix::unistd::ttyname(&p.slave).unwrap();
        let master = File::from(p.master);
        let received = Arc::new(Mutex::new(Vec::new()));
        copy_in_background(master.try_clone().unwrap(), received.clone());
        Board {
            master,
            _slave: p.slave,
            path,
            received,
        }
    }

    fn say(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    fn heard(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    /// Wait until sai-expect has sent exactly `want` to the board.
    fn wait_heard(&self, want: &str) {
        wait_for(want, || self.heard() == want);
    }
}

/// A log-proxy listener collecting everything written to it.
struct Proxy {
    path: PathBuf,
    got: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    fn new(dir: &Path, name: &str) -> Proxy {
        let path = dir.join(name);
        let listener = UnixListener::bind(&path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                copy_in_background(conn, sink.clone());
            }
        });
        Proxy { path, got }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.got.lock().unwrap()).into_owned()
    }

    /// Wait until this proxy has received `needle` (somewhere in its text).
    fn wait_contains(&self, needle: &str) {
        wait_for(needle, || self.text().contains(needle));
    }

    fn assert_contains(&self, needle: &str) {
        let text = self.text();
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    }
}

struct Rig {
    dir: tempfile::TempDir,
    notices: Proxy,
    tty0: Proxy,
    tty1: Proxy,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let notices = Proxy::new(dir.path(), "lp");
        let tty0 = Proxy::new(dir.path(), "lp0");
        let tty1 = Proxy::new(dir.path(), "lp1");
        Rig {
            dir,
            notices,
            tty0,
            tty1,
        }
    }

    /// A board reached through the symlink `name` in the rig's folder (as
    /// udev names a USB serial port), and the link's path.
    fn board_behind_link(&self, name: &str) -> (Board, PathBuf) {
        let board = Board::new();
        let link = self.dir.path().join(name);
        std::os::unix::fs::symlink(&board.path, &link).unwrap();
        (board, link)
    }

    /// Run sai-expect on `tty0` with `args`.
    fn spawn(&self, tty0: &Path, args: &[&str]) -> Child {
        self.cmd(tty0, args).spawn().unwrap()
    }

    fn cmd(&self, tty0: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("SAI_DEVICE_TTY0", tty0)
            .env_remove("SAI_DEVICE_TTY1")
            .env_remove("SAI_DEVICE_TTY0_RATE")
            .env("SAI_LOGPROXY", &self.notices.path)
            .env("SAI_LOGPROXY_TTY0", &self.tty0.path)
            .env("SAI_LOGPROXY_TTY1", &self.tty1.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Run sai-expect on `tty0` with the script `text` (written to
    /// `name`: its ending says JSON or YAML).
    fn spawn_with_script(&self, tty0: &Path, name: &str, text: &str) -> Child {
        let script = self.script(name, text);
        self.spawn(tty0, &["--script", &script])
    }

    fn script(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait until `proxy` has received exactly `want` (its listener thread may
/// still be reading when the child has exited).
fn eventually_eq(proxy: &Proxy, want: &str) {
    let start = Instant::now();
    while proxy.text() != want && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(proxy.text(), want);
}

/// Wait for `child` to exit with `code`, then for the notice saying how
/// the run ended (the child has exited, but the listener threads may still
/// be reading).
fn assert_ends(rig: &Rig, child: Child, code: i32, notice: &str) {
    let (got, stderr) = finish(child);
    assert_eq!(got, code, "{stderr}");
    rig.notices.wait_contains(notice);
}

#[test]
fn passes_on_completed_pass_and_logs_on_channels_3_and_4() {
    let rig = Rig::new();
    let mut board = Board::new();
    let child = rig.spawn(&board.path, &[]);
    board.say("U-Boot 2024.01\r\nbooting...\r\nrunning tests\r\nCompleted: PASS\r\n");
    assert_ends(&rig, child, 0, "completed: PASS");
    eventually_eq(
        &rig.tty0,
        "U-Boot 2024.01\r\nbooting...\r\nrunning tests\r\nCompleted: PASS\r\n",
    );
    assert!(rig.tty1.text().is_empty());
    rig.notices.assert_contains("watching tty0");
}

#[test]
fn partial_line_reaches_the_proxy_without_a_newline() {
    let rig = Rig::new();
    let mut board = Board::new();
    let mut child = rig.spawn(&board.path, &["--timeout", "20"]);
    board.say("login: ");
    wait_for("partial line flushed", || rig.tty0.text() == "login: ");
    assert!(
        child.try_wait().unwrap().is_none(),
        "flushed by the age limit, not at exit"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigterm_flushes_pending_output_before_exiting() {
    let rig = Rig::new();
    let mut board = Board::new();
    let child = rig.spawn(&board.path, &[]);
    board.say("line\nno newline yet");
    wait_for("first line", || rig.tty0.text().starts_with("line\n"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_ends(&rig, child, 128 + 15, "stopped by signal 15");
    eventually_eq(&rig.tty0, "line\nno newline yet");
}

#[test]
fn fail_pattern_gives_exit_1() {
    let rig = Rig::new();
    let mut board = Board::new();
    let child = rig.spawn_with_script(&board.path, "s.json", "# panics fail the run\n{\"schema\": \"sai-expect\", \"fail\": [\"Kernel panic\", \"Completed: FAIL\"]}");
    board.say("Kernel panic - not syncing: VFS\nCompleted: PASS\n");
    assert_ends(&rig, child, 1, "completed: FAIL");
    rig.notices.assert_contains("Kernel panic");
}

#[test]
fn overall_and_step_timeouts_give_exit_2() {
    let rig = Rig::new();
    let board = Board::new();
    let start = Instant::now();
    let (code, stderr) = finish(rig.spawn(&board.path, &["--timeout", "0.5"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(start.elapsed() < Duration::from_secs(5));
    rig.notices.wait_contains("TIMEOUT");

    let rig = Rig::new();
    let script = rig.script(
        "s.yaml",
        "steps:\n  - expect: 'login:'\n    description: login prompt\n    timeout: 0.3\n",
    );
    let (code, _) = finish(rig.spawn(&board.path, &["-s", &script]));
    assert_eq!(code, 2);
    rig.notices.wait_contains("TIMEOUT");
    rig.notices.assert_contains("login prompt");
}

#[test]
fn sends_input_after_expectations() {
    let rig = Rig::new();
    let mut board = Board::new();
    let child = rig.spawn_with_script(&board.path, "login.yaml", "schema: sai-expect\ntimeout: 20\nsteps:\n  - expect: 'login: $'\n    send: \"root\\n\"\n  - expect: 'Password:'\n    send: \"secret\\n\"\n");
    board.say("\nbuildroot login: ");
    board.wait_heard("root\n");
    board.say("root\nPassword: ");
    board.wait_heard("root\nsecret\n");
    board.say("\n# run-tests\nCompleted: PASS\n");
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn second_tty_goes_to_channel_5() {
    let rig = Rig::new();
    let mut b0 = Board::new();
    let mut b1 = Board::new();
    let child = rig
        .cmd(&b0.path, &[])
        .env("SAI_DEVICE_TTY1", &b1.path)
        .spawn()
        .unwrap();
    b1.say("aux: hello from the second port\n");
    rig.tty1.wait_contains("second port");
    b0.say("Completed: PASS\n");
    assert_ends(&rig, child, 0, "completed: PASS");
    eventually_eq(&rig.tty1, "aux: hello from the second port\n");
    eventually_eq(&rig.tty0, "Completed: PASS\n");
}

#[test]
fn tty_that_vanishes_and_comes_back_is_reopened() {
    let rig = Rig::new();
    let (mut first, link) = rig.board_behind_link("ttyUSB0");
    let child = rig.spawn(&link, &["--reopen-window", "5", "--timeout", "30"]);
    first.say("first boot\n");
    rig.tty0.wait_contains("first boot");
    // USB re-enumeration: the node goes away, the old descriptor hits EIO...
    std::fs::remove_file(&link).unwrap();
    drop(first);
    rig.notices.wait_contains("vanished");
    std::thread::sleep(Duration::from_millis(300));
    // ...and a new node appears under the same name.
    let mut second = Board::new();
    std::os::unix::fs::symlink(&second.path, &link).unwrap();
    rig.notices.wait_contains("is back");
    second.say("second boot\nCompleted: PASS\n");
    assert_ends(&rig, child, 0, "completed: PASS");
    eventually_eq(&rig.tty0, "first boot\nsecond boot\nCompleted: PASS\n");
}

#[test]
fn relinked_tty_is_reopened_even_while_the_old_one_lives() {
    let rig = Rig::new();
    let (mut old, link) = rig.board_behind_link("ttyACM0");
    let child = rig.spawn(&link, &["--timeout", "30"]);
    old.say("old\n");
    rig.tty0.wait_contains("old");
    let mut new = Board::new();
    let tmp = rig.dir.path().join("ttyACM0.new");
    std::os::unix::fs::symlink(&new.path, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    rig.notices.wait_contains("is back");
    old.say("Completed: PASS\n"); // no longer watched
    new.say("Completed: PASS\n");
    assert_ends(&rig, child, 0, "completed: PASS");
    eventually_eq(&rig.tty0, "old\nCompleted: PASS\n");
}

#[test]
fn tty_gone_longer_than_the_window_is_an_infrastructure_error() {
    let rig = Rig::new();
    let (board, link) = rig.board_behind_link("ttyUSB1");
    let child = rig.spawn(&link, &["--reopen-window", "0.5", "--timeout", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&link).unwrap();
    drop(board);
    let start = Instant::now();
    let (code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(5));
    rig.notices.wait_contains("INFRASTRUCTURE ERROR");
    rig.notices.assert_contains("did not come back");
}

#[test]
fn missing_tty_is_an_infrastructure_error() {
    let rig = Rig::new();
    let (code, _) = finish(rig.spawn(Path::new("/dev/no-such-tty"), &[]));
    assert_eq!(code, 3);
    rig.notices.wait_contains("cannot open tty0");
    let out = Command::new(BIN)
        .env_remove("SAI_DEVICE_TTY0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SAI_DEVICE_TTY0 is not set"));
}

#[test]
fn bad_scripts_and_usage_give_exit_4() {
    let rig = Rig::new();
    let board = Board::new();
    let (code, stderr) = finish(rig.spawn_with_script(
        &board.path,
        "bad.json",
        "{\n  \"steps\": [],\n  \"passs\": []\n}\n",
    ));
    assert_eq!(code, 4);
    assert!(stderr.contains("bad.json:3:"), "{stderr}");
    let (code, stderr) =
        finish(rig.spawn_with_script(&board.path, "re.yaml", "fail: ['(unclosed']\n"));
    assert_eq!(code, 4);
    assert!(stderr.contains("invalid regular expression"), "{stderr}");
    let (code, stderr) =
        finish(rig.spawn_with_script(&board.path, "tty1.yaml", "steps: [{expect: x, tty: 1}]\n"));
    assert_eq!(code, 4);
    assert!(stderr.contains("uses tty1"), "{stderr}");
    let (code, _) = finish(rig.spawn(&board.path, &["--bogus"]));
    assert_eq!(code, 4);
    let (code, _) = finish(rig.spawn(&board.path, &["--baud", "12345"]));
    assert_eq!(code, 4);
    let good = rig.script("ok.yaml", "steps: [{expect: x}]\npass: []\n");
    let (code, _) = finish(rig.spawn(&board.path, &["-s", &good, "--check"]));
    assert_eq!(code, 0);
}

/// sai-device keeps an exclusive `flock` on the tty while a device is in use.
/// sai-expect must still open it.
#[test]
fn opens_a_tty_locked_by_sai_device() {
    let rig = Rig::new();
    let mut board = Board::new();
    let config: sai_core::config::device::DeviceConfig =
        serde_json::from_value(serde_json::json!({"devices": [{"name": "b", "type": "t",
            "ttys": [{"name": "console", "tty": board.path}]}]}))
        .unwrap();
    let held = sai_device::try_acquire(&config.devices[0]).expect("device lock");
    let child = rig.spawn(&board.path, &["--timeout", "10"]);
    board.say("Completed: PASS\n");
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    drop(held);
}

/// Why sai-expect does not open ports with tokio-serial: serialport takes its
/// own non-blocking flock, which fails while sai-device holds the device.
#[tokio::test]
async fn tokio_serial_cannot_open_a_tty_locked_by_sai_device() {
    let board = Board::new();
    let config: sai_core::config::device::DeviceConfig =
        serde_json::from_value(serde_json::json!({"devices": [{"name": "b", "type": "t",
            "ttys": [{"name": "console", "tty": board.path}]}]}))
        .unwrap();
    let path = board.path.to_str().unwrap();
    let open = |exclusive: bool| {
        tokio_serial::SerialStream::open(&tokio_serial::new(path, 115_200).exclusive(exclusive))
    };
    let held = sai_device::try_acquire(&config.devices[0]).expect("device lock");
    assert!(open(false).is_err(), "tokio-serial opened a locked tty");
    drop(held);
    // The lock was the reason: without it the same open works.
    assert!(open(false).is_ok());
    // Exclusive mode fails the same way (tried last: serialport leaves the
    // tty in TIOCEXCL mode when its flock fails).
    let held = sai_device::try_acquire(&config.devices[0]).expect("device lock");
    assert!(open(true).is_err(), "tokio-serial opened a locked tty");
    drop(held);
}
