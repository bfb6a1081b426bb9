//! A scripted fake SMTP server for tests.
//!
//! Each accepted connection runs the next script: a list of steps that either send
//! canned bytes, expect the exact bytes the client must send next, run a TLS handshake or
//! close. A mismatch ends the connection and is reported by [`FakeServer::finish`] with the
//! expected and received bytes. Nothing sleeps: every read has a deadline.
//!
//! [`Step::Sasl`] plays the server side of SMTP AUTH (RFC 4954) with the project's own
//! SASL server mechanisms over an in-memory account store, bound to the TLS 1.3 exporter
//! of the connection; it can also lie in the SCRAM server signature. Everything a client
//! sends is kept per connection ([`FakeServer::transcript`]) and every AUTH outcome is
//! recorded ([`FakeServer::auth_log`]).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use relaygate_transports::{
    sasl::{
        channel_binding::TLS_EXPORTER_LABEL, new_server, CredentialStore, Mechanism, ServerChannel,
        ServerSettings, ServerStep, StoredCredentials,
    },
    stream::ConnectFuture,
    Connector, Io,
};
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
    /// The server reads `AUTH <mech> [ir]` and runs that mechanism to its end (235, 535,
    /// or 501 after the client's "*").
    Sasl(SaslServer),
    /// The server reads (and records) until the client closes the connection.
    ReadToEnd,
}

/// The server side of AUTH for [`Step::Sasl`].
#[derive(Debug, Clone)]
pub struct SaslServer {
    /// Accounts.
    pub store: Arc<HashMap<String, StoredCredentials>>,
    /// Server settings (CRAM-MD5 host name, decoy secret).
    pub settings: Arc<ServerSettings>,
    /// Whether the EHLO listed -PLUS mechanisms (a `y` flag is then a downgrade).
    pub plus_advertised: bool,
    /// Corrupt the SCRAM server signature (`v=`) before sending it.
    pub lie: bool,
}

impl SaslServer {
    /// One account `user` with `password`, every mechanism's credentials.
    pub fn with_account(user: &str, password: &str) -> Self {
        let creds = StoredCredentials::from_password(password, 4096).unwrap();
        let mut store = HashMap::new();
        store.insert(user.to_string(), creds);
        SaslServer {
            store: Arc::new(store),
            settings: Arc::new(ServerSettings::new("fake.test", [7; 32])),
            plus_advertised: false,
            lie: false,
        }
    }
}

/// How one AUTH exchange of a [`Step::Sasl`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// 235; the account.
    Success(String),
    /// 535; the server-side reason.
    Failure(String),
    /// The client sent "*".
    Cancelled,
}

/// One AUTH exchange seen by the fake server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRecord {
    /// Connection number (0-based, in accept order).
    pub conn: usize,
    /// The mechanism the client asked for.
    pub mechanism: Mechanism,
    /// Whether the client sent an initial response on the AUTH line.
    pub initial_response: bool,
    /// How it ended.
    pub outcome: AuthOutcome,
}

/// What the connections of a fake server record.
#[derive(Default)]
struct Records {
    transcripts: Mutex<HashMap<usize, Vec<u8>>>,
    auth: Mutex<Vec<AuthRecord>>,
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
    records: Arc<Records>,
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
        let records = Arc::new(Records::default());
        let recs = Arc::clone(&records);
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
                let recs = Arc::clone(&recs);
                conns.push(tokio::spawn(async move {
                    run_script(n, tcp, script, tls, recs).await
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
            records,
            handle,
        }
    }

    /// Everything the client sent on connection `n` (0-based), after TLS in clear.
    pub fn transcript(&self, n: usize) -> String {
        let t = self.records.transcripts.lock().unwrap();
        String::from_utf8_lossy(t.get(&n).map(Vec::as_slice).unwrap_or_default()).into_owned()
    }

    /// Every AUTH exchange so far, in order.
    pub fn auth_log(&self) -> Vec<AuthRecord> {
        self.records.auth.lock().unwrap().clone()
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

/// The server end of one connection: the stream, unread client bytes, the TLS 1.3
/// exporter once TLS is up, and where to record.
struct Conn {
    n: usize,
    io: Box<dyn Io>,
    pending: Vec<u8>,
    exporter: Option<Vec<u8>>,
    records: Arc<Records>,
}

impl Conn {
    /// Reads more client bytes; `Ok(false)` at end of stream.
    async fn read_more(&mut self) -> Result<bool, String> {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(STEP_DEADLINE, self.io.read(&mut buf)).await {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(k)) => {
                self.pending.extend_from_slice(&buf[..k]);
                self.records
                    .transcripts
                    .lock()
                    .unwrap()
                    .entry(self.n)
                    .or_default()
                    .extend_from_slice(&buf[..k]);
                Ok(true)
            }
            // A client that drops TLS without close_notify has still closed.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Ok(Err(e)) => Err(format!("read: {e}")),
            Err(_) => Err(format!(
                "timeout; have {:?}",
                String::from_utf8_lossy(&self.pending)
            )),
        }
    }

    /// One CRLF-terminated line, without the CRLF.
    async fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if !self.read_more().await? {
                return Err(format!(
                    "connection closed mid-line: {:?}",
                    String::from_utf8_lossy(&self.pending)
                ));
            }
        }
    }

