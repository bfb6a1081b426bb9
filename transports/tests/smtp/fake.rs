//! A scripted fake SMTP server for tests.
//!
//! Each accepted connection runs the next script: a list of steps that either send
//! canned bytes, expect the exact bytes the client must send next, run a TLS handshake or
//! close. A mismatch ends the connection and is reported by [`FakeServer::finish`] with the
//! expected and received bytes. Nothing sleeps: every read has a deadline.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use relaygate_transports::{stream::ConnectFuture, Connector, Io};
use rustls::ServerConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

const STEP_DEADLINE: Duration = Duration::from_secs(10);

/// One step of a connection script.
#[derive(Debug, Clone)]
pub enum Step {
    /// The server sends these bytes.
    Send(String),
    /// The client must send exactly these bytes next.
    Expect(Vec<u8>),
    /// The server runs a TLS handshake (after a STARTTLS reply, or implicit TLS).
    Tls,
    /// The server closes the connection.
    Close,
}

/// Server sends `s`.
pub fn tx(s: &str) -> Step {
    Step::Send(s.to_string())
}

/// Client must send `s`.
pub fn rx(s: &str) -> Step {
    Step::Expect(s.as_bytes().to_vec())
}

/// A "220" greeting.
pub fn greeting() -> Step {
    tx("220 fake.test ESMTP ready\r\n")
}

/// EHLO from the tests' client name, answered with these extension lines.
pub fn ehlo(extensions: &[&str]) -> Vec<Step> {
    let mut reply = String::new();
    let mut lines = vec!["fake.test hello"];
    lines.extend_from_slice(extensions);
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        reply.push_str(&format!("250{sep}{line}\r\n"));
    }
    vec![rx("EHLO client.test\r\n"), Step::Send(reply)]
}

/// Accepts connections and plays one script per connection, in accept order.
pub struct FakeServer {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    handle: JoinHandle<Vec<Result<(), String>>>,
}

impl FakeServer {
    /// Plain server.
    pub async fn start(scripts: Vec<Vec<Step>>) -> Self {
        Self::start_with_tls(scripts, None).await
    }

    /// Server with a TLS config for `Step::Tls`.
    pub async fn start_with_tls(scripts: Vec<Vec<Step>>, tls: Option<Arc<ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepts);
        let handle = tokio::spawn(async move {
            let mut conns = Vec::new();
            for (n, script) in scripts.into_iter().enumerate() {
                let (tcp, _) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        conns.push(tokio::spawn(async move { Err(format!("accept: {e}")) }));
                        break;
                    }
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                conns.push(tokio::spawn(async move {
                    run_script(n, tcp, script, tls).await
                }));
            }
            let mut results = Vec::new();
            for c in conns {
                results.push(c.await.unwrap_or_else(|e| Err(format!("panic: {e}"))));
            }
            results
        });
        FakeServer {
            addr,
            accepts,
            handle,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Waits for every script to finish; the error names the first failing step.
    pub async fn finish(self) -> Result<(), String> {
        let results = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .map_err(|_| "scripts did not finish (a connection was never made?)".to_string())?
            .map_err(|e| format!("server task: {e}"))?;
        results.into_iter().collect()
    }
}

async fn run_script(
    n: usize,
    tcp: TcpStream,
    script: Vec<Step>,
    tls: Option<Arc<ServerConfig>>,
) -> Result<(), String> {
    let mut io: Box<dyn Io> = Box::new(tcp);
    let mut pending: Vec<u8> = Vec::new();
    for (i, step) in script.into_iter().enumerate() {
        let at = |what: String| format!("connection {n}, step {i}: {what}");
        match step {
            Step::Send(s) => io
                .write_all(s.as_bytes())
                .await
                .map_err(|e| at(format!("write: {e}")))?,
            Step::Expect(want) => {
                let mut buf = [0u8; 4096];
                while pending.len() < want.len() && pending[..].starts_with_prefix_of(&want) {
                    let read = tokio::time::timeout(STEP_DEADLINE, io.read(&mut buf)).await;
                    match read {
                        Ok(Ok(0)) => break,
                        Ok(Ok(k)) => pending.extend_from_slice(&buf[..k]),
                        Ok(Err(e)) => return Err(at(format!("read: {e}"))),
                        Err(_) => {
                            return Err(at(format!(
                                "timeout; expected {:?}, got {:?}",
                                String::from_utf8_lossy(&want),
                                String::from_utf8_lossy(&pending)
                            )))
                        }
                    }
                }
                if !pending.starts_with(&want) {
                    return Err(at(format!(
                        "expected {:?}, got {:?}",
                        String::from_utf8_lossy(&want),
                        String::from_utf8_lossy(&pending)
                    )));
                }
                pending.drain(..want.len());
            }
            Step::Tls => {
                if !pending.is_empty() {
                    return Err(at(format!("client sent {pending:?} before TLS")));
                }
                let config = tls.clone().ok_or_else(|| at("no TLS config".into()))?;
                let stream = TlsAcceptor::from(config)
                    .accept(io)
                    .await
                    .map_err(|e| at(format!("TLS handshake: {e}")))?;
                io = Box::new(stream);
            }
            Step::Close => return Ok(()),
        }
    }
    Ok(())
}

trait PrefixExt {
    fn starts_with_prefix_of(&self, want: &[u8]) -> bool;
}

impl PrefixExt for [u8] {
    /// True while what we have so far could still become `want`.
    fn starts_with_prefix_of(&self, want: &[u8]) -> bool {
        let k = self.len().min(want.len());
        self[..k] == want[..k]
    }
}

/// Connects every host name to one address and counts the connects.
pub struct FixedConnector {
    pub addr: SocketAddr,
    pub connects: AtomicUsize,
}

impl FixedConnector {
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            connects: AtomicUsize::new(0),
        })
    }
}

impl Connector for FixedConnector {
    fn connect<'a>(&'a self, _host: &'a str, _port: u16) -> ConnectFuture<'a> {
        Box::pin(async move {
            self.connects.fetch_add(1, Ordering::SeqCst);
            let tcp = TcpStream::connect(self.addr).await?;
            Ok((Box::new(tcp) as Box<dyn Io>, self.addr))
        })
    }
}
