//! What one push may cost: the caps of `limits` checked against the
//! expanded tasks before anything is stored (issue 9 item 4).

use sai_core::config::server::ServerLimits;
use sai_core::saifile::TaskSpec;

/// A push over one of the caps; the message names the numbers and the
/// setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    /// Too many tasks.
    #[error("the saifile expands to {tasks} tasks, limit {limit} (limits.max_tasks_per_push)")]
    Tasks {
        /// Tasks it expands to.
        tasks: u64,
        /// The cap.
        limit: u64,
    },
    /// One step too large.
    #[error(
        "task {configuration:?} on {platform}: step {step} is {bytes} bytes after expansion, limit {limit} (limits.max_step_bytes)"
    )]
    Step {
        /// Its configuration.
        configuration: String,
        /// Its platform.
        platform: String,
        /// 0-based step index.
        step: usize,
        /// Its size.
        bytes: u64,
        /// The cap.
        limit: u64,
    },
    /// Everything together too large.
    #[error(
        "the saifile expands to {bytes} bytes of steps, artifacts and packages, limit {limit} (limits.max_expanded_bytes)"
    )]
    Expanded {
        /// Bytes it expands to.
        bytes: u64,
        /// The cap.
        limit: u64,
    },
}

/// Check `tasks` against the caps (tasks first, then each step, then the
/// total).
pub fn check(tasks: &[TaskSpec], limits: &ServerLimits) -> Result<(), OverLimit> {
    let n = tasks.len() as u64;
    if n > limits.max_tasks_per_push {
        return Err(OverLimit::Tasks {
            tasks: n,
            limit: limits.max_tasks_per_push,
        });
    }
    let mut total: u64 = 0;
    for t in tasks {
        for (step, s) in t.steps.iter().enumerate() {
            let bytes = s.len() as u64;
            if bytes > limits.max_step_bytes {
                return Err(OverLimit::Step {
                    configuration: t.configuration.clone(),
                    platform: t.platform.clone(),
                    step,
                    bytes,
                    limit: limits.max_step_bytes,
                });
            }
            total += bytes;
        }
        total += t
            .artifacts
            .iter()
            .chain(&t.packages)
            .map(|s| s.len() as u64)
            .sum::<u64>();
    }
    if total > limits.max_expanded_bytes {
        return Err(OverLimit::Expanded {
            bytes: total,
            limit: limits.max_expanded_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(steps: &[&str]) -> TaskSpec {
        TaskSpec {
            configuration: "c".into(),
            platform: "p/a/t".into(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            artifacts: vec![],
            packages: vec![],
            test_reports: vec![],
        }
    }

    #[test]
    fn each_cap_is_enforced_at_its_edge() {
        let limits = ServerLimits {
            max_tasks_per_push: 2,
            max_step_bytes: 4,
            max_expanded_bytes: 10,
            ..ServerLimits::default()
        };
        assert_eq!(check(&[task(&["abcd"]), task(&["abcd"])], &limits), Ok(()));
        assert_eq!(
            check(&[task(&[]), task(&[]), task(&[])], &limits),
            Err(OverLimit::Tasks { tasks: 3, limit: 2 })
        );
        let e = check(&[task(&["ok", "abcde"])], &limits).unwrap_err();
        assert!(
            matches!(
                e,
                OverLimit::Step {
                    step: 1,
                    bytes: 5,
                    limit: 4,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("5 bytes after expansion, limit 4"),
            "{e}"
        );
        assert_eq!(
            check(&[task(&["abcd", "abcd"]), task(&["abc"])], &limits),
            Err(OverLimit::Expanded {
                bytes: 11,
                limit: 10
            })
        );
    }
}
