//! Line-addressed access to task logs stored as bytes by sai-server.
//!
//! sai-server keeps the number of newlines of every stored block of a log,
//! so it answers "how many lines", "which line holds byte N" and "where
//! does line N start" from its index, whatever the size of the log. A
//! window of lines is therefore one range read starting exactly at its
//! first line: sai-web keeps no per-log state and never reads a log just
//! to count its lines.

use serde::Serialize;

use crate::ansi::AnsiLines;
use crate::upstream::{LogRange, LogRecord, Upstream, UpstreamError, Viewer};

/// Most lines one window request may ask for.
pub const MAX_WINDOW: u64 = 2000;

/// A log's length in bytes and lines, as sai-server counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSize {
    /// Bytes stored.
    pub bytes: u64,
    /// Complete (newline-terminated) lines.
    pub newlines: u64,
    /// Lines including an unterminated last one.
    pub lines: u64,
}

impl LogSize {
    /// The size a log page reports.
    pub fn of(r: &LogRange) -> LogSize {
        LogSize {
            bytes: r.total.max(0) as u64,
            newlines: r.newlines.max(0) as u64,
            lines: r.lines.max(0) as u64,
        }
    }
}

/// The log's size now: one request the server answers from its index.
pub async fn size(
    upstream: &Upstream,
    task: &str,
    viewer: &Viewer,
) -> Result<LogSize, UpstreamError> {
    let r = upstream
        .log_from_line(task, i64::MAX as u64, 1, viewer)
        .await?;
    Ok(LogSize::of(&r))
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

/// Lines `from..from+count` (0-based) of a log of `size`: read from the
/// first byte of line `from` up to at most `size.bytes`.
pub async fn window(
    upstream: &Upstream,
    task: &str,
    viewer: &Viewer,
    size: &LogSize,
    from: u64,
    count: u64,
    epoch_us: i64,
) -> Result<Vec<Row>, UpstreamError> {
    let count = count.min(MAX_WINDOW);
    if from >= size.lines || count == 0 {
        return Ok(Vec::new());
    }
    let end_line = (from + count).min(size.lines);
    let total = size.bytes;
    let mut maker = RowMaker::new(from, epoch_us);
    let mut out = Vec::new();
    let mut chunk: u64 = 64 << 10;
    let mut range = upstream.log_from_line(task, from, chunk, viewer).await?;
    loop {
        if range.records.is_empty() {
            break;
        }
        for rec in starting_before(&range.records, total) {
            out.extend(maker.feed(rec).into_iter().filter(|r| r.n <= end_line));
        }
        let pos = (range.next_offset.max(0) as u64).min(total);
        if pos >= total || maker.next_line() >= end_line {
            break;
        }
        chunk = (chunk * 4).min(4 << 20);
        range = upstream
            .log(task, pos, chunk.min(total - pos), viewer)
            .await?;
    }
    if maker.next_line() < end_line
        && let Some(row) = maker.finish()
        && row.n <= end_line
    {
        out.push(row);
    }
    Ok(out)
}

/// The records that start within the first `total` bytes: the log size the
/// view was made for (more may have been written since).
fn starting_before(records: &[LogRecord], total: u64) -> impl Iterator<Item = &LogRecord> {
    records
        .iter()
        .take_while(move |r| (r.offset.max(0) as u64) < total)
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

/// 0-based number of the first line at or after `from` matching `needle`,
/// in the first `size.bytes` of the log.
pub async fn search(
    upstream: &Upstream,
    task: &str,
    viewer: &Viewer,
    size: &LogSize,
    from: u64,
    needle: &Needle,
) -> Result<Option<u64>, UpstreamError> {
    if from >= size.lines {
        return Ok(None);
    }
    let mut maker = RowMaker::new(from, 0);
    maker.keep_text = true;
    let total = size.bytes;
    let mut range = upstream.log_from_line(task, from, 4 << 20, viewer).await?;
    loop {
        if range.records.is_empty() {
            break;
        }
        for rec in starting_before(&range.records, total) {
            let first = maker.next_line();
            maker.feed(rec);
            for (i, text) in maker.texts.drain(..).enumerate() {
                if needle.matches(&text) {
                    return Ok(Some(first + i as u64));
                }
            }
        }
        let pos = (range.next_offset.max(0) as u64).min(total);
        if pos >= total {
            break;
        }
        range = upstream
            .log(task, pos, (4u64 << 20).min(total - pos), viewer)
            .await?;
    }
    let first = maker.next_line();
    maker.finish();
    for (i, text) in maker.texts.drain(..).enumerate() {
        if needle.matches(&text) {
            return Ok(Some(first + i as u64));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

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
