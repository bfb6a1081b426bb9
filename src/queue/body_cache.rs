//! Bodies of just-accepted messages kept in memory, so their first delivery attempt
//! sends them from memory instead of reading back from the spool what was fsynced a
//! moment before (a `spawn_blocking` hop and a copy per message, issue 17).
//!
//! The cache is bounded by bytes ([`BODY_CACHE_BYTES`], counted in the memory budget of
//! issue 9): a message arriving while it is full is simply read from the spool at its
//! attempt, as after a restart. A body leaves the cache when its message's first attempt
//! is over (retries, minutes later, read the spool) or the message leaves the queue; the
//! bytes are given back when the last holder lets go ([`CachedBody`]'s `Drop`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// At most this many body bytes are kept in memory.
pub const BODY_CACHE_BYTES: usize = 64 << 20;

/// The byte budget shared by every cached body.
#[derive(Debug)]
pub struct BodyCache {
    used: AtomicUsize,
    budget: usize,
}

/// One cached body; its bytes count against the budget until the last clone is gone.
#[derive(Debug)]
pub struct CachedBody {
    pub bytes: Arc<[u8]>,
    cache: Arc<BodyCache>,
}

impl Drop for CachedBody {
    fn drop(&mut self) {
        self.cache
            .used
            .fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

impl BodyCache {
    pub fn new(budget: usize) -> Arc<BodyCache> {
        Arc::new(BodyCache {
            used: AtomicUsize::new(0),
            budget,
        })
    }

    /// Keeps `bytes` when the budget allows.
    pub fn admit(self: &Arc<Self>, bytes: Arc<[u8]>) -> Option<Arc<CachedBody>> {
        let len = bytes.len();
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + len > self.budget {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + len,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        Some(Arc::new(CachedBody {
            bytes,
            cache: Arc::clone(self),
        }))
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_given_back_by_the_last_holder() {
        let cache = BodyCache::new(10);
        let a = cache.admit(Arc::from(&b"123456"[..])).unwrap();
        assert!(
            cache.admit(Arc::from(&b"12345"[..])).is_none(),
            "over budget"
        );
        let b = Arc::clone(&a);
        drop(a);
        assert_eq!(cache.used(), 6, "a clone still holds it");
        drop(b);
        assert_eq!(cache.used(), 0);
        assert!(cache.admit(Arc::from(&b"12345"[..])).is_some());
    }
}
