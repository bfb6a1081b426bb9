//! SOCKS5 egress (RFC 1928, with RFC 1929 username/password): every connection of a
//! `socks` transport goes through a proxy on another IP. Names are resolved locally and
//! the proxy is given an IP address, so DNSSEC-based checks (DANE, MTA-STS) still apply
//! to what we resolved. Several proxies may be configured: they are tried in order, so
//! one dead proxy does not stop mail. A failure never falls back to a direct connection.
//!
//! One tunnel: we dial the proxy ourselves (TCP, `TCP_NODELAY`), then `tokio-socks` runs
//! the handshake on that socket (greeting, RFC 1929 login, CONNECT to the IP). One
//! deadline, [`SocksConfig::timeout`], covers both. The socket is wrapped while the
//! handshake runs (`guard.rs`): with credentials we offer username/password only and
//! refuse a proxy that skips it, and a failure is reported as a [`SocksError`] naming
//! the proxy, the target, the step and the proxy's reply code.
//!
//! [`SocksDialer`] plugs into direct delivery's [`crate::direct::Dialer`] seam;
//! [`SocksConnector`] into smarthost delivery's [`crate::stream::Connector`].

pub mod error;
mod guard;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_socks::tcp::Socks5Stream;

use crate::direct::{DialFuture, Dialer};
use crate::session::Secret;
use crate::stream::{ConnectFuture, Connector, Io};

pub use error::{SocksError, SocksFailure, Step};
use guard::Guarded;

/// A proxy's address as configured: `IP:PORT`, or `name:PORT`, resolved at each dial
/// through the gateway's resolver (IP literals and `/etc/hosts` names such as
/// `localhost` as usual, see [`crate::stream::resolve_host`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAddr {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl From<SocketAddr> for ProxyAddr {
    fn from(a: SocketAddr) -> ProxyAddr {
        ProxyAddr::Ip(a)
    }
}

/// A proxy address that is neither `IP:PORT` nor `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP:PORT or HOST:PORT address")]
pub struct BadProxyAddr(pub String);

impl std::str::FromStr for ProxyAddr {
    type Err = BadProxyAddr;

    fn from_str(s: &str) -> Result<ProxyAddr, BadProxyAddr> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(ProxyAddr::Ip(a));
        }
        match crate::stream::parse_host_port(s, None) {
            Some((host, port)) => Ok(ProxyAddr::Name { host, port }),
            None => Err(BadProxyAddr(s.to_string())),
        }
    }
}

impl std::fmt::Display for ProxyAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyAddr::Ip(a) => write!(f, "{a}"),
            ProxyAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Where the proxies are and how to log in.
#[derive(Clone)]
pub struct SocksConfig {
    /// Proxy addresses, tried in order.
    pub proxies: Vec<ProxyAddr>,
    /// RFC 1929 credentials, if the proxies need them.
    pub credentials: Option<(String, Secret)>,
    /// Bound on reaching one proxy and having it connect onwards.
    pub timeout: Duration,
    /// Resolves proxy and smarthost names (`[dns]`); `None`: the system's resolver.
    pub resolver: Option<Arc<dyn crate::dns::Resolver>>,
}

impl std::fmt::Debug for SocksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksConfig")
            .field("proxies", &self.proxies)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One tunnel through one proxy to `target`, within `limit`.
async fn tunnel(
    proxy: SocketAddr,
    target: SocketAddr,
    creds: Option<&(String, Secret)>,
    limit: Duration,
) -> Result<TcpStream, SocksError> {
    let fail = |failure| SocksError {
        proxy,
        target,
        failure,
    };
    let deadline = Instant::now() + limit;
    let tcp = timeout_at(deadline, TcpStream::connect(proxy))
        .await
        .map_err(|_| fail(SocksFailure::Timeout(Step::Dial)))?
        .map_err(|e| fail(SocksFailure::Unreachable(e)))?;
    tcp.set_nodelay(true).map_err(|source| {
        fail(SocksFailure::Io {
            step: Step::Dial,
            source,
        })
    })?;
    let mut wire = Guarded::new(tcp, creds.is_some());
    let result = timeout_at(deadline, run_handshake(&mut wire, target, creds)).await;
    match result {
        Ok(Ok(())) => Ok(wire.into_inner()),
        Ok(Err(e)) => Err(fail(wire.failure(e))),
        Err(_) => Err(fail(SocksFailure::Timeout(wire.step()))),
    }
}

