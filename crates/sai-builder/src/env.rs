//! The environment of a build step.
//!
//! Steps start from an empty environment plus, in this order (later wins):
//!
//! 1. the base: `PATH=/usr/local/bin:/usr/bin:/bin`, `LANG=C.UTF-8`
//!    (`C.UTF-8` exists on every glibc/musl system, unlike the reference's
//!    `en_US.UTF-8`);
//! 2. the platform's configured `env` (may override `PATH`/`LANG` and add
//!    anything else; the reference ignored it, 15 item 19);
//! 3. the Sai variables, which the platform env cannot override:
//!    `HOME`, `SAI_PROJECT`, `SAI_REMOTE_REF` (the ref without `refs/heads/`
//!    or `refs/tags/`), `SAI_OVN` (task id), `SAI_VN` (first 4 + last 4
//!    characters of the task id), `SAI_INSTANCE_IDX`, `SAI_PARALLEL` and,
//!    when the task has log proxies, `SAI_LOGPROXY`, `SAI_LOGPROXY_TTY0`,
//!    `SAI_LOGPROXY_TTY1` (unset otherwise: tools treat that as "no proxy").

use std::collections::BTreeMap;
use std::path::Path;

use crate::jobdir::{InvalidTaskId, vn};
use crate::logproxy::LogProxyPaths;

/// Default `PATH` of a step.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Default `LANG` of a step.
pub const DEFAULT_LANG: &str = "C.UTF-8";

/// A step environment that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// The task id is unusable.
    #[error(transparent)]
    TaskId(#[from] InvalidTaskId),
    /// A platform env entry cannot be passed to a process.
    #[error(
        "platform env entry {key:?} is invalid: names must be non-empty without '=' or NUL, values without NUL"
    )]
    BadEntry {
        /// The offending name.
        key: String,
    },
    /// A path is not valid UTF-8.
    #[error("path {0:?} is not valid UTF-8")]
    NonUtf8Path(std::path::PathBuf),
}

/// What the environment of one step is made from.
#[derive(Debug, Clone, Copy)]
pub struct StepEnvInput<'a> {
    /// Project (repository) name -> `SAI_PROJECT`.
    pub project: &'a str,
    /// Pushed ref, e.g. `refs/heads/main` -> `SAI_REMOTE_REF=main`.
    pub git_ref: &'a str,
    /// Task id -> `SAI_OVN`, and `SAI_VN` derived from it.
    pub task_id: &'a str,
    /// -> `SAI_INSTANCE_IDX` (see [`crate::instances`]).
    pub instance_idx: u32,
    /// -> `SAI_PARALLEL` (see [`resolve_parallel`]).
    pub parallel: u32,
    /// -> `HOME`.
    pub home: &'a Path,
    /// Log proxy sockets of the task, if any.
    pub logproxy: Option<&'a LogProxyPaths>,
    /// The platform's configured `env`.
    pub platform_env: &'a BTreeMap<String, String>,
}

/// `SAI_REMOTE_REF`: `git_ref` without a leading `refs/heads/` or `refs/tags/`.
pub fn remote_ref(git_ref: &str) -> &str {
    git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref)
}

/// `SAI_PARALLEL`: the configured value if set and non-zero, else the CPU count.
pub fn resolve_parallel(configured: Option<u32>) -> u32 {
    match configured {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1),
    }
}

fn path_str(p: &Path) -> Result<String, EnvError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| EnvError::NonUtf8Path(p.to_path_buf()))
}

