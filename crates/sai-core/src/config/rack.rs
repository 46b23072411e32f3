//! The rack in one file: the server, the web UI and every builder, with how
//! each one runs (podman container, nspawn container, qemu VM, plain host or
//! NixOS machine).
//!
//! The file is plain JSON without comments so that Nix reads it with
//! `lib.importJSON`; the schema's descriptions stand in for comments. A
//! builder entry maps field for field onto a [`BuilderConfig`] (its `name`
//! becomes `host`), its `devices` onto a [`DeviceConfig`] and its `jig` is a
//! [`JigConfig`], so `sai rack render` writes every daemon's config from the
//! same types the daemons read. Example:
//!
//! ```json
//! {
//!   "schema": "sai-rack",
//!   "name": "lab",
//!   "server": {"name": "sai-server", "runs": "oci", "config": {"listen": "127.0.0.1:4444"}},
//!   "builders": [{
//!     "name": "deb12-x86", "runs": "oci", "distro": "debian", "release": "bookworm",
//!     "arch": "x86_64", "packages": ["build-essential"],
//!     "platforms": [{"name": "linux-debian-12/x86_64-amd/gcc",
//!       "servers": [{"url": "ws://127.0.0.1:4444/builder",
//!                    "token_file": "/etc/sai/builder/token"}]}]
//!   }]
//! }
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::builder::{
    BuilderConfig, BuilderPlatform, DEFAULT_JOB_RETENTION_SECS, DEFAULT_LOG_LIMIT_BYTES,
    DEFAULT_MIN_FREE_DISK_BYTES, DEFAULT_STEP_TIMEOUT_SECS,
};
use super::device::{Device, DeviceConfig};
use super::jig::JigConfig;
use super::problem::{ConfigProblem, ConfigType, FieldPath, PathSegment, check_marker};
use super::server::ServerConfig;
use super::web::WebConfig;

/// Value of the `schema` marker of a rack file.
pub const SCHEMA_MARKER: &str = "sai-rack";

/// Home of a builder when the rack does not name one.
pub const DEFAULT_BUILDER_HOME: &str = "/home/sai";

/// Where generated builder configs live inside a container, VM or machine.
pub const BUILDER_CONFIG_PATH: &str = "/etc/sai/builder/builder.conf";

/// Where the generated sai-device config lives inside a builder.
pub const DEVICE_CONFIG_PATH: &str = "/etc/sai/devices/conf";

/// The whole rack: one server, optionally its web UI, and the builders.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RackConfig {
    /// Marker naming this config kind: always `"sai-rack"`.
    pub schema: String,
    /// Name of the rack; prefixes image, unit and volume names
    /// (`<rack>-<builder>`). Letters, digits, `-` and `_`.
    pub name: String,
    /// The sai-server of this rack, when the rack runs one.
    pub server: Option<RackServer>,
    /// The sai-web UI of this rack, when it runs one.
    pub web: Option<RackWeb>,
    /// Every builder of the rack, each with the platforms it offers.
    pub builders: Vec<RackBuilder>,
}

/// How a rack member runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Runs {
    /// A podman container from an image built from the rack (Quadlet unit
    /// for deployment).
    Oci,
    /// A `systemd-nspawn` container booted from the rack's root filesystem.
    Nspawn,
    /// A qemu virtual machine booted from a disk image made from the rack's
    /// root filesystem.
    Qemu,
    /// Directly on a machine that is set up by hand; only the configs are
    /// generated.
    Host,
    /// A NixOS machine using Sai's NixOS modules, which read this entry.
    Nixos,
}

impl Runs {
    /// The name used in the rack file: `oci`, `nspawn`, ...
    pub fn name(self) -> &'static str {
        match self {
            Runs::Oci => "oci",
            Runs::Nspawn => "nspawn",
            Runs::Qemu => "qemu",
            Runs::Host => "host",
            Runs::Nixos => "nixos",
        }
    }

    /// Whether Sai builds a root filesystem from Debian packages for it.
    pub fn needs_rootfs(self) -> bool {
        matches!(self, Runs::Oci | Runs::Nspawn | Runs::Qemu)
    }
}

