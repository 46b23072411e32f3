//! A bounded cache of shared open handles (event databases).
//!
//! Every handle anyone holds is found again by its key (through a weak
//! reference), so one key never has two handles open at once: deleting an
//! event marks the one handle and its folder goes when the last user drops
//! it. Besides the handles in use, at most `capacity` idle handles are kept
//! open, least recently used first out; so open handles (and their file
//! descriptors) are bounded by `capacity` plus the handles in use, and an
//! idle server keeps at most `capacity`. Kept handles nobody asked for
//! during a while are closed by [`HandleCache::close_unused`], so a server
//! that went idle keeps none (an event database's page cache, schema and
//! statements are a few hundred KiB).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Shared handles by key, keeping the `capacity` most recently used open.
pub struct HandleCache<V> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
}

struct Inner<V> {
    /// Every handle opened through the cache that may still be alive.
    live: HashMap<String, Weak<V>>,
    /// Kept-open handles with when they were last asked for, least
    /// recently used first; at most `capacity`.
    recent: VecDeque<(String, Arc<V>, Instant)>,
}

impl<V> Inner<V> {
    /// The kept handle of `key`, now the most recently used.
    fn touch(&mut self, key: &str) -> Option<Arc<V>> {
        let i = self.recent.iter().position(|(k, _, _)| k == key)?;
        let (key, handle, _) = self.recent.remove(i).expect("position is in range");
        self.recent.push_back((key, handle.clone(), Instant::now()));
        Some(handle)
    }
}

