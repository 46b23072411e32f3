//! Test-only: the database and logs the unit tests of the log store's
//! modules write and read.

use rusqlite::{Connection, params};

use super::{BLOCK_BYTES, LINES_SCHEMA, RECEIVED_SCHEMA, SCHEMA, TaskLog};

pub(super) fn db() -> Connection {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(SCHEMA).unwrap();
    c.execute_batch(LINES_SCHEMA).unwrap();
    c.execute_batch(RECEIVED_SCHEMA).unwrap();
    c
}

pub(super) fn append(conn: &mut Connection, log: &mut TaskLog) {
    let tx = conn.transaction().unwrap();
    log.persist(&tx).unwrap();
    tx.commit().unwrap();
}

pub(super) fn rows(c: &Connection, task: &str, sealed: bool) -> i64 {
    c.query_row(
        "SELECT COUNT(*) FROM log_blocks WHERE task_id = ?1 AND sealed = ?2",
        params![task, sealed],
        |r| r.get(0),
    )
    .unwrap()
}

/// Lines of ~100 bytes on alternating channels, persisted every
/// `every` lines like the writer's flushes.
pub(super) fn fill(
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
pub(super) const THREE_BLOCKS: usize = 3 * BLOCK_BYTES / 100 + 5000;

pub(super) fn line_at(all: &[u8], offset: usize) -> i64 {
    sai_testkit::text::line_of(all, offset) as i64
}
