//! `GET /api/tasks/<id>/log/raw`: a task's log bytes, streamed block by
//! block, with single HTTP byte ranges (`bytes=a-b`, `bytes=a-`,
//! `bytes=-n`), so a download or a tail costs what it reads.
//!
//! Every answer says whether it holds the end of a finished log in
//! [`COMPLETE_HEADER`]: `complete` when the task has ended and the bytes
//! reach the end of its log, `growing` otherwise (the task still runs, or
//! the range stops short of the end), so a follower knows whether to ask
//! again.

use std::sync::Arc;

use warp::Reply;
use warp::http::{HeaderValue, StatusCode};

use crate::logstore::BLOCK_BYTES;
use crate::store::EventDb;

/// Header saying whether the bytes reach the end of a finished log.
pub const COMPLETE_HEADER: &str = "x-sai-log-complete";

/// The value of [`COMPLETE_HEADER`].
pub fn completeness(complete: bool) -> HeaderValue {
    HeaderValue::from_static(if complete { "complete" } else { "growing" })
}

/// What a `Range` header asks of a log of `total` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) range: the whole log, 200.
    Whole,
    /// `[start, end)`, 206.
    Part(u64, u64),
    /// Starts at or past the end, 416.
    Unsatisfiable,
}

/// Parse one `bytes=` range against `total`. Headers this does not
/// understand (other units, several ranges) get the whole log, as RFC 9110
/// allows.
pub fn parse_range(header: Option<&str>, total: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return match b.parse::<u64>() {
            Ok(0) => RangeAsk::Unsatisfiable,
            Ok(n) if total > 0 => RangeAsk::Part(total.saturating_sub(n), total),
            Ok(_) => RangeAsk::Unsatisfiable,
            Err(_) => RangeAsk::Whole,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeAsk::Whole;
    };
    let end = match b {
        "" => total,
        b => match b.parse::<u64>() {
            Ok(last) if last >= start => (last + 1).min(total),
            _ => return RangeAsk::Whole,
        },
    };
    if start >= total {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(start, end)
}

/// Log bytes `[pos, end)` in chunks of about one block.
struct Chunks {
    db: Arc<EventDb>,
    task_id: String,
    pos: u64,
    end: u64,
}

impl Iterator for Chunks {
    type Item = Result<Vec<u8>, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let n = (self.end - self.pos).min(BLOCK_BYTES as u64);
        match self.db.log_bytes(&self.task_id, self.pos as i64, n as i64) {
            Ok(b) if b.is_empty() => None,
            Ok(b) => {
                self.pos += b.len() as u64;
                Some(Ok(b))
            }
            Err(e) => {
                self.pos = self.end;
                Some(Err(std::io::Error::other(e.to_string())))
            }
        }
    }
}

/// The response for a log of `total` bytes (of a task that has `ended`)
/// and the request's `Range`.
pub fn response(
    db: Arc<EventDb>,
    task_id: &str,
    total: u64,
    ended: bool,
    range: Option<&str>,
) -> warp::reply::Response {
    let (status, start, end) = match parse_range(range, total) {
        RangeAsk::Whole => (StatusCode::OK, 0, total),
        RangeAsk::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        RangeAsk::Unsatisfiable => {
            let mut r = warp::http::Response::new(Vec::new()).into_response();
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                r.headers_mut().insert("content-range", v);
            }
            r.headers_mut().insert(COMPLETE_HEADER, completeness(ended));
            return r;
        }
    };
    let chunks = Chunks {
        db,
        task_id: task_id.to_string(),
        pos: start,
        end,
    };
    let mut r = warp::reply::stream(futures_util::stream::iter(chunks)).into_response();
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    h.insert(COMPLETE_HEADER, completeness(ended && end == total));
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert("content-length", v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1))
    {
        h.insert("content-range", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsk::*;
        let p = |h| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Whole);
        assert_eq!(p("bytes=0-99"), Part(0, 100));
        assert_eq!(p("bytes=990-2000"), Part(990, 1000));
        assert_eq!(p("bytes=500-"), Part(500, 1000));
        assert_eq!(p("bytes=-100"), Part(900, 1000));
        assert_eq!(p("bytes=-5000"), Part(0, 1000));
        assert_eq!(p("bytes=1000-"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(p("bytes=5-1"), Whole);
        assert_eq!(p("bytes=0-1,5-6"), Whole);
        assert_eq!(p("items=0-1"), Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }
}
