//! A builder of the rack as a qemu VM: `sai rack build` makes the image from
//! Debian packages (kernel from apt, root disk from the shared Debian root
//! filesystem, busybox initramfs, a small disk with the static sai-builder
//! and its rendered config), `sai rack up` boots it under TCG with qemu
//! user-mode networking only. The guest's builder dials the host's
//! sai-server through 10.0.2.2 (the host's loopback), checks out the pushed
//! commit with git from a `git daemon` on the host's loopback, and runs a
//! shell step inside the guest.

mod rack_support;

use std::time::{Duration, Instant};

use rack_support::{Lab, cache_dir, sai_ok};

const PLATFORM: &str = "linux-debian-12/x86_64-rack/qemu";

#[tokio::test(flavor = "multi_thread")]
async fn qemu_builder_boots_connects_and_completes_a_git_task() {
    // Inside the guest, the host's loopback is 10.0.2.2.
    let (lab, _daemon) = Lab::for_builder("10.0.2.2");
    let rack = lab.rack(|_| {});
    let out = lab.render(&rack, &[("ci-vm", PLATFORM)]);
    let builder_conf = std::fs::read_to_string(out.join("ci-vm/builder.conf")).unwrap();
    assert!(
        builder_conf.contains(&format!("ws://10.0.2.2:{}/builder", lab.server.addr.port())),
        "{builder_conf}"
    );

    let rack_s = rack.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    let start = Instant::now();
    let built = sai_ok(&["rack", "build", rack_s, "ci-vm", "--out", out_s]);
    assert!(built.contains("[ci-vm] initramfs: done"), "{built}");
    eprintln!("VM image built in {:.1}s", start.elapsed().as_secs_f64());

    let (_vm, console) = lab.rack_up(&rack, "ci-vm", &out, "qemu", Duration::from_secs(5));
    let boot = Instant::now();
    let why = || {
        format!(
            "guest console:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        )
    };

    let event = lab
        .push_prep(
            PLATFORM,
            &[(
                "guest",
                "echo kernel=$(uname -r) host=$(cat /proc/sys/kernel/hostname)\ngit log --format=%s -1\nsh ./hello.sh",
            )],
            &[("hello.sh", "echo hello from the guest\n")],
        )
        .await;
    let e = lab.finished(&event, 1, Duration::from_secs(240), why).await;
    eprintln!(
        "guest task done {:.1}s after boot started",
        boot.elapsed().as_secs_f64()
    );
    let task = &e["tasks"][0];
    let log = lab.log_text(task["id"].as_str().unwrap()).await;
    lab.report_timing("qemu", task);
    assert_eq!(task["state"], "success", "{task}\n{log}\n{}", why());
    assert_eq!(task["builder"], "ci-vm");
    // The Debian kernel from apt, not the host's.
    let guest_kernel = std::fs::read_dir(cache_dir().join("kernel-amd64/lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    assert!(
        log.contains(&format!("kernel={}", guest_kernel.to_string_lossy())),
        "{log}"
    );
    assert!(log.contains("rack test"), "{log}");
    assert!(log.contains("hello from the guest"), "{log}");
    let console_text = std::fs::read_to_string(&console).unwrap();
    assert!(
        console_text.contains("sai-vm: network up, starting sai-builder"),
        "{console_text}"
    );
}