    async fn send(&mut self, s: &str) -> Result<(), String> {
        self.io
            .write_all(s.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Plays [`Step::Sasl`].
    async fn sasl(&mut self, server: &SaslServer) -> Result<(), String> {
        let line = self.read_line().await?;
        let mut words = line.splitn(3, ' ');
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("AUTH")) {
            return Err(format!("expected AUTH, got {line:?}"));
        }
        let name = words.next().unwrap_or_default();
        let mechanism =
            Mechanism::from_wire(name).ok_or_else(|| format!("unknown mechanism {name:?}"))?;
        let initial = match words.next() {
            None => None,
            Some("=") => Some(Vec::new()),
            Some(b64) => Some(
                B64.decode(b64)
                    .map_err(|e| format!("initial response not base64: {e}"))?,
            ),
        };
        let channel = ServerChannel {
            tls_exporter: self.exporter.clone(),
            plus_advertised: server.plus_advertised,
        };
        let store: Arc<dyn CredentialStore> = server.store.clone();
        let mut mech = new_server(mechanism, store, Arc::clone(&server.settings), &channel);
        let mut step = mech.start(initial.as_deref());
        let outcome = loop {
            match step {
                ServerStep::Challenge(mut c) => {
                    if server.lie && c.starts_with(b"v=") {
                        // Change the first base64 character of the signature.
                        c[2] = if c[2] == b'A' { b'B' } else { b'A' };
                    }
                    self.send(&format!("334 {}\r\n", B64.encode(&c))).await?;
                    let answer = self.read_line().await?;
                    if answer == "*" {
                        self.send("501 5.7.0 AUTH cancelled\r\n").await?;
                        break AuthOutcome::Cancelled;
                    }
                    let decoded = B64
                        .decode(answer.trim())
                        .map_err(|e| format!("response not base64: {e}"))?;
                    step = mech.step(&decoded);
                }
                ServerStep::Success(who) => {
                    self.send("235 2.7.0 Authentication successful\r\n").await?;
                    break AuthOutcome::Success(who.username);
                }
                ServerStep::Failure(why) => {
                    self.send("535 5.7.8 Authentication credentials invalid\r\n")
                        .await?;
                    break AuthOutcome::Failure(why.to_string());
                }
            }
        };
        self.records.auth.lock().unwrap().push(AuthRecord {
            conn: self.n,
            mechanism,
            initial_response: initial.is_some(),
            outcome,
        });
        Ok(())
    }
}

async fn run_script(
    n: usize,
    tcp: TcpStream,
    script: Vec<Step>,
    tls: Option<Arc<ServerConfig>>,
    records: Arc<Records>,
) -> Result<(), String> {
    let mut conn = Conn {
        n,
        io: Box::new(tcp),
        pending: Vec::new(),
        exporter: None,
        records,
    };
    for (i, step) in script.into_iter().enumerate() {
        let at = |what: String| format!("connection {n}, step {i}: {what}");
        match step {
            Step::Send(s) => conn.send(&s).await.map_err(at)?,
            Step::Expect(want) => {
                while conn.pending.len() < want.len()
                    && conn.pending[..].starts_with_prefix_of(&want)
                {
                    match conn.read_more().await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            return Err(at(format!(
                                "{e}; expected {:?}",
                                String::from_utf8_lossy(&want)
                            )))
                        }
                    }
                }
                if !conn.pending.starts_with(&want) {
                    return Err(at(format!(
                        "expected {:?}, got {:?}",
                        String::from_utf8_lossy(&want),
                        String::from_utf8_lossy(&conn.pending)
                    )));
                }
                conn.pending.drain(..want.len());
            }
            Step::Tls => {
                if !conn.pending.is_empty() {
                    return Err(at(format!("client sent {:?} before TLS", conn.pending)));
                }
                let config = tls.clone().ok_or_else(|| at("no TLS config".into()))?;
                let io = std::mem::replace(&mut conn.io, Box::new(tokio::io::duplex(1).0));
                let stream = TlsAcceptor::from(config)
                    .accept(io)
                    .await
                    .map_err(|e| at(format!("TLS handshake: {e}")))?;
                let (_, server) = stream.get_ref();
                // RFC 9266: tls-exporter, TLS 1.3 only.
                conn.exporter = (server.protocol_version()
                    == Some(rustls::ProtocolVersion::TLSv1_3))
                .then(|| {
                    server
                        .export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
                        .map(|v| v.to_vec())
                        .ok()
                })
                .flatten();
                conn.io = Box::new(stream);
            }
            Step::Close => return Ok(()),
            Step::Sasl(server) => conn.sasl(&server).await.map_err(at)?,
            Step::ReadToEnd => loop {
                match conn.read_more().await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Err(at(e)),
                }
            },
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
