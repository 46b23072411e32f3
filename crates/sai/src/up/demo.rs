//! The demo project `sai up --demo` builds (and `sai up` where there is no
//! repository with a `.sai.json`): a small git repository under
//! `<data>/demo` whose `.sai.json` shows each kind of result once (a passing
//! task, a failing one, one with an artifact, one logging on stdout and
//! stderr), on the platform the local builder offers.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::notify::Repo;

/// The demo's project name.
pub const PROJECT: &str = "demo";

/// The demo's configurations and what each shows.
pub const CONFIGURATIONS: [(&str, &str); 4] = [
    ("passes", "three steps that succeed"),
    ("fails", "its second step exits with 3"),
    ("artifact", "uploads out/report.txt"),
    ("logs", "writes to stdout and stderr"),
];

fn saifile(platform: &str) -> serde_json::Value {
    json!({
        "schema": "sai-1",
        "platforms": { platform: { "build": "${prep}" } },
        "configurations": {
            "passes": {
                "prep": "echo \"building the $SAI_PROJECT demo\"\nsh ./count.sh 3\necho done"
            },
            "fails": {
                "prep": "echo about to fail\nsh -c 'echo \"error: this step fails on purpose\" >&2; exit 3'\necho never printed"
            },
            "artifact": {
                "prep": "mkdir -p out\nsh ./count.sh 5 > out/report.txt\ncat out/report.txt",
                "artifacts": "out/report.txt"
            },
            "logs": {
                "prep": "sh ./both.sh 5"
            }
        }
    })
}

const COUNT_SH: &str = "i=1\nwhile [ \"$i\" -le \"$1\" ]; do echo \"line $i\"; i=$((i+1)); done\n";
const BOTH_SH: &str = "i=1\nwhile [ \"$i\" -le \"$1\" ]; do\n  echo \"stdout $i\"\n  echo \"stderr $i\" >&2\n  i=$((i+1))\ndone\n";
const README: &str = "# The `sai up` demo\n\n\
Made by `sai up --demo` (or `sai up` where no repository with a `.sai.json`\n\
is). Edit `.sai.json`, commit, and run `sai notify` here to build it again; see docs/saifile.md.\n";

/// Create or update the demo repository under `data` for `platform`; a new
/// commit only when its files changed.
pub fn ensure(data: &Path, platform: &str) -> Result<Repo> {
    let dir = data.join(PROJECT);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if !dir.join(".git").exists() {
        git(&dir, &["init", "-q", "-b", "main"])?;
    }
    let mut text = serde_json::to_string_pretty(&saifile(platform))?;
    text.push('\n');
    for (name, body) in [
        (".sai.json", text.as_str()),
        ("count.sh", COUNT_SH),
        ("both.sh", BOTH_SH),
        ("README.md", README),
    ] {
        std::fs::write(dir.join(name), body)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    git(&dir, &["add", "-A"])?;
    if git(&dir, &["diff", "--cached", "--quiet"]).is_err() {
        git(&dir, &["commit", "-q", "-m", "sai up demo"])?;
    }
    Repo::open(&dir)
}

/// git with an identity of its own, so that committing works for a user
/// without one.
fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let identity = [
        "-c",
        "user.name=sai up",
        "-c",
        "user.email=sai-up@localhost",
        "-c",
        "commit.gpgsign=false",
    ];
    crate::notify::git(dir, &[&identity[..], args].concat())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_saifile_expands_to_one_task_per_configuration() {
        let text = serde_json::to_vec(&saifile("linux-x/x86_64-amd/gcc-12")).unwrap();
        let parsed = sai_core::saifile::parse("demo", &text).unwrap();
        assert!(parsed.warnings().is_empty(), "{:?}", parsed.warnings());
        let tasks = parsed.expand(Some("refs/heads/main")).unwrap();
        let mut confs: Vec<&str> = tasks.iter().map(|t| t.configuration.as_str()).collect();
        confs.sort();
        let mut want: Vec<&str> = CONFIGURATIONS.iter().map(|(c, _)| *c).collect();
        want.sort();
        assert_eq!(confs, want);
        let fails = tasks.iter().find(|t| t.configuration == "fails").unwrap();
        assert_eq!(fails.steps.len(), 3, "{:?}", fails.steps);
    }
}
