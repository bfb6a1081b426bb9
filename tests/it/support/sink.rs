//! A scriptable in-process SMTP sink: the peer the gateway delivers to.
//!
//! It is a deliberately small, line-based server of its own (it shares no code with
//! the gateway), strict where it matters for the tests: only `CRLF . CRLF` ends DATA,
//! replies are written in order and flushed only when no more input is buffered
//! (so it handles PIPELINING), and STARTTLS (when the sink has a certificate) resets
//! the session as RFC 3207 requires.
//!
//! Replies are scripted per recipient by the tag after the last `+` of the local part:
//!
//! | recipient          | behaviour |
//! |--------------------|-----------|
//! | `a+550@d`          | `550 5.1.1 magic reject` at RCPT (any 4xx/5xx code works) |
//! | `a+451@d`          | `451 4.3.0 magic tempfail` at RCPT, every time |
//! | `a+451x2@d`        | 451 the first 2 times this address is seen at RCPT (counted across sessions), then 250 |
//! | `a+data550@d`      | RCPT accepted; the end of DATA gets `550 5.6.0 magic data reject` (`data451x2` also works) |
//!
//! [`Mode`] is a global override that can be changed at run time. Every transaction
//! accepted with 250 at the end of DATA is recorded as a [`Received`].
//!
//! With [`Sink::set_bearer_auth`] the sink requires an XOAUTH2 or OAUTHBEARER login
//! inside TLS (see `sink_auth`); every AUTH is recorded as a [`Login`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::pki::Pki;
pub use super::sink_auth::{BearerAuth, Login};
use super::Io;

/// The largest DATA the sink accepts (it answers 552 above this).
pub const MAX_DATA: usize = 64 * 1024 * 1024;
/// An idle session is dropped after this long without input.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// One transaction the sink accepted (250 at the end of DATA).
#[derive(Clone, Debug)]
pub struct Received {
    /// Connection number (1-based, in accept order).
    pub session: u64,
    pub peer: SocketAddr,
    /// The EHLO/HELO argument of the current session (after STARTTLS: the new one).
    pub ehlo: String,
    /// Whether the transaction ran inside TLS.
    pub tls: bool,
    /// The reverse path without angle brackets and parameters (`""` for `<>`).
    pub mail_from: String,
    /// The MAIL parameters as sent (e.g. `BODY=8BITMIME SIZE=123`), or `""`.
    pub mail_params: String,
    /// The accepted recipients, without angle brackets, in RCPT order.
    pub rcpts: Vec<String>,
    /// The content: un-dot-stuffed, exactly as received (line ends included),
    /// without the final `.` line.
    pub data: Vec<u8>,
}

impl Received {
    /// A DSN (or any message) with the null reverse path.
    pub fn is_bounce(&self) -> bool {
        self.mail_from.is_empty()
    }

    /// The data as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The unfolded value of the first header `name` of the data.
    pub fn header(&self, name: &str) -> Option<String> {
        super::header_value(&self.data, name)
    }

    /// Whether `addr` is one of the recipients (case-insensitive).
    pub fn has_rcpt(&self, addr: &str) -> bool {
        self.rcpts.iter().any(|r| r.eq_ignore_ascii_case(addr))
    }
}

/// A global override of the sink's behaviour.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    /// Scripted by the recipients' magic local parts.
    #[default]
    Normal,
    /// Every MAIL, RCPT and DATA gets this reply line (e.g. `"451 4.3.0 busy"`);
    /// a `421` reply also closes the connection.
    RejectAll(String),
    /// Accept TCP connections and close them at once, without a greeting.
    CloseConnections,
    /// Greet with this reply (e.g. `"554 5.3.2 no service"`) and close.
    Greeting(String),
    /// Announce STARTTLS (even without a certificate), answer it with 220, then answer
    /// the client's TLS hello with bytes that are not TLS and close: a broken TLS server.
    BrokenTls,
    /// MAIL and RCPT accepted; the end of DATA gets this reply line (e.g. Amazon SES's
    /// `"454 Throttling failure: Maximum sending rate exceeded"`).
    DataReply(String),
    /// Accept at most this many RCPTs per transaction; further ones get
    /// `452 4.5.3 too many recipients` (RFC 5321 §4.5.3.1.10).
    RcptsPerTransaction(usize),
}

