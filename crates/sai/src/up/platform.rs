//! Which platform tuple this machine's builder offers.

use std::process::Command;

use sai_core::platform::Platform;

/// The detected platform tuple of this machine, as specific as the
/// libwebsockets rack's naming allows, so that the prefixes saifiles ask for
/// match it: `linux-<ID>-<VERSION_ID without dots>/<arch>-<cpu>/<toolchain>-<major>`,
/// e.g. `linux-debian-12/x86_64-amd/gcc-12` (matches `linux-debian-12/x86_64-amd/gcc`,
/// `linux/x86_64` and `linux-debian`).
pub fn detect_platform() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let cc = Command::new("cc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let host = Host {
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        os_release: &os_release,
        cpuinfo: &read("/proc/cpuinfo"),
        dt_compatible: &read("/proc/device-tree/compatible"),
        cc_version: &cc,
    };
    host.tuple()
}

/// What platform detection reads about the machine (files' and commands'
/// text), so that the naming is a pure function that tests can feed.
pub struct Host<'a> {
    /// `std::env::consts::OS`.
    pub os: &'a str,
    /// `std::env::consts::ARCH`.
    pub arch: &'a str,
    /// `/etc/os-release`.
    pub os_release: &'a str,
    /// `/proc/cpuinfo`.
    pub cpuinfo: &'a str,
    /// `/proc/device-tree/compatible` (NUL-separated), empty when absent.
    pub dt_compatible: &'a str,
    /// `cc --version`'s output, empty when there is no `cc`.
    pub cc_version: &'a str,
}

impl Host<'_> {
    /// The platform tuple; falls back to `<os>/<arch>` if the detailed one
    /// would not parse.
    pub fn tuple(&self) -> String {
        let arch: String = self
            .arch
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut tuple = format!("{}/{arch}", self.os_name());
        if let Some(cpu) = self.cpu() {
            tuple.push('-');
            tuple.push_str(&cpu);
        }
        if let Some(tc) = self.toolchain() {
            tuple.push('/');
            tuple.push_str(&tc);
        }
        if Platform::parse(&tuple).is_ok() {
            tuple
        } else {
            format!("{}/{arch}", self.os)
        }
    }

    fn os_name(&self) -> String {
        if self.os != "linux" {
            return self.os.to_string();
        }
        let field = |k: &str| {
            self.os_release
                .lines()
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

    /// The CPU part of the architecture: the vendor on x86 (`amd`,
    /// `intel`), the Cortex cores and the SoC on Arm (`a72-bcm2711`).
    fn cpu(&self) -> Option<String> {
        let cpuinfo = self.cpuinfo;
        let values = |key: &'static str| {
            cpuinfo.lines().filter_map(move |l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim())
            })
        };
        match self.arch {
            "x86_64" | "x86" => {
                let vendor = values("vendor_id").next()?;
                Some(
                    match vendor {
                        "AuthenticAMD" | "HygonGenuine" => "amd",
                        "GenuineIntel" => "intel",
                        other => return Some(clean(other)),
                    }
                    .to_string(),
                )
            }
            "aarch64" | "arm" => {
                let mut cores: Vec<(u32, &str)> = Vec::new();
                for part in values("CPU part") {
                    let part = u32::from_str_radix(part.trim_start_matches("0x"), 16).ok()?;
                    let name = cortex_name(part)?;
                    if !cores.iter().any(|(_, n)| *n == name) {
                        cores.push((part, name));
                    }
                }
                // Big cores first, as the rack names them (`a72a55`).
                cores.sort_by_key(|c| std::cmp::Reverse(c.0));
                let mut cpu: String = cores.iter().map(|(_, n)| *n).collect();
                let soc = self
                    .dt_compatible
                    .split('\0')
                    .filter_map(|c| c.split_once(','))
                    .find_map(|(vendor, soc)| {
                        matches!(vendor, "brcm" | "rockchip" | "allwinner" | "amlogic")
                            .then(|| clean(soc))
                    });
                if let Some(soc) = soc {
                    if !cpu.is_empty() {
                        cpu.push('-');
                    }
                    cpu.push_str(&soc);
                }
                (!cpu.is_empty()).then_some(cpu)
            }
            _ => None,
        }
    }

    /// `gcc-<major>` or `llvm-<major>` from `cc --version`.
    fn toolchain(&self) -> Option<String> {
        let first = self.cc_version.lines().next()?.to_ascii_lowercase();
        let name = if first.contains("clang") {
            "llvm"
        } else if first.contains("gcc")
            || first.starts_with("cc ")
            || self
                .cc_version
                .to_ascii_lowercase()
                .contains("free software foundation")
        {
            "gcc"
        } else {
            return None;
        };
        // The version is the first word that looks like N.N.N (gcc puts it
        // last, clang after "version").
        let major = first
            .split_whitespace()
            .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .find(|w| w.split('.').count() >= 2)
            .and_then(|w| w.split('.').next())
            .filter(|m| m.chars().all(|c| c.is_ascii_digit()));
        Some(match major {
            Some(m) => format!("{name}-{m}"),
            None => name.to_string(),
        })
    }
}

