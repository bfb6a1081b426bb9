//! The fleet-wide caches of direct delivery, kept in the Redis store when
//! `store.kind = "redis"` (with the file store they are files under `data_dir`), all
//! under `{prefix}fleet:` (SPEC §1), apart from the store proper: a route load never
//! reads them, however many there are.
//!
//! - [`RedisPolicyStore`]: the MTA-STS policy cache (a
//!   [`PolicyStore`](relaygate_transports::mtasts::PolicyStore)), one STRING of JSON per
//!   recipient domain at `{prefix}fleet:mtasts:{domain}`, set with an expiry a day beyond
//!   the entry's own, so that a policy one gateway fetched is applied by every gateway.
//!   Listing the cache (the background refresh does, every few minutes) never scans the
//!   keyspace: every put also adds the key to the SET `{prefix}fleet:mtasts-index` (one
//!   script, so both or neither), a remove takes it out, and the list walks the index
//!   with `SSCAN` pages and `MGET`s their keys, pruning members whose key has expired
//!   (checked again inside a script, so a concurrent put is never undone).
//! - [`RedisTlsStatusSink`]: what the last session with a recipient domain offered
//!   (a [`TlsStatusSink`]), one STRING of JSON per domain at
//!   `{prefix}fleet:tlsstatus:{domain}`, written by a background task; never listed.
//!
//! Neither ever fails or delays a delivery because Redis is away: the policy store keeps
//! a copy of every entry it saw in memory and answers from it when Redis errs (a
//! throttled warning says so); a put that does not reach Redis is reported to the cache,
//! which logs it; a TLS status record that cannot be written is dropped with a log line.
//! After a failed connection no new one is tried for [`RECONNECT_AFTER`], so an outage
//! costs one connection timeout, not one per delivery.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use relaygate_transports::direct::{CoalescingSink, TlsStatus, TlsStatusBackend, TlsStatusSink};
use relaygate_transports::mtasts::store::StoreFuture;
use relaygate_transports::mtasts::{
    CachedPolicy, MemoryStore, PolicyStore, StoreError as PolicyStoreError,
};

use super::redis::{Conn, RedisStore};
use super::StoreError;

/// How long after a failed connection the next one is tried.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(5);
/// At most one "Redis unavailable" warning per this interval (per cache).
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long a cached MTA-STS entry stays in Redis after its own expiry: an expired
/// policy still matters when its refetch fails (RFC 8461 §5.1 keeps using it).
pub const MTASTS_GRACE_SECS: u64 = 24 * 3600;

/// Sets a cached MTA-STS entry and indexes it. KEYS[1]: the entry, KEYS[2]: the index;
/// ARGV[1]: the JSON, ARGV[2]: the expiry in seconds.
const PUT_SCRIPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
return 1
"#;

/// Deletes cached MTA-STS entries and takes them out of the index. KEYS[1]: the index,
/// KEYS[2..]: the entries.
const REMOVE_SCRIPT: &str = r#"
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[1], KEYS[i])
end
return 1
"#;

/// Takes index members whose key no longer exists (expired) out of the index. KEYS[1]:
/// the index, KEYS[2..]: the candidates; one that exists again (a put since) stays.
const PRUNE_SCRIPT: &str = r#"
local n = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    n = n + redis.call('SREM', KEYS[1], KEYS[i])
  end
end
return n
"#;

/// How many index members one `SSCAN` page asks for (and one `MGET` reads).
const LIST_PAGE: usize = 500;

/// One Redis store and one shared data connection, made on first use and again after a
/// connection error (not sooner than [`RECONNECT_AFTER`] after a failed attempt).
pub struct FleetRedis {
    store: RedisStore,
    conn: tokio::sync::Mutex<Option<Conn>>,
    retry_at: Mutex<Option<Instant>>,
}

impl FleetRedis {
    /// Uses `store`; does not connect yet.
    pub fn new(store: RedisStore) -> FleetRedis {
        FleetRedis {
            store,
            conn: tokio::sync::Mutex::new(None),
            retry_at: Mutex::new(None),
        }
    }

