//! `sai saifile expand`: show the tasks a `.sai.json` expands to.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

pub fn run(file: &Path, git_ref: Option<&str>, as_json: bool) -> anyhow::Result<ExitCode> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {name}"))?;
    let saifile = match sai_core::saifile::parse(&name, &bytes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in saifile.warnings() {
        eprintln!("{name}:{}:{}: warning: {}", w.line, w.column, w.message);
    }
    let tasks = match saifile.expand(git_ref) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if as_json {
        // Built by hand so the output contract stays exactly these four keys,
        // whatever TaskSpec grows.
        let out: Vec<Value> = tasks
            .iter()
            .map(|t| {
                json!({
                    "configuration": t.configuration,
                    "platform": t.platform,
                    "steps": t.steps,
                    "artifacts": t.artifacts,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for t in &tasks {
            println!("{}  on  {}", t.configuration, t.platform);
            for (i, step) in t.steps.iter().enumerate() {
                println!("    {:>2}  {step}", i + 1);
            }
            if !t.artifacts.is_empty() {
                println!("    artifacts: {}", t.artifacts.join(", "));
            }
        }
        let configurations: std::collections::BTreeSet<&str> =
            tasks.iter().map(|t| t.configuration.as_str()).collect();
        println!(
            "{} tasks ({} configurations) from {name}",
            tasks.len(),
            configurations.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
