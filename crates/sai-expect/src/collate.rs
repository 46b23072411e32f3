//! Collation of received tty bytes into line-friendly log chunks
//! (reference section 10): chunks are at most [`MAX_CHUNK`] bytes, end at a
//! newline where possible, and a partial line is flushed [`MAX_AGE`] after
//! its first byte arrived.

use std::time::{Duration, Instant};

/// Largest chunk sent to a log proxy.
pub const MAX_CHUNK: usize = 128;

/// How long a partial line may wait for its newline.
pub const MAX_AGE: Duration = Duration::from_millis(150);

/// Collects bytes of one tty and cuts them into chunks.
#[derive(Debug, Default)]
pub struct Collator {
    buf: Vec<u8>,
    first: Option<Instant>,
}

impl Collator {
    /// A new, empty collator.
    pub fn new() -> Collator {
        Collator::default()
    }

    /// Add bytes received at `now`; returns the chunks ready to send.
    pub fn push(&mut self, bytes: &[u8], now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.buf.is_empty() {
                self.first = Some(now);
            }
            self.buf.push(b);
            if b == b'\n' || self.buf.len() >= MAX_CHUNK {
                out.push(std::mem::take(&mut self.buf));
                self.first = None;
            }
        }
        out
    }

    /// When the pending partial line must be flushed, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.first.map(|f| f + MAX_AGE)
    }

    /// The pending partial line if its time has come at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.deadline() {
            Some(d) if now >= d => self.flush(),
            _ => None,
        }
    }

    /// Whatever is pending, regardless of age.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        self.first = None;
        if self.buf.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.buf))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_full_chunks_and_age() {
        let t0 = Instant::now();
        let mut c = Collator::new();
        assert_eq!(
            c.push(b"ab\ncd\nef", t0),
            vec![b"ab\n".to_vec(), b"cd\n".to_vec()]
        );
        assert_eq!(c.deadline(), Some(t0 + MAX_AGE));
        assert_eq!(c.poll(t0 + Duration::from_millis(100)), None);
        assert_eq!(
            c.push(b"g", t0 + Duration::from_millis(120)),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(c.poll(t0 + MAX_AGE), Some(b"efg".to_vec()));
        assert_eq!(c.deadline(), None);
        let long = vec![b'x'; 300];
        let chunks = c.push(&long, t0);
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|c| c.len() == MAX_CHUNK));
        assert_eq!(c.flush().unwrap().len(), 300 - 2 * MAX_CHUNK);
        assert_eq!(c.flush(), None);
    }
}
