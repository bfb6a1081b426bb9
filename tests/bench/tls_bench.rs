//! Load tool for the TLS relay matrix (issue 17): Postfix's smtp-source and smtp-sink
//! cannot speak TLS, so this example is both ends.
//!
//! ```text
//! tls_bench sink   --listen 127.0.0.1:PORT --tls none|starttls|implicit --cert-dir DIR
//!                  [--count-file F]
//! tls_bench source --connect 127.0.0.1:PORT --tls none|starttls|implicit -n N -c C
//!                  -l BYTES --mode single|multi [--ca FILE]
//! ```
//!
//! **sink**: accepts any mail and discards it (EHLO advertises PIPELINING, 8BITMIME and,
//! in `starttls` mode, STARTTLS; pipelined commands are answered with one write per
//! group). The first start generates a CA and a server certificate for `localhost` and
//! 127.0.0.1 into `--cert-dir` (`ca.pem`, `cert.pem`, `key.pem`); later starts load them.
//! Every 5 ms, when something changed, it replaces `--count-file` (write + rename) with
//! one line: `DELIVERED CONNECTIONS TLS_HANDSHAKES TLS_RESUMED`.
//!
//! **source**: N messages of a BYTES body over C concurrent sessions, without pipelining
//! (one command, one reply, like smtp-source). `single`: one message per connection;
//! `multi`: each session sends messages over one connection until all N are claimed.
//! The server certificate is verified against `--ca`; all connections share one
//! `ClientConfig`, so TLS sessions resume. Prints one JSON line with the counts, the rate
//! and how many handshakes were resumptions.
//!
//! Driven by `tests/bench/tls.sh`; build with
//! `cargo build --release --example tls_bench`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Parser)]
#[command(about = "SMTP load source and sink with TLS, for the TLS relay benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Tls {
    None,
    Starttls,
    Implicit,
}

impl Tls {
    fn name(self) -> &'static str {
        match self {
            Tls::None => "none",
            Tls::Starttls => "starttls",
            Tls::Implicit => "implicit",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Single,
    Multi,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept and discard mail, counting it.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, value_enum, default_value = "none")]
        tls: Tls,
        /// Where ca.pem, cert.pem and key.pem are (generated when missing).
        #[arg(long)]
        cert_dir: PathBuf,
        /// Replaced with "DELIVERED CONNECTIONS TLS_HANDSHAKES TLS_RESUMED" as it changes.
        #[arg(long)]
        count_file: Option<PathBuf>,
    },
    /// Send N messages and print one JSON line.
    Source {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, value_enum, default_value = "none")]
        tls: Tls,
        #[arg(short = 'n', default_value_t = 10_000)]
        n: u64,
        #[arg(short = 'c', default_value_t = 10)]
        c: u64,
        /// Body bytes per message (after the headers).
        #[arg(short = 'l', default_value_t = 1024)]
        l: usize,
        #[arg(long, value_enum, default_value = "single")]
        mode: Mode,
        /// The CA (PEM) the server certificate must chain to.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The name the server certificate is checked against.
        #[arg(long, default_value = "localhost")]
        server_name: String,
        #[arg(long, default_value = "sender@bench.local")]
        from: String,
        #[arg(long, default_value = "rcpt@relay.test")]
        to: String,
        /// Gives up (and fails) after this many seconds.
        #[arg(long, default_value_t = 600.0)]
        timeout: f64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match cli.cmd {
        Cmd::Sink {
            listen,
            tls,
            cert_dir,
            count_file,
        } => rt.block_on(sink(listen, tls, &cert_dir, count_file)),
        Cmd::Source {
            connect,
            tls,
            n,
            c,
            l,
            mode,
            ca,
            server_name,
            from,
            to,
            timeout,
        } => {
            let opts = SourceOpts {
                connect,
                tls,
                n,
                c: c.max(1),
                l,
                mode,
                ca,
                server_name,
                from,
                to,
                timeout: Duration::from_secs_f64(timeout),
            };
            let ok = rt.block_on(source(opts))?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ------------------------------------------------------------------ certificates

/// Loads ca.pem/cert.pem/key.pem from `dir`, generating them first when one is missing.
fn server_tls(dir: &Path) -> Result<Arc<ServerConfig>> {
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    if !(ca.exists() && cert.exists() && key.exists()) {
        generate_certs(dir)?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| cert.display().to_string())?
        .collect::<Result<_, _>>()
        .with_context(|| cert.display().to_string())?;
    let key = PrivateKeyDer::from_pem_file(&key).with_context(|| key.display().to_string())?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
fn generate_certs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tls_bench CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).context("CA cert")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().context("server key")?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).context("server cert")?;

    // Written under temporary names and renamed, the key last: a reader that finds all
    // three finds them complete.
    for (name, pem) in [
        ("ca.pem", ca_cert.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, pem).with_context(|| tmp.display().to_string())?;
        std::fs::rename(&tmp, dir.join(name)).with_context(|| name.to_string())?;
    }
    Ok(())
}

