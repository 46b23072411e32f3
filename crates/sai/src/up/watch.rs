//! The live summary of `sai up`: it follows the local server's events
//! through the operations API (as any client would) and prints, per event,
//! its progress, at once when some of its tasks can run on no builder here
//! (with the platforms wanted, the one offered and how to offer another),
//! and when it ends its result with each failed task's reason and log URL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sai_core::platform::tuple_matches;
use serde_json::Value;

use super::output::{is_terminal, progress, say};

/// How often the API is asked; the "nothing can run" notice comes within
/// this (plus a request's time).
const POLL: Duration = Duration::from_millis(250);

const TERMINAL: [&str; 3] = ["success", "failed", "cancelled"];

/// Follows the events of one server.
pub struct Watch {
    url: String,
    offered: String,
    token: Option<String>,
    client: reqwest::Client,
    events: BTreeMap<String, Seen>,
    /// Events that had ended before `sai up` started are not reported.
    baseline_done: bool,
}

#[derive(Default)]
struct Seen {
    progress: String,
    unrunnable_told: BTreeSet<String>,
    done: bool,
}

/// Counts of one event's tasks by state.
#[derive(Default, PartialEq, Eq)]
struct Counts {
    total: usize,
    success: usize,
    failed: usize,
    cancelled: usize,
    running: usize,
    waiting: usize,
}

impl Counts {
    fn of(tasks: &[Value]) -> Counts {
        let mut c = Counts {
            total: tasks.len(),
            ..Counts::default()
        };
        for t in tasks {
            match t["state"].as_str().unwrap_or("") {
                "success" => c.success += 1,
                "failed" => c.failed += 1,
                "cancelled" => c.cancelled += 1,
                "waiting" => c.waiting += 1,
                _ => c.running += 1,
            }
        }
        c
    }

    fn done(&self) -> usize {
        self.success + self.failed + self.cancelled
    }

    fn describe(&self) -> String {
        let mut parts = vec![format!("{} passed", self.success)];
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        if self.cancelled > 0 {
            parts.push(format!("{} cancelled", self.cancelled));
        }
        if self.running > 0 {
            parts.push(format!("{} running", self.running));
        }
        if self.waiting > 0 {
            parts.push(format!("{} waiting", self.waiting));
        }
        parts.join(", ")
    }
}

impl Watch {
    /// Follow the server at `url` whose only local builder offers `offered`;
    /// `token` (a user token) also shows events marked secret.
    pub fn new(url: &str, offered: &str, token: Option<String>) -> Watch {
        Watch {
            url: url.trim_end_matches('/').to_string(),
            offered: offered.to_string(),
            token,
            client: reqwest::Client::new(),
            events: BTreeMap::new(),
            baseline_done: false,
        }
    }

