//! MTA-STS (RFC 8461): a recipient domain publishes, over DNS and HTTPS, that its MX
//! hosts support PKIX-verified TLS, and which MX host names are genuine.
//!
//! # The flow for one recipient domain
//!
//! 1. **Record.** `_mta-sts.<domain>` TXT, at the original recipient domain (never the
//!    target of its CNAME): exactly one `v=STSv1; id=...` record ([`record`]); none, several
//!    or a malformed one means no MTA-STS.
//! 2. **Policy.** `https://mta-sts.<domain>/.well-known/mta-sts.txt` over PKIX-verified
//!    HTTPS, no redirects, a size cap and a deadline ([`fetch`], behind [`PolicyFetcher`]),
//!    parsed by [`parse_policy`]: mode `enforce`/`testing`/`none`, `mx` patterns, `max_age`.
//! 3. **Cache.** [`PolicyCache`] keeps policies for their `max_age` (clamped), checks the
//!    TXT id at each use, refetches when it changes, keeps the old policy when a refetch
//!    fails, caches a short back-off entry when a first fetch fails, and offers a
//!    background refresh ([`PolicyCache::refresh_due`], [`PolicyCache::refresh`]). Entries
//!    persist through a [`PolicyStore`] ([`JsonFileStore`] under `data_dir`).
//! 4. **Use** (in direct delivery): `enforce` → only MX hosts matching the patterns
//!    ([`mx_matches`]), STARTTLS required and PKIX-verified for the MX host name;
//!    `testing` → log and count mismatches, deliver as usual; `none` → nothing.
//!
//! # Layout
//!
//! - [`policy`] — the policy file parser and MX matching (pure).
//! - [`record`] — the TXT record parser and lookup.
//! - [`fetch`] — the HTTPS fetch ([`HttpsFetcher`]) and its trait.
//! - [`store`] — cache entries and their storage.
//! - [`cache`] — the cache rules.

pub mod cache;
pub mod fetch;
pub mod policy;
pub mod record;
pub mod store;

#[cfg(all(test, feature = "testkit"))]
mod tests;

pub use cache::{ActivePolicy, CacheSettings, PolicyCache, PolicyLookupError, RefreshOutcome};
pub use fetch::{policy_url, FetchError, FetchFuture, HttpsFetcher, PolicyFetcher};
pub use policy::{mx_matches, parse_policy, Mode, MxPattern, Policy, PolicyError};
pub use record::{lookup_record, parse_record, RecordError, StsRecord};
pub use store::{CachedPolicy, JsonFileStore, MemoryStore, PolicyStore, StoreError};
