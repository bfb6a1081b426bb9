//! The runtime view of routes and transports: an immutable [`Snapshot`], built by
//! `runtime::build` (the one factory, for both stores) and swapped whole on reload.
//! Deliveries take the current snapshot once per attempt, so a reload never changes a
//! transaction half-way. Also here: how each transport kind is made from its config.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use relaygate_transports::direct::{Dialer, DirectConfig, DirectTransport, TlsStatusStore};
use relaygate_transports::dns::AddressFamilies;
use relaygate_transports::mtasts::PolicyCache;
use relaygate_transports::smarthost::{SmarthostAuth, SmarthostConfig, SmarthostTls};
use relaygate_transports::socks::{ProxyAddr, SocksConfig};
use relaygate_transports::{Timeouts, Transport};

use crate::config::{Config, TransportConfig, TransportKind};
use crate::routes::RouteTable;
use crate::secrets;

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
    /// Circuit-breaker settings of the smarthost transports (others have none).
    pub breakers: HashMap<String, crate::queue::health::Breaker>,
    /// Rate limits per transport (only those with `rate_limit`).
    pub rates: HashMap<String, Vec<crate::queue::rate::Rate>>,
    /// DKIM signing keys (`[[dkim.keys]]`).
    pub dkim: Arc<crate::dkim::Signer>,
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

/// The proxies and credentials of socks transport `name` (names in `address` resolve
/// through the system until a resolver is set: `runtime::build` sets `[dns]`'s).
pub fn socks_config(name: &str, t: &TransportConfig) -> Result<SocksConfig, String> {
    let proxies = t
        .address
        .iter()
        .map(|a| {
            a.parse::<ProxyAddr>()
                .map_err(|e| format!("transport {name:?}: address: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let credentials = secrets::transport_password(name, t)
        .map_err(|e| e.to_string())?
        .map(|p| (t.username.clone(), p));
    Ok(SocksConfig {
        proxies,
        credentials,
        timeout: Duration::from_secs(30),
        resolver: None,
    })
}

pub fn address_families(config: &Config) -> Result<AddressFamilies, String> {
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
/// `dialer` (plain TCP, or a SOCKS5 proxy), with the resolver and roots of `rt` and the
/// snapshot's MTA-STS cache; TLS status records go to `rt`'s sink, else to
/// `data_dir/tls-status/`.
pub fn direct_transport(
    config: &Config,
    rt: &crate::runtime::Runtime,
    mtasts: &Arc<PolicyCache>,
    ehlo_name: &str,
    dialer: Arc<dyn Dialer>,
    reply_rules: Arc<relaygate_transports::replies::ReplyRules>,
) -> Result<Arc<DirectTransport>, String> {
    let d = &config.direct;
    let mut direct = DirectConfig::new(ehlo_name.to_string());
    direct.reply_rules = reply_rules;
    direct.port = d.port;
    direct.port_overrides = d
        .port_overrides
        .iter()
        .map(|(host, port)| (host.trim_end_matches('.').to_ascii_lowercase(), *port))
        .collect();
    direct.families = address_families(config)?;
    let sink = match &rt.tls_status {
        Some(sink) => Arc::clone(sink),
        None => Arc::new(TlsStatusStore::new(config.data_dir.join("tls-status"))),
    };
    Ok(Arc::new(
        DirectTransport::new(direct, Arc::clone(&rt.resolver), dialer)
            .with_tls_status_sink(sink)
            .with_mtasts(Arc::clone(mtasts), rt.roots.clone()),
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
    // A transport that logs in with OAuth2 tokens only has an empty password.
    let auth = match crate::oauth::transport_password(name, t).map_err(|e| e.to_string())? {
        None => None,
        Some(password) => Some(SmarthostAuth {
            username: t.username.clone(),
            password,
            mechanisms: t
                .sasl_mechanisms()
                .map_err(|e| format!("transport {name:?}: mechanisms: {e}"))?,
        }),
    };
    let mut hosts = t
        .smarthost_hosts()
        .map_err(|e| format!("transport {name:?}: {e}"))?
        .into_iter();
    let (host, port) = hosts
        .next()
        .ok_or_else(|| format!("transport {name:?}: no host"))?;
    let reply_rules = Arc::new(
        t.reply_rules()
            .map_err(|e| format!("transport {name:?}: {e}"))?,
    );
    Ok(SmarthostConfig {
        reply_rules,
        name: name.to_string(),
        host,
        port,
        more_hosts: hosts.collect(),
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
}
