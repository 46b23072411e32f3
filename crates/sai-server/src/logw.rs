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
//! bytes survive a crash of the server. When a write fails (a full disk),
//! nothing is dropped and no credit is returned for those bytes: the
//! builder stops sending once its window is spent, and the writer retries
//! about every second until the write succeeds; a task that ends while
//! its log is not stored is told so by [`LogWriter::finish_task`]. Commits
//! do not fsync (WAL, `synchronous=NORMAL`); within [`CHECKPOINT_EVERY`] of
//! a write the databases written are synced ([`EventDb::sync`]: a big WAL
//! is checkpointed and truncated, a small one fsynced), so logs survive power loss within about a second, and
//! a finished task's event folder is back to its compressed size. A task's
//! log stays in memory only while it is being written: one idle flush
//! interval after it is stored it is dropped, with the event database
//! handle it holds.

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
/// Longest time a written event database waits for its checkpoint.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// A failed write is retried this often (at least every flush interval).
const RETRY_WRITE: Duration = Duration::from_secs(1);

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
    Clear {
        db: Arc<EventDb>,
        task_id: String,
    },
    Flush(tokio::sync::oneshot::Sender<()>),
    Finish {
        db: Arc<EventDb>,
        task_id: String,
        ack: tokio::sync::oneshot::Sender<Result<(), Unstored>>,
    },
    NewAttempt {
        db: Arc<EventDb>,
        task_id: String,
    },
    Received {
        db: Arc<EventDb>,
        task_id: String,
        ack: tokio::sync::oneshot::Sender<Result<u64, Unstored>>,
    },
}

/// A task's log holds bytes that could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{bytes} bytes of its log could not be stored: {cause}")]
pub struct Unstored {
    /// Bytes received and not stored.
    pub bytes: u64,
    /// The last write error.
    pub cause: String,
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

    /// A task ended: write everything queued so far and seal its open log
    /// block; resolves when committed, or with `Err` when some of its log
    /// is still not stored (the writer keeps retrying it). Its database is
    /// checkpointed soon after.
    pub async fn finish_task(&self, db: Arc<EventDb>, task_id: String) -> Result<(), Unstored> {
        let (ack, rx) = tokio::sync::oneshot::channel();
        self.send(Cmd::Finish { db, task_id, ack });
        rx.await.unwrap_or(Err(Unstored {
            bytes: 0,
            cause: "the log writer is gone".into(),
        }))
    }

    /// A new attempt of the task starts: its count of builder log bytes
    /// ([`crate::logstore::TaskLog::received`]) starts over, after
    /// everything queued before.
    pub fn new_attempt(&self, db: Arc<EventDb>, task_id: String) {
        self.send(Cmd::NewAttempt { db, task_id });
    }

    /// The builder log bytes of the task's current attempt that are
    /// stored, after writing everything queued so far: where a builder
    /// that kept the task across a restart resends from. `Err` while some
    /// of them are not stored.
    pub async fn received(&self, db: Arc<EventDb>, task_id: String) -> Result<u64, Unstored> {
        let (ack, rx) = tokio::sync::oneshot::channel();
        self.send(Cmd::Received { db, task_id, ack });
        rx.await.unwrap_or(Err(Unstored {
            bytes: 0,
            cause: "the log writer is gone".into(),
        }))
    }

    /// Write everything queued so far; resolves when written or failed.
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
    /// Credit to return once the bytes pushed since the last commit are stored.
    credits: HashMap<ConnId, (UnboundedSender<Outgoing>, u64)>,
    /// Why the last write failed, while bytes are unstored.
    failed: Option<String>,
}

impl Writing {
    fn unstored(&self) -> Option<Unstored> {
        self.log.has_unstored().then(|| Unstored {
            bytes: (self.log.len() - self.announced).max(0) as u64,
            cause: self
                .failed
                .clone()
                .unwrap_or_else(|| "not written yet".into()),
        })
    }
}

/// The logs of one event database, written in one transaction.
type EventBatch<'a> = (Arc<EventDb>, Vec<(&'a String, &'a mut Writing)>);

#[derive(Default)]
struct Pending {
    tasks: HashMap<String, Writing>,
    bytes: usize,
    since: Option<Instant>,
    /// When to retry a failed write.
    retry_at: Option<Instant>,
    last_forget: Option<Instant>,
    /// Databases written since their last checkpoint, by event id.
    unsynced: HashMap<String, Arc<EventDb>>,
    /// When they are handed to the syncing thread.
    checkpoint_at: Option<Instant>,
    /// The syncing thread: fsyncs never hold up the writer.
    syncer: Option<Sender<Vec<Arc<EventDb>>>>,
}