    /// The store (key names, address).
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    fn retry_at(&self) -> MutexGuard<'_, Option<Instant>> {
        self.retry_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        if let Some(at) = *self.retry_at() {
            let now = Instant::now();
            if now < at {
                return Err(StoreError::Down {
                    target: self.store.display().to_string(),
                    secs: (at - now).as_secs().max(1),
                });
            }
        }
        match self.store.connect().await {
            Ok(conn) => {
                *self.retry_at() = None;
                *guard = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                *self.retry_at() = Some(Instant::now() + RECONNECT_AFTER);
                Err(e)
            }
        }
    }

    /// Drops the connection after a connection error, so the next call makes a new one.
    async fn forget_on(&self, error: &StoreError) {
        if error.is_connection() {
            *self.conn.lock().await = None;
        }
    }

    /// Runs one command.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let result = self.store.query(&mut conn, cmd).await;
        if let Err(e) = &result {
            self.forget_on(e).await;
        }
        result
    }

    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let result = self.store.invoke(&mut conn, invocation).await;
        if let Err(e) = &result {
            self.forget_on(e).await;
        }
        result
    }
}

/// Lets one warning through per [`WARN_EVERY`] and counts the ones held back.
#[derive(Default)]
struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// `Some(number held back since the last one)` when a warning may be logged now.
    fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < WARN_EVERY => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The Redis expiry (seconds) of an entry valid until `expires`, at `now`.
pub fn mtasts_ttl(expires: u64, now: u64) -> u64 {
    expires.saturating_sub(now) + MTASTS_GRACE_SECS
}

/// The MTA-STS policy cache in Redis, with this process's copy in memory for outages.
pub struct RedisPolicyStore {
    redis: Arc<FleetRedis>,
    memory: MemoryStore,
    warn: Throttle,
}

impl std::fmt::Debug for RedisPolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPolicyStore")
            .field("redis", &self.redis.store.display())
            .field("prefix", &self.redis.store.keys().prefix())
            .finish()
    }
}

fn backend(e: &StoreError) -> PolicyStoreError {
    PolicyStoreError::Backend(e.to_string())
}

impl RedisPolicyStore {
    pub fn new(redis: Arc<FleetRedis>) -> RedisPolicyStore {
        RedisPolicyStore {
            redis,
            memory: MemoryStore::new(),
            warn: Throttle::default(),
        }
    }

    fn warn_unavailable(&self, what: &str, error: &StoreError) {
        if let Some(suppressed) = self.warn.allow() {
            tracing::warn!(error = %error, suppressed,
                "MTA-STS cache: Redis unavailable on {what}; using this process's copy");
        }
    }

