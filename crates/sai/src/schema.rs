//! `sai schema`: print or write the generated JSON Schemas.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use sai_core::config::schema::ConfigKind;

pub fn run(kind: Option<ConfigKind>, write: Option<&Path>) -> anyhow::Result<ExitCode> {
    match write {
        None => {
            // clap requires a kind when --write is absent.
            let kind = kind.context("name a kind, or give --write DIR")?;
            print!("{}", kind.generate_pretty());
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let kinds: Vec<ConfigKind> = match kind {
                Some(kind) => vec![kind],
                None => ConfigKind::ALL.to_vec(),
            };
            for kind in kinds {
                let path = dir.join(kind.schema_file_name());
                std::fs::write(&path, kind.generate_pretty())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