#[derive(Default)]
struct State {
    messages: Vec<Received>,
    connections: u64,
    rcpt_attempts: HashMap<String, u64>,
    data_attempts: HashMap<String, u64>,
    mode: Mode,
    /// Announce REQUIRETLS (RFC 8689) in the EHLO reply inside TLS.
    requiretls: bool,
    /// Do not announce SMTPUTF8 (RFC 6531), and refuse the parameter.
    no_smtputf8: bool,
    /// Require a bearer-token login (offered inside TLS).
    bearer: Option<BearerAuth>,
    /// Every AUTH exchange.
    logins: Vec<Login>,
    /// Close the connection after each accepted message (so the next one logs in again).
    one_message_per_connection: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
    tls: Option<TlsAcceptor>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running sink; dropping it stops the listener and every session.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// A plain sink (no STARTTLS) on 127.0.0.1, on a free port.
    pub async fn start() -> Result<Sink> {
        Self::spawn(None).await
    }

    /// A sink that offers STARTTLS with the server certificate of `pki`.
    pub async fn start_tls(pki: &Pki) -> Result<Sink> {
        Self::spawn(Some(TlsAcceptor::from(pki.server_config()?))).await
    }

    /// A plain sink on `addr` (e.g. `[::1]:PORT` for an IPv6 twin of another sink).
    pub async fn start_on(addr: SocketAddr) -> Result<Sink> {
        Self::spawn_on(addr, None).await
    }

    async fn spawn(tls: Option<TlsAcceptor>) -> Result<Sink> {
        Self::spawn_on(SocketAddr::from(([127, 0, 0, 1], 0)), tls).await
    }

    async fn spawn_on(addr: SocketAddr, tls: Option<TlsAcceptor>) -> Result<Sink> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding a sink on {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            tls,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Sink { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes the global behaviour; applies to every command from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock().mode = mode;
    }

    /// Announce REQUIRETLS in the EHLO reply of TLS sessions (or stop announcing it).
    /// Announce SMTPUTF8 (the default) or not.
    pub fn set_smtputf8(&self, on: bool) {
        self.shared.lock().no_smtputf8 = !on;
    }

    pub fn set_requiretls(&self, on: bool) {
        self.shared.lock().requiretls = on;
    }

    /// Requires XOAUTH2/OAUTHBEARER logins as `user` with one of `accepted` tokens (and
    /// names `scope` in the error challenge for any other token).
    pub fn set_bearer_auth(&self, user: &str, accepted: &[&str], scope: &str) {
        self.shared.lock().bearer = Some(BearerAuth {
            user: user.to_string(),
            accepted: accepted.iter().map(|t| t.to_string()).collect(),
            scope: scope.to_string(),
        });
    }

    /// Changes the tokens that log in (keeps the user and scope).
    pub fn accept_tokens(&self, accepted: &[&str]) {
        if let Some(b) = self.shared.lock().bearer.as_mut() {
            b.accepted = accepted.iter().map(|t| t.to_string()).collect();
        }
    }

    /// Every AUTH exchange so far.
    pub fn logins(&self) -> Vec<Login> {
        self.shared.lock().logins.clone()
    }

    /// Closes each connection after its first accepted message.
    pub fn set_one_message_per_connection(&self, on: bool) {
        self.shared.lock().one_message_per_connection = on;
    }

    /// Every accepted transaction so far, in acceptance order.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.lock().messages.clone()
    }