    /// Decodes a stored entry; garbage (someone else's value) reads as absent.
    fn decode(&self, key: &str, json: &str) -> Option<CachedPolicy> {
        match serde_json::from_str(json) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(key, error = %e, "MTA-STS cache: not a cache entry; ignored");
                None
            }
        }
    }

    async fn get_entry(&self, domain: &str) -> Result<Option<CachedPolicy>, PolicyStoreError> {
        let key = self.redis.store.keys().mtasts(domain);
        match self
            .redis
            .query::<Option<String>>(redis::cmd("GET").arg(&key))
            .await
        {
            Ok(Some(json)) => match self.decode(&key, &json) {
                Some(entry) => {
                    self.memory.put(entry.clone()).await?;
                    Ok(Some(entry))
                }
                None => Ok(None),
            },
            Ok(None) => {
                self.memory.remove(domain).await?;
                Ok(None)
            }
            Err(e) => {
                self.warn_unavailable("read", &e);
                self.memory.get(domain).await
            }
        }
    }

    async fn put_entry(&self, entry: CachedPolicy) -> Result<(), PolicyStoreError> {
        let key = self.redis.store.keys().mtasts(&entry.domain);
        let json = serde_json::to_string(&entry)
            .map_err(|e| PolicyStoreError::Backend(format!("{key}: encoding: {e}")))?;
        let ttl = mtasts_ttl(entry.expires, unix_now());
        self.memory.put(entry).await?;
        let script = redis::Script::new(PUT_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&key)
            .key(self.redis.store.keys().mtasts_index())
            .arg(json)
            .arg(ttl);
        self.redis
            .invoke::<i64>(&invocation)
            .await
            .map(|_| ())
            .map_err(|e| backend(&e))
    }

    async fn remove_entry(&self, domain: &str) -> Result<(), PolicyStoreError> {
        self.memory.remove(domain).await?;
        let keys = self.redis.store.keys();
        let script = redis::Script::new(REMOVE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation.key(keys.mtasts_index()).key(keys.mtasts(domain));
        self.redis
            .invoke::<i64>(&invocation)
            .await
            .map(|_| ())
            .map_err(|e| backend(&e))
    }

    async fn list_entries(&self) -> Result<Vec<CachedPolicy>, PolicyStoreError> {
        match self.list_from_index().await {
            Ok(entries) => Ok(entries),
            Err(e) => {
                self.warn_unavailable("list", &e);
                self.memory.list().await
            }
        }
    }

    /// Every entry named by the index, page by page (`SSCAN` of the index, `MGET` of
    /// the page): no call holds Redis for more than one page. Members whose key is gone
    /// are pruned from the index at the end.
    async fn list_from_index(&self) -> Result<Vec<CachedPolicy>, StoreError> {
        let keys = self.redis.store.keys();
        let index = keys.mtasts_index();
        let mut seen = std::collections::BTreeSet::new();
        let mut entries = Vec::new();
        let mut gone = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, members): (u64, Vec<String>) = self
                .redis
                .query(
                    redis::cmd("SSCAN")
                        .arg(&index)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(LIST_PAGE),
                )
                .await?;
            // SSCAN may return a member twice.
            let members: Vec<String> = members
                .into_iter()
                .filter(|m| seen.insert(m.clone()))
                .collect();
            if !members.is_empty() {
                let values: Vec<Option<String>> =
                    self.redis.query(redis::cmd("MGET").arg(&members)).await?;
                for (member, value) in members.into_iter().zip(values) {
                    match value {
                        Some(json) => entries.extend(self.decode(&member, &json)),
                        None => gone.push(member),
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for chunk in gone.chunks(LIST_PAGE) {
            let script = redis::Script::new(PRUNE_SCRIPT);
            let mut invocation = script.prepare_invoke();
            invocation.key(&index);
            for member in chunk {
                invocation.key(member);
            }
            let pruned: u64 = self.redis.invoke(&invocation).await?;
            if pruned > 0 {
                tracing::debug!(pruned, "MTA-STS cache: expired entries left the index");
            }
        }
        Ok(entries)
    }
}

impl PolicyStore for RedisPolicyStore {
    fn get<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, Option<CachedPolicy>> {
        Box::pin(self.get_entry(domain))
    }

    fn put(&self, entry: CachedPolicy) -> StoreFuture<'_, ()> {
        Box::pin(self.put_entry(entry))
    }

    fn remove<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.remove_entry(domain))
    }

    fn list(&self) -> StoreFuture<'_, Vec<CachedPolicy>> {
        Box::pin(self.list_entries())
    }
}

/// The Redis backend of the TLS status sink: `SET {prefix}fleet:tlsstatus:{domain}`.
pub struct RedisTlsStatus {
    redis: Arc<FleetRedis>,
}

impl TlsStatusBackend for RedisTlsStatus {
    fn write_batch(
        &self,
        batch: BTreeMap<String, TlsStatus>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let total = batch.len();
            for (done, (domain, status)) in batch.into_iter().enumerate() {
                let key = self.redis.store.keys().tls_status(&domain);
                let json = status.to_json(&domain);
                let set = redis::cmd("SET").arg(&key).arg(json.trim_end()).clone();
                if let Err(e) = self.redis.query::<()>(&set).await {
                    // One line per failed batch: the rest would fail the same way.
                    tracing::warn!(%domain, error = %e, dropped = total - done,
                        "TLS status: not written to Redis; records dropped");
                    break;
                }
            }
        })
    }
}

