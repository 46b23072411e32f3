//! Batched log writer.
//!
//! One thread receives log records from every builder connection, appends
//! each to its task's open log block ([`crate::logstore`]), and writes the
//! blocks that changed in one transaction per event database at least every
//! `log_flush_ms`, when 256 KiB are pending, or as soon as nothing more
//! arrived for a twentieth of `log_flush_ms` (so a line a step prints alone
//! is readable, and announced to followers, within a few ms, while a busy
//! stream is still written in large batches). Only after the commit is the
//! flow-control credit returned to the sending connection, so credited
//! bytes are durable. A task's log stays in memory only while it is being
//! written: one idle flush interval later it is dropped, with the event
//! database handle it holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::changes::{Change, ChangeFeed};
use crate::link::{ConnId, Outgoing};
use crate::logstore::TaskLog;
use crate::store::EventDb;

const FLUSH_BYTES: usize = 256 * 1024;

/// Log bytes of one task, as received.
pub struct LogChunk {
    /// The task's event database.
    pub db: Arc<EventDb>,
    /// The task.
    pub task_id: String,
    /// Log channel.
    pub channel: u8,
    /// When the builder read them (unix microseconds).
    pub timestamp_us: i64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Return this much credit to that connection once stored.
    pub credit: Option<(ConnId, UnboundedSender<Outgoing>)>,
}

enum Cmd {
    Record(LogChunk),
    Clear { db: Arc<EventDb>, task_id: String },
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Handle of the writer thread.
pub struct LogWriter {
    tx: std::sync::Mutex<Sender<Cmd>>,
}

impl LogWriter {
    /// Start the thread.
    pub fn start(flush_every: Duration, feed: Arc<ChangeFeed>) -> LogWriter {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sai-log-writer".into())
            .spawn(move || run(rx, flush_every, feed))
            .expect("spawning log writer thread");
        LogWriter {
            tx: std::sync::Mutex::new(tx),
        }
    }

    fn send(&self, cmd: Cmd) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if tx.send(cmd).is_err() {
            tracing::error!("log writer thread is gone");
        }
    }

    /// Queue log bytes; their credit is returned to the connection once stored.
    pub fn record(&self, chunk: LogChunk) {
        self.send(Cmd::Record(chunk));
    }

    /// Delete a task's logs and artifacts, after everything queued before.
    pub fn clear(&self, db: Arc<EventDb>, task_id: String) {
        self.send(Cmd::Clear { db, task_id });
    }

    /// Write everything queued so far; resolves when committed.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Cmd::Flush(tx));
        let _ = rx.await;
    }
}

/// A task's log being written, with its database.
struct Writing {
    db: Arc<EventDb>,
    log: TaskLog,
    /// Written to since the previous flush.
    active: bool,
    /// End of the bytes announced on the change feed.
    announced: i64,
}

/// The logs of one event database, written in one transaction.
type EventBatch<'a> = (Arc<EventDb>, Vec<(&'a String, &'a mut Writing)>);

#[derive(Default)]
struct Pending {
    tasks: HashMap<String, Writing>,
    credits: HashMap<ConnId, (UnboundedSender<Outgoing>, u64)>,
    bytes: usize,
    since: Option<Instant>,
    last_forget: Option<Instant>,
}

impl Pending {
    fn flush(&mut self, feed: &ChangeFeed) {
        let mut by_event: HashMap<String, EventBatch<'_>> = HashMap::new();
        for (task, w) in self.tasks.iter_mut() {
            by_event
                .entry(w.db.id.to_string())
                .or_insert_with(|| (w.db.clone(), Vec::new()))
                .1
                .push((task, w));
        }
        for (_, (db, mut writing)) in by_event {
            if let Err(e) = db.write_logs(writing.iter_mut().map(|(_, w)| &mut w.log)) {
                tracing::error!(event = %db.id, cause = %e, "writing logs");
                continue;
            }
            // One change per task: the byte range stored since the last one.
            for (task, w) in writing {
                let end = w.log.len();
                if end > w.announced {
                    feed.publish(Change::LogAppended {
                        task: task.clone(),
                        offset: w.announced as u64,
                        len: (end - w.announced) as u64,
                    });
                    w.announced = end;
                }
            }
        }
        for (_, (tx, bytes)) in self.credits.drain() {
            let _ = tx.send(Outgoing::Credit(bytes));
        }
        self.bytes = 0;
        self.since = None;
    }

    /// Forget logs nobody wrote to since the previous call, at most once
    /// per `every` so a slow writer is not reloaded at every flush.
    fn forget_idle(&mut self, every: Duration) {
        if self.last_forget.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_forget = Some(Instant::now());
        self.tasks.retain(|_, w| std::mem::take(&mut w.active));
    }
}

fn run(rx: Receiver<Cmd>, flush_every: Duration, feed: Arc<ChangeFeed>) {
    let mut pending = Pending::default();
    let quiet = flush_every / 20;
    loop {
        let timeout = pending
            .since
            .map(|t| flush_every.saturating_sub(t.elapsed()).min(quiet))
            .unwrap_or(if pending.tasks.is_empty() {
                Duration::from_secs(3600)
            } else {
                flush_every
            });
        match rx.recv_timeout(timeout) {
            Ok(Cmd::Record(LogChunk {
                db,
                task_id,
                channel,
                timestamp_us,
                data,
                credit,
            })) => {
                let w = match pending.tasks.entry(task_id) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let log = match db.resume_log(v.key()) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(task = %v.key(), cause = %e, "reading log end");
                                continue;
                            }
                        };
                        let announced = log.len();
                        v.insert(Writing {
                            db,
                            log,
                            active: true,
                            announced,
                        })
                    }
                };
                w.log.push(channel, timestamp_us, &data);
                w.active = true;
                let len = data.len();
                if let Some((cid, tx)) = credit {
                    pending.credits.entry(cid).or_insert((tx, 0)).1 += len as u64;
                }
                pending.bytes += len;
                pending.since.get_or_insert_with(Instant::now);
                if pending.bytes >= FLUSH_BYTES {
                    pending.flush(&feed);
                    pending.forget_idle(flush_every);
                }
            }
            Ok(Cmd::Clear { db, task_id }) => {
                pending.flush(&feed);
                pending.tasks.remove(&task_id);
                if let Err(e) = db.clear_task_output(&task_id) {
                    tracing::error!(task = %task_id, cause = %e, "clearing task output");
                }
            }
            Ok(Cmd::Flush(ack)) => {
                pending.flush(&feed);
                let _ = ack.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                pending.flush(&feed);
                pending.forget_idle(flush_every);
            }
            Err(RecvTimeoutError::Disconnected) => {
                pending.flush(&feed);
                return;
            }
        }
    }
}
