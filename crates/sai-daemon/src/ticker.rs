//! Periodic work that ends with the daemon.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Ticks every `period` (the first at once) until `shutdown` fires; a tick
/// that is late because the work took long is not caught up on.
pub struct Ticker {
    interval: Interval,
    shutdown: CancellationToken,
}

impl Ticker {
    /// A ticker of `period` that stops with `shutdown`.
    pub fn new(period: Duration, shutdown: CancellationToken) -> Ticker {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticker { interval, shutdown }
    }

    /// Waits for the next tick: `true`, or `false` once `shutdown` fired.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => !self.shutdown.is_cancelled(),
            _ = self.shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_at_once_then_after_the_period_until_shutdown() {
        let period = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let mut ticker = Ticker::new(period, shutdown.clone());
        let start = tokio::time::Instant::now();
        assert!(ticker.tick().await);
        assert!(start.elapsed() < period, "the first tick is at once");
        assert!(ticker.tick().await);
        assert!(start.elapsed() >= period, "the second waits a period");
        shutdown.cancel();
        assert!(!ticker.tick().await);
        assert!(!ticker.tick().await, "stays stopped");
    }

    #[tokio::test]
    async fn shutdown_ends_a_wait_without_waiting_for_the_period() {
        let shutdown = CancellationToken::new();
        let mut ticker = Ticker::new(Duration::from_secs(3600), shutdown.clone());
        assert!(ticker.tick().await);
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stopper.cancel();
        });
        let waited = tokio::time::timeout(Duration::from_secs(30), ticker.tick()).await;
        assert_eq!(waited, Ok(false));
    }
}
