//! The runtime view of routes and transports: an immutable [`Snapshot`] built from a
//! validated config, swapped whole on reload. Deliveries take the current snapshot once
//! per attempt, so a reload never changes a transaction half-way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use relaygate_transports::smarthost::{
    SmarthostConfig, SmarthostTls, SmarthostTransport, TlsClientConfigs,
};
use relaygate_transports::{TcpConnector, Timeouts};

use crate::config::{Config, RouteConfig, TransportConfig, TransportKind};
use crate::routes::{normalize_domain, Route, RouteTable};

/// A transport ready to use.
pub enum TransportEntry {
    Smarthost(Arc<SmarthostTransport>),
    /// Direct MX delivery.
    Direct,
    /// Configured, but this build cannot use it yet.
    Unsupported(TransportKind),
}

pub struct Snapshot {
    pub routes: RouteTable,
    pub transports: HashMap<String, TransportEntry>,
    /// The transport configs as written (for listing and explain).
    pub configs: HashMap<String, TransportConfig>,
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
    let mut transports = HashMap::new();
    for (name, t) in &config.transports {
        let entry = match t.kind {
            TransportKind::Smtp | TransportKind::Submission | TransportKind::Submissions => {
                let tls_mode = match (t.kind, t.no_starttls) {
                    (TransportKind::Submissions, _) => SmarthostTls::Implicit,
                    (_, true) => SmarthostTls::None,
                    (_, false) => SmarthostTls::StartTls { required: true },
                };
                let sh = SmarthostConfig {
                    name: name.clone(),
                    host: t.host.clone(),
                    port: t.port.unwrap_or(t.kind.default_port()),
                    tls: tls_mode,
                    verify_certificates: !t.tls_insecure_skip_verify,
                    ehlo_name: config.hostname.clone(),
                    timeouts: Timeouts::default(),
                    max_idle: config.queue.max_per_destination.max(1),
                    idle_timeout: Duration::from_secs(30),
                };
                let connector = Arc::new(TcpConnector::new(Duration::from_secs(30)));
                TransportEntry::Smarthost(Arc::new(SmarthostTransport::new(sh, tls, connector)))
            }
            TransportKind::Direct => TransportEntry::Direct,
            TransportKind::Socks => TransportEntry::Unsupported(TransportKind::Socks),
        };
        transports.insert(name.clone(), entry);
    }
    Ok(Snapshot {
        routes,
        transports,
        configs: config.transports.clone().into_iter().collect(),
    })
}
