//! `sai`: the operator CLI of Sai.
//!
//! `sai validate` checks config files and `.sai.json` files, `sai schema`
//! prints or writes the JSON Schemas, `sai saifile expand` shows the tasks a
//! `.sai.json` makes. Exit codes: 0 success, 1 a file has errors, 2 usage
//! error (or a subcommand that does not exist yet).

mod cli;
mod expand;
mod schema;
mod validate;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sai: {e:#}");
            ExitCode::FAILURE
        }
    }
}
