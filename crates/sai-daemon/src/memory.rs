//! Handing freed heap memory back to the system.
//!
//! glibc's malloc gives threads that contend for the heap their own arenas
//! (up to 8 per core) and returns memory to the kernel only from the top of
//! each heap: after a burst (a fleet of builders connecting and leaving, a
//! big push, a 100 MB log streamed) a daemon kept its peak resident set
//! although the memory was free. [`limit_arenas`] caps the arenas at start;
//! [`trim_while_running`] checks once a period how much free memory the
//! allocator holds and, when that grew by more than a threshold since the
//! last trim ([`TrimPolicy`]), returns it with `malloc_trim(0)` (which also
//! releases free pages in the middle of heaps). Checking costs a walk of the
//! allocator's free lists; trimming happens only after memory was actually
//! freed, so a steady daemon never trims.
//!
//! Elsewhere than glibc (musl, macOS, Windows) these do nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often [`trim_while_running`] looks.
pub const TRIM_PERIOD: Duration = Duration::from_secs(1);
/// Free bytes held by the allocator above which it is trimmed.
pub const TRIM_THRESHOLD: u64 = 2 << 20;

/// Cap glibc's malloc arenas at `max`; call first thing in `main`, before
/// any other thread exists.
#[allow(unsafe_code)]
pub fn limit_arenas(max: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, max);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = max;
}

/// Serve blocks of `bytes` and more with their own mappings (returned to
/// the kernel when freed) and give the top of a heap back once `bytes` of
/// it are free; call first thing in `main`. glibc's defaults adapt instead:
/// after a big block was freed they raise both thresholds (up to 32 and 64
/// MiB), so a daemon that once handled multi-MiB buffers (a server's 4 MiB
/// log blocks and their compression) keeps them as resident free heap,
/// which `malloc_trim` cannot return from the top of a thread's arena.
#[allow(unsafe_code)]
pub fn return_big_blocks(bytes: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
        libc::mallopt(libc::M_TRIM_THRESHOLD, bytes);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

/// Bytes the allocator holds free (not handed back to the kernel), where
/// that can be known.
#[allow(unsafe_code)]
pub fn held_free_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Return the allocator's free memory to the kernel; whether any was.
#[allow(unsafe_code)]
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim is safe to call at any time from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// When to trim, from the free bytes the allocator reports. Trimming does
/// not change that figure (the chunks stay free to malloc, only their pages
/// go back), so the policy trims when it grew by more than `threshold` over
/// the lowest value seen since the last trim.
#[derive(Debug, Clone, Copy)]
pub struct TrimPolicy {
    threshold: u64,
    baseline: u64,
}

impl TrimPolicy {
    /// Trim after `threshold` more bytes were freed.
    pub fn new(threshold: u64) -> TrimPolicy {
        TrimPolicy {
            threshold,
            baseline: 0,
        }
    }

    /// Whether to trim now that `free` bytes are held free.
    pub fn should_trim(&mut self, free: u64) -> bool {
        self.baseline = self.baseline.min(free);
        if free > self.baseline + self.threshold {
            self.baseline = free;
            true
        } else {
            false
        }
    }
}

/// Until `shutdown`: every `period`, [`trim`] when [`TrimPolicy`] says so.
/// The check (a walk of the free lists) runs in place: sending it to the
/// blocking pool every period kept a pool thread, and the stack pages its
/// earlier work touched, alive in an idle daemon. The trim, which may touch
/// every free page, runs on the blocking pool.
pub async fn trim_while_running(period: Duration, threshold: u64, shutdown: CancellationToken) {
    if held_free_bytes().is_none() {
        return;
    }
    let mut policy = TrimPolicy::new(threshold);
    let mut ticker = crate::ticker::Ticker::new(period, shutdown);
    while ticker.tick().await {
        let free = held_free_bytes().unwrap_or(0);
        if !policy.should_trim(free) {
            continue;
        }
        if let Ok(true) = tokio::task::spawn_blocking(trim).await {
            tracing::trace!("returned free heap memory to the system");
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn trims_once_per_growth_of_free_memory() {
        let mut p = TrimPolicy::new(100);
        assert!(!p.should_trim(50), "below the threshold");
        assert!(p.should_trim(500), "grew by more than the threshold");
        assert!(!p.should_trim(500), "trimming does not lower the figure");
        assert!(!p.should_trim(550));
        assert!(!p.should_trim(200), "memory reused");
        assert!(p.should_trim(301), "freed again after reuse");
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// 64 MiB freed below a live block stays resident (malloc cannot shrink
    /// the heap past the live block) until the trimmer returns it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn freed_memory_held_by_the_allocator_is_returned() {
        let blocks: Vec<Vec<u8>> = (0..16 * 1024)
            .map(|i| std::hint::black_box(vec![(i % 251) as u8; 4000]))
            .collect();
        let pin = std::hint::black_box(vec![1u8; 4000]);
        let full = rss_kib();
        drop(blocks);
        let free = held_free_bytes().unwrap();
        assert!(free > 32 << 20, "freed blocks are held: {free} bytes");
        assert!(
            rss_kib() + 16 * 1024 > full,
            "still resident before trimming"
        );

        let shutdown = CancellationToken::new();
        let trimmer = tokio::spawn(trim_while_running(
            Duration::from_millis(20),
            TRIM_THRESHOLD,
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rss_kib();
        assert!(
            after + 32 * 1024 < full,
            "trimmed: {full} KiB -> {after} KiB"
        );
        shutdown.cancel();
        trimmer.await.unwrap();
        drop(pin);
    }
}