fn client_tls(ca: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let Some(ca) = ca else {
        bail!("--ca is needed with TLS");
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| ca.display().to_string())? {
        roots.add(cert.with_context(|| ca.display().to_string())?)?;
    }
    // The default resumption: an in-memory cache shared by every connection made with
    // this config (TLS 1.3 tickets, TLS 1.2 session ids).
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

// ------------------------------------------------------------------ sink

#[derive(Default)]
struct SinkStats {
    delivered: AtomicU64,
    connections: AtomicU64,
    handshakes: AtomicU64,
    resumed: AtomicU64,
    changed: AtomicBool,
}

impl SinkStats {
    fn line(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.delivered.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
            self.handshakes.load(Ordering::Relaxed),
            self.resumed.load(Ordering::Relaxed)
        )
    }
}

async fn sink(
    listen: SocketAddr,
    tls: Tls,
    cert_dir: &Path,
    count_file: Option<PathBuf>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(server_tls(cert_dir)?);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let stats = Arc::new(SinkStats::default());
    if let Some(path) = count_file {
        let stats = stats.clone();
        write_count(&path, &stats.line())?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tick.tick().await;
                if stats.changed.swap(false, Ordering::Relaxed) {
                    if let Err(e) = write_count(&path, &stats.line()) {
                        eprintln!("tls_bench sink: {e:#}");
                    }
                }
            }
        });
    }
    eprintln!(
        "tls_bench sink: listening on {} (tls {})",
        listener.local_addr()?,
        tls.name()
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let stats = stats.clone();
        let acceptor = acceptor.clone();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.changed.store(true, Ordering::Relaxed);
        tokio::spawn(async move {
            // A client that goes away mid-session is not worth a message per connection.
            let _ = sink_session(tcp, tls, acceptor, &stats).await;
        });
    }
}

fn write_count(path: &Path, line: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, line).with_context(|| path.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    Ok(())
}

async fn sink_session(
    tcp: TcpStream,
    tls: Tls,
    acceptor: TlsAcceptor,
    stats: &SinkStats,
) -> Result<()> {
    tcp.set_nodelay(true)?;
    let mut tcp = tcp;
    match tls {
        Tls::Implicit => {
            let mut s = acceptor.accept(tcp).await?;
            count_handshake(s.get_ref().1.handshake_kind(), stats);
            s.write_all(b"220 localhost ESMTP tls_bench\r\n").await?;
            s.flush().await?;
            serve(&mut s, false, stats).await?;
        }
        Tls::None | Tls::Starttls => {
            tcp.write_all(b"220 localhost ESMTP tls_bench\r\n").await?;
            if serve(&mut tcp, tls == Tls::Starttls, stats).await? == End::StartTls {
                let mut s = acceptor.accept(tcp).await?;
                count_handshake(s.get_ref().1.handshake_kind(), stats);
                serve(&mut s, false, stats).await?;
            }
        }
    }
    Ok(())
}

fn count_handshake(kind: Option<HandshakeKind>, stats: &SinkStats) {
    stats.handshakes.fetch_add(1, Ordering::Relaxed);
    if kind == Some(HandshakeKind::Resumed) {
        stats.resumed.fetch_add(1, Ordering::Relaxed);
    }
    stats.changed.store(true, Ordering::Relaxed);
}

#[derive(PartialEq, Eq)]
enum End {
    Closed,
    StartTls,
}

