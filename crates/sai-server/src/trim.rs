//! Returning memory soon after builders leave.
//!
//! The daemon's trimmer ([`sai_daemon::memory::trim_while_running`]) looks
//! once a second and trims only after the free heap grew by a threshold, so
//! after a fleet disconnected the server could keep its peak resident set
//! for a while. Each builder connection that ends asks for a trim here; a
//! burst of them (a fleet leaving or reconnecting) is served by one trim
//! shortly after the first, plus one per [`SETTLE`] while it lasts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after a connection ended the trim runs, so that the others of
/// a burst are gone by then too.
pub const SETTLE: Duration = Duration::from_millis(200);

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
