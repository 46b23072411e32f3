//! Debian's Nix (2.8) run offline against a throwaway store, for the tests
//! of flake.nix and nixos-modules/.
//!
//! Every Nix command gets a config that never reaches the network (no
//! substituters, no flake registry) and a chroot store in a temp dir. Builds
//! run the host's `/bin/sh`, which the store's build chroot sees through
//! `sandbox-paths`, together with the `sai` binary cargo built: the module
//! stand-ins (nix/testing/) use it as the `sai` package, so the config check
//! derivations really run `sai validate`. Each Nix step prints its time.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use tempfile::TempDir;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// nixpkgs' real pure-Nix lib, beside the repository (see its README).
pub fn nixpkgs_lib() -> PathBuf {
    let lib = repo_root().join("../shared/nixpkgs-lib");
    assert!(
        lib.join("lib/default.nix").is_file(),
        "{} is missing: the Nix tests need nixpkgs' lib beside the repository (../shared/nixpkgs-lib)",
        lib.display()
    );
    lib.canonicalize().unwrap()
}

/// A tool the tests need; a clear failure (never a skip) when it is missing.
pub fn require(tool: &str, how: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    let home_cargo = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cargo/bin").join(tool))
        .filter(|p| p.is_file());
    found
        .or(home_cargo)
        .unwrap_or_else(|| panic!("`{tool}` is not installed: {how}"))
}

/// What a failed Nix command printed.
#[derive(Debug)]
pub struct NixFailure {
    pub stderr: String,
}

/// A throwaway Nix store and the `sai` package the stand-ins point at.
pub struct Nix {
    dir: TempDir,
    store: PathBuf,
    sai_package: PathBuf,
}

impl Nix {
    pub fn new() -> Nix {
        require(
            "nix-instantiate",
            "install Debian's nix-bin (scripts/ci/packages/nix.list)",
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        let sai_package = dir.path().join("sai-package");
        std::fs::create_dir_all(sai_package.join("bin")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sai"), sai_package.join("bin/sai")).unwrap();
        Nix {
            dir,
            store,
            sai_package,
        }
    }

    /// Directory whose `bin/sai` is the binary under test.
    pub fn sai_package(&self) -> &Path {
        &self.sai_package
    }

    fn config(&self) -> String {
        let sai_dir = Path::new(env!("CARGO_BIN_EXE_sai")).parent().unwrap();
        format!(
            "experimental-features = nix-command flakes\n\
             substituters =\n\
             flake-registry = /dev/null\n\
             sandbox = false\n\
             build-users-group =\n\
             sandbox-paths = /bin /usr /lib /lib64? {} {}\n",
            self.sai_package.display(),
            sai_dir.display()
        )
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("NIX_CONFIG", self.config())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env_remove("NIX_PATH")
            .arg("--store")
            .arg(&self.store);
        cmd
    }

    fn run(&self, what: &str, mut cmd: Command) -> Result<String, NixFailure> {
        let start = Instant::now();
        let out = cmd.output().expect("run nix");
        println!("nix: {what}: {:.2}s", start.elapsed().as_secs_f64());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NixFailure { stderr })
        }
    }

    /// `nix-instantiate --eval --strict --json` of an expression.
    pub fn eval_json(&self, what: &str, expr: &str) -> Result<Value, NixFailure> {
        let mut cmd = self.command("nix-instantiate");
        cmd.args([
            "--read-write-mode",
            "--eval",
            "--strict",
            "--json",
            "-E",
            expr,
        ]);
        let out = self.run(what, cmd)?;
        Ok(serde_json::from_str(&out).expect("nix printed JSON"))
    }

    /// `nix-build` of an expression; the outputs as paths on this machine.
    pub fn build(&self, what: &str, expr: &str) -> Result<Vec<PathBuf>, NixFailure> {
        let mut cmd = self.command("nix-build");
        cmd.args(["--no-out-link", "-E", expr]);
        let out = self.run(what, cmd)?;
        Ok(out.lines().map(|line| self.real_path(line)).collect())
    }

    /// A `nix` (new CLI) command run in `dir`.
    pub fn nix(&self, what: &str, dir: &Path, args: &[&str]) -> Result<String, NixFailure> {
        let mut cmd = self.command("nix");
        cmd.current_dir(dir).args(args);
        self.run(what, cmd)
    }

    /// Where a /nix/store path of the throwaway store is on this machine.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        self.store
            .join(store_path.trim_start_matches('/'))
            .to_path_buf()
    }

    /// The module evaluation harness (nix/testing/eval.nix) with `module`
    /// (a Nix expression) added: the config of the evaluated system.
    pub fn system(&self, module: &str) -> String {
        format!(
            "(import {root}/nix/testing/eval.nix {{\n  nixpkgsLib = \"{lib}\";\n  saiPackageDir = \"{pkg}\";\n  modules = [ ({module}) ];\n}})",
            root = repo_root().display(),
            lib = nixpkgs_lib().display(),
            pkg = self.sai_package.display(),
        )
    }

    /// `expr` applied to the config of a system with `module`.
    pub fn eval_system(&self, what: &str, module: &str, expr: &str) -> Result<Value, NixFailure> {
        self.eval_json(
            what,
            &format!("let config = {}; in {expr}", self.system(module)),
        )
    }

    /// [`eval_system`](Self::eval_system) that must succeed: a failure
    /// panics with Nix's error output.
    pub fn system_value(&self, what: &str, module: &str, expr: &str) -> Value {
        self.eval_system(what, module, expr)
            .unwrap_or_else(|e| panic!("{what}: {}", e.stderr))
    }

    /// Build the checked config file of every unit of a system with
    /// `module` (each unit's first restart trigger), by unit name.
    pub fn build_unit_configs(
        &self,
        what: &str,
        module: &str,
    ) -> Result<Vec<(String, PathBuf)>, NixFailure> {
        let expr = format!(
            "let config = {}; in map (name: builtins.head config.systemd.services.${{name}}.restartTriggers) (builtins.attrNames config.systemd.services)",
            self.system(module)
        );
        let names = self.eval_system(
            &format!("{what} (unit names)"),
            module,
            "builtins.attrNames config.systemd.services",
        )?;
        let paths = self.build(what, &expr)?;
        let names: Vec<String> = names
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        assert_eq!(names.len(), paths.len(), "{names:?} {paths:?}");
        Ok(names.into_iter().zip(paths).collect())
    }
}

impl Drop for Nix {
    /// Store paths are read-only; make them writable so the temp dir can go
    /// (root ignores the modes, other users do not).
    fn drop(&mut self) {
        fn writable(path: &Path) {
            use std::os::unix::fs::PermissionsExt;
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return;
            };
            if meta.file_type().is_symlink() {
                return;
            }
            let mode = meta.permissions().mode() | 0o200;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
            if meta.is_dir()
                && let Ok(entries) = std::fs::read_dir(path)
            {
                for entry in entries.flatten() {
                    writable(&entry.path());
                }
            }
        }
        writable(&self.store);
    }
}
