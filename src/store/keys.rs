//! Redis key names of one store (SPEC §1): `{prefix}transports`, `{prefix}routes:...`,
//! with `key_prefix` used as written (`relaygate:transports` by default).
//!
//! Redis Cluster puts a key in the slot of the text between the first `{` and the next
//! `}` when there is such a non-empty tag. The gateway loads and changes the whole store
//! with one Lua script, which in a cluster must only touch keys of one slot, so in
//! cluster mode every key of a prefix must carry the same tag: a `key_prefix` without a
//! tag is then wrapped in braces (`relaygate:` → `{relaygate:}`), and a prefix that
//! already has one is used as written (`app:{mail}:`). `docs/redis.md` lists the names.
//!
//! Nothing ever lists the keyspace to find the store's keys (issue 11 item 7): the route
//! lists are named by the SET `{prefix}routes:index`, which every write maintains, so a
//! load reads a fixed number of keys plus one per route list, however many other keys
//! the database holds. `{prefix}layout` says which layout the keys follow
//! ([`LAYOUT`]); an older store is migrated once (`super::layout`), the only place a
//! `SCAN` runs.
//!
//! Besides the store proper, the prefix also holds the fleet-wide caches of direct
//! delivery, all under `{prefix}fleet:` (SPEC §1), which a route load never touches:
//! `{prefix}fleet:mtasts:{domain}` (the MTA-STS policy cache, listed through the SET
//! `{prefix}fleet:mtasts-index`) and `{prefix}fleet:tlsstatus:{domain}` (what the last
//! session with a domain offered).

/// The key layout this build reads and writes, stored at `{prefix}layout`. Layout 1
/// (no marker) had no route index and kept the fleet caches at `{prefix}mtasts:{domain}`
/// and `{prefix}tlsstatus:{domain}`; layout 2 is the one described above.
pub const LAYOUT: u32 = 2;

/// The key names for one `store.key_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// Whether `s` contains a hash tag Redis Cluster would use: `{`, then at least one
/// character, then `}`.
fn has_hash_tag(s: &str) -> bool {
    match s.find('{') {
        Some(open) => matches!(s[open + 1..].find('}'), Some(len) if len > 0),
        None => false,
    }
}

