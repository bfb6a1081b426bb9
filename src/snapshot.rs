//! The runtime view of routes and transports: an immutable [`Snapshot`] built from a
//! validated config, swapped whole on reload. Deliveries take the current snapshot once
//! per attempt, so a reload never changes a transaction half-way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use relaygate_transports::direct::{
    Dialer, DirectConfig, DirectTransport, TcpDialer, TlsStatusSink, TlsStatusStore,
};
use relaygate_transports::dns::Resolver;
use relaygate_transports::dns::{AddressFamilies, DnssecMode, HickoryConfig, HickoryResolver};
use relaygate_transports::mtasts::{
    HttpsFetcher, JsonFileStore, PolicyCache, PolicyStore, StoreError,
};
use relaygate_transports::smarthost::{
    SmarthostAuth, SmarthostConfig, SmarthostTls, SmarthostTransport, TlsClientConfigs,
};
use relaygate_transports::socks::{SocksConfig, SocksConnector, SocksDialer};
use relaygate_transports::Connector;
use relaygate_transports::{TcpConnector, Timeouts, TlsRoots, Transport};

use crate::config::{Config, RouteConfig, StoreKind, TransportConfig, TransportKind};
use crate::routes::{normalize_domain, Route, RouteTable};
use crate::secrets;
use crate::store::fleet::{FleetRedis, RedisPolicyStore, RedisTlsStatusSink};
use crate::store::redis::RedisStore;

/// After a smarthost refuses the credentials (535), new connections of that transport
/// fail at once for this long instead of trying the same password again.
pub const AUTH_FAILURE_HOLDDOWN: Duration = Duration::from_secs(60);

/// Name used for direct delivery when no route (or an empty transport) matched.
pub const DIRECT: &str = "direct";

pub struct Snapshot {
    pub routes: RouteTable,
    /// Every transport by name, behind the one seam (direct delivery under `direct`
    /// unless the operator named a transport so).
    pub transports: HashMap<String, Arc<dyn Transport>>,
    /// The transport configs as written (for listing and explain).
    pub configs: HashMap<String, TransportConfig>,
    /// Accounts that may authenticate on the submission listener.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// Direct delivery's MTA-STS policy cache (refreshed in the background).
    pub mtasts: Option<Arc<PolicyCache>>,
}

/// The current snapshot, replaced whole on reload, with a generation counter that
/// grows by one at each replacement.
#[derive(Clone)]
pub struct SnapshotCell {
    current: Arc<RwLock<Arc<Snapshot>>>,
    generation: Arc<AtomicU64>,
}

impl SnapshotCell {
    pub fn new(s: Snapshot) -> SnapshotCell {
        SnapshotCell {
            current: Arc::new(RwLock::new(Arc::new(s))),
            generation: Arc::new(AtomicU64::new(1)),
        }
    }

