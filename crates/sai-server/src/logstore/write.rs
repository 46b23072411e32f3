//! The appending side of a task's log: records packed into a block in
//! memory, stored as pieces at every flush, and sealed into one block.

use rusqlite::{Connection, Transaction, params};

use super::frame::{self, HEADER, RowReader};
use super::lines::count_newlines;
use super::read::len;
use super::schema::received;
use super::{BLOCK_BYTES, LogError, MAX_PIECES, PIECE_LEVEL, Result, SEALED_LEVEL};

/// A block being filled. Stored as one zstd frame of: record count (u32),
/// then per record its channel (u8), timestamp delta from the previous
/// record (i64) and length (u32), then the bytes of every record: headers
/// and text apart compress much better than interleaved.
#[derive(Debug, Default, Clone)]
struct Block {
    first_offset: i64,
    end_offset: i64,
    channels: i64,
    count: u32,
    last_ts: i64,
    heads: Vec<u8>,
    data: Vec<u8>,
    newlines: i64,
}

impl Block {
    fn starting_at(offset: i64) -> Block {
        Block {
            first_offset: offset,
            end_offset: offset,
            ..Block::default()
        }
    }

    fn push(&mut self, channel: u8, timestamp_us: i64, data: &[u8]) {
        self.heads.push(channel);
        self.heads
            .extend_from_slice(&timestamp_us.wrapping_sub(self.last_ts).to_le_bytes());
        self.heads
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.data.extend_from_slice(data);
        self.newlines += count_newlines(data);
        self.last_ts = timestamp_us;
        self.count += 1;
        self.channels |= 1i64 << (channel % 63);
        self.end_offset += data.len() as i64;
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Append the records of `other`, which starts where this block ends.
    fn append(&mut self, other: &Block) {
        let mut data = &other.data[..];
        let mut ts = 0i64;
        for h in other.heads.chunks_exact(HEADER) {
            ts = ts.wrapping_add(i64::from_le_bytes(h[1..9].try_into().expect("8 bytes")));
            let len = u32::from_le_bytes(h[9..13].try_into().expect("4 bytes")) as usize;
            let (d, rest) = data.split_at(len);
            self.push(h[0], ts, d);
            data = rest;
        }
    }

    fn raw_len(&self) -> usize {
        4 + self.heads.len() + self.data.len()
    }

    fn write(&self, tx: &Transaction<'_>, task_id: &str, sealed: bool) -> Result<()> {
        let level = if sealed { SEALED_LEVEL } else { PIECE_LEVEL };
        let count = self.count.to_le_bytes();
        let z = frame::compress(&[&count, &self.heads, &self.data], level, sealed)?;
        tx.prepare_cached(
            "INSERT INTO log_blocks(task_id, first_offset, end_offset, channels, raw_len, sealed, data,
                                    newlines, ends_line)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(task_id, first_offset) DO UPDATE SET
               end_offset = excluded.end_offset, channels = excluded.channels,
               raw_len = excluded.raw_len, sealed = excluded.sealed, data = excluded.data,
               newlines = excluded.newlines, ends_line = excluded.ends_line",
        )?
        .execute(params![
            task_id,
            self.first_offset,
            self.end_offset,
            self.channels,
            self.raw_len() as i64,
            sealed,
            z,
            self.newlines,
            self.data.last() == Some(&b'\n')
        ])?;
        Ok(())
    }
}

/// The appending side of one task's log: where its open block starts, how
/// much of it is stored as pieces, and the records not stored yet.
#[derive(Debug, Clone)]
pub struct TaskLog {
    task_id: String,
    /// First offset of the open block.
    open_first: i64,
    /// Raw bytes of the pieces stored for the open block.
    open_stored: usize,
    /// Pieces stored for the open block.
    open_pieces: usize,
    /// Records received since the last [`TaskLog::persist`].
    pending: Block,
    /// Seal the open block at the next persist.
    seal: bool,
    /// Log bytes received from the builder for the current attempt
    /// (server notices not counted), stored with the records in
    /// `log_received` so a builder resuming after a server restart resends
    /// from exactly there.
    received: i64,
    /// `received` changed since it was stored.
    received_dirty: bool,
}