impl Pending {
    fn flush(&mut self, feed: &ChangeFeed) {
        let mut by_event: HashMap<String, EventBatch<'_>> = HashMap::new();
        for (task, w) in self.tasks.iter_mut().filter(|(_, w)| w.log.is_dirty()) {
            by_event
                .entry(w.db.id.to_string())
                .or_insert_with(|| (w.db.clone(), Vec::new()))
                .1
                .push((task, w));
        }
        let mut written = Vec::new();
        let mut unstored = false;
        for (_, (db, mut writing)) in by_event {
            if let Err(e) = db.write_logs(writing.iter_mut().map(|(_, w)| &mut w.log)) {
                // Keep the bytes and their credit; retried at the next flush.
                tracing::error!(event = %db.id, cause = %e, "writing logs; will retry");
                for (_, w) in writing {
                    w.failed = Some(e.to_string());
                }
                unstored = true;
                continue;
            }
            written.push(db.clone());
            // One change per task: the byte range stored since the last one.
            for (task, w) in writing {
                w.failed = None;
                let end = w.log.len();
                if end > w.announced {
                    feed.publish(Change::LogAppended {
                        task: task.clone(),
                        offset: w.announced as u64,
                        len: (end - w.announced) as u64,
                    });
                    w.announced = end;
                }
                for (_, (tx, bytes)) in w.credits.drain() {
                    let _ = tx.send(Outgoing::Credit(bytes));
                }
            }
        }
        for db in &written {
            self.written(db);
        }
        self.bytes = 0;
        self.since = None;
        self.retry_at = unstored.then(|| Instant::now() + RETRY_WRITE);
    }

    fn written(&mut self, db: &Arc<EventDb>) {
        self.unsynced
            .entry(db.id.to_string())
            .or_insert_with(|| db.clone());
        self.checkpoint_at
            .get_or_insert_with(|| Instant::now() + CHECKPOINT_EVERY);
    }

    /// Seal a finished task's log (in memory or reloaded) and write it;
    /// `Err` while some of it is not stored (it stays here to be retried).
    fn finish(
        &mut self,
        feed: &ChangeFeed,
        db: Arc<EventDb>,
        task_id: &str,
    ) -> Result<(), Unstored> {
        self.flush(feed);
        if let Some(u) = self.tasks.get(task_id).and_then(Writing::unstored) {
            return Err(u);
        }
        let log = match self.tasks.remove(task_id) {
            Some(w) => Ok(w.log),
            None => db.resume_log(task_id),
        };
        // Every byte is stored as pieces by now; sealing only recompresses
        // them as one block, so a failure here loses nothing.
        let sealed = log.and_then(|mut log| {
            log.seal();
            if !log.is_dirty() {
                return Ok(false);
            }
            db.write_logs([&mut log]).map(|()| true)
        });
        match sealed {
            Ok(true) => self.written(&db),
            Ok(false) => {}
            Err(e) => tracing::error!(task = %task_id, cause = %e, "sealing log"),
        }
        Ok(())
    }

    /// The task's log being written, loaded from its database if needed.
    fn writing(&mut self, db: Arc<EventDb>, task_id: String) -> Option<&mut Writing> {
        match self.tasks.entry(task_id) {
            std::collections::hash_map::Entry::Occupied(o) => Some(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let log = match db.resume_log(v.key()) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(task = %v.key(), cause = %e, "reading log end");
                        return None;
                    }
                };
                let announced = log.len();
                Some(v.insert(Writing {
                    db,
                    log,
                    active: true,
                    announced,
                    credits: HashMap::new(),
                    failed: None,
                }))
            }
        }
    }

    /// Sync the databases written, if due.
    fn checkpoint_if_due(&mut self) {
        if self.checkpoint_at.is_none_or(|t| t > Instant::now()) {
            return;
        }
        self.checkpoint_at = None;
        let dbs: Vec<_> = self.unsynced.drain().map(|(_, db)| db).collect();
        if let Some(syncer) = &self.syncer {
            let _ = syncer.send(dbs);
        }
    }

    /// Forget logs nobody wrote to since the previous call, at most once
    /// per `every` so a slow writer is not reloaded at every flush.
    fn forget_idle(&mut self, every: Duration) {
        if self.last_forget.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_forget = Some(Instant::now());
        self.tasks
            .retain(|_, w| std::mem::take(&mut w.active) || w.log.has_unstored());
    }
}

