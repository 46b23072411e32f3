//! Duration estimates and expected finish times. Pure: callers hand in the
//! history, the open work and the builders' instances.
//!
//! * A task's **estimate** is the median duration of the latest
//!   [`HISTORY`] successful runs of the same (project, configuration,
//!   platform). No successful run recorded: no estimate.
//! * An event's **expected finish** is computed per requested platform: the
//!   remaining work queued for that platform up to and including the event
//!   (the estimates of waiting tasks, plus what is left of running ones'
//!   estimates, never below zero) divided by the instances connected
//!   builders offer for it, and never before the event's own longest
//!   remaining task on it (one task does not run on several instances). The
//!   event finishes when its slowest platform does. If any of that work has
//!   no estimate, or no builder offers one of the event's platforms, there is
//!   no expected finish: a guess would not be honest.
//!
//! The model ignores that an offered platform may serve several requested
//! ones (tuple prefixes), and that builders come and go; it is a simple
//! honest summary, not a simulation of the scheduler.

use std::collections::BTreeMap;

/// How many recent successful runs an estimate is made from.
pub const HISTORY: usize = 10;

/// Median of `durations` (the mean of the middle two for an even count);
/// `None` when empty.
pub fn median(durations: &[i64]) -> Option<i64> {
    if durations.is_empty() {
        return None;
    }
    let mut d = durations.to_vec();
    d.sort_unstable();
    let n = d.len();
    Some(if n % 2 == 1 {
        d[n / 2]
    } else {
        (d[n / 2 - 1] + d[n / 2]) / 2
    })
}

/// One waiting or running task ahead of (or in) the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTask {
    /// Requested platform.
    pub platform: String,
    /// Its estimate, if it has history.
    pub estimate_ms: Option<i64>,
    /// Start of its current attempt, when running.
    pub started: Option<i64>,
    /// Belongs to the event asked about (not only queued ahead of it).
    pub own: bool,
}

impl OpenTask {
    fn remaining(&self, now: i64) -> Option<i64> {
        let est = self.estimate_ms?;
        Some(match self.started {
            Some(s) => (est - (now - s)).max(0),
            None => est,
        })
    }
}

/// When the event whose tasks are marked `own` is expected to be done
/// (unix ms), given all the open work ahead of it and `instances(platform)`,
/// the instances connected builders offer for a requested platform. See the
/// module doc.
pub fn expected_finish(
    now: i64,
    work: &[OpenTask],
    instances: impl Fn(&str) -> u32,
) -> Option<i64> {
    if !work.iter().any(|t| t.own) {
        return None;
    }
    // platform -> (total remaining, own longest remaining)
    let mut per: BTreeMap<&str, (i64, i64, bool)> = BTreeMap::new();
    for t in work {
        let left = t.remaining(now)?;
        let e = per.entry(&t.platform).or_insert((0, 0, false));
        e.0 += left;
        if t.own {
            e.1 = e.1.max(left);
            e.2 = true;
        }
    }
    let mut finish = now;
    for (platform, (total, longest, has_own)) in per {
        if !has_own {
            continue;
        }
        let n = instances(platform);
        if n == 0 {
            return None;
        }
        let share = (total + i64::from(n) - 1) / i64::from(n);
        finish = finish.max(now + share.max(longest));
    }
    Some(finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(platform: &str, est: Option<i64>, started: Option<i64>, own: bool) -> OpenTask {
        OpenTask {
            platform: platform.into(),
            estimate_ms: est,
            started,
            own,
        }
    }

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[30, 10, 20]), Some(20));
        assert_eq!(median(&[40, 10, 30, 20]), Some(25));
        assert_eq!(median(&[7]), Some(7));
    }

    #[test]
    fn median_lies_within_the_spread() {
        let runs = [900, 1200, 1000, 5000, 1100];
        let m = median(&runs).unwrap();
        assert!((900..=5000).contains(&m));
        assert_eq!(m, 1100, "one slow outlier does not drag it");
    }

    #[test]
    fn queue_is_shared_by_the_instances() {
        let now = 1_000;
        // Four 100 ms tasks on two instances: 200 ms.
        let work: Vec<_> = (0..4)
            .map(|_| task("linux", Some(100), None, true))
            .collect();
        assert_eq!(expected_finish(now, &work, |_| 2), Some(now + 200));
        // Work queued ahead by an older event delays it.
        let mut ahead = vec![task("linux", Some(400), None, false)];
        ahead.extend(work.clone());
        assert_eq!(expected_finish(now, &ahead, |_| 2), Some(now + 400));
        // Many instances: never before the longest own task.
        let w = vec![
            task("linux", Some(300), None, true),
            task("linux", Some(10), None, true),
        ];
        assert_eq!(expected_finish(now, &w, |_| 8), Some(now + 300));
    }

    #[test]
    fn running_tasks_count_what_is_left_and_platforms_run_in_parallel() {
        let now = 10_000;
        let w = vec![
            task("linux", Some(1_000), Some(now - 600), true),
            task("freebsd", Some(2_000), None, true),
            task("windows", Some(50_000), None, false),
        ];
        // linux: 400 left; freebsd: 2000; windows is not this event's.
        assert_eq!(expected_finish(now, &w, |_| 1), Some(now + 2_000));
        // A task past its estimate is expected any moment, not in the past.
        let late = vec![task("linux", Some(1_000), Some(now - 5_000), true)];
        assert_eq!(expected_finish(now, &late, |_| 1), Some(now));
    }

    #[test]
    fn no_history_or_no_builder_means_no_estimate() {
        let now = 0;
        let unknown = vec![
            task("linux", Some(100), None, true),
            task("linux", None, None, true),
        ];
        assert_eq!(expected_finish(now, &unknown, |_| 1), None);
        let ahead_unknown = vec![
            task("linux", None, None, false),
            task("linux", Some(1), None, true),
        ];
        assert_eq!(expected_finish(now, &ahead_unknown, |_| 1), None);
        let nobody = vec![task("linux", Some(100), None, true)];
        assert_eq!(expected_finish(now, &nobody, |_| 0), None);
        assert_eq!(expected_finish(now, &[], |_| 1), None);
    }
}
