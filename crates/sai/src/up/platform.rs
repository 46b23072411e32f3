//! Which platform tuple this machine's builder offers.

use std::process::Command;

use sai_core::platform::Platform;

/// The detected platform tuple of this machine: `linux-<ID>-<VERSION_ID
/// without dots>/<arch>/<gcc|llvm>`.
pub fn detect_platform() -> String {
    let arch: String = std::env::consts::ARCH
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let os = detect_os();
    let mut tuple = format!("{os}/{arch}");
    if let Some(tc) = detect_toolchain() {
        tuple.push('/');
        tuple.push_str(tc);
    }
    if Platform::parse(&tuple).is_ok() {
        tuple
    } else {
        format!("{}/{arch}", std::env::consts::OS)
    }
}

fn clean(s: &str) -> String {
    s.trim()
        .trim_matches('"')
        .trim_matches('\'')
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn detect_os() -> String {
    let os = std::env::consts::OS;
    if os != "linux" {
        return os.to_string();
    }
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(clean)
            .filter(|v| !v.is_empty())
    };
    match (field("ID"), field("VERSION_ID")) {
        (Some(id), Some(ver)) => format!("linux-{id}-{ver}"),
        (Some(id), None) => format!("linux-{id}"),
        _ => "linux".into(),
    }
}

fn detect_toolchain() -> Option<&'static str> {
    let out = Command::new("cc").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    if text.contains("clang") {
        Some("llvm")
    } else if text.contains("gcc") || text.contains("free software foundation") {
        Some("gcc")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_platform_is_a_valid_tuple() {
        let p = detect_platform();
        assert!(Platform::parse(&p).is_ok(), "{p}");
        assert!(!p.contains('.'), "{p}");
        assert!(p.split('/').nth(1).is_some(), "{p}: no arch");
    }

    #[test]
    fn os_release_values_are_cleaned() {
        assert_eq!(clean("\"12\""), "12");
        assert_eq!(clean("22.04"), "2204");
        assert_eq!(clean("'opensuse-leap'"), "opensuse-leap");
        assert_eq!(clean("Fedora Linux"), "fedoralinux");
    }
}
