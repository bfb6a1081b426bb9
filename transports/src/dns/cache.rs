//! A small TTL cache for lookup results: positive answers and definite negatives
//! (NXDOMAIN, NODATA), never failures. Bounded; when full it drops expired entries, and if
//! that is not enough, everything (a cache miss is only a query).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{LookupResult, QueryType, Record};

/// Longest time anything is kept, whatever the TTL says.
const MAX_TTL: Duration = Duration::from_secs(3600);

/// (name, type) → (expiry, result).
type Entries = HashMap<(String, QueryType), (Instant, LookupResult<Record>)>;

pub(crate) struct Cache {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl Cache {
    /// A cache of at most `capacity` entries; 0 disables it.
    pub(crate) fn new(capacity: usize) -> Self {
        Cache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, name: &str, qtype: QueryType) -> Option<LookupResult<Record>> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), qtype);
        match entries.get(&key) {
            Some((expires, result)) if *expires > Instant::now() => Some(result.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Stores a result for `ttl` seconds; temporary failures and TTL 0 are not stored.
    pub(crate) fn put(
        &self,
        name: &str,
        qtype: QueryType,
        result: &LookupResult<Record>,
        ttl: u32,
    ) {
        if self.capacity == 0 || ttl == 0 {
            return;
        }
        if let Err(e) = result {
            if e.is_temporary() {
                return;
            }
        }
        let now = Instant::now();
        let expires = now + Duration::from_secs(u64::from(ttl)).min(MAX_TTL);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, (exp, _)| *exp > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert((name.to_string(), qtype), (expires, result.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{Answer, DnsError};

    #[tokio::test(start_paused = true)]
    async fn dns_cache_expires_and_skips_failures() {
        let cache = Cache::new(2);
        let ok: LookupResult<Record> = Ok(Answer {
            authentic: false,
            records: vec![Record::A("192.0.2.1".parse().unwrap())],
        });
        cache.put("a.example", QueryType::A, &ok, 10);
        assert_eq!(cache.get("a.example", QueryType::A), Some(ok.clone()));
        assert_eq!(cache.get("a.example", QueryType::Aaaa), None);

        let servfail: LookupResult<Record> = Err(DnsError::ServFail {
            name: "b.example".into(),
            qtype: QueryType::A,
        });
        cache.put("b.example", QueryType::A, &servfail, 10);
        assert_eq!(cache.get("b.example", QueryType::A), None);

        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(cache.get("a.example", QueryType::A), None);

        // Full: expired entries go first, then everything.
        cache.put("c.example", QueryType::A, &ok, 10);
        cache.put("d.example", QueryType::A, &ok, 10);
        cache.put("e.example", QueryType::A, &ok, 10);
        assert_eq!(cache.get("e.example", QueryType::A), Some(ok));
        assert_eq!(cache.get("c.example", QueryType::A), None);
    }
}
