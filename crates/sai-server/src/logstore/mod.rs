//! Task logs compressed at rest.
//!
//! A task's log is a sequence of records (channel, timestamp, bytes); each
//! record's byte offset is the sum of the lengths before it. Records are
//! packed into blocks of about [`BLOCK_BYTES`] raw bytes, each stored as one
//! zstd frame in a `log_blocks` row of the event database together with its
//! index entry: first and end byte offset and a bit per channel present.
//!
//! Big blocks compress well (a 100 MB build log of 1,000,000 lines takes
//! ~3 MB) but are too big to recompress at every flush. So the newest block
//! of a task is stored as *pieces*: every flush appends the records since
//! the previous one as a small unsealed row (fast zstd level), which is
//! durable at once and costs only the new bytes. When the pieces add up to
//! [`BLOCK_BYTES`], or the task ends, they are replaced in one transaction
//! by one sealed block compressed at [`SEALED_LEVEL`]; too many pieces of a
//! slow log are merged into one before that. Readers decompress only the
//! rows overlapping the range they ask for, pieces and blocks alike, each
//! as a stream only as far as the range and keeping only its bytes
//! (module `frame`), so a read costs memory for what it returns, never a
//! block-sized buffer.
//!
//! Stores written before blocks kept one uncompressed row per record in the
//! `logs` table; [`migrate_legacy`] packs those into blocks.
//!
//! Every row also records how many newlines its bytes hold and whether its
//! last byte is one ([`LINES_SCHEMA`], kept in a covering index), so the
//! line number at any byte offset, the start of any line and the number of
//! lines cost one pass over the task's index rows plus at most one block
//! decompressed, never a read of the whole log. Rows written before that
//! have no counts; the first reader counts them once and stores the result.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

#[cfg(test)]
mod alloc_probe;
mod frame;

use frame::{HEADER, RecordHead, RowReader};

/// Raw size at which the open block is sealed. Measured on the 100 MB
/// log of `benches/server.rs` (zstd CLI, independent blocks): 128 KiB
/// blocks at level 3 take 5.6 MB, 1 MiB 3.6 MB, 2 MiB 3.1 MB, 4 MiB 2.9 MB;
/// decompressing 4 MiB for a tail read takes a few milliseconds.
pub const BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// zstd level of sealed blocks (each compressed once; window and match
/// length in module `frame`).
pub const SEALED_LEVEL: i32 = 3;
/// zstd level of pieces (small, written at every flush).
const PIECE_LEVEL: i32 = 1;
/// Pieces of the open block beyond which they are merged into one.
const MAX_PIECES: usize = 64;

/// Schema of the block table, applied as an event database migration.
pub const SCHEMA: &str = "CREATE TABLE log_blocks(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        first_offset INTEGER NOT NULL,
        end_offset INTEGER NOT NULL,
        channels INTEGER NOT NULL,
        raw_len INTEGER NOT NULL,
        sealed INTEGER NOT NULL,
        data BLOB NOT NULL);
     CREATE UNIQUE INDEX log_blocks_task_first ON log_blocks(task_id, first_offset);
     CREATE INDEX log_blocks_task_end ON log_blocks(task_id, end_offset);";

/// Line counts of the rows of [`SCHEMA`], applied as a later migration:
/// newlines in the row's bytes and whether its last byte is a newline
/// (NULL in rows written before, filled by the first reader). The index
/// covers them so walking a task's counts never touches its blobs.
pub const LINES_SCHEMA: &str = "ALTER TABLE log_blocks ADD COLUMN newlines INTEGER;
     ALTER TABLE log_blocks ADD COLUMN ends_line INTEGER;
     CREATE INDEX log_blocks_task_lines
        ON log_blocks(task_id, first_offset, end_offset, newlines, ends_line);";

