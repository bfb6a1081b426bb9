//! Where routes, transports and accounts come from: the config file (`store.kind =
//! "file"`, the embedded default) or Redis (`"redis"`), for a fleet of gateways.
//!
//! # The flow
//! Both stores produce the same immutable [`StoreData`] (transports, global / domain /
//! account routes, accounts), validated as a whole ([`StoreData::validate`]): a route
//! naming a missing transport, a bad domain or a bad verifier rejects the whole
//! snapshot, with the route named by list and index (`routes:global[1]`). An accepted
//! snapshot becomes a [`crate::snapshot::Snapshot`] (`runtime::build`, the same factory for
//! both stores, with the handles of `runtime::Runtime` passed in), which the
//! queue reads at every attempt: selection never talks to Redis.
//!
//! With Redis ([`redis`]), the gateway loads the whole store with one Lua script
//! ([`raw::RawStore`]) that reads a fixed set of keys plus the route lists named by the
//! index SET `{prefix}routes:index` (never `KEYS` or `SCAN`: a load costs the same
//! however many other keys the database holds; a store of the older layout is migrated
//! once, [`layout`]), subscribes to `{prefix}changed` and reloads within a second of a
//! publish, and reads the `{prefix}version` counter every few seconds to catch a missed
//! message ([`live`]). Each accepted snapshot is also saved under `data_dir`
//! ([`persist`]); a gateway that starts while Redis is down runs on it. When Redis goes
//! away the gateway keeps delivering on its snapshot, reports `degraded` in `/healthz`
//! and `relaygate_store_up 0`, and reconnects with capped backoff.
//!
//! The CLI ([`client`]) changes Redis with [`mutate::Mutation`]s: load, apply in memory,
//! validate the result as a whole, then write only the keys that changed ([`raw::diff`])
//! with one atomic script that also bumps the version and publishes it.
//!
//! The same Redis also holds the fleet-wide caches of direct delivery ([`fleet`]), under
//! `{prefix}fleet:`, which a load never touches: the MTA-STS policy cache and the
//! per-domain TLS status records; and the state gateways share about transports
//! ([`fleet_state`]): health (circuit breakers) and rate limits.
//!
//! Key names, the hash tag for Redis Cluster and redis-cli examples: `docs/redis.md`.

pub mod client;
pub mod data;
pub mod explain;
pub mod fleet;
pub mod fleet_state;
pub mod keys;
pub mod layout;
pub mod live;
pub mod mutate;
pub mod persist;
pub mod raw;
pub mod redis;
pub mod status;

use std::path::PathBuf;

pub use data::{format_problems, Problem, RouteList, RouteSpec, StoreData};
pub use status::StoreStatus;

/// Everything that can go wrong with a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store.redis_url {url}: {message}")]
    Url { url: String, message: String },
    #[error("Redis {target}: {source}")]
    Redis {
        target: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("Redis {target}: no answer within {secs} s")]
    Timeout { target: String, secs: u64 },
    #[error("Redis {target}: unreachable at the last try; not retried for {secs} s")]
    Down { target: String, secs: u64 },
    #[error("Redis {target}: {message}")]
    Shape { target: String, message: String },
    #[error(
        "Redis {target}: {key} says key layout {found:?}, which this relaygate (layout {}) \
         does not know: upgrade relaygate",
        keys::LAYOUT
    )]
    Layout {
        target: String,
        key: String,
        found: String,
    },
    #[error("store data refused:\n{}", format_problems(.0))]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Change(#[from] mutate::MutationError),
    #[error("the store changed {0} times while this change was being written; try again")]
    Conflict(u32),
    #[error(
        "the store is the config file {}: edit it, then reload the gateway with SIGHUP",
        .0.display()
    )]
    ReadOnly(PathBuf),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the store is unavailable ({cause}) and there is no persisted snapshot at {}: \
         refusing to start (start once with the store reachable)",
        path.display()
    )]
    Unavailable {
        cause: Box<StoreError>,
        path: PathBuf,
    },
    #[error("store snapshot {}: {message}", path.display())]
    Persisted { path: PathBuf, message: String },
}

impl StoreError {
    /// Whether this is about reaching Redis (as opposed to what it holds: a key of the
    /// wrong type, reported by the load script with its own error code, is a `Shape`).
    pub fn is_connection(&self) -> bool {
        match self {
            StoreError::Redis { .. } | StoreError::Timeout { .. } | StoreError::Down { .. } => true,
            StoreError::Url { .. }
            | StoreError::Shape { .. }
            | StoreError::Layout { .. }
            | StoreError::Invalid(_)
            | StoreError::Change(_)
            | StoreError::Conflict(_)
            | StoreError::ReadOnly(_)
            | StoreError::Io { .. }
            | StoreError::Unavailable { .. }
            | StoreError::Persisted { .. } => false,
        }
    }
}
