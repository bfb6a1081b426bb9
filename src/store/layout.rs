//! The key layout of a Redis store, and the one-time migration from older layouts.
//!
//! `{prefix}layout` holds the layout number ([`LAYOUT`]); a store without it is layout 1,
//! the layout of relaygate before issue 11 item 7:
//!
//! | | layout 1 | layout 2 |
//! |---|---|---|
//! | route lists found by | `KEYS {prefix}routes:domain:*` (and `account:*`) | the SET `{prefix}routes:index` |
//! | MTA-STS policy cache | `{prefix}mtasts:{domain}` | `{prefix}fleet:mtasts:{domain}`, listed through `{prefix}fleet:mtasts-index` |
//! | TLS status records | `{prefix}tlsstatus:{domain}` | `{prefix}fleet:tlsstatus:{domain}` |
//!
//! The load script reads the marker first and reads nothing else when it is not
//! [`LAYOUT`]; [`super::redis::RedisStore::load`] then runs [`migrate`] and loads again.
//! So whoever opens the store first after an upgrade (a gateway starting or reloading,
//! or any `relaygate routes|transports|accounts` command, or `check-config`) migrates
//! it, once: afterwards the marker says [`LAYOUT`] and loads never scan.
//!
//! The migration is the one place that walks the keyspace, and it does so with
//! `SCAN cursor MATCH {prefix}* COUNT` [`SCAN_COUNT`], one page per script run, so Redis
//! is never blocked for more than one page. Each run, atomically for its page:
//! - adds every route list key (`routes:global`, `routes:domain:*`, `routes:account:*`)
//!   to `{prefix}routes:index` (whatever its type: a key of the wrong type is then
//!   reported by the load, as before);
//! - renames `{prefix}tlsstatus:{d}` to `{prefix}fleet:tlsstatus:{d}` and
//!   `{prefix}mtasts:{d}` to `{prefix}fleet:mtasts:{d}` (keeping the expiry), adding
//!   the latter to `{prefix}fleet:mtasts-index`. When the new key already exists (a
//!   gateway of this version wrote it first) it is newer: the old key is deleted.
//!
//! When the cursor comes back to 0 the marker is set. Every step is idempotent, so two
//! gateways migrating at once, or a migration cut short by an error and run again at the
//! next load, end in the same state. The script names the marker and both index keys, so
//! in a cluster it runs on the node of the prefix's hash tag and `SCAN`s that node: every
//! key of the prefix lives there. Deleting `{prefix}layout` makes the next load run the
//! migration again (for keys that a gateway of the old version wrote after the upgrade).

use super::keys::LAYOUT;
use super::redis::{Conn, RedisStore};
use super::StoreError;

/// How many keys one `SCAN` page asks for.
pub const SCAN_COUNT: u32 = 1000;

/// One page of the migration. KEYS[1]: the layout marker (routes the script), KEYS[2]:
/// the route index, KEYS[3]: the MTA-STS index. ARGV[1]: the cursor, ARGV[2]: the MATCH
/// pattern, ARGV[3]: the COUNT, ARGV[4]: the global route list key, ARGV[5..6]: what
/// domain and account route list keys start with, ARGV[7..8]: the old and new start of
/// TLS status keys, ARGV[9..10]: the same for MTA-STS keys. Returns `{next cursor,
/// route lists indexed, fleet keys renamed}`.
const MIGRATE_SCRIPT: &str = r#"
local function starts(s, p)
  return string.sub(s, 1, #p) == p
end
local function rename(k, old, new)
  local to = new .. string.sub(k, #old + 1)
  if redis.call('EXISTS', k) == 0 then
    return nil
  end
  if redis.call('RENAMENX', k, to) == 0 then
    redis.call('DEL', k)
  end
  return to
end
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local indexed, renamed = 0, 0
for _, k in ipairs(page[2]) do
  if k == ARGV[4] or starts(k, ARGV[5]) or starts(k, ARGV[6]) then
    indexed = indexed + redis.call('SADD', KEYS[2], k)
  elseif starts(k, ARGV[7]) then
    if rename(k, ARGV[7], ARGV[8]) then
      renamed = renamed + 1
    end
  elseif starts(k, ARGV[9]) then
    local to = rename(k, ARGV[9], ARGV[10])
    if to then
      renamed = renamed + 1
      if redis.call('TYPE', to)['ok'] == 'string' then
        redis.call('SADD', KEYS[3], to)
      end
    end
  end
end
return {page[1], indexed, renamed}
"#;

/// What a migration did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Route list keys added to the index.
    pub indexed: u64,
    /// Fleet cache keys moved under `{prefix}fleet:`.
    pub renamed: u64,
}

/// The layout a store's marker names, when it is older than [`LAYOUT`] (so it can be
/// migrated); a newer or unreadable marker is an error.
pub fn older(store: &RedisStore, found: &str) -> Result<u32, StoreError> {
    match found.trim().parse::<u32>() {
        Ok(n) if n < LAYOUT => Ok(n),
        _ => Err(StoreError::Layout {
            target: store.display().to_string(),
            key: store.keys().layout(),
            found: found.to_string(),
        }),
    }
}

/// Migrates a store of layout `from` to [`LAYOUT`] (see the module comment), then sets
/// the marker.
pub async fn migrate(
    store: &RedisStore,
    conn: &mut Conn,
    from: u32,
) -> Result<Migrated, StoreError> {
    let k = store.keys();
    tracing::info!(store = %store.display(), prefix = %k.prefix(), from, to = LAYOUT,
        "store: migrating the Redis key layout");
    let script = redis::Script::new(MIGRATE_SCRIPT);
    let mut done = Migrated::default();
    let mut cursor = "0".to_string();
    loop {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(k.layout())
            .key(k.routes_index())
            .key(k.mtasts_index())
            .arg(&cursor)
            .arg(k.scan_pattern())
            .arg(SCAN_COUNT)
            .arg(k.global_routes())
            .arg(k.domain_routes_prefix())
            .arg(k.account_routes_prefix())
            .arg(k.legacy_tls_status_prefix())
            .arg(k.tls_status(""))
            .arg(k.legacy_mtasts_prefix())
            .arg(k.mtasts(""));
        let (next, indexed, renamed): (String, u64, u64) = store.invoke(conn, &invocation).await?;
        done.indexed += indexed;
        done.renamed += renamed;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    store
        .query::<()>(conn, redis::cmd("SET").arg(k.layout()).arg(LAYOUT))
        .await?;
    tracing::info!(store = %store.display(), prefix = %k.prefix(), to = LAYOUT,
        route_lists = done.indexed, fleet_keys = done.renamed,
        "store: Redis key layout migrated");
    Ok(done)
}