impl<V> HandleCache<V> {
    /// A cache keeping at most `capacity` handles open while unused.
    pub fn new(capacity: usize) -> HandleCache<V> {
        HandleCache {
            capacity,
            inner: Mutex::new(Inner {
                live: HashMap::new(),
                recent: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of `key` if it is open (kept or in use).
    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        let mut inner = self.lock();
        if let Some(handle) = inner.touch(key) {
            return Some(handle);
        }
        inner.live.get(key).and_then(Weak::upgrade)
    }

    /// The handle of `key`, opening it with `open` if nobody holds one.
    /// Opening happens under the cache's lock so a key is opened only once.
    pub fn get_or_open<E>(
        &self,
        key: &str,
        open: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let mut inner = self.lock();
        if let Some(handle) = inner.touch(key) {
            return Ok(handle);
        }
        let handle = match inner.live.get(key).and_then(Weak::upgrade) {
            Some(h) => h,
            None => {
                let h = Arc::new(open()?);
                inner.live.retain(|_, w| w.strong_count() > 0);
                inner.live.insert(key.to_string(), Arc::downgrade(&h));
                h
            }
        };
        inner
            .recent
            .push_back((key.to_string(), handle.clone(), Instant::now()));
        while inner.recent.len() > self.capacity {
            // Dropping the cache's reference closes the handle unless a user
            // still holds it; then it closes when that user lets go.
            inner.recent.pop_front();
        }
        Ok(handle)
    }

    /// Forget `key`, returning its handle if someone still holds it.
    pub fn remove(&self, key: &str) -> Option<Arc<V>> {
        let mut inner = self.lock();
        let kept = inner
            .recent
            .iter()
            .position(|(k, _, _)| k == key)
            .and_then(|i| inner.recent.remove(i));
        let live = inner.live.remove(key).and_then(|w| w.upgrade());
        live.or(kept.map(|(_, h, _)| h))
    }

    /// Close every kept-open handle nobody else holds.
    pub fn close_idle(&self) {
        let mut inner = self.lock();
        inner.recent.retain(|(_, h, _)| Arc::strong_count(h) > 1);
        inner.live.retain(|_, w| w.strong_count() > 0);
    }

    /// Close the kept-open handles that nobody holds and nobody asked for
    /// during the last `unused_for`; how many were closed. They are closed
    /// after the cache's lock is released (closing a database may
    /// checkpoint it).
    pub fn close_unused(&self, unused_for: Duration) -> usize {
        let unused: Vec<Arc<V>> = {
            let mut inner = self.lock();
            let (unused, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.recent)
                .into_iter()
                .partition(|(_, h, used)| {
                    Arc::strong_count(h) == 1 && used.elapsed() >= unused_for
                });
            inner.recent = kept.into();
            unused.into_iter().map(|(_, h, _)| h).collect()
        };
        let closed = unused.len();
        drop(unused);
        if closed > 0 {
            self.lock().live.retain(|_, w| w.strong_count() > 0);
        }
        closed
    }

    /// Handles kept open by the cache (at most the capacity).
    pub fn kept(&self) -> usize {
        self.lock().recent.len()
    }

    /// Handles open now, kept or in use.
    pub fn open(&self) -> usize {
        self.lock()
            .live
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A handle counting how many are open at once.
    struct Counted(Arc<AtomicUsize>);

    impl Counted {
        fn open(n: &Arc<AtomicUsize>) -> Result<Counted, ()> {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(Counted(n.clone()))
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn least_recently_used_is_closed_first() {
        let n = Arc::new(AtomicUsize::new(0));
        let c = HandleCache::new(2);
        let a = c.get_or_open("a", || Counted::open(&n)).unwrap();
        drop(a);
        drop(c.get_or_open("b", || Counted::open(&n)).unwrap());
        drop(c.get_or_open("a", || Counted::open(&n)).unwrap()); // a is now newest
        drop(c.get_or_open("c", || Counted::open(&n)).unwrap()); // evicts b
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert_eq!(c.kept(), 2);
        let mut reopened = false;
        drop(c.get_or_open("a", || {
            reopened = true;
            Counted::open(&n)
        }));
        assert!(!reopened, "a was kept");
        drop(c.get_or_open("b", || {
            reopened = true;
            Counted::open(&n)
        }));
        assert!(reopened, "b had been closed");
        c.close_idle();
        assert_eq!((n.load(Ordering::SeqCst), c.kept(), c.open()), (0, 0, 0));
    }

    #[test]
    fn handles_unused_for_a_while_are_closed_unless_held() {
        let n = Arc::new(AtomicUsize::new(0));
        let c = HandleCache::new(8);
        let held = c.get_or_open("held", || Counted::open(&n)).unwrap();
        drop(c.get_or_open("old", || Counted::open(&n)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        drop(c.get_or_open("fresh", || Counted::open(&n)).unwrap());
        assert_eq!(n.load(Ordering::SeqCst), 3);
        assert_eq!(c.close_unused(Duration::from_millis(40)), 1, "only old");
        assert_eq!((n.load(Ordering::SeqCst), c.kept()), (2, 2));
        // Asking for a kept handle counts as a use.
        std::thread::sleep(Duration::from_millis(50));
        assert!(c.get("fresh").is_some());
        assert_eq!(c.close_unused(Duration::from_millis(40)), 0, "held, used");
        // A handle in use is never closed, however long it is held; once
        // let go it is closed by the next sweep, and opened again on demand.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.close_unused(Duration::from_millis(40)), 1, "fresh");
        assert!(c.get("held").is_some_and(|h| Arc::ptr_eq(&h, &held)));
        drop(held);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.close_unused(Duration::from_millis(40)), 1, "held, let go");
        assert_eq!((n.load(Ordering::SeqCst), c.kept(), c.open()), (0, 0, 0));
        let mut reopened = false;
        drop(c.get_or_open("old", || {
            reopened = true;
            Counted::open(&n)
        }));
        assert!(reopened);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn handle_in_use_is_shared_and_never_closed_under_its_user() {
        let n = Arc::new(AtomicUsize::new(0));
        let c = HandleCache::new(1);
        let held = c.get_or_open("a", || Counted::open(&n)).unwrap();
        for k in ["b", "c", "d"] {
            drop(c.get_or_open(k, || Counted::open(&n)).unwrap());
        }
        c.close_idle();
        // Evicted and idle-closed, yet still open for its user, and a second
        // request for the same key gets that very handle.
        let again = c.get_or_open("a", || Counted::open(&n)).unwrap();
        assert!(Arc::ptr_eq(&held, &again));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        // Removing (deleting the event) hands back the live handle to mark.
        drop(again);
        let removed = c.remove("a").expect("a is in use");
        assert!(Arc::ptr_eq(&held, &removed));
        drop((held, removed));
        assert_eq!(n.load(Ordering::SeqCst), 0);
        assert!(c.remove("a").is_none());
    }

    #[test]
    fn concurrent_users_never_exceed_the_bound() {
        const CAP: usize = 4;
        const THREADS: usize = 8;
        let n = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let c = Arc::new(HandleCache::new(CAP));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (n, max_open, c) = (n.clone(), max_open.clone(), c.clone());
                std::thread::spawn(move || {
                    for i in 0..2000usize {
                        let key = format!("ev{}", (i * 7 + t * 13) % 50);
                        let h = c.get_or_open(&key, || Counted::open(&n)).unwrap();
                        max_open.fetch_max(n.load(Ordering::SeqCst), Ordering::SeqCst);
                        assert!(c.kept() <= CAP);
                        if i % 97 == 0 {
                            c.close_idle();
                        }
                        drop(h);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let max = max_open.load(Ordering::SeqCst);
        assert!(max <= CAP + THREADS, "{max} open at once");
        assert!(max > 1, "the test exercised sharing");
        assert_eq!(n.load(Ordering::SeqCst), c.kept());
        assert!(c.kept() <= CAP);
    }
}
