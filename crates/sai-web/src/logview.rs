//! Line-addressed access to task logs stored as bytes by sai-server.
//!
//! A [`LineIndex`] remembers the byte offset of every [`STRIDE`]th line
//! start (a few KiB for a 100 MB log), so any window of lines is one short
//! range read away: the browser asks for lines `a..b`, sai-web reads from
//! the checkpoint at or before `a` and converts only what is shown. Indexes
//! live in a small LRU cache ([`LogIndexes`]); reading the whole log once to
//! build one uses raw range reads of [`INDEX_CHUNK`] bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::ansi::AnsiLines;
use crate::upstream::{LogRecord, Upstream, UpstreamError, Viewer};

/// Lines between two checkpoints.
pub const STRIDE: u64 = 256;
/// Bytes per raw read while indexing.
pub const INDEX_CHUNK: u64 = 8 << 20;
/// Indexes kept in memory.
const CACHE_ENTRIES: usize = 64;
/// Most lines one window request may ask for.
pub const MAX_WINDOW: u64 = 2000;

/// Where the lines of one log start.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    /// Byte offset of line `k * STRIDE`; `checkpoints[0] == 0`.
    checkpoints: Vec<u64>,
    /// Newlines seen.
    newlines: u64,
    /// Bytes scanned.
    scanned: u64,
    /// Offset where the line after the last newline starts.
    last_start: u64,
}

impl LineIndex {
    /// An empty index.
    pub fn new() -> LineIndex {
        LineIndex {
            checkpoints: vec![0],
            ..LineIndex::default()
        }
    }

    /// Account for `bytes`, which follow what was scanned so far.
    pub fn scan(&mut self, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                self.newlines += 1;
                let next = self.scanned + i as u64 + 1;
                self.last_start = next;
                if self.newlines.is_multiple_of(STRIDE) {
                    self.checkpoints.push(next);
                }
            }
        }
        self.scanned += bytes.len() as u64;
    }

    /// Bytes scanned so far.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Complete (newline-terminated) lines.
    pub fn complete_lines(&self) -> u64 {
        self.newlines
    }

    /// Lines including an unterminated last one.
    pub fn lines(&self) -> u64 {
        self.newlines + u64::from(self.scanned > self.last_start)
    }

    /// Byte offset to read from for line `line`, and how many lines to skip
    /// after it.
    pub fn seek(&self, line: u64) -> (u64, u64) {
        let k = ((line / STRIDE) as usize).min(self.checkpoints.len() - 1);
        (self.checkpoints[k], line - k as u64 * STRIDE)
    }
}

/// A shared, lockable line index.
pub type SharedIndex = Arc<tokio::sync::Mutex<LineIndex>>;

/// Indexes of recently viewed logs, by task id, with their last use.
#[derive(Default)]
pub struct LogIndexes {
    entries: Mutex<HashMap<String, (u64, SharedIndex)>>,
    clock: Mutex<u64>,
}

impl LogIndexes {
    /// The index of `task`, created empty if unknown.
    pub fn get(&self, task: &str) -> Arc<tokio::sync::Mutex<LineIndex>> {
        let tick = {
            let mut c = self.clock.lock().expect("clock lock");
            *c += 1;
            *c
        };
        let mut map = self.entries.lock().expect("index cache lock");
        if let Some(e) = map.get_mut(task) {
            e.0 = tick;
            return e.1.clone();
        }
        if map.len() >= CACHE_ENTRIES
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let idx = Arc::new(tokio::sync::Mutex::new(LineIndex::new()));
        map.insert(task.to_string(), (tick, idx.clone()));
        idx
    }

    /// Forget a task's index (its log was cleared by a rebuild).
    pub fn forget(&self, task: &str) {
        self.entries.lock().expect("index cache lock").remove(task);
    }
}

