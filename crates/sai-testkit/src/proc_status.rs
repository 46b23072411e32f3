//! Figures of a running process from `/proc/<pid>/status` (Linux).

/// The value in KiB of a `/proc/<pid>/status` field such as `VmRSS` or
/// `VmHWM`; `None` when the process or the field is not there.
pub fn kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Resident set size of process `pid`, in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    kib(pid, "VmRSS").unwrap_or(0)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn this_process_has_a_resident_set_and_a_peak_at_least_as_large() {
        let me = std::process::id();
        let rss = super::rss_kib(me);
        assert!(rss > 0);
        assert!(super::kib(me, "VmHWM").unwrap() >= rss);
        assert_eq!(super::kib(me, "NoSuchField"), None);
    }
}