/// Base distribution of a builder's root filesystem.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    /// Debian, bootstrapped with `debootstrap --variant=minbase`.
    Debian,
    /// NixOS (only for `runs: "nixos"`).
    Nixos,
}

/// The sai-server of the rack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RackServer {
    /// Name of the server's container, unit or machine.
    pub name: String,
    /// How it runs: `oci` (a `FROM scratch` image), `host` or `nixos`.
    pub runs: Runs,
    /// The sai-server config written for it, as in `server.conf`.
    pub config: ServerConfig,
}

/// The sai-web UI of the rack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RackWeb {
    /// Name of the UI's container, unit or machine.
    pub name: String,
    /// How it runs: `oci` (a `FROM scratch` image), `host` or `nixos`.
    pub runs: Runs,
    /// The sai-web config written for it, as in `web.conf`.
    pub config: WebConfig,
}

/// One builder of the rack. Every field of a sai-builder config has its
/// counterpart here (`name` is its `host`), so the builder's config is
/// rendered from this entry.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RackBuilder {
    /// Name of the builder: its `host` (instances are `<name>.<n>`) and the
    /// name of its container, VM or machine. Letters, digits, `-` and `_`.
    pub name: String,
    /// How it runs: `oci` (podman), `nspawn`, `qemu`, `host` or `nixos`.
    pub runs: Runs,
    /// Base distribution of its root filesystem; needed for `oci`, `nspawn`
    /// and `qemu`.
    pub distro: Option<Distro>,
    /// Release of the distribution: a Debian suite such as `bookworm`, or a
    /// NixOS release such as `24.11`; needed with `distro`.
    pub release: Option<String>,
    /// CPU architecture as in platform names: `x86_64`, `aarch64`, `armv7`,
    /// `i686`, `riscv64`, `s390x`, `ppc64le`. Each platform's arch element
    /// must start with it. A `qemu` builder needs one that qemu emulates.
    pub arch: String,
    /// Extra Debian packages installed into the root filesystem (`git` and
    /// `ca-certificates` are always installed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// The builder's home inside its container, VM or machine. Default
    /// `/home/sai`.
    pub home: Option<String>,
    /// The platforms this builder offers, each with its instances and the
    /// servers it dials (URL and token file), as in a builder config.
    pub platforms: Vec<BuilderPlatform>,
    /// Longest time one build step may run, in seconds. Default 1800.
    pub step_timeout_secs: Option<u64>,
    /// Most log bytes one task may produce. Default 67108864 (64 MiB).
    pub log_limit_bytes: Option<u64>,
    /// `SAI_PARALLEL` for build steps. Default: the CPU count.
    pub parallel: Option<u32>,
    /// Unprivileged user build steps run as when the builder runs as root.
    pub run_as: Option<String>,
    /// How long a finished job directory is kept, in seconds. Default 86400.
    pub job_retention_secs: Option<u64>,
    /// Free bytes needed under `home` before a task is accepted. Default
    /// 2147483648 (2 GiB); 0 turns the check off.
    pub min_free_disk_bytes: Option<u64>,
    /// Per-task resource limits (memory, pids, CPU weight), as `task_limits`
    /// in the builder config: applied through a cgroup v2 per task where
    /// the builder has a delegated cgroup.
    pub task_limits: Option<super::builder::TaskLimitsConfig>,
    /// Local address serving the builder's Prometheus metrics at
    /// `/metrics`, as `metrics_listen` in the builder config.
    pub metrics_listen: Option<String>,
    /// Whether each build step sees only its own job directory, as
    /// `isolate_tasks` in the builder config (default: true on Linux).
    pub isolate_tasks: Option<bool>,
    /// Boards attached to this builder, as sai-device entries; their ttys
    /// are passed into the container (`--device`) and a sai-device config is
    /// generated. Not for `qemu` builders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// sai-device state directory inside the builder. Default
    /// `/run/sai-device`.
    pub device_home: Option<String>,
    /// The sai-jig of this builder's boards, as in a jig config.
    pub jig: Option<JigConfig>,
    /// Virtual machine size, for `qemu` builders.
    pub vm: Option<VmSize>,
}

/// Size of a `qemu` builder's virtual machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct VmSize {
    /// Guest memory in MiB. Default 1024.
    pub memory_mib: u32,
    /// Virtual CPUs. Default 1.
    pub cpus: u32,
    /// Size of the root disk image in MiB. Default 2048.
    pub disk_mib: u32,
}

