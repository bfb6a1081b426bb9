//! The Redis store: connections, the load and write scripts, the change subscription.
//!
//! - Addresses: `redis://`, `rediss://` (TLS; `tls.extra_ca_file`, when set, is the
//!   trust root), `redis+unix:///path` / `unix:///path`, and Redis Cluster either as
//!   `redis-cluster://host:port,host:port` (`rediss-cluster://` with TLS) or with
//!   `store.cluster = true` and one or more seed URLs separated by commas.
//! - Load: one Lua script ([`LOAD_SCRIPT`]) returns the version, the transports and
//!   accounts hashes, the global route list and every route list named by the index SET
//!   `{prefix}routes:index`, so the view is consistent and its cost does not depend on
//!   the rest of the database: no `KEYS`, no `SCAN`. All keys share a hash tag, so in a
//!   cluster the script runs on the one node that holds them. The script first checks
//!   the layout marker `{prefix}layout`; a store of an older layout is migrated once
//!   ([`super::layout`]) and loaded again.
//! - Write: one Lua script ([`WRITE_SCRIPT`]) checks the layout and the expected
//!   version, checks key types, applies the writes (keeping the route index in step:
//!   `SADD` when a list is written non-empty, `SREM` when it is deleted), `INCR`s the
//!   version and `PUBLISH`es it: atomic, and refused without a trace when someone else
//!   changed the store in between.
//! - Changes: a dedicated RESP3 connection subscribed to `{prefix}changed` (in a cluster
//!   to one node: plain pub/sub messages reach every node).
//!
//! Every call has a deadline ([`OP_TIMEOUT`]): a Redis that stops answering is an error,
//! never a hang. Connections are made by the caller again after an error.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, PushInfo, RedisFuture, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::keys::{Keys, LAYOUT};
use super::raw::{RawStore, WriteOp};
use super::StoreError;
use crate::config::{StoreConfig, TlsConfig};

/// Deadline of one Redis call (connect, load, write, ping).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads the whole store at once, without listing the keyspace. KEYS[1..6]: version,
/// transports, accounts, global routes, the route index, the layout marker; ARGV[1]:
/// the layout this build reads ([`LAYOUT`]), ARGV[2..4]: what domain and account route
/// list keys and DKIM key list keys start with. The route lists are the members of the index (a member whose
/// key is gone reads as an empty list; one that names no route list is an error).
/// Returns `{layout}` alone when the marker is not [`LAYOUT`] (nothing else is read),
/// else `{layout, version, transports, accounts, global, {key, list, ...}}`.
pub const LOAD_SCRIPT: &str = r#"
local function check(k, want)
  local t = redis.call('TYPE', k)['ok']
  if t ~= 'none' and t ~= want then
    error({err = 'RELAYGATE key ' .. k .. ' holds a ' .. t .. ', not a ' .. want})
  end
