//! systemd supervision (`Type=notify`, `WatchdogSec=`) through `sd-notify`.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.
//! The watchdog keep-alive runs on the daemon's runtime and first runs the
//! caller's health check, so a stuck runtime or a deadlocked lock stops
//! the keep-alives and systemd restarts the daemon.

use std::time::Duration;

#[cfg(unix)]
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::ticker::Ticker;

#[cfg(unix)]
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(cause = %e, "cannot notify the service manager");
    }
}

/// systemd runs only on Unix; elsewhere there is no service manager to tell.
#[cfg(not(unix))]
#[allow(dead_code)]
enum NotifyState<'a> {
    Ready,
    Status(&'a str),
    Stopping,
    Watchdog,
}

#[cfg(not(unix))]
fn send(_states: &[NotifyState<'_>]) {}

/// Tell systemd the daemon is up, with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tell systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The keep-alive interval systemd asked for (half of `WatchdogSec`), if
/// any. As libsystemd's `sd_watchdog_enabled`: `WATCHDOG_USEC` sets the
/// period, and `WATCHDOG_PID`, when present, must name this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Send `WATCHDOG=1` every half watchdog period after `healthy` returns,
/// until `shutdown`. Does nothing unless systemd enabled the watchdog.
pub fn spawn_watchdog(healthy: impl Fn() + Send + 'static, shutdown: CancellationToken) {
    let Some(every) = watchdog_interval() else {
        return;
    };
    tracing::info!("watchdog keep-alive every {:.1} s", every.as_secs_f64());
    tokio::spawn(async move {
        let mut ticker = Ticker::new(every, shutdown);
        while ticker.tick().await {
            healthy();
            send(&[NotifyState::Watchdog]);
        }
    });
}