/// Errors of the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// sqlite failed.
    #[error("log store database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A column did not hold the type expected.
    #[error("log store column: {0}")]
    Column(#[from] rusqlite::types::FromSqlError),
    /// zstd failed to compress or decompress.
    #[error("log block compression: {0}")]
    Zstd(#[from] std::io::Error),
    /// A block does not decode to the records its index row promises.
    #[error("log block of task {task} at offset {offset} is corrupt: {what}")]
    Corrupt {
        /// Task id.
        task: String,
        /// First offset of the block.
        offset: i64,
        /// What did not match.
        what: &'static str,
    },
}

type Result<T> = std::result::Result<T, LogError>;

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Byte offset of `data` in the task's log.
    pub offset: i64,
    /// Channel (1 stdout, 2 stderr, ...).
    pub channel: u8,
    /// Unix microseconds.
    pub timestamp_us: i64,
    /// Raw bytes.
    pub data: Vec<u8>,
}

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

fn count_newlines(bytes: &[u8]) -> i64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as i64
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
    fn new(task_id: &str, end: i64) -> TaskLog {
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

/// Byte length of a task's stored log.
pub fn len(conn: &Connection, task_id: &str) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(end_offset), 0) FROM log_blocks WHERE task_id = ?1",
        [task_id],
        |r| r.get(0),
    )?)
}