/// Bring `index` up to `total` bytes by raw reads. A log that shrank (the
/// task was rebuilt) starts a fresh index.
pub async fn catch_up(
    upstream: &Upstream,
    task: &str,
    viewer: &Viewer,
    index: &mut LineIndex,
    total: u64,
) -> Result<(), UpstreamError> {
    if total < index.scanned() {
        *index = LineIndex::new();
    }
    while index.scanned() < total {
        let want = (total - index.scanned()).min(INDEX_CHUNK);
        let bytes = upstream
            .log_raw(task, index.scanned(), want, viewer)
            .await?;
        if bytes.is_empty() {
            break;
        }
        let take = bytes.len().min((total - index.scanned()) as usize);
        index.scan(&bytes[..take]);
    }
    Ok(())
}

/// One rendered log line, as sent to the browser.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// 1-based line number.
    pub n: u64,
    /// Channel of the record the line starts in.
    pub c: u8,
    /// Seconds since the task started (or since the first record).
    pub t: f64,
    /// HTML of the line.
    pub h: String,
}

/// Converts records to rows, keeping ANSI state and the channel and time of
/// the record each line starts in.
pub struct RowMaker {
    ansi: AnsiLines,
    start_meta: Option<(u8, i64)>,
    next_line: u64,
    epoch_us: i64,
    /// Plain text of each row produced (for search).
    pub keep_text: bool,
    /// Texts of rows produced, when `keep_text`.
    pub texts: Vec<String>,
}

impl RowMaker {
    /// Rows numbered from `first_line` (0-based); times relative to `epoch_us`.
    pub fn new(first_line: u64, epoch_us: i64) -> RowMaker {
        RowMaker {
            ansi: AnsiLines::new(),
            start_meta: None,
            next_line: first_line,
            epoch_us,
            keep_text: false,
            texts: Vec::new(),
        }
    }

    /// Index (0-based) of the next line to be produced.
    pub fn next_line(&self) -> u64 {
        self.next_line
    }

    fn row(&mut self, line: crate::ansi::Line, meta: (u8, i64)) -> Row {
        let n = self.next_line;
        self.next_line += 1;
        if self.keep_text {
            self.texts.push(line.text);
        }
        Row {
            n: n + 1,
            c: meta.0,
            t: ((meta.1 - self.epoch_us).max(0) as f64 / 1e6 * 1000.0).round() / 1000.0,
            h: line.html,
        }
    }

    /// Rows completed by `rec`.
    pub fn feed(&mut self, rec: &LogRecord) -> Vec<Row> {
        let meta = (rec.channel, rec.timestamp_us);
        let mut out = Vec::new();
        for seg in rec.text.split_inclusive('\n') {
            if self.start_meta.is_none() {
                self.start_meta = Some(meta);
            }
            for line in self.ansi.feed(seg.as_bytes()) {
                let m = self.start_meta.take().unwrap_or(meta);
                out.push(self.row(line, m));
            }
        }
        out
    }

    /// The unterminated last line, at the end of a log.
    pub fn finish(&mut self) -> Option<Row> {
        let meta = self.start_meta.take()?;
        let line = self.ansi.finish()?;
        Some(self.row(line, meta))
    }
}

/// Lines `from..from+count` (0-based) of a log of `total` bytes, with the
/// index already caught up to `total`.
pub async fn window(
    upstream: &Upstream,
    task: &str,
    viewer: &Viewer,
    index: &LineIndex,
    from: u64,
    count: u64,
    epoch_us: i64,
) -> Result<Vec<Row>, UpstreamError> {
    let count = count.min(MAX_WINDOW);
    let lines = index.lines();
    if from >= lines || count == 0 {
        return Ok(Vec::new());
    }
    let end_line = (from + count).min(lines);
    let (mut pos, skip) = index.seek(from);
    let first = from - skip;
    let mut maker = RowMaker::new(first, epoch_us);
    let mut out = Vec::new();
    let mut chunk: u64 = 64 << 10;
    let total = index.scanned();
    while pos < total && maker.next_line() < end_line {
        let range = upstream
            .log(task, pos, chunk.min(total - pos), viewer)
            .await?;
        if range.records.is_empty() {
            break;
        }
        for rec in &range.records {
            if rec.offset.max(0) as u64 >= total {
                break;
            }
            for row in maker.feed(rec) {
                if row.n > from && row.n <= end_line {
                    out.push(row);
                }
            }
        }
        pos = (range.next_offset.max(0) as u64).min(total);
        chunk = (chunk * 4).min(4 << 20);
    }
    if maker.next_line() < end_line
        && let Some(row) = maker.finish()
        && row.n > from
        && row.n <= end_line
    {
        out.push(row);
    }
    Ok(out)
}