end
local function starts(s, p)
  return string.sub(s, 1, #p) == p
end
check(KEYS[6], 'string')
local layout = redis.call('GET', KEYS[6]) or '1'
if layout ~= ARGV[1] then
  return {layout}
end
check(KEYS[2], 'hash')
check(KEYS[3], 'hash')
check(KEYS[4], 'list')
check(KEYS[5], 'set')
local lists = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if k ~= KEYS[4] then
    if not (starts(k, ARGV[2]) or starts(k, ARGV[3]) or starts(k, ARGV[4])) then
      error({err = 'RELAYGATE key ' .. KEYS[5] .. ' names ' .. k ..
        ', which is not a route list of this prefix (SREM it)'})
    end
    check(k, 'list')
    lists[#lists + 1] = k
    lists[#lists + 1] = redis.call('LRANGE', k, 0, -1)
  end
end
return {
  layout,
  redis.call('GET', KEYS[1]) or '0',
  redis.call('HGETALL', KEYS[2]),
  redis.call('HGETALL', KEYS[3]),
  redis.call('LRANGE', KEYS[4], 0, -1),
  lists,
}
"#;

/// Applies a change atomically. KEYS[1]: the version key, KEYS[2]: the route index,
/// KEYS[3]: the layout marker, KEYS[4..]: the keys written. ARGV[1]: the expected
/// version ("" = any), ARGV[2]: the channel, ARGV[3]: the layout this build writes
/// ([`LAYOUT`]), then operations: `list IDX N ITEM...` (replace a route list: added to
/// the index when non-empty, deleted and removed from it when empty), `hset IDX FIELD
/// VALUE`, `hdel IDX FIELD`, where IDX indexes KEYS. Returns `{1, new_version}` or
/// `{0, current_version}` when the version did not match (nothing written). A store of
/// another layout is refused (loading migrates it first).
pub const WRITE_SCRIPT: &str = r#"
local function check(k, want)
  local t = redis.call('TYPE', k)['ok']
  if t ~= 'none' and t ~= want then
    error({err = 'RELAYGATE key ' .. k .. ' holds a ' .. t .. ', not a ' .. want})
  end
end
check(KEYS[3], 'string')
local layout = redis.call('GET', KEYS[3]) or '1'
if layout ~= ARGV[3] then
  error({err = 'RELAYGATE key ' .. KEYS[3] .. ' says layout ' .. layout .. ', not ' .. ARGV[3] ..
    ': load the store first (that migrates it)'})
end
local cur = redis.call('GET', KEYS[1]) or '0'
if ARGV[1] ~= '' and cur ~= ARGV[1] then
  return {0, cur}
end
check(KEYS[2], 'set')
local i = 4
while i <= #ARGV do
  local op, k = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'list' then
    check(k, 'list')
    i = i + 3 + tonumber(ARGV[i + 2])
  elseif op == 'hset' then
    check(k, 'hash')
    i = i + 4
  elseif op == 'hdel' then
    check(k, 'hash')
    i = i + 3
  else
    error('relaygate: unknown operation ' .. op)
  end
end
i = 4
while i <= #ARGV do
  local op, k = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'list' then
    local n = tonumber(ARGV[i + 2])
    redis.call('DEL', k)
    for j = 1, n do
      redis.call('RPUSH', k, ARGV[i + 2 + j])
    end
    if n > 0 then
      redis.call('SADD', KEYS[2], k)
    else
      redis.call('SREM', KEYS[2], k)
    end
    i = i + 3 + n
  elseif op == 'hset' then
    redis.call('HSET', k, ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  else
    redis.call('HDEL', k, ARGV[i + 2])
    i = i + 3
  end
end
local v = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[2], tostring(v))
return {1, v}
"#;

/// A URL's scheme (with `://`), its userinfo (before the last `@`) and the rest (from
/// that `@`). The last `@` is taken, not the authority's end, because passwords are often
/// written with `/`, `?`, `#` or `@` unencoded: those must be hidden too.
fn split_userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let at = rest.rfind('@')?;
    Some((&url[..scheme_end], &rest[..at], &rest[at..]))
}

/// `redis://user:secret@host` → `redis://user:***@host` (for logs and errors).
pub fn redact(url: &str) -> String {
    match split_userinfo(url) {
        Some((scheme, userinfo, rest)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}{user}:***{rest}")
        }
        _ => url.to_string(),
    }
}

/// The password of a Redis URL (`redis://user:PASSWORD@host`), if it has one.
fn url_password(url: &str) -> Option<&str> {
    let (_, userinfo, _) = split_userinfo(url)?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `text` with every occurrence of `url`'s password replaced by `***`: for messages
/// that may quote the URL (errors of the Redis client, for instance).
pub fn scrub(text: &str, url: &str) -> String {
    match url_password(url.trim()) {
        Some(pw) => text.replace(pw, "***"),
        None => text.to_string(),
    }
}

/// Where the store lives: one server, or the seed nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Single(String),
    Cluster(Vec<String>),
}

/// Reads `store.redis_url` and `store.cluster`.
pub fn parse_endpoint(url: &str, cluster: bool) -> Result<Endpoint, StoreError> {
    let bad = |message: &str| StoreError::Url {
        url: redact(url),
        message: message.to_string(),
    };
    let url = url.trim();
    for (scheme, plain) in [
        ("redis-cluster://", "redis://"),
        ("rediss-cluster://", "rediss://"),
    ] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (auth, rest) = match rest.rfind('@') {
                Some(at) => (&rest[..=at], &rest[at + 1..]),
                None => ("", rest),
            };
            let (hosts, path) = match rest.find('/') {
                Some(slash) => (&rest[..slash], &rest[slash..]),
                None => (rest, ""),
            };
            let seeds: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("{plain}{auth}{h}{path}"))
                .collect();
            if seeds.is_empty() {
                return Err(bad("names no host"));
            }
            return Ok(Endpoint::Cluster(seeds));
        }
    }
    if cluster {
        let seeds: Vec<String> = url
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if seeds.is_empty() {
            return Err(bad("names no host"));
        }
        return Ok(Endpoint::Cluster(seeds));
    }
    if url.contains(',') {
        return Err(bad(
            "several hosts need a redis-cluster:// URL or store.cluster = true",
        ));
    }
    Ok(Endpoint::Single(url.to_string()))
}

