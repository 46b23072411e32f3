//! `sai rack build`: root filesystems from Debian packages (debootstrap,
//! once per distribution/release/arch/packages, shared by podman, nspawn and
//! qemu builders), podman images (imported base + static binaries), VM
//! images (Debian kernel, ext4 root disk, busybox initramfs). Progress and
//! the time of each step are printed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sai_core::config::rack::{RackBuilder, RackConfig, Runs, arch};

use super::Dirs;
use super::cache::{Cache, absolute, base_image, rootfs_key};
use super::render::{render, write};
use super::spec::{BUILDER_BINARIES, builder_container, unit_name};
use super::vm::{GUEST_MODULES, Module, modinfo_depends, module_name, module_order};

const ROOTFS_RECIPE: &str = include_str!("../../../../containers/debian-rootfs.sh");
const KERNEL_RECIPE: &str = include_str!("../../../../vm-images/debian-kernel.sh");
const CONTAINERS_CONF: &str = include_str!("../../../../containers/containers.conf");

/// Build every member of `rack` (or those in `names`).
pub fn build(rack: &RackConfig, names: &[String], prepare: bool, dirs: &Dirs) -> Result<()> {
    let known: Vec<&str> = rack
        .builders
        .iter()
        .map(|b| b.name.as_str())
        .chain(rack.server.iter().map(|s| s.name.as_str()))
        .chain(rack.web.iter().map(|w| w.name.as_str()))
        .collect();
    for name in names {
        if !known.contains(&name.as_str()) {
            bail!(
                "no member \"{name}\" in rack {} (it has: {})",
                rack.name,
                known.join(", ")
            );
        }
    }
    let wanted = |name: &str| names.is_empty() || names.iter().any(|n| n == name);
    let files = render(rack)?;
    write(&files, &dirs.out)?;
    let ctx = Context_ {
        cache: Cache::new(absolute(&dirs.cache)),
        out: absolute(&dirs.out),
        bin_dir: absolute(&dirs.bin_dir),
        prepare,
    };
    ctx.write_recipes()?;
    for builder in rack.builders.iter().filter(|b| wanted(&b.name)) {
        ctx.build_builder(rack, builder)?;
    }
    if let Some(server) = rack
        .server
        .as_ref()
        .filter(|s| wanted(&s.name) && s.runs == Runs::Oci)
    {
        ctx.daemon_image(rack, &server.name, "sai-server")?;
    }
    if let Some(web) = rack
        .web
        .as_ref()
        .filter(|w| wanted(&w.name) && w.runs == Runs::Oci)
    {
        ctx.daemon_image(rack, &web.name, "sai-web")?;
    }
    Ok(())
}

/// `podman` with the rack's containers.conf unless one is set already.
pub fn podman(cache: &Cache) -> Command {
    let mut cmd = Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        cmd.env(
            "CONTAINERS_CONF",
            cache.recipes_dir().join("containers.conf"),
        );
    }
    cmd
}

/// Write the embedded containers.conf (for `podman` outside of build).
pub fn write_containers_conf(cache: &Cache) -> Result<()> {
    std::fs::create_dir_all(cache.recipes_dir())?;
    std::fs::write(cache.recipes_dir().join("containers.conf"), CONTAINERS_CONF)?;
    Ok(())
}

struct Context_ {
    cache: Cache,
    out: PathBuf,
    bin_dir: PathBuf,
    prepare: bool,
}

