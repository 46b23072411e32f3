//! Failed sign-ins per client: after [`FREE_FAILURES`] failures in a window
//! each further attempt waits, doubling up to [`MAX_LOCK_SECS`].
//! The table is bounded: the oldest clients are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before attempts are refused for a while.
pub const FREE_FAILURES: u32 = 5;
/// Longest lock-out.
pub const MAX_LOCK_SECS: u64 = 900;
/// Failures older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(900);
/// Clients remembered at most.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// The limiter.
#[derive(Default)]
pub struct SignInLimiter {
    clients: Mutex<HashMap<IpAddr, Entry>>,
}

impl SignInLimiter {
    /// `Err(wait)` if `client` must wait before trying again.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.clients.lock().expect("limiter lock");
        let Some(e) = map.get(&client) else {
            return Ok(());
        };
        if e.failures < FREE_FAILURES || now.duration_since(e.last) > WINDOW {
            return Ok(());
        }
        let lock =
            Duration::from_secs((1u64 << (e.failures - FREE_FAILURES).min(10)).min(MAX_LOCK_SECS));
        let until = e.last + lock;
        if now < until {
            Err(until - now)
        } else {
            Ok(())
        }
    }

    /// Count a failed attempt.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        let mut map = self.clients.lock().expect("limiter lock");
        if map.len() >= MAX_CLIENTS && !map.contains_key(&client) {
            map.retain(|_, e| now.duration_since(e.last) <= WINDOW);
            if map.len() >= MAX_CLIENTS
                && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let e = map.entry(client).or_insert(Entry {
            failures: 0,
            last: now,
        });
        if now.duration_since(e.last) > WINDOW {
            e.failures = 0;
        }
        e.failures += 1;
        e.last = now;
    }

    /// A successful sign-in clears the client's record.
    pub fn succeeded(&self, client: IpAddr) {
        self.clients.lock().expect("limiter lock").remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_locked_out_after_repeated_failures_and_others_are_not() {
        let l = SignInLimiter::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert!(l.check(a, t0).is_ok());
            l.failed(a, t0);
        }
        assert!(l.check(a, t0).is_err());
        assert!(l.check(b, t0).is_ok());
        assert!(l.check(a, t0 + Duration::from_secs(2)).is_ok());
        l.failed(a, t0 + Duration::from_secs(2));
        assert!(l.check(a, t0 + Duration::from_secs(3)).is_err());
        l.succeeded(a);
        assert!(l.check(a, t0 + Duration::from_secs(3)).is_ok());
    }
}
