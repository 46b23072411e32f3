//! One row of the log store as a zstd frame: how it is compressed, and how
//! it is read back as a stream.
//!
//! A row's raw bytes are its record count (u32), then per record its
//! channel (u8), timestamp delta from the previous record (i64) and length
//! (u32), then the bytes of every record. [`RowReader`] decompresses them
//! as the caller walks forward and copies out only what the caller keeps:
//! the rest passes through a small scratch buffer, and zstd's own buffer is
//! one window ([`WINDOW_LOG`]), so reading a few bytes of a 4 MiB block
//! costs memory for those bytes, not for the block.

use std::io::{Read, Write};

use zstd::zstd_safe::{CParameter, DCtx, DParameter};

use super::{LogError, Result};

/// Encoded record header: channel (1), timestamp delta (8), length (4).
pub(super) const HEADER: usize = 13;

/// zstd window of the frames written: 256 KiB. A streaming decoder holds
/// one window, two zstd blocks (128 KiB each) and its tables, about 750 KB
/// in all, which the allocator serves from its heap and reuses; with the
/// window zstd picks for a 4 MiB block at level 3 (2 MiB) its buffer is
/// beyond the server's mmap threshold (1 MiB), so every read would map,
/// fault in and unmap a fresh one.
pub const WINDOW_LOG: u32 = 18;

/// Shortest match of sealed frames. With it, the 256 KiB window compresses
/// the 100 MB build log of `benches/server.rs` a little better than level
/// 3's defaults with a 2 MiB window (2.78 MB against 2.90 MB, zstd CLI,
/// 4 MiB blocks) at the same speed; zstd's default, 5, with the small
/// window takes 3.4 MB. On real logs (apt, dpkg, cargo; 770 KB) the small
/// window and this match length cost about 3.5% over level 3's defaults.
const SEALED_MIN_MATCH: u32 = 7;

/// Largest window a reader accepts (the blocks' size): a corrupt frame
/// cannot make it allocate more. Frames written before [`WINDOW_LOG`] have
/// windows of at most 2 MiB.
const READ_WINDOW_LOG_MAX: u32 = 22;

/// Bytes decompressed per step when skipping or scanning.
const SCRATCH: usize = 32 * 1024;

/// Compress a row's raw bytes (`parts` concatenated) as one frame: at
/// `level`, and for `sealed` rows with [`SEALED_MIN_MATCH`].
pub(super) fn compress(parts: &[&[u8]], level: i32, sealed: bool) -> Result<Vec<u8>> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level)?;
    enc.window_log(WINDOW_LOG)?;
    if sealed {
        enc.set_parameter(CParameter::MinMatch(SEALED_MIN_MATCH))?;
    }
    // The frame says its size, which readers check against the index.
    enc.set_pledged_src_size(Some(total as u64))?;
    for part in parts {
        enc.write_all(part)?;
    }
    Ok(enc.finish()?)
}

fn zstd_error(code: usize) -> LogError {
    LogError::Zstd(std::io::Error::other(zstd::zstd_safe::get_error_name(code)))
}

/// A decoder context for [`RowReader::open`].
pub(super) fn decoder() -> Result<DCtx<'static>> {
    let mut ctx = DCtx::create();
    ctx.set_parameter(DParameter::WindowLogMax(READ_WINDOW_LOG_MAX))
        .map_err(zstd_error)?;
    Ok(ctx)
}

/// One record's header, with where its bytes are in the task's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordHead {
    /// Byte offset of the record in the task's log.
    pub offset: i64,
    /// Channel.
    pub channel: u8,
    /// Unix microseconds.
    pub timestamp_us: i64,
    /// Bytes.
    pub len: usize,
}

impl RecordHead {
    /// Offset just past the record.
    pub fn end(&self) -> i64 {
        self.offset + self.len as i64
    }
}

/// One row's text, decompressed as it is read, after its record headers.
pub(super) struct RowReader<'z> {
    task: &'z str,
    first: i64,
    end: i64,
    dec: zstd::stream::read::Decoder<'z, &'z [u8]>,
    scratch: Vec<u8>,
    /// Log offset of the next text byte.
    at: i64,
}

