//! The submission listeners: accept loops, the connection limit, implicit TLS, and
//! graceful shutdown (stop accepting, let sessions finish their transaction, exit).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use relaygate_transports::sasl::ServerSettings;

use super::auth_guard::AuthGuard;
use super::limits::{self, Connections, SessionLimits};
use super::session::{Conn, Session};
use crate::queue::Queue;
use crate::snapshot::SnapshotCell;

/// Submission behaviour from the config.
#[derive(Clone)]
pub struct SubmissionSettings {
    pub hostname: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub trusted_networks: Vec<IpNet>,
    pub tls: Option<Arc<ServerConfig>>,
    /// Connections, time, junk and errors per client (`limits.rs`).
    pub limits: SessionLimits,
    /// MAIL FROM allowed without AUTH from `trusted_networks` (`trusted_senders`).
    pub trusted_senders: crate::accounts::SenderPolicy,
    /// Routes, transports and accounts in force (accounts are looked up at AUTH).
    pub snapshot: SnapshotCell,
    /// SASL server settings (host name, decoy secret for unknown users).
    pub sasl: Arc<ServerSettings>,
    /// Failed logins: waits and lockouts per (account, address) and per address; the
    /// admin API shares it to list and clear lockouts.
    pub auth_guard: Arc<AuthGuard>,
    /// Rate limits of accounts (`accounts.NAME.rate_limit`), shared by the fleet with
    /// the Redis store.
    pub rates: Arc<crate::queue::rate::Limiter>,
}

impl SubmissionSettings {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }
}

/// Parses `trusted_networks` entries (CIDR, or a single address).
pub fn parse_networks(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a network"))
        })
        .collect()
}

pub struct SubmissionServer {
    settings: Arc<SubmissionSettings>,
    queue: Arc<Queue>,
    /// Held by every session, for the drain at shutdown.
    sessions: Arc<Semaphore>,
    connections: Arc<Connections>,
}

impl SubmissionServer {
    pub fn new(settings: SubmissionSettings, queue: Arc<Queue>) -> SubmissionServer {
        let sessions = Arc::new(Semaphore::new(settings.limits.max_connections));
        // Series known in advance are exported at 0 from the start (SPEC §3).
        for limit in limits::LIMIT_LABELS {
            metrics::counter!("relaygate_submission_limits_total", "limit" => limit).absolute(0);
        }
        for reason in ["relay", "size", "spool", "connections", "sender", "rate"] {
            metrics::counter!("relaygate_submissions_refused_total", "reason" => reason)
                .absolute(0);
        }
        SubmissionServer {
            settings: Arc::new(settings),
            queue,
            sessions,
            connections: Arc::default(),
        }
    }

    /// Binds every listener and starts accepting; returns the bound addresses.
    pub async fn start(
        &self,
        plain: &[String],
        implicit_tls: &[String],
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>), String> {
        let mut bound_plain = Vec::new();
        let mut bound_tls = Vec::new();
        for (addrs, tls, out) in [
            (plain, false, &mut bound_plain),
            (implicit_tls, true, &mut bound_tls),
        ] {
            for a in addrs {
                let listener = TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("submission listener {a}: {e}"))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| format!("submission listener {a}: {e}"))?;
                out.push(local);
                tracing::info!(listen = %local, implicit_tls = tls, "submission: listening");
                tokio::spawn(accept_loop(
                    listener,
                    tls,
                    Arc::clone(&self.settings),
                    Arc::clone(&self.queue),
                    Arc::clone(&self.sessions),
                    Arc::clone(&self.connections),
                    shutdown.clone(),
                ));
            }
        }
        Ok((bound_plain, bound_tls))
    }

    /// Waits (bounded) until every session has ended.
    pub async fn drain(&self, limit: Duration) -> bool {
        tokio::time::timeout(
            limit,
            self.sessions
                .acquire_many(self.settings.limits.max_connections as u32),
        )
        .await
        .is_ok()
    }
}

async fn accept_loop(
    listener: TcpListener,
    implicit_tls: bool,
    settings: Arc<SubmissionSettings>,
    queue: Arc<Queue>,
    sessions: Arc<Semaphore>,
    connections: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (mut tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "submission: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let trusted = settings.is_trusted(peer.ip());
        let admitted = connections
            .admit(peer.ip(), trusted, &settings.limits)
            .and_then(|slot| {
                Arc::clone(&sessions)
                    .try_acquire_owned()
                    .map(|permit| (slot, permit))
                    .map_err(|_| "connections")
            });
        let (slot, permit) = match admitted {
            Ok(x) => x,
            Err(limit) => {
                limits::hit(limit);
                metrics::counter!("relaygate_submissions_refused_total", "reason" => "connections")
                    .increment(1);
                let text: &[u8] = if limit == "connections_per_ip" {
                    b"421 4.7.0 too many connections from your address, try again later\r\n"
                } else {
                    b"421 4.3.2 too many connections, try again later\r\n"
                };
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(text)).await;
                });
                continue;
            }
        };
        let settings = Arc::clone(&settings);
        let queue = Arc::clone(&queue);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let conn = if implicit_tls {
                let Some(cfg) = settings.tls.clone() else {
                    return;
                };
                match tokio::time::timeout(
                    settings.limits.command_timeout,
                    tokio_rustls::TlsAcceptor::from(cfg).accept(tcp),
                )
                .await
                {
                    Ok(Ok(t)) => Conn::Tls(Box::new(t)),
                    _ => return,
                }
            } else {
                Conn::Plain(tcp)
            };
            Session::new(settings, queue, peer)
                .run(conn, shutdown)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted() {
        let snapshot = SnapshotCell::new(crate::snapshot::Snapshot {
            routes: Default::default(),
            transports: Default::default(),
            configs: Default::default(),
            accounts: Default::default(),
            mtasts: None,
            breakers: Default::default(),
            rates: Default::default(),
            dkim: Default::default(),
        });
        let s = SubmissionSettings {
            snapshot,
            sasl: Arc::new(ServerSettings::with_random_secret("h")),
            auth_guard: Default::default(),
            rates: Default::default(),
            hostname: "h".into(),
            max_message_size: 1,
            max_recipients: 1,
            trusted_networks: parse_networks(&["127.0.0.0/8".into(), "::1".into()]).unwrap(),
            tls: None,
            limits: SessionLimits::default(),
            trusted_senders: Default::default(),
        };
        assert!(s.is_trusted("127.0.0.5".parse().unwrap()));
        assert!(s.is_trusted("::1".parse().unwrap()));
        assert!(s.is_trusted("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!s.is_trusted("192.0.2.1".parse().unwrap()));
    }
}
