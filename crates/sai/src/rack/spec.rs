//! What each rack member becomes at run time, computed once from the rack
//! and used both for the generated files (Quadlet units, `.nspawn` files,
//! qemu scripts) and for the commands `sai rack up` runs, so the two can
//! never disagree.

use sai_core::config::device::Device;
use sai_core::config::rack::{DEVICE_CONFIG_PATH, RackBuilder, RackConfig, Runs, arch};

/// Folder inside a builder (container, VM) holding its generated configs.
pub const GUEST_CONFIG_DIR: &str = "/etc/sai/builder";

/// Default folder on the rack host holding each member's rendered configs
/// (`<root>/<member>/`), as named by the Quadlet and `.nspawn` units.
pub const DEFAULT_CONFIG_ROOT: &str = "/etc/sai/rack";

/// Where the static Sai binaries live inside images.
pub const GUEST_BIN_DIR: &str = "/usr/local/bin";

/// The Sai binaries every builder image carries.
pub const BUILDER_BINARIES: &[&str] = &["sai-builder", "sai-device", "sai-expect"];

/// A tty of a board passed into a container: host path and the path the
/// builder (and its generated sai-device config) sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedTty {
    /// Path on the rack host, as declared in the rack.
    pub host: String,
    /// Path inside the container: `/dev/sai-<device>-<tty>`.
    pub guest: String,
}

impl PassedTty {
    /// Whether the tty is bind-mounted rather than recreated with
    /// `--device`: a pseudo-terminal's device number only means something
    /// in its own devpts instance, so a node made from it inside the
    /// container would reach another (or no) terminal.
    pub fn is_bound(&self) -> bool {
        self.host.starts_with("/dev/pts/")
    }
}

/// One container run by podman: everything `podman run` and the Quadlet
/// `.container` unit need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container (and unit) name: `<rack>-<member>`.
    pub name: String,
    /// Image reference: `localhost/<rack>-<member>:latest`.
    pub image: String,
    /// Named volumes: (volume name, path inside).
    pub volumes: Vec<(String, String)>,
    /// The member's rendered config folder, bound read-only here inside.
    pub config_dir: String,
    /// Files of the config folder also bound at their daemon's default
    /// path: (file name, path inside). Build steps get a clean environment,
    /// so `sai-device` finds its config only at `/etc/sai/devices/conf`.
    pub config_files: Vec<(String, String)>,
    /// Board ttys passed in.
    pub devices: Vec<PassedTty>,
    /// Environment given to the container.
    pub env: Vec<(String, String)>,
    /// The command run in the container.
    pub exec: Vec<String>,
}

impl ContainerSpec {
    /// The `podman run` arguments (after `podman`), with the config folder
    /// of this member at `config_dir_on_host`.
    pub fn podman_run_args(&self, config_dir_on_host: &str) -> Vec<String> {
        let mut args = vec![
            "run".to_string(),
            "--rm".to_string(),
            "--detach".to_string(),
            "--name".to_string(),
            self.name.clone(),
            "--network".to_string(),
            "host".to_string(),
        ];
        for (volume, at) in &self.volumes {
            args.push("--volume".to_string());
            args.push(format!("{volume}:{at}"));
        }
        args.push("--volume".to_string());
        args.push(format!("{config_dir_on_host}:{}:ro", self.config_dir));
        for (file, at) in &self.config_files {
            args.push("--volume".to_string());
            args.push(format!("{config_dir_on_host}/{file}:{at}:ro"));
        }
        for tty in &self.devices {
            args.push(
                if tty.is_bound() {
                    "--volume"
                } else {
                    "--device"
                }
                .to_string(),
            );
            args.push(format!("{}:{}", tty.host, tty.guest));
        }
        for (k, v) in &self.env {
            args.push("--env".to_string());
            args.push(format!("{k}={v}"));
        }
        args.push(self.image.clone());
        args.extend(self.exec.iter().cloned());
        args
    }
}

/// The name of a rack member's container, unit, image and volumes.
pub fn unit_name(rack: &RackConfig, member: &str) -> String {
    format!("{}-{member}", rack.name)
}

/// Where a board's tty appears inside a builder container.
pub fn guest_tty_path(device: &Device, tty: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("/dev/sai-{}-{}", clean(&device.name), clean(tty))
}

/// The ttys of a builder's boards with their paths inside its container.
pub fn passed_ttys(builder: &RackBuilder) -> Vec<PassedTty> {
    builder
        .devices
        .iter()
        .flat_map(|d| {
            d.ttys.iter().map(move |t| PassedTty {
                host: t.tty.clone(),
                guest: guest_tty_path(d, &t.name),
            })
        })
        .collect()
}

