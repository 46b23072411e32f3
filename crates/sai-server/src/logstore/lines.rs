//! Line positions: every row stores how many newlines its bytes hold and
//! whether its last byte is one, so the line at an offset and the start of
//! a line come from the index rows plus at most one row decompressed.

use rusqlite::{Connection, params};

use super::frame::{self, RowReader};
use super::{LogError, Result};

/// Newlines in `bytes`: what a row's `newlines` column stores.
pub(super) fn count_newlines(bytes: &[u8]) -> i64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as i64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logstore::BLOCK_BYTES;
    use crate::logstore::fixtures::{THREE_BLOCKS, append, db, fill, line_at, rows};
    use crate::logstore::{TaskLog, read_bytes};
    use sai_testkit::sqlite::count;

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
}