/// Call `each` with the first and end offsets and the frame of every row
/// overlapping `[from, to)`, in order.
fn rows_overlapping(
    conn: &Connection,
    task_id: &str,
    from: i64,
    to: i64,
    mut each: impl FnMut(i64, i64, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut st = conn.prepare_cached(
        "SELECT first_offset, end_offset, data FROM log_blocks
         WHERE task_id = ?1 AND end_offset > ?2 AND first_offset < ?3 ORDER BY end_offset",
    )?;
    let mut rows = st.query(params![task_id, from, to])?;
    while let Some(r) = rows.next()? {
        each(r.get(0)?, r.get(1)?, r.get_ref(2)?.as_blob()?)?;
    }
    Ok(())
}

/// Records from byte `offset` on, until at least `max` bytes are returned
/// (whole records; the first is cut to start at `offset`). Only the rows
/// holding them are decompressed, each as far as the last record needed.
pub fn read(conn: &Connection, task_id: &str, offset: i64, max: i64) -> Result<Vec<LogRecord>> {
    // The records overlapping `[offset, to)` are the ones that reach `max`
    // (at least one, as when `max` is 0).
    let to = offset.saturating_add(max.max(1));
    let mut out = Vec::new();
    let mut heads: Vec<RecordHead> = Vec::new();
    let mut ctx = frame::decoder()?;
    rows_overlapping(conn, task_id, offset, to, |first, end, z| {
        heads.clear();
        let mut row = RowReader::open(&mut ctx, task_id, first, end, z, |h| {
            if h.len > 0 && h.end() > offset && h.offset < to {
                heads.push(h);
            }
        })?;
        for h in &heads {
            let start = h.offset.max(offset);
            row.skip_to(start)?;
            let mut data = Vec::with_capacity((h.end() - start) as usize);
            row.read_to(h.end(), &mut data)?;
            out.push(LogRecord {
                offset: start,
                channel: h.channel,
                timestamp_us: h.timestamp_us,
                data,
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// Exactly the log bytes `[offset, offset + len)` (fewer at the end of the
/// log), all channels interleaved as written. Only those bytes are copied
/// out of the rows holding them.
pub fn read_bytes(conn: &Connection, task_id: &str, offset: i64, len: i64) -> Result<Vec<u8>> {
    let end = offset.saturating_add(len);
    let mut out = Vec::new();
    let mut ctx = frame::decoder()?;
    rows_overlapping(conn, task_id, offset, end, |first, row_end, z| {
        let mut row = RowReader::open(&mut ctx, task_id, first, row_end, z, |_| {})?;
        row.skip_to(offset)?;
        row.read_to(end, &mut out)
    })?;
    Ok(out)
}

/// Channels present in `[offset, offset + len)`, as a bit per channel, from
/// the index alone.
pub fn channels(conn: &Connection, task_id: &str, offset: i64, len: i64) -> Result<i64> {
    let mut st = conn.prepare_cached(
        "SELECT channels FROM log_blocks WHERE task_id = ?1 AND end_offset > ?2 AND first_offset < ?3",
    )?;
    let mut bits = 0;
    let mut rows = st.query(params![task_id, offset, offset.saturating_add(len)])?;
    while let Some(r) = rows.next()? {
        bits |= r.get::<_, i64>(0)?;
    }
    Ok(bits)
}

/// Line counts of one row of a task's log.
#[derive(Debug, Clone, Copy)]
struct RowLines {
    first: i64,
    end: i64,
    newlines: i64,
    ends_line: bool,
}

/// Pass the text of `row` up to log offset `to` to `seen`, a piece at a
/// time, until it returns false; the row is decompressed only that far.
fn scan_row(
    conn: &Connection,
    task_id: &str,
    row: &RowLines,
    to: i64,
    seen: impl FnMut(&[u8]) -> bool,
) -> Result<()> {
    let mut st = conn
        .prepare_cached("SELECT data FROM log_blocks WHERE task_id = ?1 AND first_offset = ?2")?;
    let mut rows = st.query(params![task_id, row.first])?;
    let Some(r) = rows.next()? else {
        return Err(LogError::Corrupt {
            task: task_id.to_string(),
            offset: row.first,
            what: "indexed row vanished",
        });
    };
    let z = r.get_ref(0)?.as_blob()?;
    let mut ctx = frame::decoder()?;
    RowReader::open(&mut ctx, task_id, row.first, row.end, z, |_| {})?.scan(to, seen)
}

/// The line counts of a task's rows in offset order, from the covering
/// index. Rows stored before counts were kept are counted once and their
/// counts stored (a failure to store them, e.g. on a full disk, only means
/// they are counted again next time).
fn row_lines(conn: &Connection, task_id: &str) -> Result<Vec<RowLines>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT first_offset, end_offset, newlines, ends_line FROM log_blocks
             WHERE task_id = ?1 ORDER BY first_offset",
        )?;
        let mut rows = st.query([task_id])?;
        while let Some(r) = rows.next()? {
            let (first, end): (i64, i64) = (r.get(0)?, r.get(1)?);
            let counts: (Option<i64>, Option<bool>) = (r.get(2)?, r.get(3)?);
            if counts.0.is_none() || counts.1.is_none() {
                missing.push(out.len());
            }
            out.push(RowLines {
                first,
                end,
                newlines: counts.0.unwrap_or(0),
                ends_line: counts.1.unwrap_or(false),
            });
        }
    }
    for i in missing {
        let (mut newlines, mut last) = (0, None);
        scan_row(conn, task_id, &out[i], out[i].end, |text| {
            newlines += count_newlines(text);
            last = text.last().copied().or(last);
            true
        })?;
        let row = &mut out[i];
        row.newlines = newlines;
        row.ends_line = last == Some(b'\n');
        let stored = conn
            .prepare_cached(
                "UPDATE log_blocks SET newlines = ?3, ends_line = ?4
                 WHERE task_id = ?1 AND first_offset = ?2",
            )
            .and_then(|mut st| {
                st.execute(params![task_id, row.first, row.newlines, row.ends_line])
            });
        if let Err(e) = stored {
            tracing::warn!(
                task = task_id,
                offset = row.first,
                "storing a log row's line count: {e}"
            );
        }
    }
    Ok(out)
}

/// Where a read of a log starts: a byte offset, or the start of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStart {
    /// This byte offset.
    Offset(i64),
    /// The first byte of this 0-based line (the end of the log past its
    /// last line).
    Line(i64),
}

/// Line numbers around a position in a task's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePosition {
    /// The byte offset.
    pub offset: i64,
    /// Newlines before `offset`: the 0-based number of the line holding it.
    pub line: i64,
    /// Newlines in the whole stored log.
    pub newlines: i64,
    /// Lines in the whole stored log, counting an unterminated last one.
    pub lines: i64,
}

/// Locate `start` in a task's log by its line counts: one pass over the
/// task's index rows and at most one row decompressed, whatever the size
/// of the log.
pub fn locate(conn: &Connection, task_id: &str, start: LogStart) -> Result<LinePosition> {
    let rows = row_lines(conn, task_id)?;
    let newlines: i64 = rows.iter().map(|r| r.newlines).sum();
    let partial = rows
        .iter()
        .rev()
        .find(|r| r.end > r.first)
        .is_some_and(|r| !r.ends_line);
    let total = rows.iter().map(|r| r.end).max().unwrap_or(0);
    let (offset, line) = match start {
        LogStart::Offset(offset) => {
            let offset = offset.clamp(0, total);
            let mut line = 0;
            for r in &rows {
                if r.end <= offset {
                    line += r.newlines;
                    continue;
                }
                if r.first < offset {
                    scan_row(conn, task_id, r, offset, |text| {
                        line += count_newlines(text);
                        true
                    })?;
                }
                break;
            }
            (offset, line)
        }
        LogStart::Line(line) if line <= 0 => (0, 0),
        LogStart::Line(line) if line > newlines => (total, newlines),
        LogStart::Line(line) => {
            let mut seen = 0;
            let mut offset = total;
            for r in &rows {
                if seen + r.newlines >= line {
                    // The start of the line is just past this row's
                    // `want`th newline.
                    let mut want = line - seen;
                    let (mut at, mut found) = (r.first, None);
                    scan_row(conn, task_id, r, r.end, |text| {
                        for (i, _) in text.iter().enumerate().filter(|(_, b)| **b == b'\n') {
                            want -= 1;
                            if want == 0 {
                                found = Some(at + i as i64 + 1);
                                return false;
                            }
                        }
                        at += text.len() as i64;
                        true
                    })?;
                    offset = found.ok_or_else(|| LogError::Corrupt {
                        task: task_id.to_string(),
                        offset: r.first,
                        what: "fewer newlines than its line count says",
                    })?;
                    break;
                }
                seen += r.newlines;
            }
            (offset, line)
        }
    };
    Ok(LinePosition {
        offset,
        line,
        newlines,
        lines: newlines + i64::from(partial),
    })
}

/// Schema of the builder byte counts ([`TaskLog::received`]), applied as
/// an event database migration.
pub const RECEIVED_SCHEMA: &str =
    "CREATE TABLE log_received(task_id TEXT PRIMARY KEY, bytes INTEGER NOT NULL);";

/// Stored builder log bytes of a task's current attempt.
pub fn received(conn: &Connection, task_id: &str) -> Result<i64> {
    Ok(conn
        .query_row(
            "SELECT bytes FROM log_received WHERE task_id = ?1",
            [task_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Remove a task's log (rebuild).
pub fn clear(tx: &Transaction<'_>, task_id: &str) -> Result<()> {
    tx.execute("DELETE FROM log_blocks WHERE task_id = ?1", [task_id])?;
    tx.execute("DELETE FROM log_received WHERE task_id = ?1", [task_id])?;
    Ok(())
}

/// Compressed bytes of one task's log, or of every log in this database
/// (what retention and disk reports count).
pub fn stored_bytes(conn: &Connection, task_id: Option<&str>) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(length(data)), 0) FROM log_blocks WHERE ?1 IS NULL OR task_id = ?1",
        [task_id],
        |r| r.get(0),
    )?)
}

/// Pack the uncompressed `logs` rows of older stores into sealed blocks and
/// delete them, in one transaction. Returns the number of tasks migrated.
pub fn migrate_legacy(conn: &mut Connection) -> Result<usize> {
    let has_legacy: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'logs'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !has_legacy
        || conn
            .query_row("SELECT 1 FROM logs LIMIT 1", [], |_| Ok(()))
            .optional()?
            .is_none()
    {
        return Ok(0);
    }
    let tx = conn.transaction()?;
    let tasks: Vec<String> = tx
        .prepare("SELECT DISTINCT task_id FROM logs")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for task in &tasks {
        clear(&tx, task)?;
        let mut log = TaskLog::new(task, 0);
        {
            let mut st = tx.prepare(
                "SELECT offset, channel, timestamp_us, data FROM logs WHERE task_id = ?1 ORDER BY offset",
            )?;
            let mut rows = st.query([task])?;
            while let Some(r) = rows.next()? {
                let offset: i64 = r.get(0)?;
                let data = r.get_ref(3)?.as_blob()?;
                // Old rows are contiguous; a gap or overlap would shift every
                // later offset, so refuse rather than silently reflow.
                if offset != log.len() {
                    return Err(LogError::Corrupt {
                        task: task.clone(),
                        offset,
                        what: "legacy log rows are not contiguous",
                    });
                }
                log.push(r.get::<_, i64>(1)? as u8, r.get(2)?, data);
                if log.wants_seal() {
                    log.persist(&tx)?;
                }
            }
        }
        log.seal();
        log.persist(&tx)?;
    }
    tx.execute("DELETE FROM logs", [])?;
    tx.commit()?;
    Ok(tasks.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sai_testkit::sqlite::count;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(LINES_SCHEMA).unwrap();
        c.execute_batch(RECEIVED_SCHEMA).unwrap();
        c
    }

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

    fn append(conn: &mut Connection, log: &mut TaskLog) {
        let tx = conn.transaction().unwrap();
        log.persist(&tx).unwrap();
        tx.commit().unwrap();
    }

    fn rows(c: &Connection, task: &str, sealed: bool) -> i64 {
        c.query_row(
            "SELECT COUNT(*) FROM log_blocks WHERE task_id = ?1 AND sealed = ?2",
            params![task, sealed],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Lines of ~100 bytes on alternating channels, persisted every
    /// `every` lines like the writer's flushes.
    fn fill(
        conn: &mut Connection,
        task: &str,
        lines: usize,
        every: usize,
    ) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
        let mut log = TaskLog::resume(conn, task).unwrap();
        let mut all = Vec::new();
        let mut recs = Vec::new();
        for i in 0..lines {
            let ch = if i % 7 == 0 { 2 } else { 1 };
            let line = format!(
                "{i:08} {ch} the quick brown fox jumps over the lazy dog {} and then some more text {}\n",
                i * 31 % 997,
                i % 13
            )
            .into_bytes();
            assert_eq!(log.push(ch, i as i64, &line), all.len() as i64);
            all.extend_from_slice(&line);
            recs.push((ch, line));
            if i % every == 0 || log.wants_seal() {
                append(conn, &mut log);
            }
        }
        append(conn, &mut log);
        (all, recs)
    }

    /// Lines for three blocks and a bit.
    const THREE_BLOCKS: usize = 3 * BLOCK_BYTES / 100 + 5000;

    #[test]
    fn reads_back_byte_identical_across_blocks_and_channels() {
        let mut c = db();
        let (all, recs) = fill(&mut c, "t1", THREE_BLOCKS, 2000);
        assert!(rows(&c, "t1", true) >= 3, "sealed blocks");
        assert!(rows(&c, "t1", false) >= 1, "pieces of the open block");
        assert_eq!(len(&c, "t1").unwrap(), all.len() as i64);
        assert_eq!(read_bytes(&c, "t1", 0, i64::MAX).unwrap(), all);
        let back = read(&c, "t1", 0, i64::MAX).unwrap();
        assert_eq!(back.len(), recs.len());
        for (i, (r, (ch, line))) in back.iter().zip(&recs).enumerate() {
            assert_eq!((r.channel, &r.data, r.timestamp_us), (*ch, line, i as i64));
        }
        assert_eq!(channels(&c, "t1", 0, i64::MAX).unwrap(), 0b110);
        let stored = stored_bytes(&c, None).unwrap();
        assert_eq!(stored, stored_bytes(&c, Some("t1")).unwrap());
        assert_eq!(stored_bytes(&c, Some("t2")).unwrap(), 0);
        assert!(stored * 10 < all.len() as i64, "{stored} of {}", all.len());
    }

    #[test]
    fn range_starting_and_ending_mid_block_and_mid_record() {
        let mut c = db();
        let (all, _) = fill(&mut c, "t1", THREE_BLOCKS, 700);
        let block = BLOCK_BYTES as i64;
        let mid = block / 2 + 17;
        for (a, n) in [
            (mid, block),                                // crosses one boundary
            (mid, 2 * block + 5),                        // spans a whole block
            (5, 3),                                      // inside one record
            (all.len() as i64 - 256 * 1024, 256 * 1024), // the tail, in pieces
            (all.len() as i64 - 10, 100),                // past the end
        ] {
            let want = &all[a as usize..((a + n) as usize).min(all.len())];
            assert_eq!(read_bytes(&c, "t1", a, n).unwrap(), want, "range {a}+{n}");
            let recs = read(&c, "t1", a, n).unwrap();
            let got: Vec<u8> = recs.iter().flat_map(|r| r.data.clone()).collect();
            assert!(got.starts_with(want), "records from {a}");
            assert_eq!(recs[0].offset, a);
        }
        assert!(
            read_bytes(&c, "t1", all.len() as i64, 10)
                .unwrap()
                .is_empty()
        );
    }

    /// First and end offsets of a task's sealed blocks, in order.
    fn sealed_blocks(c: &Connection, task: &str) -> Vec<(i64, i64)> {
        c.prepare(
            "SELECT first_offset, end_offset FROM log_blocks
             WHERE task_id = ?1 AND sealed = 1 ORDER BY first_offset",
        )
        .unwrap()
        .query_map([task], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    /// Check `got`, records read from `a` for at least `n` bytes, against
    /// the records written (`recs`, of `fill`): the first cut at `a`, the
    /// others whole, their channels and timestamps as written, and just
    /// enough of them to reach `n` bytes.
    fn check_records(got: &[LogRecord], recs: &[(u8, Vec<u8>)], a: i64, n: i64) {
        let mut starts = Vec::with_capacity(recs.len());
        let mut off = 0i64;
        for (_, line) in recs {
            starts.push(off);
            off += line.len() as i64;
        }
        let mut expect = a;
        for r in got {
            assert_eq!(r.offset, expect, "records from {a} are contiguous");
            let i = starts.partition_point(|&s| s <= r.offset) - 1;
            let (ch, line) = &recs[i];
            assert_eq!(
                (r.channel, r.timestamp_us, &r.data[..]),
                (*ch, i as i64, &line[(r.offset - starts[i]) as usize..]),
                "record {i} read from {a}"
            );
            expect = r.offset + r.data.len() as i64;
        }
        let read = expect - a;
        let last = got.last().map_or(0, |r| r.data.len() as i64);
        assert!(
            read >= n.max(1).min(off - a) && read - last < n.max(1),
            "{read} bytes of records for {a}+{n}"
        );
    }

    #[test]
    fn streamed_reads_match_the_plain_bytes_at_block_edges_and_inside_blocks() {
        let mut c = db();
        let (all, recs) = fill(&mut c, "t1", THREE_BLOCKS, 700);
        let blocks = sealed_blocks(&c, "t1");
        assert_eq!(blocks.len(), 3, "{blocks:?}");
        let [b0, b1, b2] = [blocks[0], blocks[1], blocks[2]];
        assert_eq!((b0.1, b1.1), (b1.0, b2.0), "contiguous");
        let total = all.len() as i64;
        let mut ranges = vec![
            (b1.0 + 1000, 5000),            // starts and ends inside one block
            (b1.0 + 17, b1.1 - b1.0 - 40),  // nearly all of it, no edge
            (b1.0, 1),                      // the first byte of a block
            (b1.1 - 1, 1),                  // the last byte of a block
            (b1.1 - 1, 2),                  // the last of one and first of the next
            (b1.0, b1.1 - b1.0),            // exactly one block
            (b0.0 + 5, b2.1 - b0.0 - 10),   // three blocks, cut at both ends
            (b0.0 + 50, b2.0 - b0.0 + 150), // mid-block to mid-block over a whole one
            (b2.1 - 3, 10),                 // the last sealed block into the pieces
            (b2.1, total - b2.1),           // the pieces of the open block
            (total - 1, 1),                 // the last byte of the log
        ];
        // Empty ranges, at edges and inside blocks.
        ranges.extend([0, b1.0, b1.0 + 500, b1.1 - 1, b2.1, total].map(|a| (a, 0)));
        for (a, n) in ranges {
            let want = &all[a as usize..(a + n) as usize];
            assert_eq!(read_bytes(&c, "t1", a, n).unwrap(), want, "bytes {a}+{n}");
            check_records(&read(&c, "t1", a, n).unwrap(), &recs, a, n);
        }
        assert!(read(&c, "t1", total, 10).unwrap().is_empty());
        assert!(read_bytes(&c, "t1", total + 5, 10).unwrap().is_empty());
    }

    #[test]
    fn reading_a_range_allocates_for_what_it_reads_not_for_its_block() {
        let mut c = db();
        let (all, recs) = fill(&mut c, "t1", THREE_BLOCKS, 700);
        let (first, end) = sealed_blocks(&c, "t1")[1];
        let at = end - 1024;
        let (bytes, used) = alloc_probe::measure(|| read_bytes(&c, "t1", at, 1024).unwrap());
        assert_eq!(bytes, &all[at as usize..end as usize]);
        assert!(
            used.largest <= 32 * 1024,
            "the last KiB of a block: {used:?}"
        );
        assert!(used.peak < 128 * 1024, "the last KiB of a block: {used:?}");
        let (got, used) = alloc_probe::measure(|| read(&c, "t1", at, 1024).unwrap());
        check_records(&got, &recs, at, 1024);
        assert!(used.peak < 128 * 1024, "its records: {used:?}");
        let (p, used) = alloc_probe::measure(|| locate(&c, "t1", LogStart::Offset(at)).unwrap());
        assert_eq!(p.line, line_at(&all, at as usize));
        assert!(used.peak < 128 * 1024, "its line number: {used:?}");
        // zstd's own buffers (taken with malloc, not seen above): the
        // decoder context that read to the end of the block holds one
        // window, below the server's mmap threshold (1 MiB), where a 2 MiB
        // window would be mapped, faulted in and unmapped at every read.
        let z: Vec<u8> = c
            .query_row(
                "SELECT data FROM log_blocks WHERE task_id = 't1' AND first_offset = ?1",
                [first],
                |r| r.get(0),
            )
            .unwrap();
        let mut ctx = frame::decoder().unwrap();
        let mut row = RowReader::open(&mut ctx, "t1", first, end, &z, |_| {}).unwrap();
        row.skip_to(at).unwrap();
        let mut tail = Vec::new();
        row.read_to(end, &mut tail).unwrap();
        drop(row);
        assert_eq!(tail, &all[at as usize..end as usize]);
        assert!(ctx.sizeof() < 1 << 20, "decoder: {} bytes", ctx.sizeof());
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

    fn line_at(all: &[u8], offset: usize) -> i64 {
        sai_testkit::text::line_of(all, offset) as i64
    }

    fn start_of(all: &[u8], line: usize) -> i64 {
        sai_testkit::text::start_of_line(all, line) as i64
    }

    #[test]
    fn line_numbers_come_from_the_index_of_rows_not_from_the_log() {
        let mut c = db();
        let (mut all, _) = fill(&mut c, "t1", THREE_BLOCKS, 700);
        // An unterminated last line on another channel, in a piece.
        let mut log = TaskLog::resume(&c, "t1").unwrap();
        log.push(3, 0, b"no newline yet");
        all.extend_from_slice(b"no newline yet");
        append(&mut c, &mut log);
        assert!(rows(&c, "t1", true) >= 3 && rows(&c, "t1", false) >= 1);
        let newlines = line_at(&all, all.len());
        let total = all.len() as i64;
        let check = |c: &Connection| {
            let block = BLOCK_BYTES;
            for off in [
                0,
                1,
                5000,
                block - 1,
                block,
                block + 1,
                2 * block + 77,
                all.len() - 3,
                all.len(),
            ] {
                let p = locate(c, "t1", LogStart::Offset(off as i64)).unwrap();
                assert_eq!(p.line, line_at(&all, off), "line at byte {off}");
                assert_eq!(
                    (p.offset, p.newlines, p.lines),
                    (off as i64, newlines, newlines + 1)
                );
            }
            for line in [
                0,
                1,
                41_000,
                41_943,
                41_944,
                100_000,
                newlines as usize,
                newlines as usize + 5,
            ] {
                let p = locate(c, "t1", LogStart::Line(line as i64)).unwrap();
                assert_eq!(p.offset, start_of(&all, line), "start of line {line}");
                assert_eq!(p.line, (line as i64).min(newlines));
            }
        };
        check(&c);
        // A store written before line counts: counted once, then remembered.
        c.execute(
            "UPDATE log_blocks SET newlines = NULL, ends_line = NULL",
            [],
        )
        .unwrap();
        check(&c);
        let unknown = count(
            &c,
            "SELECT COUNT(*) FROM log_blocks WHERE newlines IS NULL OR ends_line IS NULL",
        );
        assert_eq!(unknown, 0, "counts stored by the first reader");
        // The counts come from the covering index: with every blob before
        // the one holding the last newline destroyed, the tail's line
        // numbers are still exact.
        let plan: String = c
            .query_row(
                "EXPLAIN QUERY PLAN SELECT first_offset, end_offset, newlines, ends_line FROM log_blocks
                 WHERE task_id = 't1' ORDER BY first_offset",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(
            plan.contains("COVERING INDEX log_blocks_task_lines"),
            "{plan}"
        );
        let destroyed = c
            .execute(
                "UPDATE log_blocks SET data = x'00' WHERE end_offset < ?1",
                [total - 14],
            )
            .unwrap();
        assert!(destroyed >= 3, "{destroyed}");
        let tail = total - 7;
        let p = locate(&c, "t1", LogStart::Offset(tail)).unwrap();
        assert_eq!(
            (p.line, p.lines),
            (line_at(&all, tail as usize), newlines + 1)
        );
        let p = locate(&c, "t1", LogStart::Line(newlines)).unwrap();
        assert_eq!(p.offset, total - 14, "the unterminated last line");
        assert!(
            read_bytes(&c, "t1", 0, 10).is_err(),
            "the early blobs are gone"
        );
        assert_eq!(
            locate(&c, "t2", LogStart::Line(3)).unwrap(),
            LinePosition {
                offset: 0,
                line: 0,
                newlines: 0,
                lines: 0
            }
        );
    }

    #[test]
    fn corrupt_block_is_an_error_naming_task_and_offset() {
        let mut c = db();
        fill(&mut c, "t1", 10, 1000);
        c.execute("UPDATE log_blocks SET end_offset = end_offset + 1", [])
            .unwrap();
        let e = read_bytes(&c, "t1", 0, 10).unwrap_err().to_string();
        assert!(e.contains("t1") && e.contains("offset 0"), "{e}");
    }

    #[test]
    fn legacy_rows_are_migrated_into_blocks() {
        let mut c = db();
        c.execute_batch(
            "CREATE TABLE logs(id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL,
              offset INTEGER NOT NULL, channel INTEGER NOT NULL, timestamp_us INTEGER NOT NULL,
              data BLOB NOT NULL);",
        )
        .unwrap();
        let mut all = Vec::new();
        for i in 0..3000i64 {
            let line = format!("legacy line {i} of an old store, channel {}\n", 1 + i % 2);
            c.execute(
                "INSERT INTO logs(task_id, offset, channel, timestamp_us, data) VALUES ('t1', ?1, ?2, ?3, ?4)",
                params![all.len() as i64, 1 + i % 2, i, line.as_bytes()],
            )
            .unwrap();
            all.extend_from_slice(line.as_bytes());
        }
        assert_eq!(migrate_legacy(&mut c).unwrap(), 1);
        assert_eq!(migrate_legacy(&mut c).unwrap(), 0, "idempotent");
        assert_eq!(count(&c, "SELECT COUNT(*) FROM logs"), 0);
        assert_eq!(read_bytes(&c, "t1", 0, i64::MAX).unwrap(), all);
        let recs = read(&c, "t1", 0, i64::MAX).unwrap();
        assert_eq!(recs.len(), 3000);
        assert_eq!((recs[1].channel, recs[1].timestamp_us), (2, 1));
        // A new writer continues after the migrated log.
        assert_eq!(TaskLog::resume(&c, "t1").unwrap().len(), all.len() as i64);
    }
}
