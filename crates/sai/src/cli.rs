//! Command-line surface of `sai` (clap derive) and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use sai_core::config::schema::ConfigKind;

/// Operator tool of Sai, a distributed CI system.
#[derive(Debug, Parser)]
#[command(name = "sai", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check config files and .sai.json files: JSON Schema, parser and
    /// semantic rules. Prints every problem as file:line:col: message.
    Validate {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Treat every file as this kind instead of detecting it from its
        /// `schema` member or its name.
        #[arg(long, value_parser = config_kind())]
        kind: Option<ConfigKind>,
    },
    /// Print the JSON Schema of one kind, or write the schemas to a folder.
    Schema {
        /// Kind to print (or, with --write, to write; default all).
        #[arg(value_parser = config_kind(), required_unless_present = "write")]
        kind: Option<ConfigKind>,
        /// Write `<kind>.schema.json` files into this folder.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
    /// Work with .sai.json files.
    Saifile {
        #[command(subcommand)]
        command: SaifileCommand,
    },
    /// Start a local Sai: sai-server and a sai-builder for this machine, in
    /// one process, on loopback, with its data under ./.sai; hook up the
    /// current repository and queue a build of its HEAD. Runs until Ctrl-C.
    Up(crate::up::UpArgs),
    /// Send a signed push notification for a commit of a repository to a
    /// sai-server (what the git hooks send).
    Notify(crate::notify::NotifyArgs),
    /// Mint a builder or user token with a sai-server's key (as
    /// `sai-server token`).
    Token(crate::token::TokenArgs),
    /// Plan, render, build and start the rack declared in a sai-rack file.
    Rack(crate::rack::RackArgs),
    /// Add or remove a user of sai-web (argon2 hashes in its users file).
    User(crate::user::UserArgs),
}

#[derive(Debug, Subcommand)]
pub enum SaifileCommand {
    /// Show the tasks a .sai.json expands to.
    Expand {
        /// The .sai.json file.
        file: PathBuf,
        /// Pushed ref, e.g. refs/heads/main; configurations with `branches`
        /// only yield tasks for matching branches. Without it `branches`
        /// filters nothing.
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
        /// Print a JSON array of {configuration, platform, steps, artifacts}.
        #[arg(long)]
        json: bool,
    },
}

/// A config kind by its command-line name ([`ConfigKind::name`]); `--help`
/// lists every name with its title.
fn config_kind() -> impl clap::builder::TypedValueParser<Value = ConfigKind> {
    let names = ConfigKind::ALL.map(|k| PossibleValue::new(k.name()).help(k.title()));
    PossibleValuesParser::new(names)
        .map(|name| ConfigKind::from_name(&name).expect("one of the names offered"))
}

/// Run a parsed command line; the exit code on success paths.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { files, kind } => Ok(crate::validate::run(&files, kind)),
        Command::Schema { kind, write } => crate::schema::run(kind, write.as_deref()),
        Command::Saifile {
            command:
                SaifileCommand::Expand {
                    file,
                    git_ref,
                    json,
                },
        } => crate::expand::run(&file, git_ref.as_deref(), json),
        Command::Up(args) => crate::up::run(args),
        Command::Notify(args) => crate::notify::run(args),
        Command::Token(args) => crate::token::run(args),
        Command::Rack(args) => crate::rack::run(args),
        Command::User(args) => crate::user::run(args),
    }
}