impl TaskLog {
    pub(super) fn new(task_id: &str, end: i64) -> TaskLog {
        TaskLog {
            task_id: task_id.to_string(),
            open_first: end,
            open_stored: 0,
            open_pieces: 0,
            pending: Block::starting_at(end),
            seal: false,
            received: 0,
            received_dirty: false,
        }
    }

    /// Continue a task's log where the database says it ends, after the
    /// pieces of its open block if it has some.
    pub fn resume(conn: &Connection, task_id: &str) -> Result<TaskLog> {
        let end = len(conn, task_id)?;
        let (first, stored, pieces): (Option<i64>, i64, i64) = conn.query_row(
            "SELECT MIN(first_offset), COALESCE(SUM(raw_len), 0), COUNT(*) FROM log_blocks
             WHERE task_id = ?1 AND sealed = 0",
            [task_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut log = TaskLog::new(task_id, end);
        log.received = received(conn, task_id)?;
        if let Some(first) = first {
            log.open_first = first;
            log.open_stored = stored as usize;
            log.open_pieces = pieces as usize;
        }
        Ok(log)
    }

    /// Byte length of the log including what is not persisted yet.
    pub fn len(&self) -> i64 {
        self.pending.end_offset
    }

    /// Whether nothing was ever logged.
    pub fn is_empty(&self) -> bool {
        self.pending.end_offset == 0
    }

    /// Append a record in memory; returns its offset.
    pub fn push(&mut self, channel: u8, timestamp_us: i64, data: &[u8]) -> i64 {
        let offset = self.pending.end_offset;
        self.pending.push(channel, timestamp_us, data);
        if self.open_stored + self.pending.raw_len() >= BLOCK_BYTES {
            self.seal = true;
        }
        offset
    }

    /// Builder log bytes of the current attempt, stored or not.
    pub fn received(&self) -> i64 {
        self.received
    }

    /// `n` of the bytes pushed came from the builder.
    pub fn add_received(&mut self, n: i64) {
        self.received += n;
        self.received_dirty = true;
    }

    /// A new attempt starts: no builder bytes of it yet.
    pub fn reset_received(&mut self) {
        self.received = 0;
        self.received_dirty = true;
    }

    /// Whether bytes were pushed that no committed transaction holds yet.
    pub fn has_unstored(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether [`TaskLog::persist`] has anything to write.
    pub fn is_dirty(&self) -> bool {
        self.received_dirty || !self.pending.is_empty() || (self.seal && self.open_pieces > 0)
    }

    /// Whether the next [`TaskLog::persist`] seals a full block.
    pub fn wants_seal(&self) -> bool {
        self.seal
    }

    /// Seal the open block at the next persist (e.g. when the task ends) so
    /// it is stored compressed as one block.
    pub fn seal(&mut self) {
        self.seal = true;
    }

    /// Write what changed since the last call inside `tx`: the pending
    /// records as a piece, or the whole open block as a sealed block.
    pub fn persist(&mut self, tx: &Transaction<'_>) -> Result<()> {
        if std::mem::take(&mut self.received_dirty) {
            tx.prepare_cached(
                "INSERT INTO log_received(task_id, bytes) VALUES (?1, ?2)
                 ON CONFLICT(task_id) DO UPDATE SET bytes = excluded.bytes",
            )?
            .execute(params![self.task_id, self.received])?;
        }
        let seal = std::mem::take(&mut self.seal);
        let end = self.pending.end_offset;
        let merge = !seal && self.open_pieces + 1 > MAX_PIECES;
        if self.pending.is_empty() && (self.open_pieces == 0 || !(seal || merge)) {
            return Ok(());
        }
        if !seal && !merge {
            self.pending.write(tx, &self.task_id, false)?;
            self.open_stored += self.pending.raw_len();
            self.open_pieces += 1;
        } else {
            let block = self.take_open(tx)?;
            block.write(tx, &self.task_id, seal)?;
            if seal {
                self.open_first = block.end_offset;
                self.open_stored = 0;
                self.open_pieces = 0;
            } else {
                self.open_stored = block.raw_len();
                self.open_pieces = 1;
            }
        }
        self.pending = Block::starting_at(end);
        Ok(())
    }

    /// The stored pieces of the open block, deleted, plus the pending
    /// records, as one block.
    fn take_open(&mut self, tx: &Transaction<'_>) -> Result<Block> {
        if self.open_pieces == 0 {
            return Ok(std::mem::take(&mut self.pending));
        }
        let mut block = Block::starting_at(self.open_first);
        {
            let mut st = tx.prepare_cached(
                "SELECT first_offset, end_offset, data FROM log_blocks
                 WHERE task_id = ?1 AND first_offset >= ?2 AND sealed = 0 ORDER BY first_offset",
            )?;
            let mut rows = st.query(params![self.task_id, self.open_first])?;
            let (mut heads, mut data) = (Vec::new(), Vec::new());
            let mut ctx = frame::decoder()?;
            while let Some(r) = rows.next()? {
                let (first, end): (i64, i64) = (r.get(0)?, r.get(1)?);
                if first != block.end_offset {
                    return Err(LogError::Corrupt {
                        task: self.task_id.clone(),
                        offset: first,
                        what: "pieces of the open block are not contiguous",
                    });
                }
                heads.clear();
                let z = r.get_ref(2)?.as_blob()?;
                let mut piece =
                    RowReader::open(&mut ctx, &self.task_id, first, end, z, |h| heads.push(h))?;
                for h in &heads {
                    data.clear();
                    piece.read_to(h.end(), &mut data)?;
                    block.push(h.channel, h.timestamp_us, &data);
                }
            }
        }
        tx.prepare_cached(
            "DELETE FROM log_blocks WHERE task_id = ?1 AND first_offset >= ?2 AND sealed = 0",
        )?
        .execute(params![self.task_id, self.open_first])?;
        block.append(&std::mem::take(&mut self.pending));
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logstore::fixtures::{THREE_BLOCKS, append, db, fill, rows};
    use crate::logstore::{
        LINES_SCHEMA, RECEIVED_SCHEMA, SCHEMA, clear, read, read_bytes, stored_bytes,
    };

    #[test]
    fn builder_bytes_are_counted_per_attempt_with_the_records() {
        let mut c = db();
        let mut log = TaskLog::resume(&c, "t1").unwrap();
        log.push(3, 0, b"sai-server: notice\n");
        log.push(1, 1, b"from the builder\n");
        log.add_received(17);
        append(&mut c, &mut log);
        assert_eq!(received(&c, "t1").unwrap(), 17, "notices not counted");
        let mut again = TaskLog::resume(&c, "t1").unwrap();
        assert_eq!(again.received(), 17, "reloaded with the log");
        again.reset_received();
        append(&mut c, &mut again);
        assert_eq!(received(&c, "t1").unwrap(), 0, "a new attempt starts at 0");
        assert_eq!(len(&c, "t1").unwrap(), 36, "the log itself stays");
        let tx = c.transaction().unwrap();
        clear(&tx, "t1").unwrap();
        tx.commit().unwrap();
        assert_eq!(received(&c, "t1").unwrap(), 0);
    }

    #[test]
    fn flushes_store_pieces_merged_then_sealed_into_one_block() {
        let mut c = db();
        let mut log = TaskLog::resume(&c, "t1").unwrap();
        let mut all = Vec::new();
        for i in 0..MAX_PIECES {
            let line = format!("line {i}\n");
            log.push(1, i as i64, line.as_bytes());
            all.extend_from_slice(line.as_bytes());
            append(&mut c, &mut log);
            assert_eq!(rows(&c, "t1", false), i as i64 + 1, "one piece per flush");
            assert_eq!(read_bytes(&c, "t1", 0, i64::MAX).unwrap(), all, "durable");
        }
        log.push(2, 99, b"one more\n");
        all.extend_from_slice(b"one more\n");
        append(&mut c, &mut log);
        assert_eq!(rows(&c, "t1", false), 1, "pieces merged into one");
        // A writer after a restart continues after the stored pieces.
        let mut log = TaskLog::resume(&c, "t1").unwrap();
        assert_eq!(log.len(), all.len() as i64);
        log.push(1, 100, b"after restart\n");
        all.extend_from_slice(b"after restart\n");
        append(&mut c, &mut log);
        assert_eq!(rows(&c, "t1", false), 2);
        log.seal();
        append(&mut c, &mut log);
        assert_eq!((rows(&c, "t1", false), rows(&c, "t1", true)), (0, 1));
        assert_eq!(read_bytes(&c, "t1", 0, i64::MAX).unwrap(), all);
        let recs = read(&c, "t1", 0, i64::MAX).unwrap();
        assert_eq!(recs.len(), MAX_PIECES + 2);
        assert_eq!(
            (recs[MAX_PIECES].channel, recs[MAX_PIECES].timestamp_us),
            (2, 99)
        );
        // Sealing starts a new block at the end; a second seal is a no-op.
        log.seal();
        append(&mut c, &mut log);
        log.push(2, 0, b"x");
        append(&mut c, &mut log);
        assert_eq!((rows(&c, "t1", false), rows(&c, "t1", true)), (1, 1));
        assert_eq!(
            TaskLog::resume(&c, "t1").unwrap().len(),
            all.len() as i64 + 1
        );
    }

    #[test]
    fn full_blocks_are_sealed_near_block_bytes_and_tasks_stay_apart() {
        let mut c = db();
        let (all, _) = fill(&mut c, "t1", THREE_BLOCKS, 300);
        fill(&mut c, "t2", 300, 10);
        let sizes: Vec<i64> = c
            .prepare("SELECT raw_len FROM log_blocks WHERE task_id = 't1' AND sealed = 1")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        for s in sizes {
            let s = s as usize;
            assert!(
                (BLOCK_BYTES - 64 * 1024..BLOCK_BYTES + 64 * 1024).contains(&s),
                "{s}"
            );
        }
        let tx = c.transaction().unwrap();
        clear(&tx, "t1").unwrap();
        tx.commit().unwrap();
        assert_eq!(len(&c, "t1").unwrap(), 0);
        assert!(all.len() > 2 * BLOCK_BYTES);
        assert!(len(&c, "t2").unwrap() > 0);
    }

    /// The bench's 100 MB log: 1,000,000 lines of 100 bytes.
    fn build_line(i: u32) -> String {
        let line = format!(
            "[{:>6}.{:03}] CC src/module{:03}/file{:05}.c -> build/obj/file{:05}.o (-O2 -g -Wall)",
            i / 1000,
            i % 1000,
            i % 97,
            i,
            i
        );
        format!("{line:<99}\n")
    }

    #[test]
    fn a_100_mb_build_log_takes_at_most_3_mb_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event.sqlite3");
        let mut c = Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(LINES_SCHEMA).unwrap();
        c.execute_batch(RECEIVED_SCHEMA).unwrap();
        let mut log = TaskLog::resume(&c, "t1").unwrap();
        // 64 KiB records as a builder sends them, flushed every 256 KiB.
        let mut chunk = String::new();
        let mut since_flush = 0;
        for i in 0..1_000_000u32 {
            chunk.push_str(&build_line(i));
            if chunk.len() >= 64 * 1024 || i == 999_999 {
                log.push(1, i as i64, chunk.as_bytes());
                since_flush += chunk.len();
                chunk.clear();
                if since_flush >= 256 * 1024 {
                    append(&mut c, &mut log);
                    since_flush = 0;
                }
            }
        }
        log.seal();
        append(&mut c, &mut log);
        c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
        assert_eq!(len(&c, "t1").unwrap(), 100_000_000);
        let pages: (i64, i64, i64) = (
            c.pragma_query_value(None, "page_count", |r| r.get(0))
                .unwrap(),
            c.pragma_query_value(None, "freelist_count", |r| r.get(0))
                .unwrap(),
            stored_bytes(&c, None).unwrap(),
        );
        eprintln!("pages, free pages, blob bytes: {pages:?}");
        let tail = read_bytes(&c, "t1", 100_000_000 - 256 * 1024, 256 * 1024).unwrap();
        assert!(tail.ends_with(build_line(999_999).as_bytes()));
        assert!(tail.starts_with(&build_line(997_378).as_bytes()[56..]));
        drop(c);
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        eprintln!("100 MB log: {on_disk} bytes on disk");
        assert!(on_disk <= 3_000_000, "{on_disk} bytes on disk");
    }

    /// The bench's figure: the 100 MB log sent to the server's log writer
    /// in 64 KiB frames, as a builder sends it, into a real event database
    /// kept open; the task finished and its state stored; then the whole
    /// event folder (database, WAL, shared memory) once the log is durable:
    /// all of it in the database file, synced, the WAL empty.
    #[test]
    fn a_100_mb_build_log_event_folder_takes_at_most_3_mb_once_durable() {
        use crate::logw::{LogChunk, LogWriter};
        use sai_core::task::TaskState;
        use std::sync::Arc;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let id = crate::store::fixtures::event_id();
        let task = id.task([0xAA; 16]).to_string();
        let spec = crate::store::fixtures::spec("default");
        let ev = crate::store::fixtures::event();
        let created = store
            .create_event(ev, vec![(id.task([0xAA; 16]), spec, false)], false)
            .unwrap()
            .unwrap();
        let db = created.db.clone();
        let mut run = created.tasks[0].run.clone();
        run.state = TaskState::Running;
        db.update_task(&task, &run).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let feed = Arc::new(crate::changes::ChangeFeed::default());
        let writer = LogWriter::start(Duration::from_millis(100), feed);
        let frame = sai_core::protocol::MAX_FRAME_PAYLOAD;
        let mut pending = Vec::new();
        let mut frames = 0;
        let mut send = |data: Vec<u8>| {
            writer.record(LogChunk {
                db: db.clone(),
                task_id: task.clone(),
                channel: 1,
                timestamp_us: crate::store::now_ms() * 1000,
                data,
                credit: None,
            });
            frames += 1;
            // Like a builder's credit window: no more than 1 MiB ahead of
            // what is stored.
            if frames % 16 == 0 {
                rt.block_on(writer.flush());
            }
        };
        for i in 0..1_000_000u32 {
            pending.extend_from_slice(build_line(i).as_bytes());
            if pending.len() >= frame {
                let rest = pending.split_off(frame);
                send(std::mem::replace(&mut pending, rest));
            }
        }
        send(pending);
        // The task's final state is stored as well (by the scheduler, just
        // after the log is sealed; here just before, so that the log
        // writer's checkpoint is the last write).
        run.state = TaskState::Success;
        db.update_task(&task, &run).unwrap();
        rt.block_on(writer.finish_task(db.clone(), task.clone()))
            .unwrap();
        // How soon it is durable is the bench's (1.5 s); here, once it is.
        let folder = dir.path().join("events").join(id.as_str());
        let files = || {
            let mut files: Vec<(String, u64)> = std::fs::read_dir(&folder)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, e.metadata().unwrap().len())
                })
                .collect();
            files.sort();
            files
        };
        let durable = |files: &[(String, u64)]| {
            files
                .iter()
                .all(|(name, len)| !name.ends_with("-wal") || *len == 0)
        };
        let t0 = std::time::Instant::now();
        while !durable(&files()) && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let files = files();
        assert!(durable(&files), "not all in the database file: {files:?}");
        let total: u64 = files.iter().map(|(_, len)| len).sum();
        eprintln!("event folder of the 100 MB log: {total} bytes: {files:?}");
        assert!(total <= 3_000_000, "{total} bytes: {files:?}");
        assert_eq!(db.log_len(&task).unwrap(), 100_000_000);
        let tail = db
            .log_bytes(&task, 100_000_000 - 256 * 1024, 256 * 1024)
            .unwrap();
        assert!(tail.ends_with(build_line(999_999).as_bytes()));
        assert!(tail.starts_with(&build_line(997_378).as_bytes()[56..]));
    }
}
