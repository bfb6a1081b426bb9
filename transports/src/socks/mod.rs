//! SOCKS5 egress (RFC 1928, with RFC 1929 username/password): every connection of a
//! `socks` transport goes through a proxy on another IP. Names are resolved locally and
//! the proxy is given an IP address, so DNSSEC-based checks (DANE, MTA-STS) still apply
//! to what we resolved. Several proxies may be configured: they are tried in order, so
//! one dead proxy does not stop mail. A failure never falls back to a direct connection.
//!
//! [`SocksDialer`] plugs into direct delivery's [`crate::direct::Dialer`] seam;
//! [`SocksConnector`] into smarthost delivery's [`crate::stream::Connector`].

pub mod proto;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::direct::{DialFuture, Dialer};
use crate::session::Secret;
use crate::stream::{ConnectFuture, Connector, Io};

/// Where the proxies are and how to log in.
#[derive(Clone)]
pub struct SocksConfig {
    /// Proxy addresses, tried in order.
    pub proxies: Vec<SocketAddr>,
    /// RFC 1929 credentials, if the proxies need them.
    pub credentials: Option<(String, Secret)>,
    /// Bound on reaching one proxy and having it connect onwards.
    pub timeout: Duration,
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

fn err(proxy: SocketAddr, target: SocketAddr, what: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("SOCKS5 proxy {proxy}: connect to {target}: {what}"))
}

/// One tunnel through one proxy.
async fn tunnel(
    proxy: SocketAddr,
    target: SocketAddr,
    creds: Option<&(String, Secret)>,
) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| err(proxy, target, format!("proxy unreachable: {e}")))?;
    s.set_nodelay(true)?;
    s.write_all(&proto::greeting(creds.is_some())).await?;
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await?;
    let method = proto::parse_method(two, creds.is_some()).map_err(|e| err(proxy, target, e))?;
    match (method, creds) {
        (proto::METHOD_NONE, None) => {}
        (proto::METHOD_USERPASS, Some((user, pass))) => {
            let req = proto::userpass(user, pass.expose()).map_err(|e| err(proxy, target, e))?;
            s.write_all(&req).await?;
            s.read_exact(&mut two).await?;
            proto::parse_userpass_reply(two).map_err(|e| err(proxy, target, e))?;
        }
        (m, _) => {
            return Err(err(
                proxy,
                target,
                format!("proxy chose method {m}, which we did not offer"),
            ))
        }
    }
    s.write_all(&proto::connect_request(target)).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    let mut rest = proto::parse_connect_head(head).map_err(|e| err(proxy, target, e))?;
    if head[3] == 3 {
        let mut len = [0u8; 1];
        s.read_exact(&mut len).await?;
        rest = len[0] as usize + 2;
    }
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await?;
    Ok(s)
}

/// Connects to an address through the first proxy that works.
async fn via_proxies(config: &SocksConfig, target: SocketAddr) -> io::Result<Box<dyn Io>> {
    let mut last = None;
    for &proxy in &config.proxies {
        match tokio::time::timeout(
            config.timeout,
            tunnel(proxy, target, config.credentials.as_ref()),
        )
        .await
        {
            Ok(Ok(s)) => return Ok(Box::new(s)),
            Ok(Err(e)) => {
                tracing::warn!(%proxy, %target, error = %e, "SOCKS5 proxy failed; trying the next one");
                last = Some(e);
            }
            Err(_) => {
                let e = err(proxy, target, "timeout");
                tracing::warn!(%proxy, %target, "SOCKS5 proxy timed out; trying the next one");
                last = Some(e);
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

/// Smarthost delivery through SOCKS5: the host name is resolved locally, each address
/// tried in turn through the proxies.
#[derive(Debug, Clone)]
pub struct SocksConnector {
    config: Arc<SocksConfig>,
}

impl SocksConnector {
    pub fn new(config: SocksConfig) -> SocksConnector {
        SocksConnector {
            config: Arc::new(config),
        }
    }

    async fn connect_inner(&self, host: &str, port: u16) -> io::Result<(Box<dyn Io>, SocketAddr)> {
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(self.config.timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("resolving {host}: timeout"),
                    )
                })??
                .collect();
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