/// Build the complete environment of a step (see the module doc for the rules).
pub fn build_env(input: &StepEnvInput<'_>) -> Result<BTreeMap<String, String>, EnvError> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert("LANG".to_string(), DEFAULT_LANG.to_string());
    for (k, v) in input.platform_env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(EnvError::BadEntry { key: k.clone() });
        }
        env.insert(k.clone(), v.clone());
    }
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("HOME", path_str(input.home)?);
    set("SAI_PROJECT", input.project.to_string());
    set("SAI_REMOTE_REF", remote_ref(input.git_ref).to_string());
    set("SAI_OVN", input.task_id.to_string());
    set("SAI_VN", vn(input.task_id)?);
    set("SAI_INSTANCE_IDX", input.instance_idx.to_string());
    set("SAI_PARALLEL", input.parallel.to_string());
    if let Some(lp) = input.logproxy {
        set("SAI_LOGPROXY", path_str(&lp.sai)?);
        set("SAI_LOGPROXY_TTY0", path_str(&lp.tty0)?);
        set("SAI_LOGPROXY_TTY1", path_str(&lp.tty1)?);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const TASK: &str = "ABCD0000000000000000000000000000111111111111111111111111111WXYZ";

    fn input<'a>(platform_env: &'a BTreeMap<String, String>) -> StepEnvInput<'a> {
        StepEnvInput {
            project: "libwebsockets",
            git_ref: "refs/heads/main",
            task_id: TASK,
            instance_idx: 3,
            parallel: 6,
            home: Path::new("/home/sai"),
            logproxy: None,
            platform_env,
        }
    }

    #[test]
    fn remote_ref_strips_heads_and_tags_only() {
        for (git_ref, want) in [
            ("refs/heads/main", "main"),
            ("refs/tags/v1.2", "v1.2"),
            ("refs/heads/feature/x", "feature/x"),
            ("refs/pull/1/head", "refs/pull/1/head"),
            ("main", "main"),
        ] {
            assert_eq!(remote_ref(git_ref), want, "{git_ref}");
        }
    }

    #[test]
    fn parallel_configured_or_cpu_count() {
        assert_eq!(resolve_parallel(Some(3)), 3);
        assert!(resolve_parallel(None) >= 1);
        assert_eq!(resolve_parallel(Some(0)), resolve_parallel(None));
    }

    #[test]
    fn sai_variables() {
        let pe = BTreeMap::new();
        let env = build_env(&input(&pe)).unwrap();
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["LANG"], DEFAULT_LANG);
        assert_eq!(env["HOME"], "/home/sai");
        assert_eq!(env["SAI_PROJECT"], "libwebsockets");
        assert_eq!(env["SAI_REMOTE_REF"], "main");
        assert_eq!(env["SAI_OVN"], TASK);
        assert_eq!(env["SAI_VN"], "ABCDWXYZ");
        assert_eq!(env["SAI_INSTANCE_IDX"], "3");
        assert_eq!(env["SAI_PARALLEL"], "6");
        assert!(!env.contains_key("SAI_LOGPROXY"));
        assert_eq!(env.len(), 9);
    }

    #[test]
    fn logproxy_paths() {
        let pe = BTreeMap::new();
        let lp = LogProxyPaths {
            sai: PathBuf::from("/r/logproxy.sai"),
            tty0: PathBuf::from("/r/logproxy.tty0"),
            tty1: PathBuf::from("/r/logproxy.tty1"),
        };
        let mut i = input(&pe);
        i.logproxy = Some(&lp);
        let env = build_env(&i).unwrap();
        assert_eq!(env["SAI_LOGPROXY"], "/r/logproxy.sai");
        assert_eq!(env["SAI_LOGPROXY_TTY0"], "/r/logproxy.tty0");
        assert_eq!(env["SAI_LOGPROXY_TTY1"], "/r/logproxy.tty1");
    }

    #[test]
    fn platform_env_overrides_base_but_not_sai() {
        let pe: BTreeMap<String, String> = [
            ("PATH", "/opt/x/bin:/usr/bin"),
            ("CC", "clang"),
            ("SAI_PROJECT", "evil"),
            ("HOME", "/elsewhere"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = build_env(&input(&pe)).unwrap();
        assert_eq!(env["PATH"], "/opt/x/bin:/usr/bin");
        assert_eq!(env["CC"], "clang");
        assert_eq!(env["SAI_PROJECT"], "libwebsockets");
        assert_eq!(env["HOME"], "/home/sai");
    }

    #[test]
    fn bad_platform_entries_and_task_ids_are_errors() {
        let pe: BTreeMap<String, String> = [("A=B".to_string(), "x".to_string())].into();
        assert!(matches!(
            build_env(&input(&pe)),
            Err(EnvError::BadEntry { .. })
        ));
        let pe = BTreeMap::new();
        let mut i = input(&pe);
        i.task_id = "../x";
        assert!(matches!(build_env(&i), Err(EnvError::TaskId(_))));
    }
}
