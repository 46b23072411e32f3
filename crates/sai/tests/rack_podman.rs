//! A builder of the rack as a podman container: `sai rack build` makes its
//! image (imported Debian root filesystem + static binaries), `sai rack up`
//! runs it with `--network host` against a sai-server on loopback, and a
//! real push through the real hook runs two tasks inside it: a shell step on
//! a git checkout, and a board step that takes the device with `sai-device`
//! and passes with `sai-expect` on a pty the test made on the host and the
//! rack passed into the container.

mod rack_support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rack_support::{Lab, PodmanCleanup, podman, sai_ok};
use serde_json::json;

const PLATFORM: &str = "linux-debian-12/x86_64-rack/oci";
const CONTAINER: &str = "ci-ci-oci";

#[tokio::test(flavor = "multi_thread")]
async fn podman_builder_runs_a_pushed_task_and_a_board_task() {
    let (lab, _daemon) = Lab::for_builder("127.0.0.1");

    // The board: a pty pair; the rack names the slave as the board's tty.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = nix::unistd::ttyname(&pty.slave).unwrap();
    let rack = lab.rack(|r| {
        r["builders"][0]["devices"][0]["ttys"][0]["tty"] = json!(slave.display().to_string());
    });
    let out = lab.render(&rack, &[("ci-oci", PLATFORM)]);
    let devices_conf = std::fs::read_to_string(out.join("ci-oci/devices.conf")).unwrap();
    assert!(
        devices_conf.contains("/dev/sai-board1-console"),
        "{devices_conf}"
    );

    let _ = podman(&["rm", "--force", CONTAINER]);
    let _cleanup = PodmanCleanup {
        container: CONTAINER,
        volume: format!("{CONTAINER}-home"),
    };
    let start = Instant::now();
    let rack_s = rack.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    sai_ok(&["rack", "build", rack_s, "ci-oci", "--out", out_s]);
    eprintln!("image built in {:.1}s", start.elapsed().as_secs_f64());
    sai_ok(&["rack", "up", rack_s, "ci-oci", "--out", out_s]);
    let inspect = podman(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}}",
        CONTAINER,
    ]);
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), "host");

    // The host side of the board: once the step inside the container has
    // written to the tty, answer with the line sai-expect passes on.
    let mut master = std::fs::File::from(pty.master);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicBool::new(false));
    let board = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let mut writer = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            let fd = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).unwrap();
            let flags = nix::fcntl::OFlag::from_bits_truncate(fd) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = master.read(&mut buf)
                    && n > 0
                {
                    got.extend_from_slice(&buf[..n]);
                }
                if String::from_utf8_lossy(&got).contains("ping-from-container") {
                    seen.store(true, Ordering::Relaxed);
                    let _ = writer.write_all(b"board says hi\r\nCompleted: PASS\r\n");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let _slave = pty.slave;

    let event = lab
        .push_prep(
            PLATFORM,
            &[
                (
                    "shell",
                    "test -f /run/.containerenv && echo inside-podman\necho pid1=$(cat /proc/1/comm)\necho debian $(cat /etc/debian_version)\ngit log --format=%s -1\nsh ./hello.sh",
                ),
                (
                    "board",
                    "sai-device ptyboard -- sh -c 'echo ping-from-container > $SAI_DEVICE_TTY0 && exec sai-expect --timeout 60'",
                ),
            ],
            &[("hello.sh", "echo hello from the checkout\n")],
        )
        .await;
    let why = || {
        let logs = podman(&["logs", CONTAINER]);
        format!(
            "container log:\n{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        )
    };
    let e = lab.finished(&event, 2, Duration::from_secs(240), why).await;
    stop.store(true, Ordering::Relaxed);
    board.join().unwrap();
    for t in e["tasks"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let log = lab.log_text(id).await;
        lab.report_timing("podman", t);
        assert_eq!(t["state"], "success", "{t}\n{log}\n{}", why());
        match t["configuration"].as_str().unwrap() {
            "shell" => {
                assert!(log.contains("inside-podman"), "{log}");
                assert!(log.contains("pid1=sai-builder"), "{log}");
                assert!(log.contains("debian 12."), "{log}");
                assert!(log.contains("rack test"), "{log}");
                assert!(log.contains("hello from the checkout"), "{log}");
            }
            "board" => assert!(
                log.contains("Completed: PASS") || seen.load(Ordering::Relaxed),
                "{log}"
            ),
            other => panic!("unexpected configuration {other}"),
        }
    }
    assert!(
        seen.load(Ordering::Relaxed),
        "the step never wrote to the board's tty"
    );
}