/// The size of every member a rack leaves out (the struct is
/// `#[serde(default)]`).
impl Default for VmSize {
    fn default() -> Self {
        VmSize {
            memory_mib: 1024,
            cpus: 1,
            disk_mib: 2048,
        }
    }
}

/// What Sai knows about a CPU architecture named in a rack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// Name as in platform tuples: `x86_64`.
    pub name: &'static str,
    /// Debian's name for it: `amd64`.
    pub debian: &'static str,
    /// The qemu system emulator for it: `qemu-system-x86_64`.
    pub qemu_system: &'static str,
    /// Flavour of Debian's kernel package (`linux-image-<flavour>`).
    pub kernel_flavour: &'static str,
    /// Serial console device of the guest.
    pub console: &'static str,
}

/// Architectures a Debian root filesystem (and a qemu guest) can be made for.
pub const ARCHES: &[Arch] = &[
    Arch {
        name: "x86_64",
        debian: "amd64",
        qemu_system: "qemu-system-x86_64",
        kernel_flavour: "amd64",
        console: "ttyS0",
    },
    Arch {
        name: "aarch64",
        debian: "arm64",
        qemu_system: "qemu-system-aarch64",
        kernel_flavour: "arm64",
        console: "ttyAMA0",
    },
    Arch {
        name: "armv7",
        debian: "armhf",
        qemu_system: "qemu-system-arm",
        kernel_flavour: "armmp",
        console: "ttyAMA0",
    },
    Arch {
        name: "i686",
        debian: "i386",
        qemu_system: "qemu-system-i386",
        kernel_flavour: "686",
        console: "ttyS0",
    },
    Arch {
        name: "riscv64",
        debian: "riscv64",
        qemu_system: "qemu-system-riscv64",
        kernel_flavour: "riscv64",
        console: "ttyS0",
    },
    Arch {
        name: "s390x",
        debian: "s390x",
        qemu_system: "qemu-system-s390x",
        kernel_flavour: "s390x",
        console: "ttysclp0",
    },
    Arch {
        name: "ppc64le",
        debian: "ppc64el",
        qemu_system: "qemu-system-ppc64",
        kernel_flavour: "powerpc64le",
        console: "hvc0",
    },
];

/// The architecture called `name`, if Sai can build for it.
pub fn arch(name: &str) -> Option<&'static Arch> {
    ARCHES.iter().find(|a| a.name == name)
}

/// Debian suites `debootstrap` can make a builder root filesystem of.
pub const DEBIAN_RELEASES: &[(&str, &str)] = &[
    ("bullseye", "11"),
    ("bookworm", "12"),
    ("trixie", "13"),
    ("sid", "unstable"),
];

/// Packages every builder root filesystem gets: sai-builder checks out
/// sources with git.
pub const BASE_PACKAGES: &[&str] = &["ca-certificates", "git"];

impl RackBuilder {
    /// The builder's home.
    pub fn home(&self) -> &str {
        self.home.as_deref().unwrap_or(DEFAULT_BUILDER_HOME)
    }

    /// The sai-builder config of this builder.
    pub fn builder_config(&self) -> BuilderConfig {
        BuilderConfig {
            schema: Some(super::builder::SCHEMA_MARKER.to_string()),
            home: self.home().to_string(),
            host: self.name.clone(),
            platforms: self.platforms.clone(),
            step_timeout_secs: self.step_timeout_secs.unwrap_or(DEFAULT_STEP_TIMEOUT_SECS),
            log_limit_bytes: self.log_limit_bytes.unwrap_or(DEFAULT_LOG_LIMIT_BYTES),
            parallel: self.parallel,
            run_as: self.run_as.clone(),
            job_retention_secs: self
                .job_retention_secs
                .unwrap_or(DEFAULT_JOB_RETENTION_SECS),
            min_free_disk_bytes: self
                .min_free_disk_bytes
                .unwrap_or(DEFAULT_MIN_FREE_DISK_BYTES),
            task_limits: self.task_limits.clone(),
            metrics_listen: self.metrics_listen.clone(),
            isolate_tasks: self.isolate_tasks,
        }
    }

