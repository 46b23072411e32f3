//! Host load probes for the `load` report: the one-minute load average and
//! memory. Linux reads `/proc/loadavg` and `/proc/meminfo`; elsewhere these
//! probes answer `None` (the report leaves them out). Disk space is
//! [`super::free_disk_bytes`].

/// Memory of the host in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`.
    pub available: u64,
}

/// The one-minute load average times 100, if this platform has one.
pub fn load_avg_1m_centi() -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Total and available memory, if this platform tells.
pub fn memory() -> Option<Memory> {
    #[cfg(target_os = "linux")]
    {
        parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The first field of `/proc/loadavg` (`"1.50 0.80 0.30 2/345 6789"`),
/// times 100.
pub fn parse_loadavg(text: &str) -> Option<u32> {
    let first: f64 = text.split_whitespace().next()?.parse().ok()?;
    (first.is_finite() && first >= 0.0).then(|| (first * 100.0).round().min(u32::MAX as f64) as u32)
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo` (given in kB).
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb.saturating_mul(1024))
        })
    };
    Some(Memory {
        total: field("MemTotal")?,
        available: field("MemAvailable")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_first_field_in_hundredths() {
        assert_eq!(parse_loadavg("1.50 0.80 0.30 2/345 6789\n"), Some(150));
        assert_eq!(parse_loadavg("0.00 0.01 0.05 1/1 1"), Some(0));
        assert_eq!(parse_loadavg("12.349 1 1 1/1 1"), Some(1235));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("x 1 1"), None);
        assert_eq!(parse_loadavg("-1 1 1"), None);
    }

    #[test]
    fn meminfo_total_and_available() {
        let text = "MemTotal:       16318420 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(Memory {
                total: 16318420 * 1024,
                available: 12000000 * 1024
            })
        );
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_linux_host_answers() {
        assert!(load_avg_1m_centi().is_some());
        let m = memory().unwrap();
        assert!(m.total > 0 && m.available <= m.total);
    }
}
