//! The seam where direct delivery opens connections: a [`Dialer`] connects to one
//! resolved address. [`TcpDialer`] connects directly; a SOCKS5 dialer (DNS stays local,
//! so DANE and MTA-STS still apply) plugs in here later.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use crate::stream::Io;

/// The future returned by [`Dialer::dial`].
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send + 'a>>;

/// Opens a byte stream to an address. The caller bounds each dial with its share of the
/// host's time budget, so implementations need no timeout of their own.
pub trait Dialer: Send + Sync {
    /// Connects to `addr`.
    fn dial(&self, addr: SocketAddr) -> DialFuture<'_>;
}

/// Plain TCP connections from the default local address.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: SocketAddr) -> DialFuture<'_> {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            // Pipelined command groups are written at once; do not delay them.
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as Box<dyn Io>)
        })
    }
}
