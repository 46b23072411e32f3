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
//!
//! | module | job |
//! |---|---|
//! | `write` | the appending side: records packed into pieces and sealed blocks ([`TaskLog`]) |
//! | `read` | records and bytes of a byte range, the channels in it, the size on disk |
//! | `lines` | line numbers and line starts from the rows' newline counts ([`locate`]) |
//! | `schema` | the tables, the builder byte counts, clearing a log |
//! | `legacy` | packing the uncompressed rows of older stores into blocks |
//! | `frame` | one row as a zstd frame: compressing it, reading it back as a stream |
//! | `fixtures` | test-only: the databases and logs the unit tests write |
//! | `alloc_probe` | test-only: what a closure allocates |

#[cfg(test)]
mod alloc_probe;
#[cfg(test)]
mod fixtures;
mod frame;
mod legacy;
mod lines;
mod read;
mod schema;
mod write;

pub use legacy::migrate_legacy;
pub use lines::{LinePosition, LogStart, locate};
pub use read::{channels, len, read, read_bytes, stored_bytes};
pub use schema::{LINES_SCHEMA, RECEIVED_SCHEMA, SCHEMA, clear, received};
pub use write::TaskLog;

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