/// Where the end-of-data scanner is: `\r\n.\r\n` ends the body (the 354 puts the first
/// byte at a line start).
#[derive(Clone, Copy)]
enum Data {
    LineStart,
    Mid,
    Cr,
    Dot,
    DotCr,
}

/// Feeds `bytes` to the scanner; the offset just past the final dot line when found.
fn scan_data(state: &mut Data, bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        if let Data::Mid = state {
            match bytes[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                Some(p) => i += p,
                None => return None,
            }
        }
        let b = bytes[i];
        i += 1;
        *state = match (*state, b) {
            (Data::LineStart, b'.') => Data::Dot,
            (Data::Dot, b'\r') => Data::DotCr,
            (Data::DotCr, b'\n') | (Data::Dot, b'\n') => {
                *state = Data::LineStart;
                return Some(i);
            }
            (_, b'\r') => Data::Cr,
            (_, b'\n') => Data::LineStart,
            _ => Data::Mid,
        };
    }
    None
}

const EHLO_PLAIN: &[u8] = b"250-localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 1073741824\r\n";
const EHLO_STARTTLS: &[u8] = b"250-localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 1073741824\r\n250 STARTTLS\r\n";

/// One SMTP conversation on `io` (after the greeting): every complete command in the
/// buffer is answered, and the replies go out in one write before the next read.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    offer_starttls: bool,
    stats: &SinkStats,
) -> Result<End> {
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    let mut start = 0usize;
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut data: Option<Data> = None;
    loop {
        loop {
            if let Some(state) = data.as_mut() {
                match scan_data(state, &buf[start..]) {
                    Some(end) => {
                        start += end;
                        data = None;
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                        stats.changed.store(true, Ordering::Relaxed);
                        out.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
                    }
                    None => {
                        start = buf.len();
                        break;
                    }
                }
                continue;
            }
            let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = &buf[start..start + nl];
            start += nl + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let verb: Vec<u8> = line
                .iter()
                .take_while(|b| **b != b' ')
                .map(|b| b.to_ascii_uppercase())
                .collect();
            match verb.as_slice() {
                b"EHLO" => out.extend_from_slice(if offer_starttls {
                    EHLO_STARTTLS
                } else {
                    EHLO_PLAIN
                }),
                b"HELO" => out.extend_from_slice(b"250 localhost\r\n"),
                b"MAIL" => out.extend_from_slice(b"250 2.1.0 Ok\r\n"),
                b"RCPT" => out.extend_from_slice(b"250 2.1.5 Ok\r\n"),
                b"DATA" => {
                    out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                    data = Some(Data::LineStart);
                }
                b"RSET" => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
                b"NOOP" => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
                b"QUIT" => {
                    out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                    io.write_all(&out).await?;
                    io.flush().await?;
                    let _ = io.shutdown().await;
                    return Ok(End::Closed);
                }
                b"STARTTLS" if offer_starttls => {
                    out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
                    io.write_all(&out).await?;
                    io.flush().await?;
                    if start != buf.len() {
                        bail!("client pipelined after STARTTLS");
                    }
                    return Ok(End::StartTls);
                }
                _ => out.extend_from_slice(b"502 5.5.2 Command not recognized\r\n"),
            }
        }
        if start == buf.len() {
            buf.clear();
            start = 0;
        } else if start > 16 * 1024 {
            buf.drain(..start);
            start = 0;
        }
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
            out.clear();
        }
        if data.is_none() && buf.len() - start > 64 * 1024 {
            bail!("command line too long");
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(32 * 1024);
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(End::Closed);
        }
    }
}

// ------------------------------------------------------------------ source

struct SourceOpts {
    connect: SocketAddr,
    tls: Tls,
    n: u64,
    c: u64,
    l: usize,
    mode: Mode,
    ca: Option<PathBuf>,
    server_name: String,
    from: String,
    to: String,
    timeout: Duration,
}

/// What every session shares.
struct Shared {
    opts: SourceOpts,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Header (without Message-ID) and body with the final dot, built once.
    head: Vec<u8>,
    body: Vec<u8>,
    next: AtomicU64,
    accepted: AtomicU64,
    failed: AtomicU64,
    handshakes: AtomicU64,
    resumed: AtomicU64,
    errors_shown: AtomicU64,
}

