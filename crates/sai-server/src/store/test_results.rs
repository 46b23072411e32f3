//! Test results: the reports a task uploaded and their test cases, in the
//! event database (replaced when the task is rebuilt), and every recorded run
//! of every test case in the main database, which outlives rebuilds and so
//! gives a test's history across events and tells a flaky test (the same
//! commit both failed and passed it).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Transaction, params};
use sai_core::api::{self, TestReport};
use sai_core::junit::{TestCase, TestOutcome};

use super::{EventDb, Rows, Store, StoreError, now_ms};

/// A stored test case and the task it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRow {
    /// The task.
    pub task_id: String,
    /// The case, as the API shows it.
    pub case: api::TestCase,
}

/// Where a recorded test run happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlace {
    /// Project.
    pub project: String,
    /// Event.
    pub event_id: String,
    /// Task.
    pub task_id: String,
    /// Commit.
    pub hash: String,
    /// Ref.
    pub git_ref: String,
    /// Configuration.
    pub configuration: String,
    /// Platform.
    pub platform: String,
}

/// One recorded run of a test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunRow {
    /// Where.
    pub place: RunPlace,
    /// Result.
    pub result: TestOutcome,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// When it was recorded (unix ms).
    pub recorded: i64,
}

/// Remove a task's reports and cases (rebuild), inside the caller's
/// transaction.
pub(super) fn clear(tx: &Transaction<'_>, task_id: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM test_reports WHERE task_id = ?1", [task_id])?;
    tx.execute("DELETE FROM test_cases WHERE task_id = ?1", [task_id])?;
    Ok(())
}

/// Failed and errored first, then passed, then skipped; file order inside.
const CASE_ORDER: &str =
    "CASE result WHEN 'fail' THEN 0 WHEN 'error' THEN 1 WHEN 'pass' THEN 2 ELSE 3 END, id";

fn case_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CaseRow> {
    Ok(CaseRow {
        task_id: r.get(0)?,
        case: api::TestCase {
            report: r.get(1)?,
            suite: r.get(2)?,
            name: r.get(3)?,
            result: parsed_outcome(r, 4)?,
            duration_ms: r.get(5)?,
            message: r.get(6)?,
        },
    })
}