/// TLS status records in Redis, written by a background task; [`TlsStatusSink::record`]
/// returns at once. Dropping the sink lets the writer finish what is pending and stop.
pub struct RedisTlsStatusSink {
    sink: CoalescingSink<RedisTlsStatus>,
}

impl std::fmt::Debug for RedisTlsStatusSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redis = &self.sink.backend().redis;
        f.debug_struct("RedisTlsStatusSink")
            .field("redis", &redis.store.display())
            .field("prefix", &redis.store.keys().prefix())
            .finish()
    }
}

impl RedisTlsStatusSink {
    pub fn new(redis: Arc<FleetRedis>) -> RedisTlsStatusSink {
        RedisTlsStatusSink {
            sink: CoalescingSink::new(RedisTlsStatus { redis }),
        }
    }
}

impl TlsStatusSink for RedisTlsStatusSink {
    fn record(&self, domain: &str, status: TlsStatus) {
        self.sink.record(domain, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relaygate_transports::mtasts::{Mode, MxPattern, Policy};

    /// A store at an address where nothing listens.
    fn unreachable() -> Arc<FleetRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            &format!("[store]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/\"\n"),
        )
        .unwrap();
        Arc::new(FleetRedis::new(
            RedisStore::open(&config.store, &config.tls).unwrap(),
        ))
    }

    fn entry(domain: &str) -> CachedPolicy {
        CachedPolicy {
            domain: domain.into(),
            record_id: "1".into(),
            policy: Some(Policy {
                mode: Mode::Enforce,
                mx: vec![MxPattern::Exact("mx.dst.test".into())],
                max_age: 86400,
            }),
            updated: 1,
            expires: u64::MAX / 2,
            last_use: 1,
            failures: 0,
            retry_after: 0,
        }
    }

    #[tokio::test]
    async fn redis_down_policy_cache_works_from_memory() {
        let redis = unreachable();
        let store = RedisPolicyStore::new(Arc::clone(&redis));
        assert_eq!(store.get("dst.test").await.unwrap(), None);
        // The put does not reach Redis (reported), but the entry is kept.
        let err = store.put(entry("dst.test")).await.unwrap_err();
        assert!(err.to_string().contains("Redis"), "{err}");
        assert_eq!(
            store.get("dst.test").await.unwrap(),
            Some(entry("dst.test"))
        );
        assert_eq!(store.list().await.unwrap().len(), 1);
        // After the failed connection, calls fail fast until RECONNECT_AFTER.
        let started = Instant::now();
        let down = redis.query::<()>(&redis::cmd("PING")).await.unwrap_err();
        assert!(matches!(down, StoreError::Down { .. }), "{down}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(store.remove("dst.test").await.is_err());
        assert_eq!(store.get("dst.test").await.unwrap(), None);
    }

    #[tokio::test]
    async fn redis_down_tls_status_record_returns_at_once() {
        let sink = RedisTlsStatusSink::new(unreachable());
        let status = TlsStatus {
            host: "mx.dst.test".into(),
            ip: None,
            starttls: true,
            requiretls: false,
            tls: "unverified",
            tls_error: None,
            updated_at: 1,
        };
        let started = Instant::now();
        sink.record("dst.test", status.clone());
        sink.record("[192.0.2.1]", status);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(sink.sink.writer_running());
    }

    #[test]
    fn mtasts_expiry_is_beyond_the_entry() {
        assert_eq!(
            mtasts_ttl(1_000 + 86_400, 1_000),
            86_400 + MTASTS_GRACE_SECS
        );
        // Already expired: kept for the grace period only.
        assert_eq!(mtasts_ttl(500, 1_000), MTASTS_GRACE_SECS);
    }

    #[test]
    fn throttle_lets_one_warning_through() {
        let t = Throttle::default();
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        assert_eq!(t.suppressed.load(Ordering::Relaxed), 2);
    }
}