impl Shared {
    /// Claims the next message; `None` once all N are claimed.
    fn claim(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.opts.n).then_some(i)
    }

    fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if self.errors_shown.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("tls_bench source: {e:#}");
        }
    }
}

/// Body lines of 'x', `l` bytes in all (CRLFs included), then the final dot.
fn make_body(l: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(l + 8);
    while body.len() < l {
        let left = l - body.len();
        if left <= 2 {
            body.extend_from_slice(b"\r\n");
            break;
        }
        let line = (left - 2).min(76);
        body.extend(std::iter::repeat_n(b'x', line));
        body.extend_from_slice(b"\r\n");
    }
    if !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    body
}

async fn source(opts: SourceOpts) -> Result<bool> {
    let tls = match opts.tls {
        Tls::None => None,
        Tls::Starttls | Tls::Implicit => {
            let config = client_tls(opts.ca.as_deref())?;
            let name = ServerName::try_from(opts.server_name.clone())
                .with_context(|| format!("server name {}", opts.server_name))?;
            Some((TlsConnector::from(config), name))
        }
    };
    let head = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: tls_bench\r\n",
        opts.from, opts.to
    )
    .into_bytes();
    let body = make_body(opts.l);
    let c = opts.c;
    let timeout = opts.timeout;
    let shared = Arc::new(Shared {
        opts,
        tls,
        head,
        body,
        next: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        handshakes: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        errors_shown: AtomicU64::new(0),
    });
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let shared = shared.clone();
        tasks.spawn(async move { worker(&shared).await });
    }
    let timed_out = tokio::time::timeout(timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err();
    let elapsed = t0.elapsed().as_secs_f64();
    let o = &shared.opts;
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let failed = shared.failed.load(Ordering::Relaxed);
    let line = serde_json::json!({
        "n": o.n,
        "c": o.c,
        "l": o.l,
        "mode": match o.mode { Mode::Single => "single", Mode::Multi => "multi" },
        "tls": o.tls.name(),
        "accepted": accepted,
        "failed": failed,
        "timed_out": timed_out,
        "elapsed_s": (elapsed * 10_000.0).round() / 10_000.0,
        "msg_per_s": ((accepted as f64 / elapsed) * 10.0).round() / 10.0,
        "tls_handshakes": shared.handshakes.load(Ordering::Relaxed),
        "resumed": shared.resumed.load(Ordering::Relaxed),
    });
    println!("{line}");
    Ok(!timed_out && accepted == o.n)
}

async fn worker(shared: &Shared) {
    match shared.opts.mode {
        Mode::Single => {
            while let Some(i) = shared.claim() {
                if let Err(e) = session(shared, Some(i)).await {
                    shared.fail(&e);
                }
            }
        }
        Mode::Multi => {
            // One connection for as many messages as this session can claim; after an
            // error (the message in flight is counted failed) a new one.
            while shared.next.load(Ordering::Relaxed) < shared.opts.n {
                if let Err(e) = session(shared, None).await {
                    shared.fail(&e);
                }
            }
        }
    }
}

/// One connection: `Some(i)` sends message i, `None` claims messages until none is left.
async fn session(shared: &Shared, one: Option<u64>) -> Result<()> {
    let tcp = TcpStream::connect(shared.opts.connect)
        .await
        .with_context(|| format!("connect {}", shared.opts.connect))?;
    tcp.set_nodelay(true)?;
    match (shared.opts.tls, &shared.tls) {
        (Tls::None, _) | (_, None) => {
            let mut c = Client::new(tcp);
            c.expect(220, "greeting").await?;
            c.cmd(b"EHLO bench.local\r\n", 250).await?;
            transactions(shared, &mut c, one).await
        }
        (Tls::Starttls, Some((connector, name))) => {
            let mut c = Client::new(tcp);
            c.expect(220, "greeting").await?;
            c.cmd(b"EHLO bench.local\r\n", 250).await?;
            c.cmd(b"STARTTLS\r\n", 220).await?;
            if c.start != c.buf.len() {
                bail!("data after the STARTTLS reply");
            }
            let tls = connector
                .connect(name.clone(), c.io)
                .await
                .context("TLS handshake")?;
            count_client_handshake(shared, tls.get_ref().1.handshake_kind());
            let mut c = Client::new(tls);
            c.cmd(b"EHLO bench.local\r\n", 250).await?;
            transactions(shared, &mut c, one).await
        }
        (Tls::Implicit, Some((connector, name))) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .context("TLS handshake")?;
            count_client_handshake(shared, tls.get_ref().1.handshake_kind());
            let mut c = Client::new(tls);
            c.expect(220, "greeting").await?;
            c.cmd(b"EHLO bench.local\r\n", 250).await?;
            transactions(shared, &mut c, one).await
        }
    }
}