/// How often a database whose WAL could not be truncated (readers or
/// writers were busy with it) is tried again, and how many times.
const SYNC_RETRY: Duration = Duration::from_millis(500);
const SYNC_TRIES: u32 = 20;

/// The sync thread: [`EventDb::sync`] each database sent, and again later
/// the ones whose WAL stayed big, so a finished log ends at its compressed
/// size even when nothing writes to its event any more.
fn sync_loop(to_sync: Receiver<Vec<Arc<EventDb>>>) {
    let mut again: Vec<(Arc<EventDb>, u32)> = Vec::new();
    loop {
        let wait = if again.is_empty() {
            Duration::from_secs(3600)
        } else {
            SYNC_RETRY
        };
        let sent = match to_sync.recv_timeout(wait) {
            Ok(dbs) => dbs,
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let retried = std::mem::take(&mut again);
        let sent = sent.into_iter().map(|db| (db, 0));
        for (db, tries) in retried.into_iter().chain(sent) {
            if again.iter().any(|(d, _)| Arc::ptr_eq(d, &db)) {
                continue;
            }
            match db.sync() {
                Ok(true) => {}
                Ok(false) if tries < SYNC_TRIES => again.push((db, tries + 1)),
                Ok(false) => {}
                Err(e) => tracing::warn!(event = %db.id, cause = %e, "syncing event database"),
            }
        }
    }
}

fn run(rx: Receiver<Cmd>, flush_every: Duration, feed: Arc<ChangeFeed>) {
    let (syncer, to_sync) = std::sync::mpsc::channel::<Vec<Arc<EventDb>>>();
    std::thread::Builder::new()
        .name("sai-log-sync".into())
        .spawn(move || sync_loop(to_sync))
        .expect("spawning log sync thread");
    let mut pending = Pending {
        syncer: Some(syncer),
        ..Pending::default()
    };
    let quiet = flush_every / 20;
    loop {
        let flush_in = match (pending.retry_at, pending.since) {
            (Some(r), _) => r.saturating_duration_since(Instant::now()),
            (None, Some(t)) => flush_every.saturating_sub(t.elapsed()).min(quiet),
            (None, None) if pending.tasks.is_empty() => Duration::from_secs(3600),
            (None, None) => flush_every,
        };
        let timeout = pending.checkpoint_at.map_or(flush_in, |t| {
            flush_in.min(t.saturating_duration_since(Instant::now()))
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
                let Some(w) = pending.writing(db, task_id) else {
                    continue;
                };
                w.log.push(channel, timestamp_us, &data);
                w.active = true;
                let len = data.len();
                if let Some((cid, tx)) = credit {
                    w.log.add_received(len as i64);
                    w.credits.entry(cid).or_insert((tx, 0)).1 += len as u64;
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
                if let Some(mut w) = pending.tasks.remove(&task_id) {
                    // Discarded on purpose: their sender may send again.
                    for (_, (tx, bytes)) in w.credits.drain() {
                        let _ = tx.send(Outgoing::Credit(bytes));
                    }
                }
                if let Err(e) = db.clear_task_output(&task_id) {
                    tracing::error!(task = %task_id, cause = %e, "clearing task output");
                }
            }
            Ok(Cmd::Flush(ack)) => {
                pending.flush(&feed);
                let _ = ack.send(());
            }
            Ok(Cmd::Finish { db, task_id, ack }) => {
                let _ = ack.send(pending.finish(&feed, db, &task_id));
            }
            Ok(Cmd::NewAttempt { db, task_id }) => {
                if let Some(w) = pending.writing(db, task_id) {
                    w.log.reset_received();
                    w.active = true;
                    pending.since.get_or_insert_with(Instant::now);
                }
            }
            Ok(Cmd::Received { db, task_id, ack }) => {
                pending.flush(&feed);
                let r = match pending.tasks.get(&task_id) {
                    Some(w) => match w.unstored() {
                        Some(u) => Err(u),
                        None => Ok(w.log.received().max(0) as u64),
                    },
                    None => db
                        .resume_log(&task_id)
                        .map(|l| l.received().max(0) as u64)
                        .map_err(|e| Unstored {
                            bytes: 0,
                            cause: e.to_string(),
                        }),
                };
                let _ = ack.send(r);
            }
            Err(RecvTimeoutError::Timeout) => {
                pending.flush(&feed);
                pending.forget_idle(flush_every);
            }
            Err(RecvTimeoutError::Disconnected) => {
                pending.flush(&feed);
                pending.checkpoint_at = Some(Instant::now());
                pending.checkpoint_if_due();
                return;
            }
        }
        pending.checkpoint_if_due();
    }
}
