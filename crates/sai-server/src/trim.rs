//! Returning memory soon after load ends.
//!
//! The daemon's trimmer ([`sai_daemon::memory::trim_while_running`]) looks
//! once a second and trims only after the free heap grew by a threshold, so
//! after a fleet disconnected the server could keep its peak resident set
//! for a while. Each builder connection that ends asks for a trim here; a
//! burst of them (a fleet leaving or reconnecting) is served by one trim
//! shortly after the first, plus one per [`SETTLE`] while it lasts.
//!
//! The free-heap figure misses a common case: memory freed, trimmed, then
//! used and freed again (the 4 MiB buffers of each log block compressed or
//! read) is as free as before, so that trimmer sees no growth while the
//! pages are resident again. [`keep_idle_small`] covers it and the event
//! databases: once a second it closes the cached event databases nobody
//! used during [`UNUSED_DB`] (each keeps a page cache, a parsed schema and
//! prepared statements), and trims when it closed some or when the
//! process's anonymous memory grew by [`GREW`] since the last trim.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after a connection ended the trim runs, so that the others of
/// a burst are gone by then too.
pub const SETTLE: Duration = Duration::from_millis(200);

/// How often [`keep_idle_small`] looks.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A cached event database nobody asked for during this long is closed.
pub const UNUSED_DB: Duration = Duration::from_secs(1);
/// Growth of the anonymous resident memory since the last trim after which
/// the sweep trims again.
pub const GREW: u64 = 1 << 20;

static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// A builder connection ended: trim the heap [`SETTLE`] from now, unless a
/// trim is already due.
pub fn after_disconnect() {
    if SCHEDULED.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        SCHEDULED.store(false, Ordering::SeqCst);
        let _ = tokio::task::spawn_blocking(sai_daemon::memory::trim).await;
    });
}

/// Resident anonymous memory of this process in bytes (`RssAnon` of
/// `/proc/self/status`), where that can be read.
pub fn anon_resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// When the idle sweep trims: after it closed databases, or when the
/// anonymous resident memory grew by more than `grew` over the lowest
/// figure seen since the last trim (freed memory that was used again).
#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    grew: u64,
    baseline: u64,
}

impl SweepPolicy {
    /// Trim after `grew` more bytes became resident.
    pub fn new(grew: u64) -> SweepPolicy {
        SweepPolicy {
            grew,
            baseline: u64::MAX,
        }
    }

    /// Whether to trim, with `anon` bytes resident now and `closed`
    /// databases closed by this sweep.
    pub fn should_trim(&mut self, anon: u64, closed: usize) -> bool {
        self.baseline = self.baseline.min(anon);
        closed > 0 || anon > self.baseline.saturating_add(self.grew)
    }

    /// A trim left `anon` bytes resident.
    pub fn trimmed(&mut self, anon: u64) {
        self.baseline = anon;
    }
}

/// Until `server` shuts down: every [`SWEEP_EVERY`], close event databases
/// unused for [`UNUSED_DB`] and trim when [`SweepPolicy`] says so (on the
/// blocking pool: closing a database may checkpoint it, trimming takes the
/// allocator's locks).
pub async fn keep_idle_small(server: Arc<crate::state::Server>) {
    let policy = Arc::new(std::sync::Mutex::new(SweepPolicy::new(GREW)));
    let mut ticker = sai_daemon::ticker::Ticker::new(SWEEP_EVERY, server.shutdown.clone());
    while ticker.tick().await {
        let (server, policy) = (server.clone(), policy.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let closed = server.store.release_unused(UNUSED_DB);
            let mut policy = policy.lock().unwrap_or_else(|e| e.into_inner());
            let Some(anon) = anon_resident() else {
                return;
            };
            if policy.should_trim(anon, closed) {
                sai_daemon::memory::trim();
                policy.trimmed(anon_resident().unwrap_or(anon));
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_closing_or_when_resident_memory_grew_again() {
        let mut p = SweepPolicy::new(100);
        assert!(!p.should_trim(1000, 0), "first look: the baseline");
        assert!(p.should_trim(1000, 2), "databases closed");
        p.trimmed(900);
        assert!(!p.should_trim(950, 0));
        assert!(p.should_trim(1001, 0), "grew past the threshold");
        p.trimmed(1001);
        assert!(!p.should_trim(1050, 0), "in use: trimming gave nothing");
        assert!(!p.should_trim(700, 0), "freed by itself");
        assert!(p.should_trim(801, 0), "grew again from the low point");
    }

    #[test]
    fn anonymous_resident_memory_is_read() {
        let before = anon_resident().unwrap();
        let block = std::hint::black_box(vec![1u8; 16 << 20]);
        let after = anon_resident().unwrap();
        assert!(after >= before + (8 << 20), "{before} -> {after}");
        drop(block);
    }
}