    /// The sai-device config of this builder's boards, if it has any.
    pub fn device_config(&self) -> Option<DeviceConfig> {
        if self.devices.is_empty() {
            return None;
        }
        Some(DeviceConfig {
            schema: Some(super::device::SCHEMA_MARKER.to_string()),
            home: self.device_home.clone(),
            devices: self.devices.clone(),
        })
    }

    /// The Debian packages of its root filesystem: the base ones plus
    /// `packages`, sorted and without duplicates.
    pub fn rootfs_packages(&self) -> Vec<String> {
        let mut all: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
        all.extend(self.packages.iter().cloned());
        all.sort();
        all.dedup();
        all
    }

    /// Every tty path of its devices, in declaration order.
    pub fn tty_paths(&self) -> Vec<&str> {
        self.devices
            .iter()
            .flat_map(|d| d.ttys.iter().map(|t| t.tty.as_str()))
            .collect()
    }
}

impl RackConfig {
    /// The builder called `name`.
    pub fn builder(&self, name: &str) -> Option<&RackBuilder> {
        self.builders.iter().find(|b| b.name == name)
    }
}

/// Checks common to server and web: a unique name and a way to run them.
fn check_member<'a>(
    at: &FieldPath,
    name: &'a str,
    runs: Runs,
    names: &mut BTreeMap<&'a str, FieldPath>,
    problems: &mut Vec<ConfigProblem>,
) {
    claim_name(at, name, names, problems);
    if !matches!(runs, Runs::Oci | Runs::Host | Runs::Nixos) {
        problems.push(ConfigProblem::new(
            at.key("runs"),
            format!(
                "\"{}\" is for builders; the server and the web UI run as \"oci\", \"host\" or \"nixos\"",
                runs.name()
            ),
        ));
    }
}

fn claim_name<'a>(
    at: &FieldPath,
    name: &'a str,
    names: &mut BTreeMap<&'a str, FieldPath>,
    problems: &mut Vec<ConfigProblem>,
) {
    match check_name(name) {
        Err(why) => problems.push(ConfigProblem::new(at.key("name"), why)),
        Ok(()) => {
            if let Some(first) = names.get(name) {
                problems.push(ConfigProblem::new(
                    at.key("name"),
                    format!("\"{name}\" is already the name of {first}; names must be unique in the rack"),
                ));
            } else {
                names.insert(name, at.clone());
            }
        }
    }
}

