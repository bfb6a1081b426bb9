//! A bounded, thread-safe cache of SCRAM SaltedPassword values for the client side.
//!
//! `SaltedPassword = Hi(password, salt, i)` is the deliberately slow step of SCRAM
//! (thousands of HMACs). A smarthost sends the same salt and iteration count at every
//! login, so one cache per transport lets every login after the first skip it. The
//! key is a SHA-256 digest over (hash, password, salt, iterations), so the cache holds
//! no plaintext password; the values are password-equivalent and never printed.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
};

use sha2::{digest::Digest, Sha256};

use super::hash::ScramHash;

/// Hit and miss counts of a [`SaltedCache`]. Every miss ran PBKDF2 once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that computed `Hi`.
    pub misses: u64,
}

struct Entry {
    key: [u8; 32],
    salted: Vec<u8>,
    last_used: u64,
}

#[derive(Default)]
struct Entries {
    list: Vec<Entry>,
    clock: u64,
}

/// SaltedPassword cache, least-recently-used eviction. Share it (in an `Arc`) between
/// the logins of one transport.
pub struct SaltedCache {
    capacity: usize,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl SaltedCache {
    /// Default number of entries.
    pub const DEFAULT_CAPACITY: usize = 64;

    /// A cache holding at most `capacity` entries (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        SaltedCache {
            capacity,
            entries: Mutex::new(Entries::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// `Hi(password, salt, iterations)`, from the cache when possible. `password` must
    /// already be SASLprep'd. PBKDF2 runs outside the lock, so concurrent logins with
    /// different credentials do not wait for each other.
    pub fn salted_password(
        &self,
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Vec<u8> {
        let key = cache_key(hash, password, salt, iterations);
        {
            let mut entries = self.lock();
            entries.clock += 1;
            let now = entries.clock;
            if let Some(entry) = entries.list.iter_mut().find(|e| e.key == key) {
                entry.last_used = now;
                self.hits.fetch_add(1, Ordering::Relaxed);
                return entry.salted.clone();
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let salted = hash.hi(password.as_bytes(), salt, iterations);
        if self.capacity > 0 {
            let mut entries = self.lock();
            entries.clock += 1;
            let now = entries.clock;
            if !entries.list.iter().any(|e| e.key == key) {
                if entries.list.len() >= self.capacity {
                    if let Some(oldest) = entries
                        .list
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.last_used)
                        .map(|(i, _)| i)
                    {
                        entries.list.swap_remove(oldest);
                    }
                }
                entries.list.push(Entry {
                    key,
                    salted: salted.clone(),
                    last_used: now,
                });
            }
        }
        salted
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.lock().list.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every entry (e.g. when the operator changes a password).
    pub fn clear(&self) {
        self.lock().list.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave an entry half-written (entries
        // are pushed whole), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for SaltedCache {
    fn default() -> Self {
        SaltedCache::new(SaltedCache::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for SaltedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaltedCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Length-prefixed fields, so that no two different tuples hash the same input.
fn cache_key(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"relaygate salted-password cache\0");
    h.update(hash.scram_name().as_bytes());
    h.update((password.len() as u64).to_be_bytes());
    h.update(password.as_bytes());
    h.update((salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update(iterations.to_be_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lookup_hits() {
        let cache = SaltedCache::default();
        let a = cache.salted_password(ScramHash::Sha256, "pencil", b"salt", 4096);
        assert_eq!(cache.stats(), CacheStats { hits: 0, misses: 1 });
        let b = cache.salted_password(ScramHash::Sha256, "pencil", b"salt", 4096);
        assert_eq!(a, b);
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1 });
        assert_eq!(a, ScramHash::Sha256.hi(b"pencil", b"salt", 4096));
    }

    #[test]
    fn every_part_of_the_key_matters() {
        let cache = SaltedCache::default();
        cache.salted_password(ScramHash::Sha256, "pencil", b"salt", 4096);
        cache.salted_password(ScramHash::Sha1, "pencil", b"salt", 4096);
        cache.salted_password(ScramHash::Sha256, "pencil2", b"salt", 4096);
        cache.salted_password(ScramHash::Sha256, "pencil", b"salt2", 4096);
        cache.salted_password(ScramHash::Sha256, "pencil", b"salt", 4097);
        assert_eq!(cache.stats(), CacheStats { hits: 0, misses: 5 });
        assert_eq!(cache.len(), 5);
    }

    #[test]
    fn bounded_with_lru_eviction() {
        let cache = SaltedCache::new(2);
        cache.salted_password(ScramHash::Sha1, "a", b"s", 1);
        cache.salted_password(ScramHash::Sha1, "b", b"s", 1);
        cache.salted_password(ScramHash::Sha1, "a", b"s", 1); // a is now the newest
        cache.salted_password(ScramHash::Sha1, "c", b"s", 1); // evicts b
        assert_eq!(cache.len(), 2);
        cache.salted_password(ScramHash::Sha1, "a", b"s", 1);
        assert_eq!(cache.stats(), CacheStats { hits: 2, misses: 3 });
        cache.salted_password(ScramHash::Sha1, "b", b"s", 1);
        assert_eq!(cache.stats(), CacheStats { hits: 2, misses: 4 });
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_capacity_never_stores() {
        let cache = SaltedCache::new(0);
        cache.salted_password(ScramHash::Sha1, "a", b"s", 1);
        cache.salted_password(ScramHash::Sha1, "a", b"s", 1);
        assert_eq!(cache.stats().misses, 2);
        assert!(cache.is_empty());
    }

    #[test]
    fn debug_shows_no_values() {
        let cache = SaltedCache::default();
        cache.salted_password(ScramHash::Sha1, "secret", b"s", 1);
        let text = format!("{cache:?}");
        assert!(!text.contains("secret"));
        assert!(!text.contains("salted"));
        assert!(text.contains("capacity: 64"));
    }
}