/// What a log search looks for.
pub enum Needle {
    /// Case-insensitive text.
    Text(String),
    /// A line that reports an error.
    Error,
}

impl Needle {
    fn matches(&self, text: &str) -> bool {
        match self {
            Needle::Text(t) => text.to_lowercase().contains(t),
            Needle::Error => {
                let l = text.to_lowercase();
                ["error", "fatal", "failed", "failure"]
                    .iter()
                    .any(|w| contains_word(&l, w))
            }
        }
    }
}

fn contains_word(hay: &str, word: &str) -> bool {
    hay.match_indices(word).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric()) && !after.is_some_and(|c| c.is_alphanumeric())
    })
}

/// 0-based number of the first line at or after `from` matching `needle`.
pub async fn search(
    upstream: &Upstream,
    task: &str,
    viewer: &Viewer,
    index: &LineIndex,
    from: u64,
    needle: &Needle,
) -> Result<Option<u64>, UpstreamError> {
    let (mut pos, skip) = index.seek(from);
    let mut maker = RowMaker::new(from - skip, 0);
    maker.keep_text = true;
    let total = index.scanned();
    while pos < total {
        let range = upstream
            .log(task, pos, (4u64 << 20).min(total - pos), viewer)
            .await?;
        if range.records.is_empty() {
            break;
        }
        for rec in &range.records {
            let first = maker.next_line();
            maker.feed(rec);
            for (i, text) in maker.texts.drain(..).enumerate() {
                let n = first + i as u64;
                if n >= from && needle.matches(&text) {
                    return Ok(Some(n));
                }
            }
        }
        pos = range.next_offset.max(0) as u64;
    }
    let first = maker.next_line();
    maker.finish();
    for (i, text) in maker.texts.drain(..).enumerate() {
        if first + i as u64 >= from && needle.matches(&text) {
            return Ok(Some(first + i as u64));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_find_any_line() {
        let mut text = Vec::new();
        for i in 0..1000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        text.extend_from_slice(b"tail without newline");
        let mut idx = LineIndex::new();
        for chunk in text.chunks(37) {
            idx.scan(chunk);
        }
        assert_eq!(idx.complete_lines(), 1000);
        assert_eq!(idx.lines(), 1001);
        for line in [0u64, 1, 255, 256, 257, 999, 1000] {
            let (off, skip) = idx.seek(line);
            let rest = &text[off as usize..];
            let found = rest.split(|&b| b == b'\n').nth(skip as usize).unwrap();
            let want = if line == 1000 {
                "tail without newline".to_string()
            } else {
                format!("line {line}")
            };
            assert_eq!(found, want.as_bytes(), "line {line}");
        }
    }

    #[test]
    fn rows_carry_channel_and_time_of_their_first_record() {
        let rec = |offset, channel, ts, text: &str| LogRecord {
            offset,
            channel,
            timestamp_us: ts,
            len: text.len(),
            text: text.to_string(),
        };
        let mut m = RowMaker::new(0, 1_000_000);
        let mut rows = m.feed(&rec(0, 1, 1_500_000, "one\ntw"));
        rows.extend(m.feed(&rec(6, 2, 2_000_000, "o\n\x1b[31mthree")));
        rows.extend(m.finish());
        let got: Vec<(u64, u8, f64, &str)> =
            rows.iter().map(|r| (r.n, r.c, r.t, r.h.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, 1, 0.5, "one"),
                (2, 1, 0.5, "two"),
                (3, 2, 1.0, "<span class=\"f1\">three</span>")
            ]
        );
    }

    #[test]
    fn error_lines_are_words_not_substrings() {
        assert!(Needle::Error.matches("make: *** [all] Error 2"));
        assert!(Needle::Error.matches("test foo ... FAILED"));
        assert!(!Needle::Error.matches("-Werror=format is on"));
        assert!(!Needle::Error.matches("0 errors"));
    }
}
