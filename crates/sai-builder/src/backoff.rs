//! Exponential reconnect backoff with jitter.
//!
//! The `n`th delay (from 0) is drawn uniformly from `[base/2, base]` with
//! `base = min(cap, initial * 2^n)` ("equal jitter"): it never collapses to
//! zero, never exceeds the cap, and spreads many builders reconnecting to a
//! restarted server over time. [`Backoff::reset`] starts over at `initial`;
//! the daemon calls it once a connection has stayed up for a while.

use std::time::Duration;

use rand::{Rng, SeedableRng};

/// First delay bound (1 s).
pub const INITIAL: Duration = Duration::from_secs(1);
/// Largest delay (60 s).
pub const CAP: Duration = Duration::from_secs(60);

/// Reconnect delays; see the module doc. `R` is the jitter source (a seeded
/// or stub generator in tests).
#[derive(Debug, Clone)]
pub struct Backoff<R = rand::rngs::StdRng> {
    initial: Duration,
    cap: Duration,
    attempt: u32,
    rng: R,
}

impl Backoff {
    /// 1 s initial, 60 s cap, seeded from the thread rng.
    pub fn new() -> Self {
        Self::with_bounds(INITIAL, CAP)
    }

    /// Delays from `initial` doubling up to `cap`, seeded from the thread rng.
    pub fn with_bounds(initial: Duration, cap: Duration) -> Self {
        Self::with_rng(initial, cap, rand::rngs::StdRng::from_rng(&mut rand::rng()))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Rng> Backoff<R> {
    /// Delays from `initial` doubling up to `cap`, jittered with `rng`.
    pub fn with_rng(initial: Duration, cap: Duration, rng: R) -> Self {
        Self {
            initial,
            cap: cap.max(initial),
            attempt: 0,
            rng,
        }
    }

    /// The upper bound of the next delay (before jitter).
    pub fn base(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.cap)
    }

    /// The next delay; each call doubles the bound until the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base();
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        let frac: f64 = self.rng.random();
        half + (base - half).mul_f64(frac.clamp(0.0, 1.0))
    }

    /// Delays made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Start over at the initial delay (after a stable connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generator that always returns the same word.
    struct Fixed(u64);

    impl rand::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            (self.0 >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            for (i, b) in dst.iter_mut().enumerate() {
                *b = self.0.to_le_bytes()[i % 8];
            }
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_to_the_cap_with_lowest_jitter() {
        let mut b = Backoff::with_rng(S, 60 * S, Fixed(0));
        let got: Vec<Duration> = (0..9).map(|_| b.next_delay()).collect();
        let want: Vec<Duration> = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        assert_eq!(got, want);
        assert_eq!(b.attempts(), 9);
    }

    #[test]
    fn highest_jitter_reaches_the_bound_never_beyond() {
        let mut b = Backoff::with_rng(S, 60 * S, Fixed(u64::MAX));
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            let bound = b.base();
            let d = b.next_delay();
            assert!(d <= bound && d >= bound / 2, "{d:?} within {bound:?}");
            assert!(bound - d < Duration::from_millis(1), "{d:?} near {bound:?}");
            assert!(d >= last);
            last = d;
        }
        assert!(last <= 60 * S && last > 59 * S);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::with_rng(S, 60 * S, Fixed(0));
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.base(), 32 * S);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(), S / 2);
    }

    #[test]
    fn seeded_jitter_stays_in_bounds_and_varies() {
        let mut b = Backoff::with_rng(S, 60 * S, rand::rngs::StdRng::seed_from_u64(7));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let bound = b.base();
            let d = b.next_delay();
            assert!(d >= bound / 2 && d <= bound, "{d:?} vs {bound:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 40, "jitter spreads delays: {}", seen.len());
        // Huge attempt counts do not overflow.
        let mut b = Backoff::with_rng(S, 60 * S, Fixed(0));
        b.attempt = u32::MAX;
        assert_eq!(b.next_delay(), 30 * S);
    }
}