/// Escapes the glob characters of a `SCAN ... MATCH` pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Keys {
    /// The keys for `key_prefix` as configured; in cluster mode a prefix without a hash
    /// tag is wrapped in one, so that all keys share a slot.
    pub fn new(key_prefix: &str, cluster: bool) -> Keys {
        let prefix = if !cluster || has_hash_tag(key_prefix) {
            key_prefix.to_string()
        } else {
            format!("{{{key_prefix}}}")
        };
        Keys { prefix }
    }

    /// The effective prefix, hash tag included.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// HASH: transport name → JSON.
    pub fn transports(&self) -> String {
        format!("{}transports", self.prefix)
    }

    /// HASH: account name → account record JSON.
    pub fn accounts(&self) -> String {
        format!("{}accounts", self.prefix)
    }

    /// LIST of global routes.
    pub fn global_routes(&self) -> String {
        format!("{}routes:global", self.prefix)
    }

    /// LIST of a sender domain's routes (the domain in lowercase ASCII form).
    pub fn domain_routes(&self, domain: &str) -> String {
        format!("{}routes:domain:{domain}", self.prefix)
    }

    /// LIST of an account's routes.
    pub fn account_routes(&self, account: &str) -> String {
        format!("{}routes:account:{account}", self.prefix)
    }

    /// LIST of the DKIM keys signing for a domain (JSON objects like `[[dkim.keys]]`
    /// entries; the key material stays in files, named by `key_file`). Listed in the
    /// index SET with the route lists, so a load finds them without a scan.
    pub fn dkim(&self, domain: &str) -> String {
        format!("{}dkim:{domain}", self.prefix)
    }

    /// What every DKIM key list key starts with.
    pub fn dkim_prefix(&self) -> String {
        self.dkim("")
    }

    /// Counter increased by every change (the cheap consistency check reads it).
    pub fn version(&self) -> String {
        format!("{}version", self.prefix)
    }

    /// Pub/sub channel announcing a change.
    pub fn channel(&self) -> String {
        format!("{}changed", self.prefix)
    }

    /// STRING (integer): the key layout of the store ([`LAYOUT`]); absent means 1.
    pub fn layout(&self) -> String {
        format!("{}layout", self.prefix)
    }

    /// SET: the name of every route list key of the store (global, domain, account),
    /// maintained by every write, read by every load instead of a keyspace scan.
    pub fn routes_index(&self) -> String {
        format!("{}routes:index", self.prefix)
    }

    /// What every domain route list key starts with.
    pub fn domain_routes_prefix(&self) -> String {
        self.domain_routes("")
    }

    /// What every account route list key starts with.
    pub fn account_routes_prefix(&self) -> String {
        self.account_routes("")
    }

    /// STRING: the JSON of a recipient domain's cached MTA-STS policy entry.
    pub fn mtasts(&self, domain: &str) -> String {
        format!("{}fleet:mtasts:{domain}", self.prefix)
    }

    /// SET: the key of every cached MTA-STS policy (members whose key has expired are
    /// pruned when the cache is listed). Not under `fleet:mtasts:`, so that no domain
    /// name can collide with it.
    pub fn mtasts_index(&self) -> String {
        format!("{}fleet:mtasts-index", self.prefix)
    }

    /// STRING: the JSON of a recipient domain's TLS status record.
    pub fn tls_status(&self, domain: &str) -> String {
        format!("{}fleet:tlsstatus:{domain}", self.prefix)
    }

    /// STRING: the JSON of a transport's latest health change seen by the fleet
    /// (`{"state":"down",...}` or `{"state":"up",...}`), with an expiry.
    pub fn fleet_health(&self, transport: &str) -> String {
        format!("{}fleet:health:{transport}", self.prefix)
    }

    /// STRING: the GCRA state (theoretical arrival time, Unix µs) of one rate limit of
    /// `key` (`transport:NAME` or `account:NAME`), e.g. `fleet:rate:transport:ses:20/s`.
    pub fn fleet_rate(&self, key: &str, rate: &str) -> String {
        format!("{}fleet:rate:{key}:{rate}", self.prefix)
    }

    /// The `SCAN ... MATCH` pattern of every key of the prefix (migration only).
    pub fn scan_pattern(&self) -> String {
        format!("{}*", glob_escape(&self.prefix))
    }

    /// What layout-1 MTA-STS cache keys start with (`{prefix}mtasts:`).
    pub fn legacy_mtasts_prefix(&self) -> String {
        format!("{}mtasts:", self.prefix)
    }

    /// What layout-1 TLS status keys start with (`{prefix}tlsstatus:`).
    pub fn legacy_tls_status_prefix(&self) -> String {
        format!("{}tlsstatus:", self.prefix)
    }

    /// The domain of a domain route list key, if it is one.
    pub fn domain_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("routes:domain:")
    }

    /// The domain of a DKIM key list key, if it is one.
    pub fn dkim_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("dkim:")
    }

    /// The account of an account route list key, if it is one.
    pub fn account_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("routes:account:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_gets_a_hash_tag() {
        let table = [
            ("relaygate:", "{relaygate:}"),
            ("", "{}"),
            ("app:{mail}:", "app:{mail}:"),
            ("a{}b:", "{a{}b:}"),
            ("x{y", "{x{y}"),
        ];
        for (given, want) in table {
            assert_eq!(Keys::new(given, true).prefix(), want, "{given}");
        }
        // Standalone: the SPEC's names, prefix as written.
        let plain = Keys::new("relaygate:", false);
        assert_eq!(plain.transports(), "relaygate:transports");
        assert_eq!(plain.global_routes(), "relaygate:routes:global");
        assert_eq!(plain.channel(), "relaygate:changed");
        let k = Keys::new("relaygate:", true);
        assert_eq!(k.transports(), "{relaygate:}transports");
        assert_eq!(k.global_routes(), "{relaygate:}routes:global");
        assert_eq!(
            k.domain_routes("example.org"),
            "{relaygate:}routes:domain:example.org"
        );
        assert_eq!(k.account_routes("app1"), "{relaygate:}routes:account:app1");
        assert_eq!(k.channel(), "{relaygate:}changed");
        assert_eq!(k.version(), "{relaygate:}version");
    }

    #[test]
    fn fleet_cache_keys() {
        let plain = Keys::new("relaygate:", false);
        assert_eq!(plain.mtasts("dst.test"), "relaygate:fleet:mtasts:dst.test");
        assert_eq!(
            plain.tls_status("dst.test"),
            "relaygate:fleet:tlsstatus:dst.test"
        );
        assert_eq!(plain.mtasts_index(), "relaygate:fleet:mtasts-index");
        assert_eq!(plain.legacy_mtasts_prefix(), "relaygate:mtasts:");
        assert_eq!(plain.legacy_tls_status_prefix(), "relaygate:tlsstatus:");
        // Cluster: the same hash tag as every other key of the prefix.
        let k = Keys::new("relaygate:", true);
        assert_eq!(k.mtasts("dst.test"), "{relaygate:}fleet:mtasts:dst.test");
        assert_eq!(
            k.tls_status("dst.test"),
            "{relaygate:}fleet:tlsstatus:dst.test"
        );
        assert_eq!(k.mtasts_index(), "{relaygate:}fleet:mtasts-index");
    }

    #[test]
    fn index_and_layout_keys() {
        let plain = Keys::new("relaygate:", false);
        assert_eq!(plain.routes_index(), "relaygate:routes:index");
        assert_eq!(plain.layout(), "relaygate:layout");
        assert_eq!(plain.domain_routes_prefix(), "relaygate:routes:domain:");
        assert_eq!(plain.account_routes_prefix(), "relaygate:routes:account:");
        let k = Keys::new("relaygate:", true);
        assert_eq!(k.routes_index(), "{relaygate:}routes:index");
        assert_eq!(k.layout(), "{relaygate:}layout");
        // The index is no route list of either kind.
        assert_eq!(k.domain_of(&k.routes_index()), None);
        assert_eq!(k.account_of(&k.routes_index()), None);
    }

    #[test]
    fn patterns_escape_globs_and_round_trip() {
        let k = Keys::new("a*[b]:", true);
        assert_eq!(k.scan_pattern(), "{a\\*\\[b\\]:}*");
        let key = k.domain_routes("x.org");
        assert_eq!(k.domain_of(&key), Some("x.org"));
        assert_eq!(k.account_of(&key), None);
        assert_eq!(k.account_of(&k.account_routes("app")), Some("app"));
    }
}
