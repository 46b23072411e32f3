//! Live updates: one websocket per browser tab, fed from shared topic
//! watchers.
//!
//! A topic (overview, one event, one task, builders) seen by one viewer has
//! one watcher that follows sai-server and publishes the topic's current
//! state in a `tokio::sync::watch` channel. A watch channel holds only the
//! newest state, so a slow browser is coalesced, never queued: when its
//! connection gets to send again it diffs the newest state against what it
//! sent last and sends only the difference. The log tail is a bounded ring
//! of rows; a browser that fell behind it fetches the missing lines by
//! range. Watchers stop when their last subscriber leaves.
//!
//! A reconnecting browser starts from an empty "sent" state and therefore
//! receives the whole current state first: it catches up without a reload.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sai_https::websocket::{Message, Socket};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::App;
use crate::logview::{Row, RowMaker};
use crate::pages;
use crate::upstream::{UpstreamError, Viewer};

/// Rows of a log tail kept for browsers that are a little behind.
const TAIL_ROWS: usize = 2000;
/// Rows sent in one websocket message at most.
const ROWS_PER_MESSAGE: usize = 500;

/// What a page watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Projects and their latest events, and the builders summary.
    Overview,
    /// One event's matrix.
    Event(String),
    /// One task: its facts and log.
    Task(String),
    /// The builders table.
    Builders,
}

/// A matrix cell: state, tooltip.
pub type Cell = (crate::upstream::TaskState, String);

/// The newest state of a topic.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Whether the last poll of sai-server worked.
    pub upstream_ok: bool,
    /// The topic does not exist or is hidden from this viewer.
    pub gone: bool,
    /// HTML fragments by element id.
    pub html: BTreeMap<String, String>,
    /// Matrix cells by task id (event topics).
    pub cells: Arc<BTreeMap<String, Cell>>,
    /// Log tail (task topics).
    pub log: Option<Arc<LogTail>>,
}

/// The newest rows of a log.
#[derive(Debug, Clone, Default)]
pub struct LogTail {
    /// Increases when the log restarts (rebuild).
    pub generation: u64,
    /// Lines known (rows with `n <= lines` exist).
    pub lines: u64,
    /// The newest rows, oldest first.
    pub rows: VecDeque<Row>,
}

type Key = (Topic, Viewer);

/// A topic's channel and the bell that wakes its watcher.
struct Entry {
    tx: watch::Sender<Arc<Snapshot>>,
    wake: Arc<tokio::sync::Notify>,
}

/// All watchers.
#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashMap<Key, Entry>>,
    /// sai-server's change feed is connected: watchers wait for its
    /// wake-ups and poll only as a safety net.
    pub feed_live: std::sync::atomic::AtomicBool,
}

impl Hub {
    /// Subscribe to `topic` as `viewer`, starting its watcher if needed.
    pub fn subscribe(
        &self,
        app: &Arc<App>,
        topic: Topic,
        viewer: Viewer,
    ) -> watch::Receiver<Arc<Snapshot>> {
        let key = (topic, viewer);
        let mut map = self.topics.lock().expect("hub lock");
        if let Some(e) = map.get(&key) {
            return e.tx.subscribe();
        }
        let (tx, rx) = watch::channel(Arc::new(Snapshot {
            upstream_ok: true,
            ..Snapshot::default()
        }));
        let wake = Arc::new(tokio::sync::Notify::new());
        map.insert(
            key.clone(),
            Entry {
                tx: tx.clone(),
                wake: wake.clone(),
            },
        );
        let app = app.clone();
        tokio::spawn(async move {
            let k = key.clone();
            let a = app.clone();
            // A watcher that ends for any reason (even a panic) leaves the
            // map, so the next subscriber starts a fresh one.
            let r = tokio::spawn(watcher(app, key, tx, wake)).await;
            if let Err(e) = r {
                tracing::error!(topic = ?k.0, cause = %e, "live watcher failed");
            }
            a.hub.topics.lock().expect("hub lock").remove(&k);
        });
        rx
    }

    /// Number of running watchers.
    pub fn watchers(&self) -> usize {
        self.topics.lock().expect("hub lock").len()
    }

    /// Wake every watcher (reconnect, resync).
    pub fn wake_all(&self) {
        for e in self.topics.lock().expect("hub lock").values() {
            e.wake.notify_one();
        }
    }

