//! The policy cache: which MTA-STS policy applies to a recipient domain right now, with
//! the reference design's rules (mox `mtastsdb`) and RFC 8461 §5.
//!
//! [`PolicyCache::get`], at every delivery to a domain:
//! - a valid cached policy: look at the TXT record; same id → the policy (fresh); another
//!   id → fetch the new policy, and if that fails keep the cached one (RFC 8461 §5.1:
//!   a cached policy stays in force until it expires); no record or a DNS failure → the
//!   cached policy;
//! - a valid back-off entry (a fetch failed recently): no MTA-STS for now;
//! - nothing valid: look up the TXT record at the ORIGINAL recipient domain (no CNAME
//!   following for the policy domain, RFC 8461 §4). No record (or several, or a broken
//!   one) → no MTA-STS, nothing cached. A DNS failure → an error (the caller decides).
//!   A record → fetch and parse the policy: cached for its `max_age` (clamped); on
//!   failure (404, TLS, timeout, syntax...) a short back-off entry, 5 min doubling per
//!   consecutive failure up to 1 h, during which the domain has no MTA-STS.
//!
//! The background refresh ([`PolicyCache::refresh_due`], [`PolicyCache::refresh`]) keeps
//! policies in use from expiring (RFC 8461 §5.1: senders SHOULD refresh before expiry):
//! same id → the expiry moves forward; otherwise a new fetch, keeping the old policy if
//! it fails. [`PolicyCache::prune`] forgets domains not used for 180 days.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::fetch::{FetchError, PolicyFetcher};
use super::policy::{parse_policy, Mode, Policy, PolicyError};
use super::record::{lookup_record, RecordError, StsRecord};
use super::store::{CachedPolicy, PolicyStore};
use crate::dns::{normalize_name, DnsError, Resolver};

/// Timing rules of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Back-off after the first failed fetch (RFC 8461 §3.3 leaves it to the sender).
    pub backoff_initial: Duration,
    /// Longest back-off, however many failures.
    pub backoff_max: Duration,
    /// A policy is refreshed once it is this old (or half its lifetime, if shorter).
    pub refresh_after: Duration,
    /// Domains not delivered to for this long are forgotten.
    pub forget_after: Duration,
    /// `last_use` is written back at most this often (each write rewrites the store).
    pub touch_interval: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            backoff_initial: Duration::from_secs(5 * 60),
            backoff_max: Duration::from_secs(60 * 60),
            refresh_after: Duration::from_secs(12 * 3600),
            forget_after: Duration::from_secs(180 * 86400),
            touch_interval: Duration::from_secs(3600),
        }
    }
}

/// The policy that applies to a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePolicy {
    /// The policy (its mode may be `none`).
    pub policy: Policy,
    /// The TXT record id it belongs to.
    pub record_id: String,
    /// Confirmed against DNS (or fetched) just now; false when the cached copy is used
    /// because the TXT lookup or a refetch failed.
    pub fresh: bool,
}

/// No decision could be made about the domain's MTA-STS policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyLookupError {
    /// The TXT lookup failed and no valid policy is cached: try again later.
    #[error("MTA-STS policy of {domain}: {source}")]
    Dns {
        /// The recipient domain.
        domain: String,
        /// The failed lookup.
        #[source]
        source: DnsError,
    },
}

/// What a background refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Same id: the cached policy's expiry was moved forward.
    Confirmed,
    /// A new policy was fetched and cached.
    Updated,
    /// The refetch failed; the cached policy stays until it expires.
    Kept {
        /// Why the fetch failed.
        reason: String,
    },
    /// Nothing to refresh (no entry, a back-off entry, or mode `none` without a record).
    Skipped,
}

/// Why no policy came out of a fetch.
#[derive(Debug, thiserror::Error)]
enum FetchFailure {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Parse(#[from] PolicyError),
}

/// The MTA-STS policy cache. Share it behind an `Arc`; concurrent lookups of one domain
/// may fetch twice, which is harmless.
pub struct PolicyCache {
    resolver: Arc<dyn Resolver>,
    fetcher: Arc<dyn PolicyFetcher>,
    store: Arc<dyn PolicyStore>,
    settings: CacheSettings,
}

impl PolicyCache {
    /// A cache over these pieces with the default [`CacheSettings`].
    pub fn new(
        resolver: Arc<dyn Resolver>,
        fetcher: Arc<dyn PolicyFetcher>,
        store: Arc<dyn PolicyStore>,
    ) -> Self {
        PolicyCache {
            resolver,
            fetcher,
            store,
            settings: CacheSettings::default(),
        }
    }

