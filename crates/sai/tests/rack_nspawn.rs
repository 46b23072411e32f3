//! A builder of the rack as a `systemd-nspawn` container: `sai rack up`
//! boots sai-builder from the rack's shared Debian root filesystem (with
//! `--register=no --keep-unit`: there is no systemd as PID 1 here), and a
//! real push through the real hook runs a task inside it that passes.

mod rack_support;

use std::time::Duration;

use rack_support::Lab;

const PLATFORM: &str = "linux-debian-12/x86_64-rack/nspawn";

#[tokio::test(flavor = "multi_thread")]
async fn nspawn_builder_completes_a_pushed_task() {
    let (lab, _daemon) = Lab::for_builder("127.0.0.1");
    let rack = lab.rack(|_| {});
    let out = lab.render(&rack, &[("ci-nspawn", PLATFORM)]);
    let unit = std::fs::read_to_string(out.join("ci-nspawn/ci-nspawn.nspawn")).unwrap();
    assert!(
        unit.contains("VirtualEthernet=no")
            && unit.contains("Parameters=/usr/local/bin/sai-builder"),
        "{unit}"
    );

    // `sai rack up` becomes systemd-nspawn; SIGTERM stops the container.
    let (_nspawn, log_path) =
        lab.rack_up(&rack, "ci-nspawn", &out, "nspawn", Duration::from_secs(10));

    let event = lab
        .push_prep(
            PLATFORM,
            &[(
                "shell",
                "echo host=$(cat /proc/sys/kernel/hostname) pid1=$(cat /proc/1/comm)\necho debian $(cat /etc/debian_version)\ngit log --format=%s -1\nsh ./hello.sh",
            )],
            &[("hello.sh", "echo hello from nspawn\n")],
        )
        .await;
    let why = || {
        format!(
            "nspawn output:\n{}\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default(),
            std::fs::read_to_string(lab.path().join("nspawn.err")).unwrap_or_default()
        )
    };
    let e = lab.finished(&event, 1, Duration::from_secs(180), why).await;
    let task = &e["tasks"][0];
    let log = lab.log_text(task["id"].as_str().unwrap()).await;
    lab.report_timing("nspawn", task);
    assert_eq!(task["state"], "success", "{task}\n{log}\n{}", why());
    assert_eq!(task["builder"], "ci-nspawn");
    // Inside the container the builder (its pid 1) can isolate steps fully:
    // the step's own pid namespace has the step init as its pid 1.
    assert!(log.contains("host=ci-nspawn pid1=sai-step-init"), "{log}");
    assert!(log.contains("debian 12."), "{log}");
    assert!(log.contains("hello from nspawn"), "{log}");
}
