//! The units in `deploy/systemd/` pass `systemd-analyze verify` without a
//! single warning, with their `ExecStart=` pointed at this workspace's
//! binaries (verify checks that the commands exist), and say what the
//! daemons implement: `Type=notify` with a watchdog, reload by SIGHUP for
//! the server, a delegated cgroup for the builder.

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit_text(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/systemd")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `key=value` lines of a unit (comments and sections left out).
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn has(text: &str, key: &str, value: &str) -> bool {
    settings(text).iter().any(|(k, v)| k == key && v == value)
}

/// Copy the unit into `dir` with `/usr/local/bin/<bin>` replaced by `bin`.
fn localized(dir: &Path, name: &str, bin_name: &str, bin: &Path) -> PathBuf {
    assert!(bin.exists(), "{} is missing: build it first", bin.display());
    let text =
        unit_text(name).replace(&format!("/usr/local/bin/{bin_name}"), bin.to_str().unwrap());
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn units_pass_systemd_analyze_verify_without_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let server = localized(
        tmp.path(),
        "sai-server.service",
        "sai-server",
        Path::new(env!("CARGO_BIN_EXE_sai-server")),
    );
    let builder = localized(
        tmp.path(),
        "sai-builder.service",
        "sai-builder",
        &sai_testkit::bin_path("sai-builder"),
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&server)
        .arg(&builder)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");

    // The check is real: a misspelt key is reported.
    let bad = tmp.path().join("bad.service");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&server)
            .unwrap()
            .replace("WatchdogSec=", "WatchdogSecs="),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WatchdogSecs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn units_declare_readiness_watchdog_reload_and_delegation() {
    let server = unit_text("sai-server.service");
    let builder = unit_text("sai-builder.service");
    for (name, u) in [("server", &server), ("builder", &builder)] {
        assert!(has(u, "Type", "notify"), "{name}");
        assert!(has(u, "NotifyAccess", "main"), "{name}");
        assert!(
            settings(u).iter().any(|(k, _)| k == "WatchdogSec"),
            "{name}"
        );
        assert!(has(u, "ProtectSystem", "strict"), "{name}");
        assert!(has(u, "ProtectKernelModules", "yes"), "{name}");
    }
    assert!(has(&server, "ExecReload", "/bin/kill -HUP $MAINPID"));
    assert!(has(&server, "NoNewPrivileges", "yes"));
    assert!(has(&builder, "Delegate", "yes"));
    assert!(has(&builder, "KillMode", "mixed"));
    // The builder keeps only the capabilities needed to run steps as run_as.
    let caps = settings(&builder)
        .into_iter()
        .find(|(k, _)| k == "CapabilityBoundingSet")
        .map(|(_, v)| v)
        .expect("CapabilityBoundingSet");
    assert!(
        caps.contains("CAP_SETUID") && !caps.contains("CAP_SYS_ADMIN"),
        "{caps}"
    );
}
