//! `sai rack up NAME`: start one member of the rack here, with the same
//! arguments as its generated unit (see `spec`).

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use sai_core::config::rack::{RackConfig, Runs};

use super::Dirs;
use super::build::{podman, write_containers_conf};
use super::cache::{Cache, absolute, rootfs_key};
use super::render::{render, write};
use super::spec::{ContainerSpec, builder_container, daemon_container, nspawn_args};

/// Start `name`: podman members detached (prints the container name),
/// nspawn and qemu builders in the foreground (this process becomes
/// `systemd-nspawn` or qemu). With `print`, only print the command.
pub fn up(rack: &RackConfig, name: &str, print: bool, dirs: &Dirs) -> Result<ExitCode> {
    let files = render(rack)?;
    write(&files, &dirs.out)?;
    let cache = Cache::new(absolute(&dirs.cache));
    write_containers_conf(&cache)?;
    let out = absolute(&dirs.out);
    let config_dir = out.join(name).display().to_string();
    let (program, args, env): (&str, Vec<String>, Vec<(String, String)>) =
        if let Some(builder) = rack.builder(name) {
            match builder.runs {
                Runs::Oci => (
                    "podman",
                    builder_container(rack, builder).podman_run_args(&config_dir),
                    vec![],
                ),
                Runs::Nspawn => {
                    let key = rootfs_key(builder).context("no root filesystem")?;
                    let args = nspawn_args(
                        builder,
                        &cache.rootfs_tree(&key).display().to_string(),
                        &absolute(&dirs.bin_dir).display().to_string(),
                        &config_dir,
                    );
                    ("systemd-nspawn", args, vec![])
                }
                Runs::Qemu => (
                    "sh",
                    vec![out.join(name).join("run-vm.sh").display().to_string()],
                    vec![(
                        "SAI_RACK_CACHE".to_string(),
                        cache.root.display().to_string(),
                    )],
                ),
                Runs::Host | Runs::Nixos => bail!(
                    "builder {name} runs as \"{}\": start sai-builder there with {}/builder.conf",
                    builder.runs.name(),
                    config_dir
                ),
            }
        } else if let Some(spec) = daemon_spec(rack, name) {
            ("podman", spec.podman_run_args(&config_dir), vec![])
        } else {
            bail!(
                "no member \"{name}\" in rack {} that can be started here",
                rack.name
            );
        };
    if print {
        let mut words = vec![program.to_string()];
        words.extend(args.iter().map(|a| shell_quote(a)));
        println!("{}", words.join(" "));
        return Ok(ExitCode::SUCCESS);
    }
    let mut cmd = if program == "podman" {
        podman(&cache)
    } else {
        Command::new(program)
    };
    cmd.args(&args).envs(env);
    if program == "podman" {
        let status = cmd.status().context("cannot run podman")?;
        if !status.success() {
            bail!("podman run failed ({status})");
        }
        return Ok(ExitCode::SUCCESS);
    }
    Err(cmd.exec()).with_context(|| format!("cannot run {program}"))
}

fn daemon_spec(rack: &RackConfig, name: &str) -> Option<ContainerSpec> {
    if let Some(s) = rack
        .server
        .as_ref()
        .filter(|s| s.name == name && s.runs == Runs::Oci)
    {
        return Some(daemon_container(
            rack,
            name,
            "sai-server",
            &s.config.data_dir,
        ));
    }
    rack.web
        .as_ref()
        .filter(|w| w.name == name && w.runs == Runs::Oci)
        .map(|_| daemon_container(rack, name, "sai-web", "/var/lib/sai-web"))
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
