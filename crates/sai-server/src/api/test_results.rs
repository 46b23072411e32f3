//! Test results: `GET /api/tasks/{id}/tests`, `GET /api/events/{id}/tests`,
//! `GET /api/projects/{name}/tests?suite=..&name=..`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sai_core::api;
use warp::http::HeaderMap;

use super::{Query, Res, ok, query_int, user};
use crate::error::Error;
use crate::state::Server;
use crate::store::test_results::{CaseRow, flaky_commits};

/// A task's test cases, failed first, and its reports.
pub fn of_task(server: &Server, headers: &HeaderMap, id: &str) -> Res {
    let (db, _) = super::tasks::load(server, headers, id)?;
    let cases = db.test_cases(id)?;
    let mut counts = BTreeMap::new();
    for c in &cases {
        *counts.entry(c.result).or_default() += 1;
    }
    ok(&api::TaskTests {
        task_id: id.to_string(),
        counts,
        reports: db.test_reports(id)?,
        cases,
    })
}

/// The tests that failed in any task of an event, with their platforms.
pub fn of_event(server: &Server, headers: &HeaderMap, id: &str) -> Res {
    let (e, db) = super::visible_event_db(server, headers, id)?;
    let tasks: HashMap<String, (String, String)> = db
        .tasks()?
        .into_iter()
        .map(|t| (t.id.to_string(), (t.spec.configuration, t.spec.platform)))
        .collect();
    let mut failed: BTreeMap<(String, String), api::FailedTest> = BTreeMap::new();
    for CaseRow { task_id, case: c } in db.failed_test_cases()? {
        let (configuration, platform) = tasks.get(&task_id).cloned().unwrap_or_default();
        let entry = failed
            .entry((c.suite.clone(), c.name.clone()))
            .or_insert_with(|| api::FailedTest {
                suite: c.suite.clone(),
                name: c.name.clone(),
                platforms: Vec::new(),
                flaky: false,
                failures: Vec::new(),
            });
        entry.failures.push(api::TestFailure {
            task_id,
            configuration,
            platform,
            result: c.result,
            message: c.message,
        });
    }
    let mut out = Vec::with_capacity(failed.len());
    for (_, mut f) in failed {
        let platforms: BTreeSet<_> = f.failures.iter().map(|x| x.platform.clone()).collect();
        f.platforms = platforms.into_iter().collect();
        f.flaky = server
            .store
            .test_passed_at(&e.project, &f.suite, &f.name, &e.hash)?;
        out.push(f);
    }
    ok(&api::EventTests {
        event_id: id.to_string(),
        counts: db.test_counts()?,
        failed: out,
    })
}

/// A test's recent runs in a project, and whether it is flaky.
pub fn history(server: &Server, headers: &HeaderMap, project: &str, q: &Query) -> Res {
    if !server.store.project_exists(project)? {
        return Err(Error::NotFound("no such project"));
    }
    let param = |k: &str| q.get(k).map(|v| sai_core::percent::decode_form(v));
    let (Some(suite), Some(name)) = (param("suite"), param("name")) else {
        return Err(Error::bad_request(
            "suite and name are required",
            Some("GET /api/projects/{name}/tests?suite=<suite>&name=<test name>".into()),
        ));
    };
    let limit = query_int(q, "limit", 50).clamp(1, 500);
    let authed = user(server, headers)?.is_some();
    let mut runs = server.store.test_history(project, &suite, &name, limit)?;
    if !authed {
        let mut private: HashMap<String, bool> = HashMap::new();
        let mut keep = Vec::with_capacity(runs.len());
        for r in runs {
            let sec = match private.get(&r.place.event_id) {
                Some(s) => *s,
                None => {
                    let s = server.store.event(&r.place.event_id)?.is_none_or(|e| e.sec);
                    private.insert(r.place.event_id.clone(), s);
                    s
                }
            };
            if !sec {
                keep.push(r);
            }
        }
        runs = keep;
    }
    let flaky_commits = flaky_commits(&runs);
    ok(&api::TestHistory {
        project: project.to_string(),
        suite,
        name,
        flaky: !flaky_commits.is_empty(),
        flaky_commits,
        runs: runs
            .into_iter()
            .map(|r| api::TestRun {
                event_id: r.place.event_id,
                task_id: r.place.task_id,
                hash: r.place.hash,
                git_ref: r.place.git_ref,
                configuration: r.place.configuration,
                platform: r.place.platform,
                result: r.result,
                duration_ms: r.duration_ms,
                recorded: r.recorded,
            })
            .collect(),
    })
}