enum Target {
    Single(Box<Client>),
    Cluster {
        client: Box<ClusterClient>,
        /// One client per seed, for the subscription connection.
        seeds: Vec<Client>,
    },
}

/// The error code our Lua scripts raise for data they cannot take
/// (`error({err = 'RELAYGATE ...'})`).
pub const SCRIPT_ERROR_CODE: &str = "RELAYGATE";

/// A Redis store: how to reach it and its key names. Cheap to keep; connections are
/// made by [`RedisStore::connect`] and [`RedisStore::subscribe`].
pub struct RedisStore {
    target: Target,
    keys: Keys,
    display: String,
}

/// What one run of the load script found.
enum Load {
    Store(RawStore),
    /// The layout marker is not [`LAYOUT`] (its value; `1` when absent): nothing read.
    Layout(String),
}

/// A data connection (plain or cluster); clones share the connection.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A subscription to `{prefix}changed`: pushes arrive on `messages`; a
/// `Disconnection` push (or the channel closing) means the connection is gone.
pub struct Subscription {
    pub conn: MultiplexedConnection,
    pub messages: UnboundedReceiver<PushInfo>,
}

fn open_client(url: &str, tls: &TlsConfig) -> Result<Client, StoreError> {
    let bad = |e: redis::RedisError| StoreError::Url {
        url: redact(url),
        message: scrub(&e.to_string(), url),
    };
    if url.starts_with("rediss://") && !tls.extra_ca_file.is_empty() {
        let pem = std::fs::read(&tls.extra_ca_file).map_err(|e| StoreError::Io {
            what: "tls.extra_ca_file",
            path: tls.extra_ca_file.clone().into(),
            source: e,
        })?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        Client::build_with_tls(url, certs).map_err(bad)
    } else {
        Client::open(url).map_err(bad)
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        Value::SimpleString(s) => s.trim().parse().ok(),
        Value::Nil => Some(0),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn as_strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items.iter().map(as_string).collect(),
        _ => None,
    }
}

fn as_pairs(v: &Value) -> Option<Vec<(String, String)>> {
    let flat = as_strings(v)?;
    if flat.len() % 2 != 0 {
        return None;
    }
    Some(
        flat.chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect(),
    )
}

/// `{key, list, key, list, ...}` → (key, items).
fn as_lists(v: &Value) -> Option<Vec<(String, Vec<String>)>> {
    let Value::Array(items) = v else {
        return None;
    };
    if items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|c| Some((as_string(&c[0])?, as_strings(&c[1])?)))
        .collect()
}

