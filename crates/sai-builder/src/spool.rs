//! The log of a running task, kept by the builder until the task ends, so
//! that after a lost link (the server restarted, or was killed) it can
//! resend exactly the bytes the restarted server did not store.
//!
//! Records (channel, bytes) are kept in memory up to [`MEM_BYTES`]; beyond
//! that everything is spilled to a file beside the job directories and
//! appended there. Offsets count log payload bytes only, like the server's
//! count of builder bytes ([`sai_core::protocol::ServerMessage::ResumeTask`]).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::Bytes;

use crate::log::LogChunk;

/// Encoded records kept in memory before spilling to the file.
pub const MEM_BYTES: usize = 1024 * 1024;
/// Encoded record header: channel (1) and length (4, big endian).
const HEAD: usize = 5;

/// See the module doc.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: Option<File>,
    mem: Vec<u8>,
    /// Payload bytes appended so far.
    len: u64,
}

impl Spool {
    /// An empty spool that spills to `path` (created only when needed,
    /// removed on drop).
    pub fn new(path: PathBuf) -> Spool {
        Spool {
            path,
            file: None,
            mem: Vec::new(),
            len: 0,
        }
    }

    /// Payload bytes appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Nothing appended yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append a chunk.
    pub fn append(&mut self, chunk: &LogChunk) -> std::io::Result<()> {
        self.mem.push(chunk.channel);
        self.mem
            .extend_from_slice(&(chunk.bytes.len() as u32).to_be_bytes());
        self.mem.extend_from_slice(&chunk.bytes);
        self.len += chunk.bytes.len() as u64;
        if self.mem.len() >= MEM_BYTES {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&self.path)?,
            );
        }
        if let Some(f) = &mut self.file {
            f.write_all(&self.mem)?;
            self.mem.clear();
        }
        Ok(())
    }

    /// The chunks from payload offset `from` to the end, in order (the
    /// first cut to start exactly at `from`).
    pub fn read_from(&mut self, from: u64) -> std::io::Result<Vec<LogChunk>> {
        let mut out = Vec::new();
        let mut at = 0u64;
        let mut take = |channel: u8, bytes: &[u8], at: &mut u64| {
            let end = *at + bytes.len() as u64;
            if end > from {
                let skip = from.saturating_sub(*at) as usize;
                out.push(LogChunk {
                    channel,
                    bytes: Bytes::copy_from_slice(&bytes[skip..]),
                });
            }
            *at = end;
        };
        if let Some(f) = &mut self.file {
            f.seek(SeekFrom::Start(0))?;
            let mut r = BufReader::new(&*f);
            let mut head = [0u8; HEAD];
            let mut buf = Vec::new();
            loop {
                match r.read_exact(&mut head) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
                let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                buf.resize(n, 0);
                r.read_exact(&mut buf)?;
                take(head[0], &buf, &mut at);
            }
            f.seek(SeekFrom::End(0))?;
        }
        let mut rest = &self.mem[..];
        while rest.len() >= HEAD {
            let n = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            take(rest[0], &rest[HEAD..HEAD + n], &mut at);
            rest = &rest[HEAD + n..];
        }
        Ok(out)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(channel: u8, s: &[u8]) -> LogChunk {
        LogChunk {
            channel,
            bytes: Bytes::copy_from_slice(s),
        }
    }

    fn joined(chunks: &[LogChunk]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.bytes.to_vec()).collect()
    }

    #[test]
    fn reads_back_from_any_offset_in_memory_and_spilled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool").join("t.log");
        let mut s = Spool::new(path.clone());
        let mut all = Vec::new();
        for i in 0..150_000u32 {
            let line = format!("line {i}\n");
            s.append(&chunk(1 + (i % 2) as u8, line.as_bytes()))
                .unwrap();
            all.extend_from_slice(line.as_bytes());
        }
        assert!(
            path.exists(),
            "more than {MEM_BYTES} bytes spill to the file"
        );
        assert_eq!(s.len(), all.len() as u64);
        for from in [0u64, 1, 7, 300_000, all.len() as u64 - 3, all.len() as u64] {
            let got = s.read_from(from).unwrap();
            assert_eq!(joined(&got), &all[from as usize..], "from {from}");
        }
        // "line 0\n" (stdout) is 7 bytes; offset 8 cuts "line 1\n" (stderr).
        let got = s.read_from(8).unwrap();
        assert_eq!((got[0].channel, &got[0].bytes[..]), (2, &b"ine 1\n"[..]));
        // Appending after a read goes to the end.
        s.append(&chunk(3, b"end\n")).unwrap();
        assert_eq!(joined(&s.read_from(all.len() as u64).unwrap()), b"end\n");
        drop(s);
        assert!(!path.exists(), "the spill file is removed with the spool");
    }
}
