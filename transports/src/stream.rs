//! Byte streams for SMTP sessions and the [`Connector`] that opens them.
//!
//! A session reads and writes a [`Stream`], plain or TLS. Whatever carries the bytes
//! (a TCP socket, later a SOCKS5 tunnel) is a boxed [`Io`], so transports do not care how
//! the connection was made. [`tls_handshake`] turns a plain [`Io`] into a TLS [`Stream`]
//! (implicit TLS and STARTTLS share it).

use std::{
    future::Future,
    io,
    net::IpAddr,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::{pki_types::ServerName, ClientConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{client::TlsStream, TlsConnector};

/// Anything that carries the bytes of a connection.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// A session's connection, before or after TLS.
pub enum Stream {
    /// Plaintext.
    Plain(Box<dyn Io>),
    /// TLS over the plain connection.
    Tls(Box<TlsStream<Box<dyn Io>>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(_) => f.write_str("Stream::Plain"),
            Stream::Tls(_) => f.write_str("Stream::Tls"),
        }
    }
}

impl Stream {
    /// True after a TLS handshake.
    pub fn is_tls(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(_) => true,
        }
    }

    /// The negotiated TLS version ("TLSv1.3", "TLSv1.2"), `None` for plaintext.
    pub fn tls_version(&self) -> Option<String> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => {
                let (_, conn) = tls.get_ref();
                conn.protocol_version().map(|v| match v {
                    rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                    rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                    other => format!("{other:?}"),
                })
            }
        }
    }
}

/// Runs a TLS handshake over `io` (RFC 8314 implicit TLS or after STARTTLS), verifying
/// the certificate as `config` says.
pub async fn tls_handshake(
    io: Box<dyn Io>,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
) -> io::Result<Stream> {
    let tls = TlsConnector::from(config).connect(server_name, io).await?;
    Ok(Stream::Tls(Box::new(tls)))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The future returned by [`Connector::connect`].
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = io::Result<(Box<dyn Io>, SocketAddr)>> + Send + 'a>>;

/// Opens connections to `host:port`. Implementations: [`TcpConnector`]; later a SOCKS5
/// connector whose tunnel is returned as the [`Io`].
pub trait Connector: Send + Sync {
    /// Connects, returning the connection and the remote address it reached.
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> ConnectFuture<'a>;
}

/// Direct TCP connections. Host names resolve through the gateway's resolver (`[dns]`)
/// when one is given (an IP literal is used as is, and a name listed in `/etc/hosts`,
/// such as `localhost`, as listed there), else through the system (`getaddrinfo`).
#[derive(Clone)]
pub struct TcpConnector {
    /// Bound on name resolution, and on each address tried.
    pub connect_timeout: Duration,
    resolver: Option<std::sync::Arc<dyn crate::dns::Resolver>>,
    hosts_file: std::path::PathBuf,
}

impl std::fmt::Debug for TcpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnector")
            .field("connect_timeout", &self.connect_timeout)
            .field("resolver", &self.resolver.is_some())
            .finish()
    }
}

/// `host:port`, `[v6]:port`, `IP:port`, or with `default_port` a bare host or IP: the
/// host (an IP literal without brackets, or a name of letters, digits, `.`, `-`, `_`)
/// and a non-zero port. `None` when it is none of these.
pub fn parse_host_port(text: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let t = text.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return (a.port() != 0).then(|| (a.ip().to_string(), a.port()));
    }
    if t.parse::<IpAddr>().is_ok() {
        return default_port.map(|p| (t.to_string(), p));
    }
    let (host, port) = match t.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (t, default_port?),
    };
    let valid = !host.is_empty()
        && port != 0
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    valid.then(|| (host.to_string(), port))
}

/// The addresses `/etc/hosts`-format `text` lists for `name` (case-insensitive).
pub fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let ip: IpAddr = fields.next()?.parse().ok()?;
            fields
                .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
                .then_some(ip)
        })
        .collect()
}