    /// Wake the watchers a feed change (`{"kind": ..}`) concerns.
    pub fn wake_for(&self, change: &serde_json::Value) {
        let s = |k: &str| change[k].as_str().unwrap_or_default();
        let kind = s("kind");
        let task = s("task");
        let event = if task.len() >= 32 {
            &task[..32]
        } else {
            s("event")
        };
        for ((topic, _), e) in self.topics.lock().expect("hub lock").iter() {
            let hit = match (kind, topic) {
                ("log_appended", Topic::Task(t)) => t == task,
                ("log_appended", _) => false,
                (_, Topic::Overview) => true,
                ("builder_changed", Topic::Builders | Topic::Task(_)) => true,
                ("task_changed", Topic::Builders) => true,
                (_, Topic::Event(id)) => id == event,
                (_, Topic::Task(t)) => {
                    t == task || (kind == "event_changed" && t.starts_with(event))
                }
                _ => false,
            };
            if hit {
                e.wake.notify_one();
            }
        }
    }

    /// Stop a watcher if nobody listens; `true` when it must stop.
    fn release_if_unused(&self, key: &Key) -> bool {
        let mut map = self.topics.lock().expect("hub lock");
        match map.get(key) {
            Some(e) if e.tx.receiver_count() == 0 => {
                map.remove(key);
                true
            }
            Some(_) => false,
            None => true,
        }
    }
}

/// With the change feed connected, watchers still re-read this often (and
/// whenever the feed says their topic changed).
const FEED_SAFETY_POLL: Duration = Duration::from_secs(5);

/// Poll interval without the change feed.
fn interval(topic: &Topic) -> Duration {
    match topic {
        Topic::Task(_) => Duration::from_millis(150),
        Topic::Event(_) => Duration::from_millis(300),
        Topic::Overview | Topic::Builders => Duration::from_millis(500),
    }
}