    pub fn get(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, s: Snapshot) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// 1 for the snapshot loaded at start, +1 per successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

fn routes_of(list: &[RouteConfig]) -> Result<Vec<Route>, String> {
    list.iter()
        .map(|r| {
            Route::new(
                &r.from_domain,
                &r.to_domain,
                r.minimum_attempts,
                r.transport.get_ref(),
            )
        })
        .collect()
}

/// Builds the route table of a config.
pub fn route_table(config: &Config) -> Result<RouteTable, String> {
    let mut table = RouteTable {
        global: routes_of(&config.routes)?,
        ..Default::default()
    };
    for (domain, d) in &config.domains {
        table
            .domains
            .insert(normalize_domain(domain)?, routes_of(&d.routes)?);
    }
    for (name, a) in &config.accounts {
        table.accounts.insert(name.clone(), routes_of(&a.routes)?);
    }
    Ok(table)
}

/// Builds a snapshot: route table plus live transport objects.
pub fn build(config: &Config, tls: &TlsClientConfigs) -> Result<Snapshot, String> {
    let routes = route_table(config)?;
    let shared = direct_shared(config)?;
    let direct = direct_transport(config, &shared, &config.hostname, Arc::new(TcpDialer))?;
    let mut transports = HashMap::new();
    for (name, t) in &config.transports {
        let entry: Arc<dyn Transport> = match t.kind {
            TransportKind::Smtp | TransportKind::Submission | TransportKind::Submissions => {
                let sh = smarthost_config(config, name, t)?;
                let connector: Arc<dyn Connector> = if t.socks_proxy.is_empty() {
                    Arc::new(TcpConnector::new(Duration::from_secs(30)))
                } else {
                    let proxy = config.transports.get(&t.socks_proxy).ok_or_else(|| {
                        format!(
                            "transport {name:?}: socks_proxy {:?} is not defined",
                            t.socks_proxy
                        )
                    })?;
                    Arc::new(SocksConnector::new(socks_config(&t.socks_proxy, proxy)?))
                };
                Arc::new(SmarthostTransport::new(sh, tls, connector))
            }
            TransportKind::Direct => Arc::clone(&direct) as Arc<dyn Transport>,
            TransportKind::Socks => {
                // The whole direct algorithm, every connection through the proxy, with
                // the EHLO name that matches the proxy's egress IP.
                let ehlo = if t.remote_hostname.is_empty() {
                    &config.hostname
                } else {
                    &t.remote_hostname
                };
                let dialer = Arc::new(SocksDialer::new(socks_config(name, t)?));
                direct_transport(config, &shared, ehlo, dialer)?
            }
        };
        transports.insert(name.clone(), entry);
    }
    // No route, or a route with an empty transport, means "direct" (unless the operator
    // named a transport so).
    let mtasts = direct.mtasts_cache().cloned();
    transports
        .entry(DIRECT.to_string())
        .or_insert_with(|| direct as Arc<dyn Transport>);
    Ok(Snapshot {
        routes,
        transports,
        configs: config.transports.clone().into_iter().collect(),
        accounts: Arc::new(crate::accounts::Accounts::from_config(config)?),
        mtasts,
    })
}

/// The proxies and credentials of socks transport `name`.
pub fn socks_config(name: &str, t: &TransportConfig) -> Result<SocksConfig, String> {
    let proxies = t
        .address
        .iter()
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|_| format!("transport {name:?}: address {a:?} is not an IP:PORT address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let credentials = secrets::transport_password(name, t)
        .map_err(|e| e.to_string())?
        .map(|p| (t.username.clone(), p));
    Ok(SocksConfig {
        proxies,
        credentials,
        timeout: Duration::from_secs(30),
    })
}

/// Builds a snapshot from store data (the Redis store): its transports, routes and
/// accounts, with everything else (hostname, DNS, TLS, queue limits) from `config`.
/// `data` must be validated (`StoreData::validate`).
pub fn build_from(
    data: &crate::store::StoreData,
    config: &Config,
    tls: &TlsClientConfigs,
) -> Result<Snapshot, String> {
    let mut base = config.clone();
    base.transports = data.transports.clone();
    base.routes.clear();
    base.domains.clear();
    base.accounts.clear();
    let mut snapshot = build(&base, tls)?;
    snapshot.routes = data.route_table()?;
    let records: HashMap<String, crate::accounts::AccountRecord> = data
        .accounts
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    snapshot.accounts = Arc::new(crate::accounts::Accounts::from_records(&records)?);
    Ok(snapshot)
}

/// The resolver of `[dns]`, shared by every direct and socks transport of a snapshot.
pub fn resolver(config: &Config) -> Result<Arc<dyn Resolver>, String> {
    let nameservers = config
        .dns
        .nameservers
        .iter()
        .map(|n| {
            n.parse::<SocketAddr>()
                .map_err(|_| format!("dns.nameservers: {n:?} is not an IP:PORT address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mode = if config.dns.validate {
        if config.dns.trust_ad {
            tracing::warn!("dns: both validate and trust_ad are set; validating in process");
        }
        let anchor = &config.dns.trust_anchor_file;
        DnssecMode::Validate {
            trust_anchor: (!anchor.is_empty()).then(|| PathBuf::from(anchor)),
        }
    } else if config.dns.trust_ad {
        DnssecMode::TrustAd
    } else {
        DnssecMode::Plain
    };
    let resolver = HickoryResolver::new(HickoryConfig {
        nameservers,
        mode,
        ..HickoryConfig::default()
    })
    .map_err(|e| format!("dns: {e} (set dns.nameservers to choose resolvers)"))?;
    Ok(Arc::new(resolver))
}

/// What every direct (and socks) transport of a snapshot shares: the resolver, the
/// trusted roots for PKIX checks, the MTA-STS policy cache, and (with the Redis store)
/// the TLS status sink.
pub struct DirectShared {
    pub resolver: Arc<dyn Resolver>,
    pub roots: TlsRoots,
    pub mtasts: Arc<PolicyCache>,
    /// Where TLS status records go; `None`: files under `data_dir/tls-status/`.
    pub tls_status: Option<Arc<dyn TlsStatusSink>>,
}

/// The fleet-wide caches in the Redis store (`store.kind = "redis"`).
struct Fleet {
    policies: Arc<RedisPolicyStore>,
    tls_status: Arc<RedisTlsStatusSink>,
}

/// A Redis store: `redis_url`, `cluster`, `key_prefix`.
type FleetId = (String, bool, String);

/// The Redis caches of a store, one set per store for the whole process (like
/// [`mtasts_store`]: snapshots come and go, the caches and their connection stay).
fn fleet(config: &Config) -> Result<Arc<Fleet>, String> {
    static FLEETS: OnceLock<Mutex<HashMap<FleetId, Arc<Fleet>>>> = OnceLock::new();
    let s = &config.store;
    let id = (s.redis_url.clone(), s.cluster, s.key_prefix.clone());
    let mut fleets = FLEETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(fleet) = fleets.get(&id) {
        return Ok(Arc::clone(fleet));
    }
    let store = RedisStore::open(s, &config.tls).map_err(|e| e.to_string())?;
    let redis = Arc::new(FleetRedis::new(store));
    let fleet = Arc::new(Fleet {
        policies: Arc::new(RedisPolicyStore::new(Arc::clone(&redis))),
        tls_status: Arc::new(RedisTlsStatusSink::new(redis)),
    });
    fleets.insert(id, Arc::clone(&fleet));
    Ok(fleet)
}

/// The MTA-STS cache file under `data_dir`.
pub fn mtasts_cache_path(data_dir: &Path) -> PathBuf {
    data_dir.join("mtasts.json")
}

/// The MTA-STS cache store of a file, one per file for the whole process: snapshots are
/// rebuilt on every reload, while the cache (and its single writer) must outlive them.
/// A cache file that cannot be parsed is set aside (`mtasts.json.corrupt`) and the cache
/// starts empty: policies are fetched again, nothing is lost but time.
fn mtasts_store(path: &Path) -> Result<Arc<JsonFileStore>, String> {
    static STORES: OnceLock<Mutex<HashMap<PathBuf, Arc<JsonFileStore>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(store) = stores.get(path) {
        return Ok(Arc::clone(store));
    }
    let store = match JsonFileStore::open(path) {
        Ok(store) => store,
        Err(StoreError::Corrupt { reason, .. }) => {
            let aside = path.with_extension("json.corrupt");
            tracing::warn!(path = %path.display(), %reason, aside = %aside.display(),
                "MTA-STS cache unreadable; set aside, starting empty");
            std::fs::rename(path, &aside)
                .map_err(|e| format!("setting aside {}: {e}", path.display()))?;
            JsonFileStore::open(path).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let store = Arc::new(store);
    stores.insert(path.to_path_buf(), Arc::clone(&store));
    Ok(store)
}

/// The trusted roots of `[tls] extra_ca_file` (plus webpki's).
pub fn tls_roots(config: &Config) -> Result<TlsRoots, String> {
    let extra =
        (!config.tls.extra_ca_file.is_empty()).then(|| Path::new(&config.tls.extra_ca_file));
    TlsRoots::load(extra).map_err(|e| format!("tls.extra_ca_file: {e}"))
}

/// The pieces every direct transport of a snapshot shares (see [`DirectShared`]):
/// MTA-STS policies are fetched over HTTPS on `mtasts.https_port`, PKIX-verified
/// against the same roots as the MX certificates, and cached in `data_dir/mtasts.json`
/// or, with the Redis store, in Redis for the whole fleet (as are TLS status records).
pub fn direct_shared(config: &Config) -> Result<DirectShared, String> {
    let resolver = resolver(config)?;
    let roots = tls_roots(config)?;
    let families = address_families(config)?;
    let fetcher = HttpsFetcher::new(Arc::clone(&resolver), &roots)
        .with_port(config.mtasts.https_port)
        .with_families(families);
    let (store, tls_status): (Arc<dyn PolicyStore>, Option<Arc<dyn TlsStatusSink>>) =
        match config.store.kind {
            StoreKind::File => (mtasts_store(&mtasts_cache_path(&config.data_dir))?, None),
            StoreKind::Redis => {
                let fleet = fleet(config)?;
                (
                    fleet.policies.clone(),
                    Some(fleet.tls_status.clone() as Arc<dyn TlsStatusSink>),
                )
            }
        };
    let mtasts = Arc::new(PolicyCache::new(
        Arc::clone(&resolver),
        Arc::new(fetcher),
        store,
    ));
    Ok(DirectShared {
        resolver,
        roots,
        mtasts,
        tls_status,
    })
}

fn address_families(config: &Config) -> Result<AddressFamilies, String> {
    let d = &config.direct;
    if d.disable_ipv4 && d.disable_ipv6 {
        return Err("direct: disable_ipv4 and disable_ipv6 leave no address family".into());
    }
    Ok(AddressFamilies {
        v4: !d.disable_ipv4,
        v6: !d.disable_ipv6,
    })
}

/// A direct transport from `[direct]`, saying EHLO `ehlo_name` and connecting through
/// `dialer` (plain TCP, or a SOCKS5 proxy), with DANE and MTA-STS from `shared`; TLS
/// status records go to `shared`'s sink, else to `data_dir/tls-status/`.
pub fn direct_transport(
    config: &Config,
    shared: &DirectShared,
    ehlo_name: &str,
    dialer: Arc<dyn Dialer>,
) -> Result<Arc<DirectTransport>, String> {
    let d = &config.direct;
    let mut direct = DirectConfig::new(ehlo_name.to_string());
    direct.port = d.port;
    direct.port_overrides = d
        .port_overrides
        .iter()
        .map(|(host, port)| (host.trim_end_matches('.').to_ascii_lowercase(), *port))
        .collect();
    direct.families = address_families(config)?;
    let sink = match &shared.tls_status {
        Some(sink) => Arc::clone(sink),
        None => Arc::new(TlsStatusStore::new(config.data_dir.join("tls-status"))),
    };
    Ok(Arc::new(
        DirectTransport::new(direct, Arc::clone(&shared.resolver), dialer)
            .with_tls_status_sink(sink)
            .with_mtasts(Arc::clone(&shared.mtasts), shared.roots.clone()),
    ))
}

/// The settings of smarthost transport `name`, with its password read from its
/// `password_file`/`password_env`/`password` (an error names the transport and the
/// source, never the value).
pub fn smarthost_config(
    config: &Config,
    name: &str,
    t: &TransportConfig,
) -> Result<SmarthostConfig, String> {
    let tls_mode = match (t.kind, t.no_starttls) {
        (TransportKind::Submissions, _) => SmarthostTls::Implicit,
        (_, true) => SmarthostTls::None,
        (_, false) => SmarthostTls::StartTls { required: true },
    };
    let auth = match secrets::transport_password(name, t).map_err(|e| e.to_string())? {
        None => None,
        Some(password) => Some(SmarthostAuth {
            username: t.username.clone(),
            password,
            mechanisms: t
                .sasl_mechanisms()
                .map_err(|e| format!("transport {name:?}: mechanisms: {e}"))?,
        }),
    };
    Ok(SmarthostConfig {
        name: name.to_string(),
        host: t.host.clone(),
        port: t.port.unwrap_or(t.kind.default_port()),
        tls: tls_mode,
        verify_certificates: !t.tls_insecure_skip_verify,
        ehlo_name: config.hostname.clone(),
        timeouts: Timeouts::default(),
        max_idle: config.queue.max_per_destination.max(1),
        idle_timeout: Duration::from_secs(30),
        auth,
        auth_failure_holddown: AUTH_FAILURE_HOLDDOWN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(std::path::Path::new("t.toml"), extra).unwrap()
    }

    #[test]
    fn smarthost_auth_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "file-secret\n").unwrap();
        let c = config(&format!(
            "[transports.p]\nkind = \"submission\"\nhost = \"h\"\nusername = \"u\"\n\
             password_file = {pw:?}\nmechanisms = [\"CRAM-MD5\"]\n\n\
             [transports.open]\nkind = \"smtp\"\nhost = \"h\"\nno_starttls = true\n"
        ));
        let sh = smarthost_config(&c, "p", &c.transports["p"]).unwrap();
        let auth = sh.auth.as_ref().unwrap();
        assert_eq!(auth.username, "u");
        assert_eq!(auth.password.expose(), "file-secret");
        assert_eq!(
            auth.mechanisms,
            vec![relaygate_transports::sasl::Mechanism::CramMd5]
        );
        assert_eq!(sh.port, 587);
        assert_eq!(sh.tls, SmarthostTls::StartTls { required: true });
        assert!(!format!("{sh:?}").contains("file-secret"));
        let open = smarthost_config(&c, "open", &c.transports["open"]).unwrap();
        assert!(open.auth.is_none());
        assert_eq!(open.tls, SmarthostTls::None);
    }

    #[test]
    fn unreadable_secret_fails_the_build() {
        let c = config(
            "[transports.p]\nkind = \"submissions\"\nhost = \"h\"\nusername = \"u\"\n\
             password_file = \"/nonexistent/relaygate-pw\"\n",
        );
        let tls = TlsClientConfigs::new(&relaygate_transports::TlsRoots::load(None).unwrap());
        let err = build(&c, &tls).err().unwrap();
        assert!(err.contains("transport \"p\""), "{err}");
        assert!(err.contains("/nonexistent/relaygate-pw"), "{err}");
    }
}