    /// How many RCPT commands named `addr` (case-insensitive), accepted or not.
    pub fn rcpt_attempts(&self, addr: &str) -> u64 {
        let key = addr.to_ascii_lowercase();
        self.shared
            .lock()
            .rcpt_attempts
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// How many TCP connections the sink accepted.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// Waits until `pred` holds for the accepted transactions, and returns them;
    /// an error (with a summary of what arrived) when `deadline` passes first.
    pub async fn wait_for(
        &self,
        deadline: Instant,
        mut pred: impl FnMut(&[Received]) -> bool,
    ) -> Result<Vec<Received>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if pred(&state.messages) {
                    return Ok(state.messages.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("sink: timed out waiting; {}", self.summary());
            }
        }
    }

    /// A short human description of the sink's state, for error messages.
    pub fn summary(&self) -> String {
        let state = self.shared.lock();
        let mut s = format!(
            "{} connection(s), {} message(s)",
            state.connections,
            state.messages.len()
        );
        for m in state.messages.iter().take(20) {
            s.push_str(&format!(
                "\n  session {} from <{}> to {:?} ({} bytes)",
                m.session,
                m.mail_from,
                m.rcpts,
                m.data.len()
            ));
        }
        if state.messages.len() > 20 {
            s.push_str("\n  ...");
        }
        let mut attempts: Vec<_> = state.rcpt_attempts.iter().collect();
        attempts.sort();
        s.push_str(&format!("\n  RCPT attempts: {attempts:?}"));
        s
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Sessions live in the set, so aborting this task ends them all.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let id = {
                    let mut state = shared.lock();
                    state.connections += 1;
                    state.connections
                };
                shared.changed.notify_waiters();
                sessions.spawn(session(shared.clone(), stream, peer, id));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// What a magic local part asks for.
#[derive(Debug, PartialEq)]
struct Magic {
    /// At the end of DATA instead of at RCPT.
    at_data: bool,
    code: u16,
    /// Only for the first N times the address is seen.
    first: Option<u64>,
}

fn magic(addr: &str) -> Option<Magic> {
    let local = addr.rsplit_once('@').map_or(addr, |(l, _)| l);
    let (_, tag) = local.rsplit_once('+')?;
    let tag = tag.to_ascii_lowercase();
    let (at_data, rest) = match tag.strip_prefix("data") {
        Some(rest) => (true, rest),
        None => (false, tag.as_str()),
    };
    let (code, first) = match rest.split_once('x') {
        Some((code, n)) => (code, Some(n.parse().ok()?)),
        None => (rest, None),
    };
    if code.len() != 3 {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    (400..600).contains(&code).then_some(Magic {
        at_data,
        code,
        first,
    })
}

fn magic_reply(m: &Magic) -> String {
    match (m.at_data, m.code >= 500) {
        (false, true) => format!("{} 5.1.1 magic reject", m.code),
        (false, false) => format!("{} 4.3.0 magic tempfail", m.code),
        (true, true) => format!("{} 5.6.0 magic data reject", m.code),
        (true, false) => format!("{} 4.3.0 magic data tempfail", m.code),
    }
}

/// The address inside `<...>` (or up to the first space) and the parameters after it.
fn parse_path(arg: &str) -> (String, String) {
    let arg = arg.trim_start();
    if let Some(rest) = arg.strip_prefix('<') {
        if let Some((addr, params)) = rest.split_once('>') {
            return (addr.to_string(), params.trim().to_string());
        }
    }
    match arg.split_once(' ') {
        Some((addr, params)) => (addr.to_string(), params.trim().to_string()),
        None => (arg.to_string(), String::new()),
    }
}

/// Strips a case-insensitive `prefix` (e.g. `"FROM:"`) from `arg`.
fn strip_prefix_ci<'a>(arg: &'a str, prefix: &str) -> Option<&'a str> {
    let head = arg.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &arg[prefix.len()..])
}