/// The Arm Cortex core for a `CPU part` number (ARM implementer parts).
fn cortex_name(part: u32) -> Option<&'static str> {
    Some(match part {
        0xd03 => "a53",
        0xd04 => "a35",
        0xd05 => "a55",
        0xd07 => "a57",
        0xd08 => "a72",
        0xd09 => "a73",
        0xd0a => "a75",
        0xd0b => "a76",
        0xd0d => "a77",
        0xd41 => "a78",
        0xc07 => "a7",
        0xc0f => "a15",
        _ => return None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use sai_core::platform::tuple_matches;

    #[test]
    fn detected_platform_is_a_valid_tuple() {
        let p = detect_platform();
        assert!(Platform::parse(&p).is_ok(), "{p}");
        assert!(!p.contains('.'), "{p}");
        assert!(p.split('/').nth(1).is_some(), "{p}: no arch");
    }

    const DEBIAN_12: &str =
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
    const UBUNTU_2404: &str = "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"24.04\"\n";

    fn host<'a>(arch: &'a str, os_release: &'a str, cpuinfo: &'a str, cc: &'a str) -> Host<'a> {
        Host {
            os: "linux",
            arch,
            os_release,
            cpuinfo,
            dt_compatible: "",
            cc_version: cc,
        }
    }

    #[test]
    fn x86_tuple_names_distribution_release_vendor_and_compiler_version() {
        let amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n";
        let gcc = "cc (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright (C) 2022 Free Software Foundation, Inc.\n";
        let t = host("x86_64", DEBIAN_12, amd, gcc).tuple();
        assert_eq!(t, "linux-debian-12/x86_64-amd/gcc-12");
        // What the libwebsockets rack's saifiles ask for now matches.
        for wanted in [
            "linux-debian-12/x86_64-amd/gcc",
            "linux/x86_64",
            "linux-debian",
        ] {
            assert!(tuple_matches(wanted, &t), "{wanted} vs {t}");
        }
        assert!(!tuple_matches("rocky9/x86_64-amd/gcc", &t));

        let intel = "vendor_id\t: GenuineIntel\n";
        let clang = "Ubuntu clang version 18.1.3 (1ubuntu1)\nTarget: x86_64-pc-linux-gnu\n";
        let t = host("x86_64", UBUNTU_2404, intel, clang).tuple();
        assert_eq!(t, "linux-ubuntu-2404/x86_64-intel/llvm-18");
    }

    #[test]
    fn arm_tuple_names_cores_and_soc() {
        let rpi4 = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nprocessor\t: 1\nCPU part\t: 0xd08\n";
        let mut h = host(
            "aarch64",
            UBUNTU_2404,
            rpi4,
            "gcc (Ubuntu 13.2.0-23ubuntu4) 13.2.0\n",
        );
        h.dt_compatible = "raspberrypi,4-model-b\0brcm,bcm2711\0";
        let t = h.tuple();
        assert_eq!(t, "linux-ubuntu-2404/aarch64-a72-bcm2711/gcc-13");
        assert!(tuple_matches("linux-ubuntu-2404/aarch64-a72-bcm2711", &t));

        let big_little = "CPU part\t: 0xd05\nCPU part\t: 0xd05\nCPU part\t: 0xd0b\n";
        let t = host("aarch64", DEBIAN_12, big_little, "").tuple();
        assert_eq!(t, "linux-debian-12/aarch64-a76a55");
    }

    #[test]
    fn os_release_values_are_cleaned() {
        for (value, cleaned) in [
            ("\"12\"", "12"),
            ("22.04", "2204"),
            ("'opensuse-leap'", "opensuse-leap"),
            ("Fedora Linux", "fedoralinux"),
        ] {
            assert_eq!(clean(value), cleaned, "{value:?}");
        }
    }
}
