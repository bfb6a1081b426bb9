#![cfg(feature = "testkit")]
//! The SOCKS5 dialer against a real SOCKS5 server: Debian's `microsocks`, started per
//! test on its own port, with and without RFC 1929 authentication. Outgoing connections
//! of the proxy are bound to 127.0.0.2, so the target can tell they came through it.

use std::net::SocketAddr;
use std::time::Duration;

use relaygate_transports::direct::Dialer;
use relaygate_transports::socks::{SocksConfig, SocksDialer};
use relaygate_transports::testkit::microsocks::{self, Microsocks};
use relaygate_transports::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    microsocks::free_port().unwrap()
}

fn microsocks(auth: Option<(&str, &str)>) -> Microsocks {
    Microsocks::start(auth).unwrap()
}

fn config(proxies: Vec<SocketAddr>, creds: Option<(&str, &str)>) -> SocksConfig {
    SocksConfig {
        proxies: proxies.into_iter().map(Into::into).collect(),
        credentials: creds.map(|(u, p)| (u.to_string(), Secret::new(p))),
        timeout: Duration::from_secs(10),
        resolver: None,
    }
}

/// A target that reports the peer address of its first connection and echoes a line.
async fn target() -> (SocketAddr, tokio::task::JoinHandle<SocketAddr>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (mut s, peer) = l.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
        peer
    });
    (addr, h)
}

async fn roundtrip(dialer: &SocksDialer, addr: SocketAddr) -> std::io::Result<()> {
    let mut io = dialer.dial(addr).await?;
    io.write_all(b"hello").await?;
    let mut buf = [0u8; 5];
    io.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"hello");
    Ok(())
}

#[tokio::test]
async fn connects_through_the_proxy() {
    let proxy = microsocks(None);
    let (addr, seen) = target().await;
    roundtrip(&SocksDialer::new(config(vec![proxy.addr], None)), addr)
        .await
        .unwrap();
    let peer = seen.await.unwrap();
    assert_eq!(
        peer.ip().to_string(),
        "127.0.0.2",
        "the target must see the proxy's egress IP"
    );
}

#[tokio::test]
async fn username_and_password() {
    let proxy = microsocks(Some(("relay", "pa55")));
    let (addr, seen) = target().await;
    roundtrip(
        &SocksDialer::new(config(vec![proxy.addr], Some(("relay", "pa55")))),
        addr,
    )
    .await
    .unwrap();
    assert_eq!(seen.await.unwrap().ip().to_string(), "127.0.0.2");

    let (addr, _seen) = target().await;
    let e = roundtrip(
        &SocksDialer::new(config(vec![proxy.addr], Some(("relay", "wrong")))),
        addr,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("username/password") && e.contains(&proxy.addr.to_string()),
        "{e}"
    );

    let (addr, _seen) = target().await;
    let e = roundtrip(&SocksDialer::new(config(vec![proxy.addr], None)), addr)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("authentication methods"), "{e}");
}

#[tokio::test]
async fn dead_first_proxy_falls_over_to_the_second() {
    let proxy = microsocks(None);
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (addr, seen) = target().await;
    roundtrip(
        &SocksDialer::new(config(vec![dead, proxy.addr], None)),
        addr,
    )
    .await
    .unwrap();
    assert_eq!(seen.await.unwrap().ip().to_string(), "127.0.0.2");
}

#[tokio::test]
async fn refused_target_reports_the_socks_reply() {
    let proxy = microsocks(None);
    let closed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let e = roundtrip(&SocksDialer::new(config(vec![proxy.addr], None)), closed)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("proxy reply") && e.contains(&closed.to_string()),
        "{e}"
    );
}

#[tokio::test]
async fn all_proxies_down_is_an_error_not_a_direct_connection() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let e = roundtrip(&SocksDialer::new(config(vec![dead], None)), addr)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("proxy unreachable"), "{e}");
    // Nothing reached the target directly.
    let accepted = tokio::time::timeout(Duration::from_millis(200), l.accept()).await;
    assert!(accepted.is_err(), "a direct connection was made");
}