/// Follow one topic until nobody listens.
async fn watcher(
    app: Arc<App>,
    key: Key,
    tx: watch::Sender<Arc<Snapshot>>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut log = LogFollower::default();
    loop {
        if app.hub.release_if_unused(&key) {
            break;
        }
        let (topic, viewer) = &key;
        let prev = tx.borrow().clone();
        let next = match poll(&app, topic, viewer, &prev, &mut log).await {
            Ok(s) => s,
            Err(UpstreamError::NotFound) => Snapshot {
                upstream_ok: true,
                gone: true,
                ..Snapshot::default()
            },
            Err(e) => {
                if prev.upstream_ok {
                    tracing::warn!(topic = ?topic, cause = %e, "live: polling sai-server failed");
                }
                if matches!(e, UpstreamError::Unreachable(..)) {
                    log.reset_pending = true;
                }
                Snapshot {
                    upstream_ok: false,
                    ..(*prev).clone()
                }
            }
        };
        tx.send_if_modified(|cur| {
            let changed = !same(cur, &next);
            if changed {
                *cur = Arc::new(next);
            }
            changed
        });
        let wait = if app.hub.feed_live.load(std::sync::atomic::Ordering::SeqCst) {
            FEED_SAFETY_POLL
        } else {
            interval(topic)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {
                // Let a burst of changes land, then read once.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn same(a: &Snapshot, b: &Snapshot) -> bool {
    a.upstream_ok == b.upstream_ok
        && a.gone == b.gone
        && a.html == b.html
        && (Arc::ptr_eq(&a.cells, &b.cells) || a.cells == b.cells)
        && match (&a.log, &b.log) {
            (None, None) => true,
            (Some(x), Some(y)) => x.generation == y.generation && x.lines == y.lines,
            _ => false,
        }
}

/// Log-following state of a task watcher.
#[derive(Default)]
struct LogFollower {
    started: bool,
    generation: u64,
    pos: u64,
    maker: Option<RowMaker>,
    tail: LogTail,
    finished: bool,
    reset_pending: bool,
}

async fn poll(
    app: &Arc<App>,
    topic: &Topic,
    viewer: &Viewer,
    prev: &Snapshot,
    log: &mut LogFollower,
) -> Result<Snapshot, UpstreamError> {
    // Ages are filled in by the browser (see `pages::age`).
    let now = 0;
    let mut snap = Snapshot {
        upstream_ok: true,
        ..Snapshot::default()
    };
    match topic {
        Topic::Overview => {
            let projects = crate::overview_data(app, viewer).await?;
            let builders = app.upstream.builders(viewer).await?;
            snap.html.insert(
                "events".into(),
                pages::overview_events(now, &projects).into_string(),
            );
            snap.html.insert(
                "builders-summary".into(),
                pages::builders_summary(&builders).into_string(),
            );
        }
        Topic::Builders => {
            let builders = app.upstream.builders(viewer).await?;
            snap.html.insert(
                "builders".into(),
                pages::builders_table(now, &builders).into_string(),
            );
        }
        Topic::Event(id) => {
            let d = app.upstream.event_all(id, viewer).await?;
            snap.html.insert(
                "event-card".into(),
                html_wrapped("event-card", pages::event_card(now, &d).into_string()),
            );
            let cells: BTreeMap<String, Cell> = crate::upstream::tasks_of(&d)
                .iter()
                .map(|t| (t.id.clone(), (t.state, pages::cell_title(t))))
                .collect();
            snap.cells = if *prev.cells == cells {
                prev.cells.clone()
            } else {
                Arc::new(cells)
            };
        }
        Topic::Task(id) => {
            let t = app.upstream.task(id, viewer).await?;
            let builders = if t.state == crate::upstream::TaskState::Waiting {
                app.upstream.builders(viewer).await.unwrap_or_default()
            } else {
                Vec::new()
            };
            snap.html.insert(
                "task-info".into(),
                pages::task_info(now, &t, &builders).into_string(),
            );
            follow_log(app, id, viewer, &t, log).await?;
            snap.log = Some(Arc::new(log.tail.clone()));
        }
    }
    Ok(snap)
}

fn html_wrapped(id: &str, inner: String) -> String {
    format!("<div id=\"{id}\" data-live=\"{id}\">{inner}</div>")
}

/// Read the log bytes appended since the last poll and turn them into rows.
async fn follow_log(
    app: &Arc<App>,
    id: &str,
    viewer: &Viewer,
    t: &crate::upstream::Task,
    log: &mut LogFollower,
) -> Result<(), UpstreamError> {
    let total = t.log_bytes.unwrap_or(0).max(0) as u64;
    let epoch_us = t.started.unwrap_or(t.created) * 1000;
    if log.started && total < log.pos {
        // The log was cleared by a rebuild: start over.
        log.generation += 1;
        log.started = false;
    }
    if !log.started {
        // Start at the unterminated last line (if any) of the first
        // `total` bytes so it is assembled with its colours; the complete
        // lines before it are what the page loads itself. The server
        // counts them from its index.
        let end = app.upstream.log(id, total, 1, viewer).await?;
        let skip_to = end.first_line.max(0) as u64;
        let at = app.upstream.log_from_line(id, skip_to, 1, viewer).await?;
        log.pos = (at.offset.max(0) as u64).min(total);
        log.maker = Some(RowMaker::new(skip_to, epoch_us));
        log.tail = LogTail {
            generation: log.generation,
            lines: skip_to,
            rows: VecDeque::new(),
        };
        log.started = true;
        log.finished = false;
    }
    let maker = log.maker.as_mut().expect("started");
    while log.pos < total {
        let range = app
            .upstream
            .log(id, log.pos, (1u64 << 20).min(total - log.pos), viewer)
            .await?;
        if range.records.is_empty() {
            break;
        }
        for rec in &range.records {
            for row in maker.feed(rec) {
                push_row(&mut log.tail, row);
            }
        }
        log.pos = range.next_offset.max(0) as u64;
    }
    if t.state.is_terminal() && log.pos >= total && !log.finished {
        if let Some(row) = maker.finish() {
            push_row(&mut log.tail, row);
        }
        log.finished = true;
    }
    if !t.state.is_terminal() {
        log.finished = false;
    }
    Ok(())
}

fn push_row(tail: &mut LogTail, row: Row) {
    if row.n <= tail.lines {
        return;
    }
    tail.lines = row.n;
    tail.rows.push_back(row);
    while tail.rows.len() > TAIL_ROWS {
        tail.rows.pop_front();
    }
}

/// What the browser asks for after connecting.
#[derive(Debug, Deserialize)]
struct Watch {
    watch: String,
    #[serde(default)]
    id: Option<String>,
    /// Log lines the page already has.
    #[serde(default)]
    lines: u64,
}

/// What a connection has sent so far (diff base).
#[derive(Default)]
struct Sent {
    upstream_ok: Option<bool>,
    html: BTreeMap<String, String>,
    cells: Arc<BTreeMap<String, Cell>>,
    generation: Option<u64>,
    lines: u64,
    gone: bool,
}

/// Serve one browser websocket.
pub async fn serve_socket(app: Arc<App>, viewer: Viewer, ws: Socket) {
    let (mut sink, mut stream) = ws.split();
    // The first message says what the page shows.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    let Ok(Some(Ok(msg))) = first else { return };
    let Ok(text) = msg.to_text() else { return };
    let Ok(w) = serde_json::from_str::<Watch>(text) else {
        let _ = sink
            .send(Message::text(
                r#"{"t":"error","error":"expected {\"watch\":...}"}"#,
            ))
            .await;
        return;
    };
    let topic = match (w.watch.as_str(), w.id) {
        ("overview", _) => Topic::Overview,
        ("builders", _) => Topic::Builders,
        ("event", Some(id)) if crate::upstream::is_hex_id(&id, 32) => Topic::Event(id),
        ("task", Some(id)) if crate::upstream::is_hex_id(&id, 64) => Topic::Task(id),
        _ => {
            let _ = sink
                .send(Message::text(r#"{"t":"error","error":"unknown topic"}"#))
                .await;
            return;
        }
    };
    let mut rx = app.hub.subscribe(&app, topic, viewer);
    let mut sent = Sent {
        lines: w.lines,
        ..Sent::default()
    };
    let _ = sink.send(Message::text(r#"{"t":"hello"}"#)).await;
    loop {
        let snap = rx.borrow_and_update().clone();
        for m in diff(&snap, &mut sent) {
            if sink.send(Message::text(m)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            incoming = stream.next() => match incoming {
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

/// Messages that bring a browser from `sent` to `snap`.
fn diff(snap: &Snapshot, sent: &mut Sent) -> Vec<String> {
    let mut out = Vec::new();
    if sent.upstream_ok != Some(snap.upstream_ok) {
        out.push(json!({"t": "upstream", "ok": snap.upstream_ok}).to_string());
        sent.upstream_ok = Some(snap.upstream_ok);
    }
    if snap.gone && !sent.gone {
        out.push(json!({"t": "gone"}).to_string());
        sent.gone = true;
    }
    for (id, html) in &snap.html {
        if sent.html.get(id) != Some(html) {
            out.push(json!({"t": "html", "id": id, "html": html}).to_string());
            sent.html.insert(id.clone(), html.clone());
        }
    }
    if !Arc::ptr_eq(&snap.cells, &sent.cells) {
        let changed: Vec<_> = snap
            .cells
            .iter()
            .filter(|(id, c)| sent.cells.get(*id) != Some(*c))
            .map(|(id, (state, title))| json!([id, state, title, pages::glyph(*state)]))
            .collect();
        if !changed.is_empty() {
            out.push(json!({"t": "cells", "cells": changed}).to_string());
        }
        sent.cells = snap.cells.clone();
    }
    if let Some(tail) = &snap.log {
        if sent.generation.is_some_and(|g| g != tail.generation) {
            out.push(json!({"t": "logreset"}).to_string());
            sent.lines = 0;
        }
        sent.generation = Some(tail.generation);
        if tail.lines > sent.lines {
            let rows: Vec<&Row> = tail.rows.iter().filter(|r| r.n > sent.lines).collect();
            if rows.is_empty() {
                out.push(json!({"t": "rows", "lines": tail.lines, "rows": []}).to_string());
            }
            for chunk in rows.chunks(ROWS_PER_MESSAGE) {
                out.push(json!({"t": "rows", "lines": tail.lines, "rows": chunk}).to_string());
            }
            sent.lines = tail.lines;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_gets_only_what_changed_and_a_new_one_gets_everything() {
        let mut cells = BTreeMap::new();
        cells.insert(
            "A".to_string(),
            (crate::upstream::TaskState::Waiting, "t".to_string()),
        );
        cells.insert(
            "B".to_string(),
            (crate::upstream::TaskState::Running, "t".to_string()),
        );
        let s1 = Snapshot {
            upstream_ok: true,
            cells: Arc::new(cells.clone()),
            ..Snapshot::default()
        };
        let mut sent = Sent::default();
        let m = diff(&s1, &mut sent);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[1].contains("\"A\"") && m[1].contains("\"B\""));
        cells.insert(
            "B".to_string(),
            (crate::upstream::TaskState::Success, "t".to_string()),
        );
        let s2 = Snapshot {
            upstream_ok: true,
            cells: Arc::new(cells),
            ..Snapshot::default()
        };
        let m = diff(&s2, &mut sent);
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("\"B\"") && !m[0].contains("\"A\""));
        assert!(diff(&s2, &mut sent).is_empty());
        let mut fresh = Sent::default();
        assert_eq!(diff(&s2, &mut fresh).len(), 2);
    }

    #[test]
    fn log_rows_after_what_the_page_has() {
        let mut tail = LogTail::default();
        for n in 1..=5 {
            push_row(
                &mut tail,
                Row {
                    n,
                    c: 1,
                    t: 0.0,
                    h: format!("l{n}"),
                },
            );
        }
        let snap = Snapshot {
            upstream_ok: true,
            log: Some(Arc::new(tail)),
            ..Snapshot::default()
        };
        let mut sent = Sent {
            lines: 3,
            upstream_ok: Some(true),
            ..Sent::default()
        };
        let m = diff(&snap, &mut sent);
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("l4") && m[0].contains("l5") && !m[0].contains("l3"));
    }
}