fn count_client_handshake(shared: &Shared, kind: Option<HandshakeKind>) {
    shared.handshakes.fetch_add(1, Ordering::Relaxed);
    if kind == Some(HandshakeKind::Resumed) {
        shared.resumed.fetch_add(1, Ordering::Relaxed);
    }
}

async fn transactions<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    c: &mut Client<S>,
    one: Option<u64>,
) -> Result<()> {
    let mail = format!("MAIL FROM:<{}>\r\n", shared.opts.from).into_bytes();
    let rcpt = format!("RCPT TO:<{}>\r\n", shared.opts.to).into_bytes();
    let mut msg = Vec::with_capacity(shared.head.len() + shared.body.len() + 64);
    let mut next = one;
    if next.is_none() {
        next = shared.claim();
    }
    while let Some(i) = next {
        c.cmd(&mail, 250).await?;
        c.cmd(&rcpt, 250).await?;
        c.cmd(b"DATA\r\n", 354).await?;
        msg.clear();
        msg.extend_from_slice(&shared.head);
        msg.extend_from_slice(
            format!(
                "Message-ID: <{i}.{}@bench.local>\r\n\r\n",
                std::process::id()
            )
            .as_bytes(),
        );
        msg.extend_from_slice(&shared.body);
        c.cmd(&msg, 250).await?;
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        next = if one.is_some() { None } else { shared.claim() };
    }
    c.cmd(b"QUIT\r\n", 221).await?;
    Ok(())
}

/// The client side of a conversation: one command, then its reply (no pipelining).
struct Client<S> {
    io: S,
    buf: Vec<u8>,
    start: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(io: S) -> Self {
        Client {
            io,
            buf: Vec::with_capacity(4096),
            start: 0,
        }
    }

    async fn cmd(&mut self, line: &[u8], want: u16) -> Result<()> {
        self.io.write_all(line).await?;
        self.io.flush().await?;
        let what = String::from_utf8_lossy(&line[..line.len().min(20)])
            .trim_end()
            .to_string();
        self.expect(want, &what).await
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    async fn expect(&mut self, want: u16, what: &str) -> Result<()> {
        loop {
            while let Some(nl) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.start..self.start + nl + 1];
                self.start += nl + 1;
                if line.len() >= 4 && line[3] == b'-' {
                    continue;
                }
                let code = std::str::from_utf8(&line[..line.len().min(3)])
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok());
                if code != Some(want) {
                    bail!(
                        "{what}: expected {want}, got {:?}",
                        String::from_utf8_lossy(line).trim_end()
                    );
                }
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(());
            }
            if self.buf.len() - self.start > 64 * 1024 {
                bail!("{what}: reply too long");
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                bail!("{what}: connection closed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_data() {
        let mut s = Data::LineStart;
        assert_eq!(scan_data(&mut s, b".\r\n"), Some(3));
        let mut s = Data::LineStart;
        assert_eq!(scan_data(&mut s, b"ab\r\n..x\r\n.\r"), None);
        assert_eq!(scan_data(&mut s, b"\nMAIL"), Some(1));
    }

    #[test]
    fn body_size() {
        for l in [0, 1, 2, 3, 77, 78, 79, 1024] {
            let b = make_body(l);
            assert!(b.ends_with(b"\r\n.\r\n") || (l == 0 && b == b"\r\n.\r\n"));
            assert!(b.len() - 3 >= l && b.len() - 3 <= l + 2);
        }
    }
}