fn check_builder<'a>(
    index: usize,
    at: &FieldPath,
    builder: &'a RackBuilder,
    names: &mut BTreeMap<&'a str, FieldPath>,
    ttys: &mut BTreeMap<&'a str, (usize, FieldPath)>,
    problems: &mut Vec<ConfigProblem>,
) {
    let mut push = |path: FieldPath, message: String| {
        problems.push(ConfigProblem::new(path, message));
    };
    let mut name_problems = Vec::new();
    claim_name(at, &builder.name, names, &mut name_problems);
    for p in name_problems {
        push(p.path, p.message);
    }

    // Distribution and release.
    match (builder.runs, builder.distro, &builder.release) {
        (runs, None, _) if runs.needs_rootfs() => push(
            at.clone(),
            format!(
                "a \"{}\" builder needs \"distro\": \"debian\" and a \"release\" to build its root filesystem from",
                runs.name()
            ),
        ),
        (runs, Some(Distro::Nixos), _) if runs != Runs::Nixos => push(
            at.key("distro"),
            format!(
                "\"nixos\" is only for \"runs\": \"nixos\"; a \"{}\" builder is made from Debian packages",
                runs.name()
            ),
        ),
        (Runs::Nixos, Some(Distro::Debian), _) => push(
            at.key("distro"),
            "a \"nixos\" builder runs NixOS: leave distro out or write \"nixos\"".to_string(),
        ),
        (_, Some(_), None) => push(
            at.key("distro"),
            "give the \"release\" of the distribution too".to_string(),
        ),
        (_, Some(Distro::Debian), Some(release))
            if !DEBIAN_RELEASES.iter().any(|(suite, _)| suite == release) =>
        {
            let hint = DEBIAN_RELEASES
                .iter()
                .find(|(_, number)| number == release)
                .map(|(suite, _)| format!(" (Debian {release} is \"{suite}\")"))
                .unwrap_or_default();
            push(
                at.key("release"),
                format!(
                    "\"{release}\" is not a Debian suite debootstrap knows{hint}; use one of {}",
                    DEBIAN_RELEASES
                        .iter()
                        .map(|(s, _)| *s)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        (_, None, Some(_)) => push(
            at.key("release"),
            "a release needs its \"distro\"".to_string(),
        ),
        _ => {}
    }

    // Architecture.
    let known = arch(&builder.arch);
    let arch_names = || ARCHES.iter().map(|a| a.name).collect::<Vec<_>>().join(", ");
    if builder.arch.is_empty()
        || !builder
            .arch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        push(
            at.key("arch"),
            format!(
                "\"{}\" is not an architecture name (letters, digits and '_', e.g. x86_64)",
                builder.arch
            ),
        );
    } else if known.is_none() && builder.runs == Runs::Qemu {
        push(
            at.key("arch"),
            format!(
                "qemu cannot emulate \"{}\" here: a qemu builder needs one of {}",
                builder.arch,
                arch_names()
            ),
        );
    } else if known.is_none() && builder.runs.needs_rootfs() {
        push(
            at.key("arch"),
            format!(
                "no Debian root filesystem can be made for \"{}\": use one of {}",
                builder.arch,
                arch_names()
            ),
        );
    }
    for (pi, platform) in builder.platforms.iter().enumerate() {
        if let Some(arch_element) = platform.name.split('/').nth(1)
            && !arch_element.starts_with(&builder.arch)
        {
            push(
                at.key("platforms").index(pi).key("name"),
                format!(
                    "platform \"{}\" is for \"{arch_element}\" but builder \"{}\" is \"{}\"; the arch element must start with the builder's arch",
                    platform.name, builder.name, builder.arch
                ),
            );
        }
    }

    for (i, package) in builder.packages.iter().enumerate() {
        if !is_debian_package_name(package) {
            push(
                at.key("packages").index(i),
                format!(
                    "\"{package}\" is not a Debian package name (lower case letters, digits, '+', '-', '.'; at least 2 characters)"
                ),
            );
        }
    }
    if !builder.packages.is_empty() && !builder.runs.needs_rootfs() {
        push(
            at.key("packages"),
            format!(
                "packages are installed only into built root filesystems (oci, nspawn, qemu); a \"{}\" builder is set up by other means",
                builder.runs.name()
            ),
        );
    }
    if builder.vm.is_some() && builder.runs != Runs::Qemu {
        push(
            at.key("vm"),
            "\"vm\" sizes only apply to \"qemu\" builders".to_string(),
        );
    }
    if let Some(vm) = &builder.vm {
        let vat = at.key("vm");
        if vm.memory_mib < 256 {
            push(
                vat.key("memory_mib"),
                format!(
                    "{} MiB is too little for a Debian guest: give at least 256",
                    vm.memory_mib
                ),
            );
        }
        if vm.cpus == 0 {
            push(vat.key("cpus"), "must be at least 1".to_string());
        }
        if vm.disk_mib < 512 {
            push(
                vat.key("disk_mib"),
                format!(
                    "{} MiB cannot hold a Debian root filesystem: give at least 512",
                    vm.disk_mib
                ),
            );
        }
    }

    // The builder config rendered from this entry must be valid; its
    // problems are reported at the rack's field (host is the rack's name,
    // already checked above).
    for p in builder.builder_config().validate() {
        if p.path.0.first() == Some(&PathSegment::Key("host".to_string())) {
            continue;
        }
        if p.path.0.first() == Some(&PathSegment::Key("schema".to_string())) {
            continue;
        }
        push(at.clone().join(&p.path), p.message);
    }

    // Devices: the sai-device rules, and a tty belongs to one place only.
    if !builder.devices.is_empty() && builder.runs == Runs::Qemu {
        push(
            at.key("devices"),
            "a qemu builder cannot take boards: ttys are passed into oci and nspawn containers or used on host and nixos machines".to_string(),
        );
    }
    if let Some(devices) = builder.device_config() {
        for p in devices.validate() {
            let nested = p.nest(at);
            // device paths ("devices[0].ttys[1].tty") are relative to the
            // builder entry, "home" is its device_home.
            let nested = match nested.path.0.get(at.0.len()) {
                Some(PathSegment::Key(k)) if k == "home" => ConfigProblem::new(
                    at.key("device_home"),
                    nested.message.trim_start_matches("home: ").to_string(),
                ),
                _ => nested,
            };
            push(nested.path, nested.message);
        }
    }
    for (di, device) in builder.devices.iter().enumerate() {
        for (ti, tty) in device.ttys.iter().enumerate() {
            let tat = at.key("devices").index(di).key("ttys").index(ti).key("tty");
            match ttys.get(tty.tty.as_str()) {
                // Within one builder the sai-device rules above decide.
                Some((owner, _)) if *owner == index => {}
                Some((_, first)) => push(
                    tat,
                    format!(
                        "tty \"{}\" is already given at {first}; a tty belongs to one device of one builder",
                        tty.tty
                    ),
                ),
                None => {
                    ttys.insert(&tty.tty, (index, tat));
                }
            }
        }
    }
    if let Some(jig) = &builder.jig {
        for p in jig.validate() {
            let nested = p.nest(&at.key("jig"));
            push(nested.path, nested.message);
        }
    }
}

impl FieldPath {
    /// This path followed by `rest`.
    pub fn join(mut self, rest: &FieldPath) -> FieldPath {
        self.0.extend(rest.0.iter().cloned());
        self
    }
}

/// A problem reported by an embedded config's `validate()`, moved under the
/// field of the rack that holds that config. Works for problems given as
/// [`ConfigProblem`]s.
pub trait NestProblem {
    /// The problem, with its path prefixed by `at`.
    fn nest(self, at: &FieldPath) -> ConfigProblem;
}

impl NestProblem for ConfigProblem {
    fn nest(self, at: &FieldPath) -> ConfigProblem {
        ConfigProblem::new(at.clone().join(&self.path), self.message)
    }
}

/// Names of rack members become container, unit and host names.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > super::builder::MAX_HOST_LEN {
        return Err(format!(
            "\"{name}\" is longer than {} characters",
            super::builder::MAX_HOST_LEN
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("\"{name}\" must start with a letter or digit"));
    }
    super::builder::only_name_chars(name, "it names containers, units and hosts")
}

/// Debian policy: lower case letters, digits, `+`, `-`, `.`; at least two
/// characters; starts with a letter or digit.
fn is_debian_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

impl ConfigType for RackConfig {
    const MARKER: &'static str = SCHEMA_MARKER;

    /// Check what the schema cannot express. Returns every problem found,
    /// each with the path of the field it concerns; empty means valid. The
    /// rules of the embedded server, web, builder, device and jig configs
    /// apply too, reported at their place in the rack.
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = check_marker(Some(&self.schema), SCHEMA_MARKER);
        let root = FieldPath::root();
        if let Err(why) = check_name(&self.name) {
            problems.push(ConfigProblem::new(root.key("name"), why));
        }
        // Names of containers, units and machines share one namespace.
        let mut names: BTreeMap<&str, FieldPath> = BTreeMap::new();
        if let Some(server) = &self.server {
            let at = root.key("server");
            check_member(&at, &server.name, server.runs, &mut names, &mut problems);
            problems.extend(
                server
                    .config
                    .validate()
                    .into_iter()
                    .map(|p| p.nest(&at.key("config"))),
            );
        }
        if let Some(web) = &self.web {
            let at = root.key("web");
            check_member(&at, &web.name, web.runs, &mut names, &mut problems);
            problems.extend(
                web.config
                    .validate()
                    .into_iter()
                    .map(|p| p.nest(&at.key("config"))),
            );
        }
        if self.builders.is_empty() {
            problems.push(ConfigProblem::new(
                root.key("builders"),
                "list at least one builder",
            ));
        }
        let mut ttys: BTreeMap<&str, (usize, FieldPath)> = BTreeMap::new();
        for (bi, builder) in self.builders.iter().enumerate() {
            let at = root.key("builders").index(bi);
            check_builder(bi, &at, builder, &mut names, &mut ttys, &mut problems);
        }
        problems
    }
}
