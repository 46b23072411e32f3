//! What the sai-server benches share: the server binary they start, process
//! samples from `/proc`, percentiles.
// Each bench uses a part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

/// The `sai-server` binary to measure: `SAI_SERVER_BIN` when set (to run
/// one bench against a copied binary, e.g. a before/after pair), else the
/// release build beside the bench.
pub fn server_bin() -> PathBuf {
    std::env::var_os("SAI_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sai-server")))
}

/// The `p` quantile (0 to 1) of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Resident set size (KiB) and open descriptors of a process.
pub fn rss_fds(pid: u32) -> (u64, usize) {
    let rss = sai_testkit::proc_status::rss_kib(pid);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// Resident anonymous and file-backed memory (KiB) of a process: the
/// file-backed part is mostly the binary's own pages.
pub fn rss_anon_file(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// CPU time (user+system, ms) a process has used.
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field, stime the 15th; in clock ticks (100 per second here).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks * 10
}

/// The hook key of the benched servers.
pub const KEY: &str = "bench-key";

/// `cargo bench` first runs every bench binary with `--list`: nothing to
/// measure then.
pub fn listing_only() -> bool {
    std::env::args().any(|a| a == "--list")
}

/// The server on loopback, its data under `tmp`, its config changed by
/// `edit`.
pub fn start_server(
    tmp: &std::path::Path,
    edit: impl FnOnce(&mut sai_core::config::server::ServerConfig),
) -> anyhow::Result<sai_testkit::TestServer> {
    let mut cfg = sai_testkit::test_config(&tmp.join("data"), KEY);
    edit(&mut cfg);
    sai_testkit::TestServer::start(&server_bin(), &cfg, &[])
}
