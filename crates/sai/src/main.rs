//! `sai`: the operator CLI of Sai.
//!
//! `sai validate` checks config files and `.sai.json` files, `sai schema`
//! prints or writes the JSON Schemas, `sai saifile expand` shows the tasks a
//! `.sai.json` makes, `sai up` runs a local server and builder, `sai notify`
//! sends a push notification, `sai token` mints tokens. Exit codes: 0
//! success, 1 a file has errors (or a command failed), 2 usage error.

mod cli;
mod expand;
mod notify;
mod rack;
mod schema;
mod token;
mod up;
mod user;
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
