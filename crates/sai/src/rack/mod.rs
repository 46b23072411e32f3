//! `sai rack`: plan, render, build and start the rack declared in one
//! `sai-rack` file (see `sai_core::config::rack`).

mod build;
mod cache;
mod plan;
mod quadlet;
mod render;
mod spec;
mod up;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use sai_core::config::rack::RackConfig;
use sai_core::config::schema::ConfigKind;
use sai_core::config::{Format, parse};

/// Arguments of `sai rack`.
#[derive(Debug, Args)]
pub struct RackArgs {
    #[command(subcommand)]
    command: RackCommand,
}

/// Options shared by the subcommands that produce or use files.
#[derive(Debug, Args)]
struct Dirs {
    /// Where generated files are written (and read by build and up).
    #[arg(long, value_name = "DIR", default_value = "target/rack/render")]
    out: PathBuf,
    /// Cache of root filesystems, kernels and VM images.
    #[arg(long, value_name = "DIR", env = "SAI_RACK_CACHE", default_value = cache::DEFAULT_CACHE)]
    cache: PathBuf,
    /// Folder of the static Sai binaries (cargo build --profile static).
    #[arg(long, value_name = "DIR", env = "SAI_RACK_BIN_DIR", default_value = cache::DEFAULT_BIN_DIR)]
    bin_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum RackCommand {
    /// Print what each member of the rack becomes.
    Plan {
        /// The rack file.
        rack: PathBuf,
    },
    /// Write every generated file (configs, Containerfiles, Quadlet units,
    /// .nspawn files, qemu scripts) under --out.
    Render {
        /// The rack file.
        rack: PathBuf,
        /// Output folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Build images: root filesystems, podman images, VM images (all
    /// members, or the NAMEs given).
    Build {
        /// The rack file.
        rack: PathBuf,
        /// Members to build; default all.
        names: Vec<String>,
        /// Only the shared parts: root filesystems and kernels (no podman
        /// or VM images); what CI prepares once per run.
        #[arg(long)]
        prepare: bool,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Start one builder (podman: detached container; nspawn and qemu: in
    /// the foreground).
    Up {
        /// The rack file.
        rack: PathBuf,
        /// The member to start.
        name: String,
        /// Print the command instead of running it.
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        dirs: Dirs,
    },
}

/// Run `sai rack ...`.
pub fn run(args: RackArgs) -> Result<ExitCode> {
    match args.command {
        RackCommand::Plan { rack } => {
            let rack_config = load(&rack)?;
            print!(
                "{}",
                plan::plan(&rack_config, &cache::Cache::new(cache::DEFAULT_CACHE))
            );
            Ok(ExitCode::SUCCESS)
        }
        RackCommand::Render { rack, out } => {
            let rack = load(&rack)?;
            let files = render::render(&rack)?;
            render::write(&files, &out)?;
            println!("wrote {} files under {}", files.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        RackCommand::Build {
            rack,
            names,
            prepare,
            dirs,
        } => {
            let rack = load(&rack)?;
            build::build(&rack, &names, prepare, &dirs)?;
            Ok(ExitCode::SUCCESS)
        }
        RackCommand::Up {
            rack,
            name,
            print,
            dirs,
        } => {
            let rack = load(&rack)?;
            up::up(&rack, &name, print, &dirs)
        }
    }
}

/// Read and check a rack file with every rule of `sai validate`; problems
/// are printed as `file:line:col: message`.
pub fn load(path: &Path) -> Result<RackConfig> {
    let name = path.display().to_string();
    let (_, diagnostics) = crate::validate::check_file(path, &name, Some(ConfigKind::Rack));
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        bail!("{} is not a valid rack:\n{}", name, errors.join("\n"));
    }
    let bytes = std::fs::read(path)?;
    Ok(parse(&name, &bytes, Format::Json)?)
}