impl<'z> RowReader<'z> {
    /// Start reading the row of `task` indexed as `[first, end)` from its
    /// frame `z` with the decoder context `ctx` (one per read, whatever
    /// the rows it spans: its buffers are kept from one row to the next):
    /// walk the row's record headers, giving each to `head`, and check
    /// that they add up to the index entry.
    pub fn open(
        ctx: &'z mut DCtx<'static>,
        task: &'z str,
        first: i64,
        end: i64,
        z: &'z [u8],
        mut head: impl FnMut(RecordHead),
    ) -> Result<RowReader<'z>> {
        let dec = zstd::stream::read::Decoder::with_context(z, ctx).single_frame();
        let mut r = RowReader {
            task,
            first,
            end,
            dec,
            scratch: Vec::new(),
            at: first,
        };
        let mut count = [0u8; 4];
        r.read_exact_raw(&mut count, "no record count")?;
        let count = u32::from_le_bytes(count) as u64;
        let text = (end - first).max(0) as u64;
        let size = zstd::zstd_safe::get_frame_content_size(z);
        if let Ok(Some(size)) = size
            && size != 4 + count * HEADER as u64 + text
        {
            return Err(r.corrupt("records do not add up to the indexed end offset"));
        }
        let mut scratch = vec![0u8; SCRATCH];
        let mut left = count as usize;
        let (mut offset, mut ts) = (first, 0i64);
        while left > 0 {
            let n = left.min(SCRATCH / HEADER);
            r.read_exact_raw(&mut scratch[..n * HEADER], "truncated record headers")?;
            for h in scratch[..n * HEADER].chunks_exact(HEADER) {
                ts = ts.wrapping_add(i64::from_le_bytes(h[1..9].try_into().expect("8 bytes")));
                let len = u32::from_le_bytes(h[9..13].try_into().expect("4 bytes")) as usize;
                head(RecordHead {
                    offset,
                    channel: h[0],
                    timestamp_us: ts,
                    len,
                });
                offset += len as i64;
            }
            left -= n;
        }
        r.scratch = scratch;
        if offset != end {
            return Err(r.corrupt("records do not add up to the indexed end offset"));
        }
        Ok(r)
    }

    fn corrupt(&self, what: &'static str) -> LogError {
        LogError::Corrupt {
            task: self.task.to_string(),
            offset: self.first,
            what,
        }
    }

    fn read_exact_raw(&mut self, buf: &mut [u8], short: &'static str) -> Result<()> {
        self.dec.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.corrupt(short),
            _ => LogError::Zstd(e),
        })
    }

    /// Pass the text up to log offset `to` (at most the row's end) to
    /// `seen`, a scratch buffer at a time, until it returns false.
    pub fn scan(&mut self, to: i64, mut seen: impl FnMut(&[u8]) -> bool) -> Result<()> {
        let to = to.min(self.end);
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut step = || {
            while self.at < to {
                let n = ((to - self.at) as usize).min(scratch.len());
                self.read_exact_raw(&mut scratch[..n], "truncated record data")?;
                self.at += n as i64;
                if !seen(&scratch[..n]) {
                    break;
                }
            }
            Ok(())
        };
        let done = step();
        self.scratch = scratch;
        done
    }

    /// Skip the text up to log offset `to`.
    pub fn skip_to(&mut self, to: i64) -> Result<()> {
        self.scan(to, |_| true)
    }

    /// Append the text up to log offset `to` (at most the row's end) to `out`.
    pub fn read_to(&mut self, to: i64, out: &mut Vec<u8>) -> Result<()> {
        let to = to.min(self.end);
        if to <= self.at {
            return Ok(());
        }
        let old = out.len();
        out.resize(old + (to - self.at) as usize, 0);
        let read = self.read_exact_raw(&mut out[old..], "truncated record data");
        if read.is_err() {
            out.truncate(old);
        }
        read?;
        self.at = to;
        Ok(())
    }
}
