//! Configurations x platforms -> tasks.

use super::{Configuration, Saifile, SaifileError, TaskSpec, macros, platform_list};

/// See [`Saifile::expand`].
pub(crate) fn expand(file: &Saifile, git_ref: Option<&str>) -> Result<Vec<TaskSpec>, SaifileError> {
    let mut tasks = Vec::new();
    for conf in &file.configurations {
        if !branch_allows(conf, git_ref) {
            continue;
        }
        for plat in &file.platforms {
            if !platform_list::selects(conf.platforms.as_deref(), &plat.name, plat.default) {
                continue;
            }
            if let Some(bad) = plat
                .macros
                .iter()
                .find(|m| !macros::KNOWN.contains(&m.name.as_str()))
            {
                return Err(SaifileError {
                    source_name: file.source_name.clone(),
                    line: bad.line,
                    column: bad.column,
                    message: format!(
                        "configuration \"{}\" on platform \"{}\": unknown macro ${{{}}} \
                         (only ${{prep}}, ${{cmake}} and ${{cpack}} are defined; write $NAME for a shell variable)",
                        conf.name, plat.name, bad.name
                    ),
                });
            }
            let build = macros::substitute(&plat.build, |name| macro_value(conf, name));
            tasks.push(TaskSpec {
                configuration: conf.name.clone(),
                platform: plat.name.clone(),
                steps: steps(&build),
                artifacts: conf.artifacts.clone(),
                packages: conf.deps.clone(),
                test_reports: conf.test_reports.clone(),
            });
        }
    }
    Ok(tasks)
}

/// `branches` filter: without a ref, or without `branches`, everything
/// passes; otherwise the ref must be `refs/heads/<branch>` for a listed
/// branch (a list entry already spelled `refs/heads/...` is compared as is).
fn branch_allows(conf: &Configuration, git_ref: Option<&str>) -> bool {
    let Some(git_ref) = git_ref else {
        return true;
    };
    conf.branches.is_empty()
        || conf.branches.iter().any(|b| {
            git_ref.strip_prefix("refs/heads/") == Some(b.as_str())
                || (b.starts_with("refs/") && git_ref == b)
        })
}

fn macro_value(conf: &Configuration, name: &str) -> Option<String> {
    match name {
        "prep" => Some(conf.prep.clone()),
        "cmake" => Some(conf.cmake.clone()),
        "cpack" => Some(conf.cpack.clone()),
        _ => None,
    }
}

/// One step per line of the expanded build. Blank (whitespace-only) lines
/// are dropped: the original would have dispatched them as empty steps that
/// do nothing. Lines are otherwise kept verbatim.
fn steps(build: &str) -> Vec<String> {
    build
        .split('\n')
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}
