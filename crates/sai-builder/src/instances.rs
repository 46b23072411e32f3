//! `SAI_INSTANCE_IDX` allocation: the lowest free index among the running
//! steps of one platform, starting at 0 (the reference's README documents
//! 0-based; its code adds 1, see reference 5.3).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Default number of indexes per platform (reference: 256 ordinals).
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// Instance indexes of one platform. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct InstancePool {
    used: Arc<Mutex<BTreeSet<u32>>>,
    max: u32,
}

impl Default for InstancePool {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_INSTANCES)
    }
}

impl InstancePool {
    /// A pool handing out indexes `0..max`.
    pub fn new(max: u32) -> Self {
        Self {
            used: Arc::new(Mutex::new(BTreeSet::new())),
            max,
        }
    }

    /// Take the lowest free index, or `None` when all `max` are in use.
    /// The index is released when the returned guard drops.
    pub fn acquire(&self) -> Option<InstanceGuard> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let idx = (0..self.max).find(|i| !used.contains(i))?;
        used.insert(idx);
        Some(InstanceGuard {
            pool: self.clone(),
            idx,
        })
    }

    /// How many indexes are currently held.
    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A held instance index; dropping it frees the index.
#[derive(Debug)]
pub struct InstanceGuard {
    pool: InstancePool,
    idx: u32,
}

impl InstanceGuard {
    /// The index, the value of `SAI_INSTANCE_IDX`.
    pub fn idx(&self) -> u32 {
        self.idx
    }
}

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        self.pool
            .used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_reused() {
        let pool = InstancePool::new(8);
        let a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        let c = pool.acquire().unwrap();
        assert_eq!((a.idx(), b.idx(), c.idx()), (0, 1, 2));
        drop(b);
        assert_eq!(pool.in_use(), 2);
        let d = pool.acquire().unwrap();
        assert_eq!(d.idx(), 1, "released index is reused lowest-first");
        drop(a);
        assert_eq!(pool.acquire().unwrap().idx(), 0);
    }

    #[test]
    fn exhausted_pool_returns_none() {
        let pool = InstancePool::new(1);
        let _a = pool.acquire().unwrap();
        assert!(pool.acquire().is_none());
    }

    #[test]
    fn concurrent_acquisitions_are_distinct() {
        let pool = InstancePool::new(64);
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let pool = pool.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    pool.acquire().unwrap()
                })
            })
            .collect();
        let guards: Vec<InstanceGuard> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut idx: Vec<u32> = guards.iter().map(|g| g.idx()).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..16).collect::<Vec<_>>());
        drop(guards);
        assert_eq!(pool.in_use(), 0);
    }
}
