//! Batched log writer.
//!
//! One thread receives log records from every builder connection, assigns
//! each its byte offset in the task's log, and writes them in one
//! transaction per event database at least every `log_flush_ms` or when
//! 256 KiB are pending. Only after the commit is the flow-control credit
//! returned to the sending connection, so credited bytes are durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::changes::{Change, ChangeFeed};
use crate::link::{ConnId, Outgoing};
use crate::store::{EventDb, LogRecord};

const FLUSH_BYTES: usize = 256 * 1024;

enum Cmd {
    Record {
        db: Arc<EventDb>,
        task_id: String,
        channel: u8,
        timestamp_us: i64,
        data: Vec<u8>,
        credit: Option<(ConnId, UnboundedSender<Outgoing>)>,
    },
    Clear {
        db: Arc<EventDb>,
        task_id: String,
    },
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

    /// Queue log bytes; `credit` is returned to that connection once stored.
    pub fn record(
        &self,
        db: Arc<EventDb>,
        task_id: String,
        channel: u8,
        timestamp_us: i64,
        data: Vec<u8>,
        credit: Option<(ConnId, UnboundedSender<Outgoing>)>,
    ) {
        self.send(Cmd::Record {
            db,
            task_id,
            channel,
            timestamp_us,
            data,
            credit,
        });
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

/// Pending records of one event database.
type Batch = (Arc<EventDb>, Vec<(String, LogRecord)>);

#[derive(Default)]
struct Pending {
    by_event: HashMap<String, Batch>,
    credits: HashMap<ConnId, (UnboundedSender<Outgoing>, u64)>,
    bytes: usize,
    since: Option<Instant>,
}

impl Pending {
    fn flush(&mut self, feed: &ChangeFeed) {
        for (_, (db, recs)) in self.by_event.drain() {
            if let Err(e) = db.append_logs(&recs) {
                tracing::error!(event = %db.id, cause = %e, "writing logs");
                continue;
            }
            // One change per task: the byte range now stored.
            let mut ranges: HashMap<&str, (i64, i64)> = HashMap::new();
            for (task, rec) in &recs {
                let end = rec.offset + rec.data.len() as i64;
                let r = ranges.entry(task.as_str()).or_insert((rec.offset, end));
                r.0 = r.0.min(rec.offset);
                r.1 = r.1.max(end);
            }
            for (task, (start, end)) in ranges {
                feed.publish(Change::LogAppended {
                    task: task.to_string(),
                    offset: start as u64,
                    len: (end - start) as u64,
                });
            }
        }
        for (_, (tx, bytes)) in self.credits.drain() {
            let _ = tx.send(Outgoing::Credit(bytes));
        }
        self.bytes = 0;
        self.since = None;
    }
}

fn run(rx: Receiver<Cmd>, flush_every: Duration, feed: Arc<ChangeFeed>) {
    let mut pending = Pending::default();
    let mut offsets: HashMap<String, i64> = HashMap::new();
    loop {
        let timeout = pending
            .since
            .map(|t| flush_every.saturating_sub(t.elapsed()))
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(timeout) {
            Ok(Cmd::Record {
                db,
                task_id,
                channel,
                timestamp_us,
                data,
                credit,
            }) => {
                let off = match offsets.get_mut(&task_id) {
                    Some(o) => o,
                    None => {
                        let start = db.log_len(&task_id).unwrap_or(0);
                        offsets.entry(task_id.clone()).or_insert(start)
                    }
                };
                let len = data.len();
                let rec = LogRecord {
                    offset: *off,
                    channel,
                    timestamp_us,
                    data,
                };
                *off += len as i64;
                pending
                    .by_event
                    .entry(db.id.to_string())
                    .or_insert_with(|| (db.clone(), Vec::new()))
                    .1
                    .push((task_id, rec));
                if let Some((cid, tx)) = credit {
                    pending.credits.entry(cid).or_insert((tx, 0)).1 += len as u64;
                }
                pending.bytes += len;
                pending.since.get_or_insert_with(Instant::now);
                if pending.bytes >= FLUSH_BYTES {
                    pending.flush(&feed);
                }
            }
            Ok(Cmd::Clear { db, task_id }) => {
                pending.flush(&feed);
                if let Err(e) = db.clear_task_output(&task_id) {
                    tracing::error!(task = %task_id, cause = %e, "clearing task output");
                }
                offsets.remove(&task_id);
            }
            Ok(Cmd::Flush(ack)) => {
                pending.flush(&feed);
                let _ = ack.send(());
            }
            Err(RecvTimeoutError::Timeout) => pending.flush(&feed),
            Err(RecvTimeoutError::Disconnected) => {
                pending.flush(&feed);
                return;
            }
        }
    }
}
