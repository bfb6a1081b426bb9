//! The one factory from store data to runtime objects: [`build`] turns a validated
//! [`StoreData`] (from the config file or from Redis, the same type either way) plus the
//! config's global settings into a [`Snapshot`] — transports behind the seam, the route
//! table, accounts.
//!
//! What a build needs from outside is passed in explicitly as a [`Runtime`]: the
//! handles opened once at start (the MTA-STS cache store, which has a single writer,
//! and with the Redis store the fleet-wide caches and their connection) and the system
//! view (the `[dns]` resolver, the trusted roots, the TLS client configs), which a
//! reload re-reads with [`Runtime::reconfigure`]. A build itself opens nothing; it reads
//! only the transports' secret files, so a rotated password is picked up on reload.
//! No process-global registries: two runtimes (two tests, two gateways in one process)
//! never share state by accident.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use relaygate_transports::direct::{TcpDialer, TlsStatusSink};
use relaygate_transports::dns::{DnssecMode, HickoryConfig, HickoryResolver, Resolver};
use relaygate_transports::mtasts::{
    HttpsFetcher, JsonFileStore, PolicyCache, PolicyStore, StoreError,
};
use relaygate_transports::smarthost::{SmarthostTransport, TlsClientConfigs};
use relaygate_transports::socks::{SocksConnector, SocksDialer};
use relaygate_transports::{Connector, TcpConnector, TlsRoots, Transport};

use crate::config::{Config, StoreKind, TransportKind};
use crate::snapshot::{
    address_families, direct_transport, smarthost_config, socks_config, Snapshot, DIRECT,
};
use crate::store::fleet::{FleetRedis, RedisPolicyStore, RedisTlsStatusSink};
use crate::store::redis::RedisStore;
use crate::store::StoreData;