struct Transaction {
    mail_from: String,
    mail_params: String,
    rcpts: Vec<String>,
}

type Conn = BufReader<Box<dyn Io>>;

async fn read_line(conn: &mut Conn, buf: &mut Vec<u8>) -> Result<bool> {
    buf.clear();
    let n = tokio::time::timeout(IDLE_TIMEOUT, conn.read_until(b'\n', buf))
        .await
        .context("idle timeout")??;
    Ok(n > 0)
}

async fn send(out: &mut (impl AsyncWrite + Unpin), text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

async fn session(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, id: u64) {
    // Errors (the peer vanished, bad TLS) just end the session.
    let _ = run_session(shared, stream, peer, id).await;
}

async fn run_session(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u64,
) -> Result<()> {
    let mode = shared.lock().mode.clone();
    match mode {
        Mode::CloseConnections => return Ok(()),
        Mode::Greeting(reply) => return send(&mut stream, &format!("{reply}\r\n")).await,
        Mode::Normal
        | Mode::RejectAll(_)
        | Mode::DataReply(_)
        | Mode::BrokenTls
        | Mode::RcptsPerTransaction(_) => {}
    }
    send(&mut stream, "220 sink.test ESMTP relaygate test sink\r\n").await?;
    let mut conn: Conn = BufReader::new(Box::new(stream));
    let mut out = String::new();
    let mut line = Vec::new();
    let mut tls = false;
    let mut ehlo: Option<String> = None;
    let mut tx: Option<Transaction> = None;
    let mut authenticated = false;

    loop {
        // Flush pending replies before we would block for input (PIPELINING).
        if !out.is_empty() && !conn.buffer().contains(&b'\n') {
            send(conn.get_mut(), &out).await?;
            out.clear();
        }
        if !read_line(&mut conn, &mut line).await? {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let mode = shared.lock().mode.clone();
        let reject = match &mode {
            Mode::RejectAll(reply) => Some(reply.clone()),
            _ => None,
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                ehlo = Some(arg.trim().to_string());
                tx = None;
                let mut caps = vec![
                    format!("sink.test greets {}", arg.trim()),
                    "PIPELINING".into(),
                    format!("SIZE {MAX_DATA}"),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    "DSN".into(),
                ];
                if (shared.tls.is_some() && !tls) || matches!(mode, Mode::BrokenTls) {
                    caps.push("STARTTLS".into());
                }
                if tls && shared.lock().requiretls {
                    caps.push("REQUIRETLS".into());
                }
                if shared.lock().no_smtputf8 {
                    caps.retain(|c| c != "SMTPUTF8");
                }
                if tls && shared.lock().bearer.is_some() {
                    caps.push("AUTH OAUTHBEARER XOAUTH2".into());
                }
                let last = caps.len() - 1;
                for (i, cap) in caps.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    out.push_str(&format!("250{sep}{cap}\r\n"));
                }
            }
            "HELO" => {
                ehlo = Some(arg.trim().to_string());
                tx = None;
                out.push_str("250 sink.test\r\n");
            }
            "STARTTLS" if matches!(mode, Mode::BrokenTls) => {
                out.push_str("220 2.0.0 ready to start TLS\r\n");
                send(conn.get_mut(), &out).await?;
                // Wait for the client hello, answer with garbage, hang up.
                conn.fill_buf().await?;
                send(conn.get_mut(), "this is not a TLS server hello\r\n").await?;
                return Ok(());
            }
            "STARTTLS" => {
                let Some(acceptor) = shared.tls.clone().filter(|_| !tls) else {
                    out.push_str("502 5.5.1 STARTTLS not available\r\n");
                    continue;
                };
                out.push_str("220 2.0.0 ready to start TLS\r\n");
                send(conn.get_mut(), &out).await?;
                out.clear();
                if !conn.buffer().is_empty() {
                    // Plaintext pipelined after STARTTLS (RFC 3207 §4.2 / CVE-2011-0411).
                    return Ok(());
                }
                let plain = conn.into_inner();
                let secured = acceptor.accept(plain).await?;
                conn = BufReader::new(Box::new(secured));
                // RFC 3207 §4.2: discard all knowledge from before TLS.
                tls = true;
                ehlo = None;
                tx = None;
            }
            "AUTH" => {
                let bearer = shared.lock().bearer.clone();
                let Some(bearer) = bearer.filter(|_| tls && !authenticated) else {
                    out.push_str("503 5.5.1 AUTH not available\r\n");
                    continue;
                };
                send(conn.get_mut(), &out).await?;
                out.clear();
                let (reply, login) =
                    super::sink_auth::exchange(&mut conn, &bearer, arg, id, tls).await?;
                if let Some(login) = login {
                    authenticated = login.accepted;
                    shared.lock().logins.push(login);
                    shared.changed.notify_waiters();
                }
                out.push_str(&format!("{reply}\r\n"));
            }
            "MAIL" => {
                if let Some(reply) = reject {
                    out.push_str(&format!("{reply}\r\n"));
                    if reply.starts_with("421") {
                        send(conn.get_mut(), &out).await?;
                        return Ok(());
                    }
                } else if ehlo.is_none() {
                    out.push_str("503 5.5.1 say EHLO first\r\n");
                } else if shared.lock().bearer.is_some() && !authenticated {
                    out.push_str("530 5.7.0 authentication required\r\n");
                } else if tx.is_some() {
                    out.push_str("503 5.5.1 nested MAIL\r\n");
                } else if let Some(path) = strip_prefix_ci(arg, "FROM:") {
                    let (mail_from, mail_params) = parse_path(path);
                    tx = Some(Transaction {
                        mail_from,
                        mail_params,
                        rcpts: Vec::new(),
                    });
                    out.push_str("250 2.1.0 sender ok\r\n");
                } else {
                    out.push_str("501 5.5.4 syntax: MAIL FROM:<address>\r\n");
                }
            }
            "RCPT" => {
                let Some(path) = strip_prefix_ci(arg, "TO:") else {
                    out.push_str("501 5.5.4 syntax: RCPT TO:<address>\r\n");
                    continue;
                };
                let (addr, _params) = parse_path(path);
                let seen = {
                    let mut state = shared.lock();
                    let n = state
                        .rcpt_attempts
                        .entry(addr.to_ascii_lowercase())
                        .or_insert(0);
                    *n += 1;
                    *n
                };
                shared.changed.notify_waiters();
                let Some(tx) = tx.as_mut() else {
                    out.push_str("503 5.5.1 need MAIL first\r\n");
                    continue;
                };
                if let Some(reply) = reject {
                    out.push_str(&format!("{reply}\r\n"));
                    if reply.starts_with("421") {
                        send(conn.get_mut(), &out).await?;
                        return Ok(());
                    }
                    continue;
                }
                if let Mode::RcptsPerTransaction(max) = mode {
                    if tx.rcpts.len() >= max {
                        out.push_str("452 4.5.3 too many recipients\r\n");
                        continue;
                    }
                }
                match magic(&addr) {
                    Some(m) if !m.at_data && m.first.is_none_or(|n| seen <= n) => {
                        out.push_str(&format!("{}\r\n", magic_reply(&m)));
                    }
                    _ => {
                        tx.rcpts.push(addr);
                        out.push_str("250 2.1.5 recipient ok\r\n");
                    }
                }
            }
            "DATA" => {
                let Some(t) = tx.take() else {
                    out.push_str("503 5.5.1 need MAIL first\r\n");
                    continue;
                };
                if t.rcpts.is_empty() {
                    out.push_str("554 5.5.1 no valid recipients\r\n");
                    continue;
                }
                if let Some(reply) = &reject {
                    out.push_str(&format!("{reply}\r\n"));
                    continue;
                }
                out.push_str("354 3.0.0 end data with <CR><LF>.<CR><LF>\r\n");
                send(conn.get_mut(), &out).await?;
                out.clear();
                let mut data = Vec::new();
                loop {
                    if !read_line(&mut conn, &mut line).await? {
                        bail!("EOF inside DATA");
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    let content = line.strip_prefix(b".").unwrap_or(&line);
                    if data.len() + content.len() <= MAX_DATA + 1 {
                        data.extend_from_slice(content);
                    }
                }
                let reply = finish_data(&shared, id, peer, &ehlo, tls, t, data);
                out.push_str(&format!("{reply}\r\n"));
                if reply.starts_with("250") && shared.lock().one_message_per_connection {
                    send(conn.get_mut(), &out).await?;
                    return Ok(());
                }
            }
            "RSET" => {
                tx = None;
                out.push_str("250 2.0.0 reset\r\n");
            }
            "NOOP" => out.push_str("250 2.0.0 ok\r\n"),
            "VRFY" => out.push_str("252 2.5.0 cannot verify\r\n"),
            "QUIT" => {
                out.push_str("221 2.0.0 bye\r\n");
                send(conn.get_mut(), &out).await?;
                // Over TLS, close_notify first (a clean end for the client).
                let _ = conn.get_mut().shutdown().await;
                return Ok(());
            }
            _ => out.push_str("500 5.5.2 unknown command\r\n"),
        }
    }
}

/// Decides the reply to the end of DATA and records an accepted transaction.
fn finish_data(
    shared: &Shared,
    session: u64,
    peer: SocketAddr,
    ehlo: &Option<String>,
    tls: bool,
    t: Transaction,
    data: Vec<u8>,
) -> String {
    let reply = {
        let mut state = shared.lock();
        if data.len() > MAX_DATA {
            Some(format!("552 5.3.4 message over {MAX_DATA} bytes"))
        } else if let Mode::DataReply(r) = &state.mode {
            Some(r.clone())
        } else {
            let mut reply = None;
            for rcpt in &t.rcpts {
                let Some(m) = magic(rcpt).filter(|m| m.at_data) else {
                    continue;
                };
                let n = state
                    .data_attempts
                    .entry(rcpt.to_ascii_lowercase())
                    .or_insert(0);
                *n += 1;
                if reply.is_none() && m.first.is_none_or(|first| *n <= first) {
                    reply = Some(magic_reply(&m));
                }
            }
            reply
        }
    };
    if let Some(reply) = reply {
        return reply;
    }
    let n = {
        let mut state = shared.lock();
        state.messages.push(Received {
            session,
            peer,
            ehlo: ehlo.clone().unwrap_or_default(),
            tls,
            mail_from: t.mail_from,
            mail_params: t.mail_params,
            rcpts: t.rcpts,
            data,
        });
        state.messages.len()
    };
    shared.changed.notify_waiters();
    format!("250 2.0.0 queued as {n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_tags() {
        assert_eq!(magic("a@d"), None);
        assert_eq!(magic("a+b@d"), None);
        assert_eq!(
            magic("x+550@dom"),
            Some(Magic {
                at_data: false,
                code: 550,
                first: None
            })
        );
        assert_eq!(
            magic("x+y+451x2@dom"),
            Some(Magic {
                at_data: false,
                code: 451,
                first: Some(2)
            })
        );
        assert_eq!(
            magic("x+DATA550@dom"),
            Some(Magic {
                at_data: true,
                code: 550,
                first: None
            })
        );
        assert_eq!(magic("x+250@dom"), None);
        assert_eq!(magic("x+5500@dom"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("<a@b> SIZE=1"), ("a@b".into(), "SIZE=1".into()));
        assert_eq!(parse_path("<>"), ("".into(), "".into()));
        assert_eq!(parse_path(" a@b"), ("a@b".into(), "".into()));
    }
}
