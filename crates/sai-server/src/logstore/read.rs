//! The reading side: the records or bytes of a byte range, decompressing
//! only the rows overlapping it; the channels present, from the index; the
//! compressed size.

use rusqlite::{Connection, params};

use super::frame::{self, RecordHead, RowReader};
use super::{LogRecord, Result};

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

/// Compressed bytes of one task's log, or of every log in this database
/// (what retention and disk reports count).
pub fn stored_bytes(conn: &Connection, task_id: Option<&str>) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(length(data)), 0) FROM log_blocks WHERE ?1 IS NULL OR task_id = ?1",
        [task_id],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logstore::fixtures::{THREE_BLOCKS, db, fill, line_at, rows};
    use crate::logstore::{BLOCK_BYTES, LogStart, alloc_probe, locate};

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
    fn corrupt_block_is_an_error_naming_task_and_offset() {
        let mut c = db();
        fill(&mut c, "t1", 10, 1000);
        c.execute("UPDATE log_blocks SET end_offset = end_offset + 1", [])
            .unwrap();
        let e = read_bytes(&c, "t1", 0, 10).unwrap_err().to_string();
        assert!(e.contains("t1") && e.contains("offset 0"), "{e}");
    }
}
