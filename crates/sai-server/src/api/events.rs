//! `GET`/`DELETE /api/events/{id}`, `POST /api/events/{id}/rebuild` (and a
//! task's rebuild, which resets one task of its event), `POST
//! /api/events/{id}/again` (the same commit as a new event).

use std::sync::Arc;

use sai_core::api;
use sai_core::protocol::is_task_id;
use sai_core::task::{Event, EventId};
use warp::http::HeaderMap;

use super::estimates::Estimator;
use super::{Query, Res, ok, query_int, require_user, visible_event, visible_event_db};
use crate::error::Error;
use crate::state::Server;

/// An event with one page of its tasks (`limit`, default and cap
/// `limits.max_page`; `cursor` from the previous page's `next_cursor`) and
/// the count of every state.
pub fn get(server: &Server, headers: &HeaderMap, id: &str, q: &Query) -> Res {
    let (e, db) = visible_event_db(server, headers, id)?;
    let max = i64::from(server.settings.config.limits.max_page);
    let limit = query_int(q, "limit", max).clamp(1, max);
    let after = match q.get("cursor") {
        Some(c) => c.parse::<i64>().map_err(|_| {
            Error::bad_request("cursor must be a next_cursor of a previous page", None)
        })?,
        None => -1,
    };
    let fleet = server.fleet();
    let mut est = Estimator::new(server);
    let page = db.tasks_page(after, limit)?;
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(|t| t.idx.to_string()))
        .flatten();
    let mut tasks = Vec::with_capacity(page.len());
    for t in &page {
        let mut tv = super::tasks::view(t, &fleet, server.settings.config.max_infra_attempts);
        tv.estimate_ms = est.task(&e.project, t)?;
        tasks.push(tv);
    }
    let mut v = api::Event::from(&e);
    v.tasks = Some(tasks);
    v.task_states = Some(db.state_counts()?);
    v.next_cursor = next_cursor;
    if !e.state.is_terminal() {
        v.expected_finish = est.event_finish(id)?;
    }
    (v.commit_status, v.webhook) = server.outbox.deliveries(id);
    ok(&v)
}

/// Delete an event (its running tasks are stopped).
pub fn delete(server: &Arc<Server>, headers: &HeaderMap, id: &str) -> Res {
    let who = require_user(server, headers)?;
    visible_event(server, headers, id)?;
    if server.delete_event(id)? {
        tracing::info!(event = %id, user = %who, "event deleted");
        ok(&api::Deleted {
            deleted: id.to_string(),
        })
    } else {
        Err(Error::NotFound("no such event"))
    }
}

/// Reset every task of event `ev`, or only `task`, to waiting; their logs
/// and artifacts are cleared before the answer.
pub async fn rebuild(
    server: &Arc<Server>,
    headers: &HeaderMap,
    ev: &str,
    task: Option<&str>,
) -> Res {
    let who = require_user(server, headers)?;
    let (row, db) = visible_event_db(server, headers, ev)?;
    if let Some(t) = task
        && (!is_task_id(t) || db.task(t)?.is_none())
    {
        return Err(Error::NotFound("no such task"));
    }
    let ids: Option<Vec<String>> = task.map(|t| vec![t.to_string()]);
    // The event's tasks are read (outside the scheduler lock) only when the
    // scheduler does not hold the event.
    let mut tasks = None;
    let reset = loop {
        let done = server.sched_do(|s, now| {
            if !s.has_event(ev) {
                let tasks = tasks.take()?;
                s.add_event(now, row.clone(), db.clone(), tasks, now, true);
            }
            Some(s.reset_tasks(now, ev, ids.as_deref(), &who))
        });
        match done {
            Some(reset) => break reset,
            None => tasks = Some(db.tasks()?),
        }
    };
    for id in reset {
        server.logs.clear(db.clone(), id.to_string());
    }
    // Answer only once the old logs are gone, so no reader sees them after
    // a successful rebuild.
    server.logs.flush().await;
    tracing::info!(event = %ev, task = ?task, user = %who, "rebuild");
    match task {
        Some(t) => super::tasks::get(server, headers, t),
        None => get(server, headers, ev, &Query::new()),
    }
}

/// Build the commit of event `id` again as a new event that names `id` in
/// its `rebuild_of`: the same project, ref, commit and tasks, all waiting
/// (their `priority` from the newest earlier event of the ref, as for a
/// push). The old event and its results stay as they are.
pub async fn again(server: &Arc<Server>, headers: &HeaderMap, id: &str) -> Res {
    let who = require_user(server, headers)?;
    let (old, db) = visible_event_db(server, headers, id)?;
    let tasks = db.tasks()?;
    let new_id = EventId::from_bytes(crate::hook::random16());
    let mut ev = Event::new(
        new_id.clone(),
        &old.project,
        &old.git_ref,
        &old.hash,
        &old.fetch_url,
        None,
        old.sec,
    );
    ev.rebuild_of = Some(old.id.clone());
    let srv = server.clone();
    let created = tokio::task::spawn_blocking(move || {
        let prev = srv.store.previous_failures(&ev.project, &ev.git_ref)?;
        let specs = tasks
            .into_iter()
            .map(|t| {
                let prio = prev.contains(&(t.spec.configuration.clone(), t.spec.platform.clone()));
                (ev.id.task(crate::hook::random16()), t.spec, prio)
            })
            .collect();
        srv.store.create_event(ev, specs, false)
    })
    .await??
    .ok_or_else(|| Error::Conflict("an event with this id exists".into()))?;
    let project = created.event.project.clone();
    server.schedule_created(created);
    server
        .changes
        .publish(crate::changes::Change::EventCreated {
            event: new_id.to_string(),
            project,
        });
    tracing::info!(event = %new_id, rebuild_of = %id, user = %who, "commit built again as a new event");
    get(server, headers, new_id.as_str(), &Query::default())
}