/// The command that starts sai-builder inside a container or VM.
pub fn builder_exec() -> Vec<String> {
    vec![
        format!("{GUEST_BIN_DIR}/sai-builder"),
        "--config".to_string(),
        format!("{GUEST_CONFIG_DIR}/builder.conf"),
    ]
}

/// Rendered files a builder also needs at a daemon's default path.
pub fn builder_config_files(builder: &RackBuilder) -> Vec<(String, String)> {
    if builder.devices.is_empty() {
        return Vec::new();
    }
    vec![("devices.conf".to_string(), DEVICE_CONFIG_PATH.to_string())]
}

/// The podman container of an `oci` builder.
pub fn builder_container(rack: &RackConfig, builder: &RackBuilder) -> ContainerSpec {
    let name = unit_name(rack, &builder.name);
    ContainerSpec {
        image: format!("localhost/{name}:latest"),
        volumes: vec![(format!("{name}-home"), builder.home().to_string())],
        config_dir: GUEST_CONFIG_DIR.to_string(),
        devices: passed_ttys(builder),
        config_files: builder_config_files(builder),
        env: Vec::new(),
        exec: builder_exec(),
        name,
    }
}

/// The podman container of the server or web UI (a `FROM scratch` image
/// holding one static binary).
pub fn daemon_container(
    rack: &RackConfig,
    member: &str,
    binary: &str,
    data_dir: &str,
) -> ContainerSpec {
    let name = unit_name(rack, member);
    ContainerSpec {
        image: format!("localhost/{name}:latest"),
        volumes: vec![(format!("{name}-data"), data_dir.to_string())],
        config_dir: format!("/etc/sai/{}", binary.trim_start_matches("sai-")),
        config_files: Vec::new(),
        devices: Vec::new(),
        env: Vec::new(),
        exec: vec![
            format!("/{binary}"),
            "--config".to_string(),
            format!(
                "/etc/sai/{}/{}.conf",
                binary.trim_start_matches("sai-"),
                binary.trim_start_matches("sai-")
            ),
        ],
        name,
    }
}

/// The `systemd-nspawn` arguments that boot an `nspawn` builder from its
/// root filesystem `rootfs`, with the static binaries of `bin_dir` and its
/// rendered config folder bound in.
pub fn nspawn_args(
    builder: &RackBuilder,
    rootfs: &str,
    bin_dir: &str,
    config_dir: &str,
) -> Vec<String> {
    let mut args = vec![
        "--quiet".to_string(),
        "--register=no".to_string(),
        "--keep-unit".to_string(),
        format!("--directory={rootfs}"),
        format!("--machine={}", builder.name),
        "--ephemeral".to_string(),
    ];
    for bin in BUILDER_BINARIES {
        args.push(format!("--bind-ro={bin_dir}/{bin}:{GUEST_BIN_DIR}/{bin}"));
    }
    args.push(format!("--bind-ro={config_dir}:{GUEST_CONFIG_DIR}"));
    for tty in passed_ttys(builder) {
        args.push(format!("--bind={}:{}", tty.host, tty.guest));
    }
    for (file, at) in builder_config_files(builder) {
        args.push(format!("--bind-ro={config_dir}/{file}:{at}"));
    }
    args.push("--".to_string());
    args.extend(builder_exec());
    args
}

/// Tell a builder's kind of run in words, for `plan`.
pub fn describe(builder: &RackBuilder) -> String {
    let base = match (&builder.distro, &builder.release) {
        (Some(d), Some(r)) => format!(
            "{} {r}",
            serde_json::to_value(d)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ),
        _ => "set up by hand".to_string(),
    };
    let debian_arch = arch(&builder.arch).map(|a| a.debian).unwrap_or("?");
    match builder.runs {
        Runs::Oci => format!("podman container from a {base} ({debian_arch}) image"),
        Runs::Nspawn => {
            format!("systemd-nspawn container booted from a {base} ({debian_arch}) root filesystem")
        }
        Runs::Qemu => format!(
            "qemu VM ({}) booting a {base} disk image",
            arch(&builder.arch).map(|a| a.qemu_system).unwrap_or("?")
        ),
        Runs::Host => "sai-builder on a host set up by hand".to_string(),
        Runs::Nixos => "NixOS machine using Sai's NixOS module".to_string(),
    }
}