impl RedisStore {
    /// Checks the address; does not connect.
    pub fn open(store: &StoreConfig, tls: &TlsConfig) -> Result<RedisStore, StoreError> {
        let endpoint = parse_endpoint(&store.redis_url, store.cluster)?;
        let keys = Keys::new(&store.key_prefix, matches!(endpoint, Endpoint::Cluster(_)));
        let (target, display) = match endpoint {
            Endpoint::Single(url) => (
                Target::Single(Box::new(open_client(&url, tls)?)),
                redact(&url),
            ),
            Endpoint::Cluster(urls) => {
                let seeds = urls
                    .iter()
                    .map(|u| open_client(u, tls))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = redis::cluster::ClusterClient::builder(
                    seeds.iter().map(|c| c.get_connection_info().clone()),
                )
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(OP_TIMEOUT)
                .retries(2);
                if urls.iter().any(|u| u.starts_with("rediss://")) && !tls.extra_ca_file.is_empty()
                {
                    let pem = std::fs::read(&tls.extra_ca_file).map_err(|e| StoreError::Io {
                        what: "tls.extra_ca_file",
                        path: tls.extra_ca_file.clone().into(),
                        source: e,
                    })?;
                    builder = builder.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    });
                }
                let client = builder.build().map_err(|e| StoreError::Url {
                    url: redact(&store.redis_url),
                    message: scrub(&e.to_string(), &store.redis_url),
                })?;
                let display = format!(
                    "cluster {}",
                    urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",")
                );
                (
                    Target::Cluster {
                        client: Box::new(client),
                        seeds,
                    },
                    display,
                )
            }
        };
        Ok(RedisStore {
            target,
            keys,
            display,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The address for messages, without a password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// A Redis error as ours: our scripts report data they cannot take with the error
    /// code `RELAYGATE` ([`SCRIPT_ERROR_CODE`]), which is about the data, not about
    /// reaching Redis.
    fn redis_err(&self, e: redis::RedisError) -> StoreError {
        if e.code() == Some(SCRIPT_ERROR_CODE) {
            let detail = e.detail().unwrap_or_default();
            // Redis appends where the script failed ("script: <sha>, on @user_script:1.").
            let message = detail.split(" script: ").next().unwrap_or(detail).trim();
            return StoreError::Shape {
                target: self.display.clone(),
                message: message.to_string(),
            };
        }
        StoreError::Redis {
            target: self.display.clone(),
            source: e,
        }
    }

    async fn deadline<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|e| self.redis_err(e)),
            Err(_) => Err(StoreError::Timeout {
                target: self.display.clone(),
                secs: OP_TIMEOUT.as_secs(),
            }),
        }
    }

    fn conn_config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
    }

    /// Opens a data connection.
    pub async fn connect(&self) -> Result<Conn, StoreError> {
        match &self.target {
            Target::Single(client) => self
                .deadline(client.get_multiplexed_async_connection_with_config(&Self::conn_config()))
                .await
                .map(Conn::Single),
            Target::Cluster { client, .. } => self
                .deadline(client.get_async_connection())
                .await
                .map(Conn::Cluster),
        }
    }

    /// Opens a RESP3 connection subscribed to `{prefix}changed` (for a cluster: to the
    /// first seed node that answers).
    pub async fn subscribe(&self) -> Result<Subscription, StoreError> {
        let clients: Vec<&Client> = match &self.target {
            Target::Single(c) => vec![&**c],
            Target::Cluster { seeds, .. } => seeds.iter().collect(),
        };
        let mut last = None;
        for client in clients {
            let info = client.get_connection_info().clone();
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let resp3 = match Client::open(info.set_redis_settings(settings)) {
                Ok(c) => c,
                Err(e) => {
                    last = Some(self.redis_err(e));
                    continue;
                }
            };
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let config = Self::conn_config().set_push_sender(tx);
            let attempt = async {
                let mut conn = self
                    .deadline(resp3.get_multiplexed_async_connection_with_config(&config))
                    .await?;
                self.deadline(conn.subscribe(self.keys.channel())).await?;
                Ok::<_, StoreError>(conn)
            };
            match attempt.await {
                Ok(conn) => return Ok(Subscription { conn, messages: rx }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Url {
            url: self.display.clone(),
            message: "no node to subscribe to".into(),
        }))
    }

    /// Runs one command (or script invocation result) within [`OP_TIMEOUT`].
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        self.deadline(cmd.query_async(conn)).await
    }

    /// Runs a Lua script within [`OP_TIMEOUT`].
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.deadline(invocation.invoke_async(conn)).await
    }

    /// `PING` (keeps the subscription connection honest).
    pub async fn ping(&self, conn: &mut MultiplexedConnection) -> Result<(), StoreError> {
        self.deadline(redis::cmd("PING").query_async::<Value>(conn))
            .await
            .map(|_| ())
    }

    /// The version counter (0 when it does not exist).
    pub async fn version(&self, conn: &mut Conn) -> Result<u64, StoreError> {
        let v: Value = self
            .deadline(redis::cmd("GET").arg(self.keys.version()).query_async(conn))
            .await?;
        as_u64(&v).ok_or_else(|| StoreError::Shape {
            target: self.display.clone(),
            message: format!("{} is not a number", self.keys.version()),
        })
    }

    /// Reads the whole store, consistently, with one script that reads the route lists
    /// named by `{prefix}routes:index` (never `KEYS` or `SCAN`). A store of an older
    /// layout is migrated first ([`super::layout::migrate`], once per store), then read.
    pub async fn load(&self, conn: &mut Conn) -> Result<RawStore, StoreError> {
        match self.load_once(conn).await? {
            Load::Store(raw) => Ok(raw),
            Load::Layout(found) => {
                let from = super::layout::older(self, &found)?;
                super::layout::migrate(self, conn, from).await?;
                match self.load_once(conn).await? {
                    Load::Store(raw) => Ok(raw),
                    // Someone deleted the marker meanwhile: say so rather than loop.
                    Load::Layout(found) => Err(StoreError::Shape {
                        target: self.display.clone(),
                        message: format!(
                            "{} says layout {found} right after the migration to {LAYOUT}",
                            self.keys.layout()
                        ),
                    }),
                }
            }
        }
    }

    async fn load_once(&self, conn: &mut Conn) -> Result<Load, StoreError> {
        let k = &self.keys;
        let script = redis::Script::new(LOAD_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(k.version())
            .key(k.transports())
            .key(k.accounts())
            .key(k.global_routes())
            .key(k.routes_index())
            .key(k.layout())
            .arg(LAYOUT)
            .arg(k.domain_routes_prefix())
            .arg(k.account_routes_prefix())
            .arg(k.dkim_prefix());
        let v: Value = self.deadline(invocation.invoke_async(conn)).await?;
        self.decode_load(&v).ok_or_else(|| StoreError::Shape {
            target: self.display.clone(),
            message: "the load script returned an unexpected shape".into(),
        })
    }

    fn decode_load(&self, v: &Value) -> Option<Load> {
        let Value::Array(parts) = v else {
            return None;
        };
        if let [layout] = parts.as_slice() {
            return Some(Load::Layout(as_string(layout)?));
        }
        if parts.len() != 6 {
            return None;
        }
        let mut raw = RawStore {
            version: as_u64(&parts[1])?,
            transports: as_pairs(&parts[2])?.into_iter().collect(),
            accounts: as_pairs(&parts[3])?.into_iter().collect(),
            global: as_strings(&parts[4])?,
            ..Default::default()
        };
        // A member whose list is gone (deleted behind the CLI's back) reads as an empty
        // list: decoding drops it, and the next CLI change removes it from the index.
        for (key, items) in as_lists(&parts[5])? {
            if let Some(domain) = self.keys.domain_of(&key) {
                raw.domains.insert(domain.to_string(), items);
            } else if let Some(domain) = self.keys.dkim_of(&key) {
                raw.dkim.insert(domain.to_string(), items);
            } else {
                let account = self.keys.account_of(&key)?;
                raw.account_routes.insert(account.to_string(), items);
            }
        }
        Some(Load::Store(raw))
    }

    /// Writes `ops` atomically if the version is still `expected` (any version when
    /// `None`), bumps the version and publishes it. `Ok(Err(current))` when the version
    /// did not match (nothing was written).
    pub async fn write(
        &self,
        conn: &mut Conn,
        expected: Option<u64>,
        ops: &[WriteOp],
    ) -> Result<Result<u64, u64>, StoreError> {
        let k = &self.keys;
        let mut keys: Vec<String> = vec![k.version(), k.routes_index(), k.layout()];
        let mut index_of = |key: &str| -> usize {
            match keys.iter().position(|x| x == key) {
                Some(i) => i + 1,
                None => {
                    keys.push(key.to_string());
                    keys.len()
                }
            }
        };
        let mut args: Vec<String> = vec![
            expected.map(|v| v.to_string()).unwrap_or_default(),
            k.channel(),
            LAYOUT.to_string(),
        ];
        for op in ops {
            let idx = index_of(op.key()).to_string();
            match op {
                WriteOp::SetList { items, .. } => {
                    args.extend(["list".into(), idx, items.len().to_string()]);
                    args.extend(items.iter().cloned());
                }
                WriteOp::HashSet { field, value, .. } => {
                    args.extend(["hset".into(), idx, field.clone(), value.clone()]);
                }
                WriteOp::HashDel { field, .. } => {
                    args.extend(["hdel".into(), idx, field.clone()]);
                }
            }
        }
        let script = redis::Script::new(WRITE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        for arg in &args {
            invocation.arg(arg);
        }
        let v: Value = self.deadline(invocation.invoke_async(conn)).await?;
        let shape = || StoreError::Shape {
            target: self.display.clone(),
            message: "the write script returned an unexpected shape".into(),
        };
        let Value::Array(parts) = &v else {
            return Err(shape());
        };
        match (
            parts.first().and_then(as_u64),
            parts.get(1).and_then(as_u64),
        ) {
            (Some(1), Some(version)) => Ok(Ok(version)),
            (Some(0), Some(current)) => Ok(Err(current)),
            _ => Err(shape()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_the_password_wherever_it_is_quoted() {
        let url = "redis://app:s3cr%3At@127.0.0.1:6379/0";
        assert_eq!(
            scrub(
                "cannot parse redis://app:s3cr%3At@127.0.0.1 (s3cr%3At)",
                url
            ),
            "cannot parse redis://app:***@127.0.0.1 (***)"
        );
        assert_eq!(scrub("x", "redis://127.0.0.1/0"), "x");
        assert_eq!(scrub("x :pw@", "redis://:pw@h/0"), "x :***@");
        // Unencoded `/`, `?`, `#`, `@` in the password are hidden all the same.
        for pw in ["s3c/ret", "s3c?ret", "s3c#ret", "s3c@ret"] {
            let url = format!("redis://app:{pw}@127.0.0.1:1/0");
            assert_eq!(redact(&url), "redis://app:***@127.0.0.1:1/0", "{pw}");
            assert_eq!(
                scrub(&format!("bad {url}"), &url),
                "bad redis://app:***@127.0.0.1:1/0"
            );
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact("unix:///run/r.sock"), "unix:///run/r.sock");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("redis://127.0.0.1:6379/0", false).unwrap(),
            Endpoint::Single("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(
            parse_endpoint("redis-cluster://:pw@a:1,b:2", false).unwrap(),
            Endpoint::Cluster(vec!["redis://:pw@a:1".into(), "redis://:pw@b:2".into()])
        );
        assert_eq!(
            parse_endpoint("rediss-cluster://a:1/", false).unwrap(),
            Endpoint::Cluster(vec!["rediss://a:1/".into()])
        );
        assert_eq!(
            parse_endpoint("redis://a:1, redis://b:2", true).unwrap(),
            Endpoint::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert!(parse_endpoint("redis://a:1,redis://b:2", false).is_err());
        assert!(parse_endpoint("redis-cluster://", false).is_err());
    }
}