/// The SOCKS5 handshake over an open stream to a proxy, with no deadline of its own:
/// greeting, RFC 1929 login when `credentials` are given, CONNECT to `target`. Gives
/// the stream back, now a tunnel to `target`. The dialer runs the same code on its TCP
/// connection under its timeout; the fuzz target feeds it a proxy's bytes from memory.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    target: SocketAddr,
    credentials: Option<&(String, Secret)>,
) -> Result<S, SocksFailure> {
    let mut wire = Guarded::new(stream, credentials.is_some());
    match run_handshake(&mut wire, target, credentials).await {
        Ok(()) => Ok(wire.into_inner()),
        Err(e) => Err(wire.failure(e)),
    }
}

/// tokio-socks on the guarded stream. The target is an IP address, sent as ATYP 1 or 4:
/// the proxy resolves nothing.
async fn run_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Guarded<S>,
    target: SocketAddr,
    credentials: Option<&(String, Secret)>,
) -> Result<(), tokio_socks::Error> {
    match credentials {
        Some((user, pass)) => {
            Socks5Stream::connect_with_password_and_socket(wire, target, user, pass.expose()).await
        }
        None => Socks5Stream::connect_with_socket(wire, target).await,
    }
    .map(drop)
}

/// The addresses of one proxy.
async fn proxy_addresses(config: &SocksConfig, proxy: &ProxyAddr) -> io::Result<Vec<SocketAddr>> {
    match proxy {
        ProxyAddr::Ip(a) => Ok(vec![*a]),
        ProxyAddr::Name { host, port } => tokio::time::timeout(
            config.timeout,
            crate::stream::resolve_host(
                config.resolver.as_deref(),
                std::path::Path::new("/etc/hosts"),
                host,
                *port,
            ),
        )
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("SOCKS5 proxy {proxy}: resolving: timeout"),
            )
        })?
        .map_err(|e| io::Error::new(e.kind(), format!("SOCKS5 proxy {proxy}: {e}"))),
    }
}

/// Connects to an address through the first proxy that works.
async fn via_proxies(config: &SocksConfig, target: SocketAddr) -> io::Result<Box<dyn Io>> {
    let mut last: Option<io::Error> = None;
    for proxy in &config.proxies {
        let addrs = match proxy_addresses(config, proxy).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%proxy, %target, error = %e, "SOCKS5 proxy not found; trying the next one");
                last = Some(e);
                continue;
            }
        };
        for addr in addrs {
            match tunnel(addr, target, config.credentials.as_ref(), config.timeout).await {
                Ok(s) => return Ok(Box::new(s)),
                Err(e) => {
                    tracing::warn!(proxy = %addr, %target, step = %e.step(), error = %e, "SOCKS5 proxy failed; trying the next one");
                    last = Some(e.into());
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no SOCKS5 proxy configured")))
}

/// Direct delivery through SOCKS5.
#[derive(Debug, Clone)]
pub struct SocksDialer {
    config: Arc<SocksConfig>,
}

impl SocksDialer {
    pub fn new(config: SocksConfig) -> SocksDialer {
        SocksDialer {
            config: Arc::new(config),
        }
    }
}

impl Dialer for SocksDialer {
    fn dial(&self, addr: SocketAddr) -> DialFuture<'_> {
        Box::pin(via_proxies(&self.config, addr))
    }
}

/// Smarthost delivery through SOCKS5: the host name is resolved locally (through the
/// gateway's resolver when given, see [`crate::stream::resolve_host`]), each address
/// tried in turn through the proxies.
#[derive(Clone)]
pub struct SocksConnector {
    config: Arc<SocksConfig>,
    resolver: Option<Arc<dyn crate::dns::Resolver>>,
}

impl std::fmt::Debug for SocksConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksConnector")
            .field("config", &self.config)
            .field("resolver", &self.resolver.is_some())
            .finish()
    }
}

impl SocksConnector {
    pub fn new(config: SocksConfig) -> SocksConnector {
        SocksConnector {
            config: Arc::new(config),
            resolver: None,
        }
    }

    /// Resolves smarthost names through `resolver` (after IP literals and /etc/hosts).
    pub fn with_resolver(mut self, resolver: Arc<dyn crate::dns::Resolver>) -> SocksConnector {
        self.resolver = Some(resolver);
        self
    }

    async fn connect_inner(&self, host: &str, port: u16) -> io::Result<(Box<dyn Io>, SocketAddr)> {
        let hosts = std::path::Path::new("/etc/hosts");
        let resolver = self.resolver.as_deref().or(self.config.resolver.as_deref());
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            self.config.timeout,
            crate::stream::resolve_host(resolver, hosts, host, port),
        )
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("resolving {host}: timeout"),
            )
        })??;
        let mut last = None;
        for addr in addrs {
            match via_proxies(&self.config, addr).await {
                Ok(io) => return Ok((io, addr)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{host} has no addresses"))
        }))
    }
}

impl Connector for SocksConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> ConnectFuture<'a> {
        Box::pin(self.connect_inner(host, port))
    }
}
