//! Where `sai rack build` keeps what it makes, keyed by its inputs so that
//! podman, nspawn and qemu builders with the same distribution, release,
//! architecture and packages share one root filesystem.

use std::path::{Path, PathBuf};

use sai_core::config::rack::{RackBuilder, arch};

/// Default cache folder (relative to the current directory).
pub const DEFAULT_CACHE: &str = "target/rack";

/// Default folder of the static Sai binaries (see `containers/README.md`).
pub const DEFAULT_BIN_DIR: &str = "target/x86_64-unknown-linux-gnu/static";

/// 64-bit FNV-1a: a stable short key, not a security boundary.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `bookworm-amd64-<hash of the package list>`, or `None` for builders
/// without a built root filesystem.
pub fn rootfs_key(builder: &RackBuilder) -> Option<String> {
    if !builder.runs.needs_rootfs() {
        return None;
    }
    let release = builder.release.as_deref()?;
    let debian = arch(&builder.arch)?.debian;
    let packages = builder.rootfs_packages().join(",");
    Some(format!(
        "{release}-{debian}-{:08x}",
        fnv1a(&packages) as u32
    ))
}

/// Paths under the cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The cache folder.
    pub root: PathBuf,
}

impl Cache {
    /// The cache at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// Folder of one root filesystem: `rootfs/` (the tree), `rootfs.tar`.
    pub fn rootfs_dir(&self, key: &str) -> PathBuf {
        self.root.join("rootfs").join(key)
    }

    /// The root filesystem tree.
    pub fn rootfs_tree(&self, key: &str) -> PathBuf {
        self.rootfs_dir(key).join("rootfs")
    }

    /// Folder of a Debian kernel flavour (`vmlinuz`, `lib/modules/`).
    pub fn kernel_dir(&self, flavour: &str) -> PathBuf {
        self.root.join(format!("kernel-{flavour}"))
    }

    /// Raw ext4 disk image made from a root filesystem.
    pub fn disk_image(&self, key: &str) -> PathBuf {
        self.root.join("vm-disk").join(format!("{key}.img"))
    }

    /// Folder of one qemu builder's boot files (`initramfs.img`).
    pub fn vm_dir(&self, builder: &str) -> PathBuf {
        self.root.join("vm").join(builder)
    }

    /// Folder where the embedded recipes are written out to run them.
    pub fn recipes_dir(&self) -> PathBuf {
        self.root.join("recipes")
    }
}

/// Podman image of an imported root filesystem.
pub fn base_image(key: &str) -> String {
    format!("localhost/sai-debian:{key}")
}

/// Absolute form of `path` (for generated scripts and bind mounts).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