/// Why a runtime could not be opened or a snapshot built, by area; each message names
/// the key or transport at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `[dns]`: the resolver.
    #[error("{0}")]
    Dns(String),
    /// `[tls]`: the trusted roots.
    #[error("{0}")]
    Tls(String),
    /// The MTA-STS cache or the fleet caches.
    #[error("{0}")]
    Store(String),
    /// `[direct]`.
    #[error("{0}")]
    Direct(String),
    /// A transport (its secret, mechanisms, proxy).
    #[error("{0}")]
    Transport(String),
    /// The route table.
    #[error("routes: {0}")]
    Routes(#[from] crate::store::data::Problem),
    /// An account.
    #[error(transparent)]
    Account(#[from] crate::accounts::AccountError),
    /// `[[dkim.keys]]`.
    #[error(transparent)]
    Dkim(#[from] crate::dkim::DkimError),
}

/// What snapshot builds use from outside the data.
#[derive(Clone)]
pub struct Runtime {
    /// The `[dns]` resolver, shared by every direct and socks transport.
    pub resolver: Arc<dyn Resolver>,
    /// Trusted roots (webpki's plus `tls.extra_ca_file`) for every PKIX check.
    pub roots: TlsRoots,
    /// The TLS client configs of smarthost transports, from `roots`.
    pub tls: TlsClientConfigs,
    /// Where MTA-STS policies are cached (a file under `data_dir`, or Redis).
    pub policy_store: Arc<dyn PolicyStore>,
    /// Where TLS status records go; `None`: files under `data_dir/tls-status/`.
    pub tls_status: Option<Arc<dyn TlsStatusSink>>,
    /// The fleet's shared Redis (transport health, rate limits); `None` with the file
    /// store.
    pub fleet: Option<Arc<FleetRedis>>,
}

impl Runtime {
    /// Opens everything a build needs: the stores (once per process run) and the
    /// system view.
    pub fn open(config: &Config) -> Result<Runtime, BuildError> {
        type Stores = (
            Arc<dyn PolicyStore>,
            Option<Arc<dyn TlsStatusSink>>,
            Option<Arc<FleetRedis>>,
        );
        let (policy_store, tls_status, fleet): Stores = match config.store.kind {
            StoreKind::File => (
                open_mtasts_file(&mtasts_cache_path(&config.data_dir))
                    .map_err(BuildError::Store)?,
                None,
                None,
            ),
            StoreKind::Redis => {
                let store = RedisStore::open(&config.store, &config.tls)
                    .map_err(|e| BuildError::Store(e.to_string()))?;
                let redis = Arc::new(FleetRedis::new(store));
                (
                    Arc::new(RedisPolicyStore::new(Arc::clone(&redis))),
                    Some(Arc::new(RedisTlsStatusSink::new(Arc::clone(&redis)))
                        as Arc<dyn TlsStatusSink>),
                    Some(redis),
                )
            }
        };
        let (resolver, roots, tls) = system(config)?;
        Ok(Runtime {
            resolver,
            roots,
            tls,
            policy_store,
            tls_status,
            fleet,
        })
    }

    /// What `check-config` builds with: the system view of `config` and an in-memory
    /// MTA-STS cache (nothing under `data_dir` is opened or created; Redis is not).
    pub fn for_check(config: &Config) -> Result<Runtime, BuildError> {
        let (resolver, roots, tls) = system(config)?;
        Ok(Runtime {
            resolver,
            roots,
            tls,
            policy_store: Arc::new(relaygate_transports::mtasts::MemoryStore::new()),
            tls_status: None,
            fleet: None,
        })
    }

    /// The same stores with the system view of `config` re-read (a reload: `[dns]`,
    /// `tls.extra_ca_file`). `[store]` changes take effect at the next start.
    pub fn reconfigure(&self, config: &Config) -> Result<Runtime, BuildError> {
        let (resolver, roots, tls) = system(config)?;
        Ok(Runtime {
            resolver,
            roots,
            tls,
            policy_store: Arc::clone(&self.policy_store),
            tls_status: self.tls_status.clone(),
            fleet: self.fleet.clone(),
        })
    }
}

/// How a smarthost transport connects: directly (host names through `[dns]`), or
/// through the proxy of the socks transport named by its `socks_proxy`. Delivery and
/// `auth-test` use the same.
pub fn smarthost_connector(
    name: &str,
    t: &crate::config::TransportConfig,
    transports: &std::collections::BTreeMap<String, crate::config::TransportConfig>,
    resolver: &Arc<dyn Resolver>,
) -> Result<Arc<dyn Connector>, String> {
    if t.socks_proxy.is_empty() {
        return Ok(Arc::new(
            TcpConnector::new(Duration::from_secs(30)).with_resolver(Arc::clone(resolver)),
        ));
    }
    let proxy = transports.get(&t.socks_proxy).ok_or_else(|| {
        format!(
            "transport {name:?}: socks_proxy {:?} is not defined",
            t.socks_proxy
        )
    })?;
    let mut socks = socks_config(&t.socks_proxy, proxy)?;
    socks.resolver = Some(Arc::clone(resolver));
    Ok(Arc::new(
        SocksConnector::new(socks).with_resolver(Arc::clone(resolver)),
    ))
}

/// The resolver of `[dns]`, the trusted roots and the TLS client configs.
fn system(config: &Config) -> Result<(Arc<dyn Resolver>, TlsRoots, TlsClientConfigs), BuildError> {
    let resolver = resolver(config).map_err(BuildError::Dns)?;
    let roots = tls_roots(config).map_err(BuildError::Tls)?;
    let tls = TlsClientConfigs::new(&roots);
    Ok((resolver, roots, tls))
}

/// Builds a snapshot from validated store data, with everything else (host name, DNS,
/// TLS, queue limits) from `config`.
pub fn build(data: &StoreData, config: &Config, rt: &Runtime) -> Result<Snapshot, BuildError> {
    let families = address_families(config).map_err(BuildError::Direct)?;
    let fetcher = HttpsFetcher::new(Arc::clone(&rt.resolver), &rt.roots)
        .with_port(config.mtasts.https_port)
        .with_families(families);
    let mtasts = Arc::new(PolicyCache::new(
        Arc::clone(&rt.resolver),
        Arc::new(fetcher),
        Arc::clone(&rt.policy_store),
    ));
    let direct = direct_transport(
        config,
        rt,
        &mtasts,
        &config.hostname,
        Arc::new(TcpDialer),
        Arc::default(),
    )
    .map_err(BuildError::Direct)?;
    let mut transports: std::collections::HashMap<String, Arc<dyn Transport>> = Default::default();
    for (name, t) in &data.transports {
        let entry: Arc<dyn Transport> = match t.kind {
            TransportKind::Smtp | TransportKind::Submission | TransportKind::Submissions => {
                let sh = smarthost_config(config, name, t).map_err(BuildError::Transport)?;
                let connector = smarthost_connector(name, t, &data.transports, &rt.resolver)
                    .map_err(BuildError::Transport)?;
                let smarthost = SmarthostTransport::new(sh, &rt.tls, connector);
                // OAuth2 access tokens for XOAUTH2/OAUTHBEARER (`[transports.NAME.oauth2]`).
                Arc::new(
                    crate::oauth::attach(smarthost, name, t, Arc::clone(&rt.resolver), &rt.roots)
                        .map_err(BuildError::Transport)?,
                )
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
                let mut socks = socks_config(name, t).map_err(BuildError::Transport)?;
                socks.resolver = Some(Arc::clone(&rt.resolver));
                let dialer = Arc::new(SocksDialer::new(socks));
                let rules = Arc::new(t.reply_rules().map_err(BuildError::Transport)?);
                direct_transport(config, rt, &mtasts, ehlo, dialer, rules)
                    .map_err(BuildError::Direct)?
            }
        };
        transports.insert(name.clone(), entry);
    }
    // No route, or a route with an empty transport, means "direct" (unless the operator
    // named a transport so).
    transports
        .entry(DIRECT.to_string())
        .or_insert_with(|| direct as Arc<dyn Transport>);
    let records = data
        .accounts
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The config's keys, and those of the Redis store (the file store's are the same).
    let dkim = Arc::new(crate::dkim::Signer::from_entries(
        config.dkim.keys.iter().chain(data.dkim.values().flatten()),
        None,
    )?);
    Ok(Snapshot {
        dkim,
        routes: data.route_table()?,
        transports,
        configs: data.transports.clone().into_iter().collect(),
        accounts: Arc::new(crate::accounts::Accounts::from_records(&records)?),
        mtasts: Some(mtasts),
        breakers: data
            .transports
            .iter()
            .filter(|(_, t)| t.kind.is_smarthost())
            .map(|(name, t)| Ok((name.clone(), t.breaker().map_err(BuildError::Transport)?)))
            .collect::<Result<_, BuildError>>()?,
        rates: data
            .transports
            .iter()
            .filter(|(_, t)| !t.rate_limit.is_empty())
            .map(|(name, t)| {
                Ok((
                    name.clone(),
                    t.rate_limits().map_err(BuildError::Transport)?,
                ))
            })
            .collect::<Result<_, BuildError>>()?,
    })
}

/// The resolver of `[dns]`.
pub fn resolver(config: &Config) -> Result<Arc<dyn Resolver>, String> {
    let nameservers = config
        .dns
        .nameservers
        .iter()
        .map(|n| {
            n.parse::<std::net::SocketAddr>()
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

/// The trusted roots of `[tls] extra_ca_file` (plus webpki's).
pub fn tls_roots(config: &Config) -> Result<TlsRoots, String> {
    let extra =
        (!config.tls.extra_ca_file.is_empty()).then(|| Path::new(&config.tls.extra_ca_file));
    TlsRoots::load(extra).map_err(|e| format!("tls.extra_ca_file: {e}"))
}

/// The MTA-STS cache file under `data_dir`.
pub fn mtasts_cache_path(data_dir: &Path) -> PathBuf {
    data_dir.join("mtasts.json")
}

/// Opens the MTA-STS cache file. One that cannot be parsed is set aside
/// (`mtasts.json.corrupt`) and the cache starts empty: policies are fetched again,
/// nothing is lost but time.
fn open_mtasts_file(path: &Path) -> Result<Arc<JsonFileStore>, String> {
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
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use relaygate_transports::mtasts::MemoryStore;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("t.toml"), text).unwrap()
    }

    /// A runtime from injected handles only: in-memory MTA-STS store, the system view
    /// of `config` (no nameservers read: one is given).
    fn injected(config: &Config) -> Runtime {
        let (resolver, roots, tls) = system(config).unwrap();
        Runtime {
            resolver,
            roots,
            tls,
            policy_store: Arc::new(MemoryStore::new()),
            tls_status: None,
            fleet: None,
        }
    }

    const TEXT: &str = "hostname = \"gw.test\"\ndata_dir = \"/nonexistent/relaygate-data\"\n\
        [dns]\nnameservers = [\"127.0.0.1:53\"]\n\
        [transports.relay]\nkind = \"smtp\"\nhost = \"relay.test\"\nno_starttls = true\n\
        [transports.egress]\nkind = \"socks\"\naddress = [\"127.0.0.1:1080\"]\n\
        [[routes]]\nto_domain = [\"a.test\"]\ntransport = \"relay\"\n\
        [[domains.\"src.test\".routes]]\ntransport = \"egress\"\n";

    #[test]
    fn the_file_store_builds_through_store_data_with_injected_handles() {
        let c = config(TEXT);
        let data = StoreData::from_config(&c, true).unwrap();
        data.validate().unwrap();
        // data_dir does not exist: the build opens nothing there.
        let snap = build(&data, &c, &injected(&c)).unwrap();
        let mut names: Vec<&str> = snap.transports.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["direct", "egress", "relay"]);
        assert_eq!(snap.transports["relay"].kind(), "smarthost");
        assert_eq!(
            snap.transports["relay"].destination("relay", "a.test"),
            "relay"
        );
        assert_eq!(
            snap.transports["egress"].destination("egress", "a.test"),
            "egress/a.test"
        );
        assert_eq!(snap.routes.global.len(), 1);
        assert_eq!(snap.routes.domains["src.test"].len(), 1);
        assert!(snap.mtasts.is_some());
    }

    #[test]
    fn runtimes_share_nothing_by_accident() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(TEXT);
        c.data_dir = dir.path().join("one");
        std::fs::create_dir_all(&c.data_dir).unwrap();
        let one = Runtime::open(&c).unwrap();
        c.data_dir = dir.path().join("two");
        std::fs::create_dir_all(&c.data_dir).unwrap();
        let two = Runtime::open(&c).unwrap();
        assert!(!Arc::ptr_eq(&one.policy_store, &two.policy_store));
        // A reload keeps the stores (their single writer) and re-reads the system view.
        let again = one.reconfigure(&c).unwrap();
        assert!(Arc::ptr_eq(&one.policy_store, &again.policy_store));
        assert!(!Arc::ptr_eq(&one.resolver, &again.resolver));
    }

    #[test]
    fn unreadable_secret_fails_the_build() {
        // Readable when the config is loaded (validation checks that), gone at the build
        // (a reload after the secret was removed).
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("relaygate-pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let mut c = config(&format!(
            "[dns]\nnameservers = [\"127.0.0.1:53\"]\n\
             [transports.p]\nkind = \"submissions\"\nhost = \"h\"\nusername = \"u\"\n\
             password_file = {:?}\n",
            pw.display().to_string()
        ));
        if let Some(t) = c.transports.get_mut("p") {
            t.password_file = "/nonexistent/relaygate-pw".into();
        }
        let data = StoreData::from_config(&c, true).unwrap();
        let err = build(&data, &c, &injected(&c)).err().unwrap();
        assert!(matches!(err, BuildError::Transport(_)), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("transport \"p\""), "{err}");
        assert!(err.contains("/nonexistent/relaygate-pw"), "{err}");
    }
}
