//! `GET`/`DELETE /api/events/{id}`, `POST /api/events/{id}/rebuild` (and a
//! task's rebuild, which resets one task of its event).

use std::collections::BTreeMap;
use std::sync::Arc;

use sai_core::api;
use sai_core::protocol::is_task_id;
use sai_core::task::{Event, TaskState};
use warp::http::HeaderMap;

use super::{Res, ok, require_user, visible_event};
use crate::Server;
use crate::error::Error;

/// The API view of an event row (without tasks).
pub fn view(e: &Event) -> api::Event {
    api::Event {
        id: e.id.to_string(),
        project: e.project.clone(),
        git_ref: e.git_ref.clone(),
        hash: e.hash.clone(),
        fetch_url: e.fetch_url.clone(),
        source_ip: e.source_ip.clone(),
        created: e.created,
        last_updated: e.last_updated,
        state: e.state,
        sec: e.sec,
        task_count: e.task_count,
        tasks: None,
        task_states: None,
    }
}

/// An event with its tasks.
pub fn get(server: &Server, headers: &HeaderMap, id: &str) -> Res {
    let e = visible_event(server, headers, id)?;
    let db = server
        .store
        .event_db(id)?
        .ok_or(Error::NotFound("no such event"))?;
    let fleet = server.fleet();
    let mut counts: BTreeMap<TaskState, usize> = BTreeMap::new();
    let tasks = db
        .tasks()?
        .iter()
        .map(|t| {
            *counts.entry(t.run.state).or_default() += 1;
            super::tasks::view(t, &fleet)
        })
        .collect();
    let mut v = view(&e);
    v.tasks = Some(tasks);
    v.task_states = Some(counts);
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
    let row = visible_event(server, headers, ev)?;
    let db = server
        .store
        .event_db(ev)?
        .ok_or(Error::NotFound("no such event"))?;
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
        None => get(server, headers, ev),
    }
}