fn parsed_outcome(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<TestOutcome> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

impl EventDb {
    /// Record a report of `task_id` named `name`: its cases, or why it was
    /// refused. A report of the same name replaces the earlier one.
    pub fn add_test_report(
        &self,
        task_id: &str,
        name: &str,
        outcome: Result<&[TestCase], &str>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM test_reports WHERE task_id = ?1 AND name = ?2",
            params![task_id, name],
        )?;
        tx.execute(
            "DELETE FROM test_cases WHERE task_id = ?1 AND report = ?2",
            params![task_id, name],
        )?;
        let (cases, refused) = match outcome {
            Ok(cases) => (cases, None),
            Err(why) => (&[][..], Some(why)),
        };
        tx.execute(
            "INSERT INTO test_reports(task_id, name, cases, refused, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![task_id, name, cases.len() as i64, refused, now_ms()],
        )?;
        {
            let mut st = tx.prepare(
                "INSERT INTO test_cases(task_id, report, suite, name, result, duration_ms, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for c in cases {
                st.execute(params![
                    task_id,
                    name,
                    c.suite,
                    c.name,
                    c.outcome.as_str(),
                    c.duration_ms,
                    c.message
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The reports of a task, in upload order.
    pub fn test_reports(&self, task_id: &str) -> Result<Vec<TestReport>, StoreError> {
        self.conn().rows(
            "SELECT name, cases, refused, created FROM test_reports WHERE task_id = ?1 ORDER BY id",
            [task_id],
            |r| {
                Ok(TestReport {
                    name: r.get(0)?,
                    cases: r.get(1)?,
                    refused: r.get(2)?,
                    created: r.get(3)?,
                })
            },
        )
    }

    /// The test cases of a task, failed first.
    pub fn test_cases(&self, task_id: &str) -> Result<Vec<api::TestCase>, StoreError> {
        self.conn().rows(
            &format!(
                "SELECT task_id, report, suite, name, result, duration_ms, message FROM test_cases
                 WHERE task_id = ?1 ORDER BY {CASE_ORDER}"
            ),
            [task_id],
            |r| case_from_row(r).map(|row| row.case),
        )
    }

    /// Failed or errored test cases of every task of the event.
    pub fn failed_test_cases(&self) -> Result<Vec<CaseRow>, StoreError> {
        self.conn().rows(
            &format!(
                "SELECT task_id, report, suite, name, result, duration_ms, message FROM test_cases
                 WHERE result IN ('fail', 'error') ORDER BY suite, name, {CASE_ORDER}"
            ),
            [],
            case_from_row,
        )
    }

    /// Test cases per result over the event's tasks.
    pub fn test_counts(&self) -> Result<BTreeMap<TestOutcome, usize>, StoreError> {
        let rows = self.conn().rows(
            "SELECT result, count(*) FROM test_cases GROUP BY result",
            [],
            |r| Ok((parsed_outcome(r, 0)?, r.get::<_, i64>(1)? as usize)),
        )?;
        Ok(rows.into_iter().collect())
    }
}

impl Store {
    /// Append one run of each case to the history.
    pub fn record_test_runs(&self, at: &RunPlace, cases: &[TestCase]) -> Result<(), StoreError> {
        let mut db = self.main();
        let tx = db.transaction()?;
        {
            let mut st = tx.prepare(
                "INSERT INTO test_runs(project, suite, name, event_id, task_id, hash, ref, configuration, platform, result, duration_ms, recorded)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            let now = now_ms();
            for c in cases {
                st.execute(params![
                    at.project,
                    c.suite,
                    c.name,
                    at.event_id,
                    at.task_id,
                    at.hash,
                    at.git_ref,
                    at.configuration,
                    at.platform,
                    c.outcome.as_str(),
                    c.duration_ms,
                    now
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The latest `limit` runs of one test of a project, newest first.
    pub fn test_history(
        &self,
        project: &str,
        suite: &str,
        name: &str,
        limit: i64,
    ) -> Result<Vec<TestRunRow>, StoreError> {
        self.main().rows(
            "SELECT project, event_id, task_id, hash, ref, configuration, platform, result, duration_ms, recorded
             FROM test_runs WHERE project = ?1 AND suite = ?2 AND name = ?3 ORDER BY id DESC LIMIT ?4",
            params![project, suite, name, limit],
            |r| {
                Ok(TestRunRow {
                    place: RunPlace {
                        project: r.get(0)?,
                        event_id: r.get(1)?,
                        task_id: r.get(2)?,
                        hash: r.get(3)?,
                        git_ref: r.get(4)?,
                        configuration: r.get(5)?,
                        platform: r.get(6)?,
                    },
                    result: parsed_outcome(r, 7)?,
                    duration_ms: r.get(8)?,
                    recorded: r.get(9)?,
                })
            },
        )
    }

    /// Did the project's commit `hash` ever pass this test?
    pub fn test_passed_at(
        &self,
        project: &str,
        suite: &str,
        name: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = self.main().query_row(
            "SELECT count(*) FROM test_runs WHERE project = ?1 AND suite = ?2 AND name = ?3 AND hash = ?4 AND result = 'pass'",
            params![project, suite, name, hash],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

/// The commits among `runs` where the test both failed (or errored) and
/// passed: it is flaky there.
pub fn flaky_commits(runs: &[TestRunRow]) -> Vec<String> {
    let mut passed = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for r in runs {
        if r.result == TestOutcome::Pass {
            passed.insert(r.place.hash.as_str());
        } else if r.result.is_failure() {
            failed.insert(r.place.hash.as_str());
        }
    }
    passed
        .intersection(&failed)
        .map(|h| h.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(hash: &str, result: TestOutcome) -> TestRunRow {
        TestRunRow {
            place: RunPlace {
                project: "p".into(),
                event_id: "E".into(),
                task_id: "T".into(),
                hash: hash.into(),
                git_ref: "refs/heads/main".into(),
                configuration: "c".into(),
                platform: "linux".into(),
            },
            result,
            duration_ms: None,
            recorded: 0,
        }
    }

    #[test]
    fn flaky_means_failed_and_passed_on_one_commit() {
        use TestOutcome::*;
        assert!(flaky_commits(&[run("a", Fail), run("b", Pass)]).is_empty());
        assert!(flaky_commits(&[run("a", Skip), run("a", Pass)]).is_empty());
        assert_eq!(
            flaky_commits(&[
                run("a", Fail),
                run("b", Fail),
                run("a", Pass),
                run("c", Error),
                run("c", Pass)
            ]),
            ["a", "c"]
        );
    }
}