    /// Other timing rules.
    pub fn with_settings(mut self, settings: CacheSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The policy for a recipient domain now (see the module comment). `Ok(None)`: the
    /// domain has no MTA-STS policy that applies.
    pub async fn get(&self, domain: &str) -> Result<Option<ActivePolicy>, PolicyLookupError> {
        self.get_at(domain, SystemTime::now()).await
    }

    /// [`PolicyCache::get`] at a given time (tests, replay).
    pub async fn get_at(
        &self,
        domain: &str,
        now: SystemTime,
    ) -> Result<Option<ActivePolicy>, PolicyLookupError> {
        let now = unix(now);
        let domain = normalize_name(domain);
        let cached = self.load(&domain).await;
        if let Some(entry) = cached.as_ref().filter(|e| e.is_valid(now)) {
            return Ok(self.use_cached(entry.clone(), now).await);
        }
        match lookup_record(&*self.resolver, &domain).await {
            Ok(record) => Ok(self.fetch_new(&domain, record, cached.as_ref(), now).await),
            Err(RecordError::Dns(source)) => Err(PolicyLookupError::Dns { domain, source }),
            Err(
                reason @ (RecordError::Absent { .. }
                | RecordError::Multiple { .. }
                | RecordError::Invalid { .. }),
            ) => {
                // RFC 8461 §3.1: no single valid record: the domain has no MTA-STS.
                debug!(%domain, %reason, "no MTA-STS record");
                if cached.is_some() {
                    self.delete(&domain).await;
                }
                Ok(None)
            }
        }
    }

    /// A valid entry: check the TXT id, refetch when it changed.
    async fn use_cached(&self, mut entry: CachedPolicy, now: u64) -> Option<ActivePolicy> {
        let touched = now.saturating_sub(entry.last_use) >= self.settings.touch_interval.as_secs();
        if touched {
            entry.last_use = now;
        }
        let Some(policy) = entry.policy.clone() else {
            // A fetch failed recently: act as if the domain had no policy until the
            // back-off entry expires (the reference's rule, RFC 8461 §3.3 leeway).
            if touched {
                self.save(entry).await;
            }
            return None;
        };
        let cached = |entry: &CachedPolicy, fresh: bool| ActivePolicy {
            policy: policy.clone(),
            record_id: entry.record_id.clone(),
            fresh,
        };
        match lookup_record(&*self.resolver, &entry.domain).await {
            Ok(record) if record.id == entry.record_id => {
                let active = cached(&entry, true);
                if touched {
                    self.save(entry).await;
                }
                Some(active)
            }
            Ok(record) => {
                // A new id announces a new policy; fetch it, unless a refetch failed lately.
                if now < entry.retry_after {
                    let active = cached(&entry, false);
                    if touched {
                        self.save(entry).await;
                    }
                    return Some(active);
                }
                match self.fetch_policy(&entry.domain).await {
                    Ok(new) => {
                        info!(domain = %entry.domain, id = %record.id, mode = %new.mode, "MTA-STS policy changed");
                        let active = ActivePolicy {
                            policy: new.clone(),
                            record_id: record.id.clone(),
                            fresh: true,
                        };
                        self.save(fresh_entry(&entry.domain, record.id, new, now))
                            .await;
                        Some(active)
                    }
                    Err(e) => {
                        // RFC 8461 §5.1: keep using the cached policy until it expires.
                        warn!(domain = %entry.domain, error = %e, "MTA-STS refetch failed, keeping the cached policy");
                        entry.failures = entry.failures.saturating_add(1);
                        entry.retry_after = now + self.backoff(entry.failures);
                        let active = cached(&entry, false);
                        self.save(entry).await;
                        Some(active)
                    }
                }
            }
            Err(e) => {
                // RFC 8461 §5.1: a missing record (or a DNS failure) does not end a cached
                // policy before its expiry.
                debug!(domain = %entry.domain, error = %e, "MTA-STS record lookup failed, using the cached policy");
                let active = cached(&entry, false);
                if touched {
                    self.save(entry).await;
                }
                Some(active)
            }
        }
    }

    /// No valid entry, but a record: fetch the policy, or cache a back-off entry.
    async fn fetch_new(
        &self,
        domain: &str,
        record: StsRecord,
        previous: Option<&CachedPolicy>,
        now: u64,
    ) -> Option<ActivePolicy> {
        match self.fetch_policy(domain).await {
            Ok(policy) => {
                info!(%domain, id = %record.id, mode = %policy.mode, max_age = policy.max_age, "MTA-STS policy fetched");
                let active = ActivePolicy {
                    policy: policy.clone(),
                    record_id: record.id.clone(),
                    fresh: true,
                };
                self.save(fresh_entry(domain, record.id, policy, now)).await;
                Some(active)
            }
            Err(e) => {
                let failures = previous.map_or(0, |p| p.failures).saturating_add(1);
                let delay = self.backoff(failures);
                warn!(%domain, error = %e, backoff_secs = delay, "MTA-STS policy fetch failed; no policy for now");
                self.save(CachedPolicy {
                    domain: domain.to_string(),
                    record_id: record.id,
                    policy: None,
                    updated: now,
                    expires: now + delay,
                    last_use: now,
                    failures,
                    retry_after: now + delay,
                })
                .await;
                None
            }
        }
    }

    /// Domains whose policies are due for a background refresh at `now`: policies (not
    /// back-off entries) used within `forget_after`, updated at least `refresh_after` (or
    /// half their lifetime) ago, and not in a refetch back-off.
    pub async fn refresh_due(&self, now: SystemTime) -> Vec<String> {
        let now = unix(now);
        let entries = match self.store.list().await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, "listing cached MTA-STS policies");
                return Vec::new();
            }
        };
        entries
            .into_iter()
            .filter(|e| {
                let Some(policy) = &e.policy else {
                    return false;
                };
                let every = self
                    .settings
                    .refresh_after
                    .as_secs()
                    .min(policy.cache_lifetime() / 2);
                now.saturating_sub(e.last_use) <= self.settings.forget_after.as_secs()
                    && now >= e.retry_after
                    && now.saturating_sub(e.updated) >= every
            })
            .map(|e| e.domain)
            .collect()
    }

    /// Refreshes one domain's cached policy in the background.
    pub async fn refresh(&self, domain: &str, now: SystemTime) -> RefreshOutcome {
        let now = unix(now);
        let domain = normalize_name(domain);
        let Some(mut entry) = self.load(&domain).await else {
            return RefreshOutcome::Skipped;
        };
        let Some(policy) = entry.policy.clone() else {
            return RefreshOutcome::Skipped;
        };
        let record = lookup_record(&*self.resolver, &domain).await;
        let record_id = match record {
            Ok(record) if record.id == entry.record_id => {
                entry.updated = now;
                entry.expires = now + policy.cache_lifetime();
                entry.failures = 0;
                entry.retry_after = 0;
                self.save(entry).await;
                return RefreshOutcome::Confirmed;
            }
            Ok(record) => record.id,
            // A `none` policy whose record is gone: the domain left MTA-STS; let it expire.
            Err(_) if policy.mode == Mode::None => return RefreshOutcome::Skipped,
            // DNS may just be down: try the policy anyway rather than let it expire.
            Err(_) => entry.record_id.clone(),
        };
        match self.fetch_policy(&domain).await {
            Ok(new) => {
                self.save(fresh_entry(&domain, record_id, new, now)).await;
                RefreshOutcome::Updated
            }
            Err(e) => {
                warn!(%domain, error = %e, "MTA-STS refresh failed, keeping the cached policy");
                entry.failures = entry.failures.saturating_add(1);
                entry.retry_after = now + self.backoff(entry.failures);
                self.save(entry).await;
                RefreshOutcome::Kept {
                    reason: e.to_string(),
                }
            }
        }
    }

    /// Refreshes every due domain, one after the other.
    pub async fn refresh_all_due(&self, now: SystemTime) -> Vec<(String, RefreshOutcome)> {
        let mut done = Vec::new();
        for domain in self.refresh_due(now).await {
            let outcome = self.refresh(&domain, now).await;
            done.push((domain, outcome));
        }
        done
    }

    /// Forgets domains unused for `forget_after`, and entries expired longer than
    /// `backoff_max` ago. Returns how many were removed.
    pub async fn prune(&self, now: SystemTime) -> usize {
        let now = unix(now);
        let entries = match self.store.list().await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, "listing cached MTA-STS policies");
                return 0;
            }
        };
        let mut removed = 0;
        for entry in entries {
            let unused = now.saturating_sub(entry.last_use) > self.settings.forget_after.as_secs();
            let stale = now
                > entry
                    .expires
                    .saturating_add(self.settings.backoff_max.as_secs());
            if unused || stale {
                self.delete(&entry.domain).await;
                removed += 1;
            }
        }
        removed
    }

    /// The back-off after `failures` consecutive failures: initial × 2^(n−1), capped.
    fn backoff(&self, failures: u32) -> u64 {
        let initial = self.settings.backoff_initial.as_secs().max(1);
        let max = self.settings.backoff_max.as_secs().max(initial);
        let shift = failures.saturating_sub(1).min(20);
        initial.saturating_mul(1u64 << shift).min(max)
    }

    async fn fetch_policy(&self, domain: &str) -> Result<Policy, FetchFailure> {
        let text = self.fetcher.fetch(domain).await?;
        Ok(parse_policy(&text)?)
    }

    /// The stored entry; a store failure reads as "not cached" (logged).
    async fn load(&self, domain: &str) -> Option<CachedPolicy> {
        match self.store.get(domain).await {
            Ok(entry) => entry,
            Err(e) => {
                warn!(%domain, error = %e, "reading the MTA-STS cache");
                None
            }
        }
    }

    /// Stores an entry; a failure is logged and never touches the delivery.
    async fn save(&self, entry: CachedPolicy) {
        let domain = entry.domain.clone();
        if let Err(e) = self.store.put(entry).await {
            warn!(%domain, error = %e, "writing the MTA-STS cache");
        }
    }

    async fn delete(&self, domain: &str) {
        if let Err(e) = self.store.remove(domain).await {
            warn!(%domain, error = %e, "removing from the MTA-STS cache");
        }
    }
}

fn fresh_entry(domain: &str, record_id: String, policy: Policy, now: u64) -> CachedPolicy {
    CachedPolicy {
        domain: domain.to_string(),
        record_id,
        expires: now + policy.cache_lifetime(),
        policy: Some(policy),
        updated: now,
        last_use: now,
        failures: 0,
        retry_after: 0,
    }
}

/// Unix seconds (0 before 1970, which does not happen).
fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