    /// Poll until the task is dropped.
    pub async fn run(mut self) {
        loop {
            if let Err(e) = self.poll().await {
                tracing::debug!("watching the server's events: {e:#}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut req = self.client.get(format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?.error_for_status()?;
        Ok(resp.json().await?)
    }

    /// One look at every project's recent events.
    pub async fn poll(&mut self) -> anyhow::Result<()> {
        let projects = self.get("/api/projects").await?;
        let mut block = Vec::new();
        for p in projects.as_array().into_iter().flatten() {
            let Some(name) = p["name"].as_str() else {
                continue;
            };
            let events = self
                .get(&format!("/api/projects/{name}/events?limit=20"))
                .await?;
            // Oldest first, so results come in push order.
            for e in events.as_array().into_iter().flatten().rev() {
                let Some(id) = e["id"].as_str() else { continue };
                let ended = TERMINAL.contains(&e["state"].as_str().unwrap_or(""));
                if !self.baseline_done && ended {
                    self.events.entry(id.to_string()).or_default().done = true;
                }
                let done = self.events.get(id).is_some_and(|s| s.done);
                if done && ended {
                    continue;
                }
                let ev = self.get(&format!("/api/events/{id}")).await?;
                if done {
                    // An ended event that is running again was rebuilt:
                    // follow it afresh (until then its list state may just
                    // lag behind its tasks').
                    let tasks = ev["tasks"].as_array().cloned().unwrap_or_default();
                    let c = Counts::of(&tasks);
                    if c.done() == c.total {
                        continue;
                    }
                    self.events.insert(id.to_string(), Seen::default());
                }
                if let Some(line) = self.follow(id, &ev) {
                    block.push(line);
                }
            }
        }
        self.baseline_done = true;
        progress(block);
        Ok(())
    }

    /// Report on one unfinished event; its live progress line, if it is
    /// still running.
    fn follow(&mut self, id: &str, ev: &Value) -> Option<String> {
        let tasks = ev["tasks"].as_array().cloned().unwrap_or_default();
        let counts = Counts::of(&tasks);
        let name = event_name(id, ev);
        let url = self.url.clone();
        let offered = self.offered.clone();
        let seen = self.events.entry(id.to_string()).or_default();

        // Waiting tasks no builder here can run.
        let mut unrunnable: BTreeMap<String, usize> = BTreeMap::new();
        for t in &tasks {
            let plat = t["platform"].as_str().unwrap_or("");
            if t["state"] == "waiting" && !tuple_matches(plat, &offered) && t["detail"].is_string()
            {
                *unrunnable.entry(plat.to_string()).or_default() += 1;
            }
        }
        let new: Vec<&String> = unrunnable
            .keys()
            .filter(|p| !seen.unrunnable_told.contains(*p))
            .collect();
        if !new.is_empty() {
            let n: usize = unrunnable.values().sum();
            let wanted: Vec<&str> = unrunnable.keys().map(String::as_str).collect();
            say(&format!(
                "{name}: {n} of {} tasks cannot run here: they want {}, and this builder offers \
                 {offered}, which matches none of them. They wait until a builder offering one \
                 of those connects; to offer another platform here, restart with \
                 `sai up --platform <tuple>` (e.g. --platform {})",
                counts.total,
                wanted.join(", "),
                wanted[0]
            ));
            seen.unrunnable_told.extend(unrunnable.keys().cloned());
        }

        let all_ended = counts.total > 0 && counts.done() == counts.total;
        if all_ended
            || (counts.total == 0 && ev["state"].as_str().is_some_and(|s| TERMINAL.contains(&s)))
        {
            seen.done = true;
            let state = ev["state"].as_str().unwrap_or("ended");
            let state = if TERMINAL.contains(&state) {
                state
            } else if counts.failed > 0 {
                "failed"
            } else {
                "success"
            };
            say(&format!("{name} finished: {state} ({})", counts.describe()));
            for t in &tasks {
                if t["state"] != "failed" {
                    continue;
                }
                let tid = t["id"].as_str().unwrap_or("");
                say(&format!(
                    "  {} on {} failed: {}; log: {url}/api/tasks/{tid}/log?format=raw",
                    t["configuration"].as_str().unwrap_or("?"),
                    t["platform"].as_str().unwrap_or("?"),
                    t["reason"].as_str().unwrap_or("no reason given"),
                ));
            }
            return None;
        }

        let line = format!(
            "{name}: {}/{} done ({})",
            counts.done(),
            counts.total,
            counts.describe()
        );
        if line != seen.progress {
            if !is_terminal() {
                say(&line);
            }
            seen.progress = line.clone();
        }
        Some(line)
    }
}

/// `event <id> (<project> <branch>)`.
fn event_name(id: &str, ev: &Value) -> String {
    let r = ev["ref"].as_str().unwrap_or("");
    let r = r
        .strip_prefix("refs/heads/")
        .or_else(|| r.strip_prefix("refs/"))
        .unwrap_or(r);
    format!("event {id} ({} {r})", ev["project"].as_str().unwrap_or("?"))
}