/// The addresses of `host` (a name, or an IP literal with or without brackets): an IP
/// literal as is; with a `resolver`, a name listed in `hosts_file` as listed there, else
/// its A and AAAA records through the resolver; without one, the system's
/// `getaddrinfo`. Smarthost connections (direct or through a SOCKS proxy) use this.
pub async fn resolve_host(
    resolver: Option<&dyn crate::dns::Resolver>,
    hosts_file: &std::path::Path,
    host: &str,
    port: u16,
) -> io::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let Some(resolver) = resolver else {
        return Ok(tokio::net::lookup_host((host, port)).await?.collect());
    };
    let listed = match tokio::fs::read_to_string(hosts_file).await {
        Ok(text) => hosts_lookup(&text, host),
        Err(_) => Vec::new(),
    };
    if !listed.is_empty() {
        return Ok(listed
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    let (v4, v6) = tokio::join!(resolver.lookup_a(host), resolver.lookup_aaaa(host));
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut errors = Vec::new();
    match v4 {
        Ok(a) => addrs.extend(
            a.records
                .into_iter()
                .map(|ip| SocketAddr::new(ip.into(), port)),
        ),
        Err(e) => errors.push(e.to_string()),
    }
    match v6 {
        Ok(a) => addrs.extend(
            a.records
                .into_iter()
                .map(|ip| SocketAddr::new(ip.into(), port)),
        ),
        Err(e) => errors.push(e.to_string()),
    }
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("resolving {host}: {}", errors.join("; ")),
        ));
    }
    Ok(addrs)
}

impl TcpConnector {
    /// A connector with the given per-address timeout, resolving through the system.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            resolver: None,
            hosts_file: std::path::PathBuf::from("/etc/hosts"),
        }
    }

    /// Resolves host names through `resolver` (after IP literals and the hosts file).
    pub fn with_resolver(mut self, resolver: std::sync::Arc<dyn crate::dns::Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Reads `path` instead of `/etc/hosts` (tests).
    pub fn with_hosts_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.hosts_file = path.into();
        self
    }

    /// The addresses to try for `host`.
    async fn addresses(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        resolve_host(self.resolver.as_deref(), &self.hosts_file, host, port).await
    }

    async fn connect_inner(&self, host: &str, port: u16) -> io::Result<(Box<dyn Io>, SocketAddr)> {
        let timed_out = |what: String| io::Error::new(io::ErrorKind::TimedOut, what);
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(self.connect_timeout, self.addresses(host, port))
                .await
                .map_err(|_| timed_out(format!("resolving {host}: timeout")))??;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no addresses"),
            ));
        }
        let mut last = None;
        // Try each address in turn; a dead one costs at most `connect_timeout`.
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(tcp)) => {
                    // Pipelined command groups are written at once; don't delay them.
                    tcp.set_nodelay(true)?;
                    return Ok((Box::new(tcp), addr));
                }
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "connect failed");
                    last = Some(io::Error::new(e.kind(), format!("{addr}: {e}")));
                }
                Err(_) => {
                    tracing::debug!(%addr, "connect timed out");
                    last = Some(timed_out(format!("{addr}: connect timeout")));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address tried")))
    }
}

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> ConnectFuture<'a> {
        Box::pin(self.connect_inner(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn host_and_port() {
        let hp = |t, d| parse_host_port(t, d);
        assert_eq!(
            hp("smtp.example:587", None),
            Some(("smtp.example".into(), 587))
        );
        assert_eq!(
            hp("smtp.example", Some(25)),
            Some(("smtp.example".into(), 25))
        );
        assert_eq!(hp("smtp.example", None), None);
        assert_eq!(hp("[::1]:2525", None), Some(("::1".into(), 2525)));
        assert_eq!(hp("192.0.2.1", Some(465)), Some(("192.0.2.1".into(), 465)));
        for bad in ["h:0", "a b:25", ":25", "h:99999", "h:587:587"] {
            assert_eq!(hp(bad, Some(25)), None, "{bad}");
        }
    }

    #[test]
    fn hosts_file_entries() {
        let text = "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost # v6\n# 10.0.0.1 commented\n192.0.2.7 relay.lab Relay\n";
        assert_eq!(
            hosts_lookup(text, "localhost"),
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            hosts_lookup(text, "RELAY."),
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(text, "commented").is_empty());
        assert!(hosts_lookup(text, "absent").is_empty());
    }

    #[tokio::test]
    async fn tcp_connector_reaches_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"hi").await.unwrap();
        });
        let connector: Arc<dyn Connector> = Arc::new(TcpConnector::new(Duration::from_secs(5)));
        let (io, addr) = connector.connect("127.0.0.1", port).await.unwrap();
        assert_eq!(addr.port(), port);
        let mut stream = Stream::Plain(io);
        assert!(!stream.is_tls());
        assert_eq!(stream.tls_version(), None);
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn tcp_connector_reports_refusal_with_address() {
        // Bind then drop to get a port that (almost certainly) refuses.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = TcpConnector::new(Duration::from_secs(5))
            .connect("127.0.0.1", port)
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