/// Run `cmd`, failing with its output when it fails.
fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let output = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Print a step with how long it took.
fn step<T>(member: &str, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    println!("==> [{member}] {what} ...");
    let value = f().with_context(|| format!("[{member}] {what}"))?;
    println!(
        "==> [{member}] {what}: done in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(value)
}

impl Context_ {
    fn write_recipes(&self) -> Result<()> {
        let dir = self.cache.recipes_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("debian-rootfs.sh"), ROOTFS_RECIPE)?;
        std::fs::write(dir.join("debian-kernel.sh"), KERNEL_RECIPE)?;
        write_containers_conf(&self.cache)
    }

    fn need_binaries(&self, names: &[&str]) -> Result<()> {
        for name in names {
            let path = self.bin_dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} is missing: build the static binaries first:\n  RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --profile static --target x86_64-unknown-linux-gnu -p {name}",
                    path.display()
                );
            }
        }
        Ok(())
    }

    fn build_builder(&self, rack: &RackConfig, builder: &RackBuilder) -> Result<()> {
        let name = builder.name.as_str();
        if !builder.runs.needs_rootfs() {
            println!(
                "==> [{name}] {}: nothing to build (configs rendered under {})",
                builder.runs.name(),
                self.out.join(name).display()
            );
            return Ok(());
        }
        let key = rootfs_key(builder).context("builder without a release or known arch")?;
        let debian_arch = arch(&builder.arch).map(|a| a.debian).unwrap_or("amd64");
        step(name, &format!("root filesystem {key}"), || {
            let mut cmd = Command::new("sh");
            cmd.arg(self.cache.recipes_dir().join("debian-rootfs.sh"))
                .arg(builder.release.as_deref().unwrap_or("bookworm"))
                .arg(debian_arch)
                .arg(self.cache.rootfs_dir(&key))
                .args(builder.rootfs_packages());
            run("debootstrap", &mut cmd)
        })?;
        if self.prepare {
            if let (Runs::Qemu, Some(a)) = (builder.runs, arch(&builder.arch)) {
                self.kernel(name, a)?;
            }
            return Ok(());
        }
        self.need_binaries(BUILDER_BINARIES)?;
        match builder.runs {
            Runs::Oci => {
                let base = base_image(&key);
                step(name, &format!("base image {base}"), || {
                    let exists = podman(&self.cache)
                        .args(["image", "exists", &base])
                        .status()
                        .is_ok_and(|s| s.success());
                    if exists {
                        return Ok(());
                    }
                    let tar = self.cache.rootfs_dir(&key).join("rootfs.tar");
                    run(
                        "podman import",
                        podman(&self.cache).arg("import").arg(&tar).arg(&base),
                    )
                })?;
                let spec = builder_container(rack, builder);
                step(name, &format!("image {}", spec.image), || {
                    run(
                        "podman build",
                        podman(&self.cache)
                            .args([
                                "build",
                                "--quiet",
                                "--network",
                                "host",
                                "--tag",
                                &spec.image,
                                "--file",
                            ])
                            .arg(self.out.join(name).join("Containerfile"))
                            .arg(&self.bin_dir),
                    )
                })
            }
            Runs::Nspawn => {
                println!(
                    "==> [{name}] nspawn root filesystem ready: {}",
                    self.cache.rootfs_tree(&key).display()
                );
                Ok(())
            }
            Runs::Qemu => self.vm_image(builder, &key),
            Runs::Host | Runs::Nixos => Ok(()),
        }
    }

    fn vm_image(&self, builder: &RackBuilder, key: &str) -> Result<()> {
        let name = builder.name.as_str();
        let a = arch(&builder.arch).context("unknown arch")?;
        let kernel = self.kernel(name, a)?;
        let vm = builder.vm.clone().unwrap_or_default();
        let disk = self.cache.disk_image(key);
        step(name, &format!("root disk {}", disk.display()), || {
            if disk.is_file() {
                return Ok(());
            }
            std::fs::create_dir_all(disk.parent().unwrap_or(Path::new(".")))?;
            let tmp = disk.with_extension("tmp");
            run(
                "mke2fs",
                Command::new("mke2fs")
                    .args(["-q", "-t", "ext4", "-F", "-d"])
                    .arg(self.cache.rootfs_tree(key))
                    .arg(&tmp)
                    .arg(format!("{}M", vm.disk_mib)),
            )?;
            std::fs::rename(&tmp, &disk)?;
            Ok(())
        })?;
        step(name, "initramfs", || self.initramfs(builder, &kernel))
    }

    fn kernel(&self, member: &str, a: &sai_core::config::rack::Arch) -> Result<PathBuf> {
        let kernel = self.cache.kernel_dir(a.kernel_flavour);
        step(
            member,
            &format!("Debian kernel linux-image-{}", a.kernel_flavour),
            || {
                let mut cmd = Command::new("sh");
                cmd.arg(self.cache.recipes_dir().join("debian-kernel.sh"))
                    .arg(a.kernel_flavour)
                    .arg(&kernel);
                run("apt-get download", &mut cmd)
            },
        )?;
        Ok(kernel)
    }

    /// The initramfs (busybox, /init, the modules in load order; a newc
    /// cpio archive) and the builder's own disk (static binaries and its
    /// rendered config folder; ext4 made with `mke2fs -d`).
    fn initramfs(&self, builder: &RackBuilder, kernel: &Path) -> Result<()> {
        let dir = self.cache.vm_dir(&builder.name);
        let staging = dir.join("staging");
        let _ = std::fs::remove_dir_all(&staging);
        for sub in [
            "initramfs/bin",
            "initramfs/modules",
            "sai/bin",
            "sai/config",
        ] {
            std::fs::create_dir_all(staging.join(sub))?;
        }
        let initramfs = staging.join("initramfs");
        let busybox =
            which("busybox").context("busybox (busybox-static) is needed for VM images")?;
        std::fs::copy(&busybox, initramfs.join("bin/busybox"))?;
        std::fs::copy(
            self.out.join(&builder.name).join("init"),
            initramfs.join("init"),
        )?;
        let modules_dir = std::fs::read_dir(kernel.join("lib/modules"))?
            .next()
            .context("kernel without modules")??
            .path();
        let mut modules = HashMap::new();
        collect_modules(&modules_dir, &modules_dir, &mut modules)?;
        let order = module_order(&modules, GUEST_MODULES);
        let mut list = String::new();
        for path in &order {
            let flat = path.replace('/', "_");
            std::fs::copy(
                modules_dir.join(path),
                initramfs.join("modules").join(&flat),
            )?;
            list.push_str(&flat);
            list.push('\n');
        }
        std::fs::write(initramfs.join("modules/order"), list)?;
        let image = dir.join("initramfs.img");
        run(
            "cpio",
            Command::new("sh").arg("-c").arg(format!(
                "cd '{}' && find . | sort | cpio --quiet -o -H newc > '{}'",
                initramfs.display(),
                image.display()
            )),
        )?;

        let sai = staging.join("sai");
        let mut bytes = 0u64;
        for bin in BUILDER_BINARIES {
            bytes += std::fs::copy(self.bin_dir.join(bin), sai.join("bin").join(bin))?;
        }
        for entry in std::fs::read_dir(self.out.join(&builder.name))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                bytes += std::fs::copy(entry.path(), sai.join("config").join(entry.file_name()))?;
            }
        }
        let disk = dir.join("sai.img");
        let _ = std::fs::remove_file(&disk);
        run(
            "mke2fs",
            Command::new("mke2fs")
                .args(["-q", "-t", "ext4", "-F", "-d"])
                .arg(&sai)
                .arg(&disk)
                .arg(format!("{}M", bytes / (1024 * 1024) * 2 + 16)),
        )?;
        std::fs::remove_dir_all(&staging)?;
        Ok(())
    }

    fn daemon_image(&self, rack: &RackConfig, member: &str, binary: &str) -> Result<()> {
        self.need_binaries(&[binary])?;
        let image = format!("localhost/{}:latest", unit_name(rack, member));
        step(member, &format!("image {image} (FROM scratch)"), || {
            run(
                "podman build",
                podman(&self.cache)
                    .args(["build", "--quiet", "--tag", &image, "--file"])
                    .arg(self.out.join(member).join("Containerfile"))
                    .arg(&self.bin_dir),
            )
        })
    }
}

fn collect_modules(root: &Path, dir: &Path, out: &mut HashMap<String, Module>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_modules(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "ko") {
            let rel = path.strip_prefix(root)?.to_string_lossy().to_string();
            let name = module_name(&rel);
            if GUEST_MODULES.len() < usize::MAX {
                // Read the dependencies lazily below; record the path now.
                out.insert(
                    name,
                    Module {
                        path: rel,
                        depends: Vec::new(),
                    },
                );
            }
        }
    }
    if root == dir {
        // Fill in dependencies for the modules that can be reached.
        let mut todo: Vec<String> = GUEST_MODULES.iter().map(|m| m.replace('-', "_")).collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(module) = out.get_mut(&name) {
                let bytes = std::fs::read(root.join(&module.path))?;
                module.depends = modinfo_depends(&bytes);
                todo.extend(module.depends.iter().cloned());
            }
        }
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}
