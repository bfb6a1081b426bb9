//! One submission connection: reads commands, keeps the session state (an enum), answers
//! in order (pipelining: replies are flushed when no more input is buffered, RFC 2920
//! §3.1), receives DATA and hands the message to the queue. The `250` after DATA is sent
//! only once the queue says the message is durable.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use relaygate_transports::sasl::{
    new_server, CredentialStore, Mechanism, ServerChannel, ServerStep,
};

use super::auth;
use super::conn_io::{read_line, tls_exporter, tls_label, Line};
use super::data::{DataReceiver, Feed};
use super::limits::{self, SessionCounters, OUT_FLUSH_BYTES, READ_BUFFER};
use super::proto::{self, Body, Command, MailArgs, RcptParams, Reply};
use super::server::SubmissionSettings;
use crate::message::{field_value, header_section, prepare, TraceInfo};
use crate::model::{format_id, now_ms, ShowId};
use crate::queue::{NewMessage, Queue};
use crate::spool::WriteIntent;

mod auth_exchange;

/// The socket, plain or after TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[derive(Debug, Clone)]
struct Helo {
    name: String,
    esmtp: bool,
}

#[derive(Debug)]
struct Transaction {
    from: String,
    params: MailArgs,
    rcpts: Vec<(String, RcptParams)>,
    /// From the 354 on: tells the spool this message is coming, so a flush can wait for
    /// it (the body of a small message follows within one round trip).
    announced: Option<WriteIntent>,
}

/// Where the session is.
#[derive(Debug)]
enum Phase {
    /// Connected (or just after STARTTLS): EHLO/HELO expected.
    Fresh,
    /// Greeted; no transaction.
    Ready(Helo),
    /// MAIL accepted; RCPTs being collected.
    Mail(Helo, Transaction),
}

/// What the command loop should do after a command.
enum Next {
    Continue,
    StartTls,
    Data,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// MAIL passed every other check; the account's rate limit decides.
    Rate {
        helo: Helo,
        tx: Transaction,
        account: String,
        limits: Vec<crate::queue::rate::Rate>,
    },
    Close,
}

pub struct Session {
    settings: Arc<SubmissionSettings>,
    queue: Arc<Queue>,
    peer: SocketAddr,
    trusted: bool,
    tls: Option<String>,
    /// The tls-exporter channel binding of a TLS 1.3 session (RFC 9266).
    tls_exporter: Option<Vec<u8>>,
    account: Option<String>,
    phase: Phase,
    /// Replies not yet written (bounded: see `limits.rs`).
    out: Vec<u8>,
    counters: SessionCounters,
}

impl Session {
    pub fn new(settings: Arc<SubmissionSettings>, queue: Arc<Queue>, peer: SocketAddr) -> Session {
        let trusted = settings.is_trusted(peer.ip());
        Session {
            settings,
            queue,
            peer,
            trusted,
            tls: None,
            tls_exporter: None,
            account: None,
            phase: Phase::Fresh,
            out: Vec::with_capacity(1024),
            counters: SessionCounters::new(),
        }
    }

    fn reply(&mut self, r: Reply) {
        r.write_wire(&mut self.out);
    }

    /// Writes the pending replies. A client that does not read them within
    /// `command_timeout` is dropped: its replies must not pile up in our memory.
    async fn flush(&mut self, reader: &mut BufReader<Conn>) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.send(reader).await
    }

    /// Writes `out` (possibly nothing) and flushes the connection, which over TLS also
    /// writes the records the session holds; `command_timeout` bounds it.
    async fn send(&mut self, reader: &mut BufReader<Conn>) -> io::Result<()> {
        let conn = reader.get_mut();
        let write = async {
            conn.write_all(&self.out).await?;
            conn.flush().await
        };
        match tokio::time::timeout(self.settings.limits.command_timeout, write).await {
            Ok(r) => r?,
            Err(_) => {
                limits::hit("write_timeout");
                tracing::info!(peer = %self.peer, pending = self.out.len(), "submission: client does not read its replies; closing");
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        self.out.clear();
        if self.out.capacity() > 4 * OUT_FLUSH_BYTES {
            self.out.shrink_to(OUT_FLUSH_BYTES);
        }
        Ok(())
    }

    /// Sends the last replies and ends the connection (the caller then drops it).
    ///
    /// Over TLS the replies and the close_notify alert (RFC 8446 §6.1) leave in one
    /// write. Plain TCP needs only the replies: dropping the socket closes it, and the
    /// kernel sends what was written before its FIN (a `shutdown` would only add a
    /// system call to every session).
    async fn close(&mut self, reader: &mut BufReader<Conn>) {
        let mut notified = false;
        if let Conn::Tls(s) = reader.get_mut() {
            let tls = s.get_mut().1;
            // The replies become records in the session's buffer, which holds far more
            // than a few replies (a remainder would go out the usual way, and the alert
            // after it), and the alert follows them.
            if let Ok(n) = io::Write::write(&mut tls.writer(), &self.out) {
                self.out.drain(..n);
                if self.out.is_empty() {
                    tls.send_close_notify();
                    notified = true;
                }
            }
        }
        if self.send(reader).await.is_err() || notified {
            return;
        }
        if let Conn::Tls(s) = reader.get_mut() {
            let limit = self.settings.limits.command_timeout;
            let _ = tokio::time::timeout(limit, s.shutdown()).await;
        }
    }

    /// Closes after a limit's reply.
    async fn close_with(&mut self, reader: &mut BufReader<Conn>, reply: Reply) {
        self.reply(reply);
        self.close(reader).await;
    }

    /// A syntax or protocol error: at the limit, 421.
    fn error(&mut self) -> Next {
        match self.counters.error(&self.settings.limits) {
            Some(r) => {
                self.reply(r);
                Next::Close
            }
            None => Next::Continue,
        }
    }

    /// A junk command (NOOP, RSET, VRFY, HELP, refused RCPT): past the limit, 421.
    fn junk(&mut self) -> Next {
        match self.counters.junk(&self.settings.limits) {
            Some(r) => {
                self.reply(r);
                Next::Close
            }
            None => Next::Continue,
        }
    }

    /// Runs the session to its end. `conn` may already be TLS (implicit TLS listener).
    pub async fn run(mut self, conn: Conn, mut shutdown: watch::Receiver<bool>) {
        if let Conn::Tls(t) = &conn {
            self.tls = Some(tls_label(t.get_ref().1));
            self.tls_exporter = tls_exporter(t.get_ref().1);
        }
        let mut reader = BufReader::with_capacity(READ_BUFFER, conn);
        let greeting = Reply::plain(
            220,
            format!("{} ESMTP relaygate ready", self.settings.hostname),
        );
        self.reply(greeting);
        if self.flush(&mut reader).await.is_err() {
            return;
        }
        let mut line = Vec::with_capacity(512);
        loop {
            if limits::must_flush(reader.buffer(), self.out.len())
                && self.flush(&mut reader).await.is_err()
            {
                return;
            }
            let Some((wait, which)) = self.counters.command_wait(&self.settings.limits) else {
                limits::hit("session_timeout");
                let r = Reply::new(421, "4.4.2", "session time limit reached, closing");
                self.close_with(&mut reader, r).await;
                return;
            };
            let read = tokio::select! {
                r = tokio::time::timeout(wait, read_line(&mut reader, &mut line, proto::MAX_COMMAND_LINE)) => r,
                _ = shutdown.changed() => {
                    self.reply(Reply::new(421, "4.3.2", "service shutting down, try again later"));
                    self.close(&mut reader).await;
                    return;
                }
            };
            let next = match read {
                Err(_) => {
                    limits::hit(which);
                    let r = Reply::new(421, "4.4.2", "timeout waiting for a command");
                    self.close_with(&mut reader, r).await;
                    return;
                }
                Ok(Err(_)) | Ok(Ok(Line::Eof)) => return,
                Ok(Ok(Line::TooLong)) => {
                    self.reply(Reply::new(500, "5.5.6", "command line too long"));
                    self.error()
                }
                Ok(Ok(Line::Ok)) => match proto::parse_command(&line) {
                    Ok(cmd) => self.handle(cmd),
                    Err(proto::ParseError(r)) => {
                        self.reply(r);
                        self.error()
                    }
                },
            };
            match next {
                Next::Continue => {}
                Next::Close => {
                    self.close(&mut reader).await;
                    return;
                }
                Next::Auth { mechanism, initial } => {
                    match self.auth(&mut reader, &mechanism, initial).await {
                        Ok(true) => {}
                        Ok(false) | Err(_) => return,
                    }
                }
                Next::Rate {
                    helo,
                    tx,
                    account,
                    limits,
                } => self.rate_checked_mail(helo, tx, &account, &limits).await,
                Next::Data => {
                    if self.flush(&mut reader).await.is_err() {
                        return;
                    }
                    match self.receive_data(&mut reader).await {
                        Ok(true) => {}
                        Ok(false) | Err(_) => return,
                    }
                }
                Next::StartTls => {
                    if self.flush(&mut reader).await.is_err() {
                        return;
                    }
                    let Some(acceptor) = self.settings.tls.clone() else {
                        return;
                    };
                    // Anything the client pipelined after STARTTLS is discarded: it was
                    // sent in plaintext and must not be processed inside TLS (RFC 3207 §4.2).
                    let conn = reader.into_inner();
                    let Conn::Plain(tcp) = conn else {
                        return;
                    };
                    let accepted = tokio::time::timeout(
                        self.settings.limits.command_timeout,
                        tokio_rustls::TlsAcceptor::from(acceptor).accept(tcp),
                    )
                    .await;
                    let tls = match accepted {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %self.peer, error = %e, "submission: TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    self.tls = Some(tls_label(tls.get_ref().1));
                    self.tls_exporter = tls_exporter(tls.get_ref().1);
                    // RFC 3207 §4.2: the server MUST discard any knowledge obtained from
                    // the client before TLS, the EHLO and a completed AUTH included.
                    self.phase = Phase::Fresh;
                    self.account = None;
                    reader = BufReader::with_capacity(16 * 1024, Conn::Tls(Box::new(tls)));
                }
            }
        }
    }

    fn helo(&self) -> Option<Helo> {
        match &self.phase {
            Phase::Fresh => None,
            Phase::Ready(h) | Phase::Mail(h, _) => Some(h.clone()),
        }
    }

    fn ehlo_reply(&self) -> Reply {
        let s = &self.settings;
        let mut lines = vec![
            format!("{} greets {}", s.hostname, self.peer.ip()),
            "PIPELINING".into(),
            format!("SIZE {}", s.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "DSN".into(),
        ];
        if s.tls.is_some() && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        if self.tls.is_some() {
            // REQUIRETLS is offered only on a TLS session (RFC 8689 §4.1).
            lines.push("REQUIRETLS".into());
        }
        let mechanisms = self.offered_mechanisms();
        if !mechanisms.is_empty() {
            let names: Vec<&str> = mechanisms.iter().map(|m| m.as_str()).collect();
            lines.push(format!("AUTH {}", names.join(" ")));
        }
        Reply::multi(250, lines)
    }

    /// What AUTH offers here; nothing when no account is configured.
    fn offered_mechanisms(&self) -> Vec<Mechanism> {
        if self.settings.snapshot.get().accounts.is_empty() {
            return Vec::new();
        }
        auth::offered(
            self.tls_exporter.is_some(),
            self.tls.is_some(),
            self.peer.ip().is_loopback(),
        )
    }

    fn handle(&mut self, cmd: Command) -> Next {
        match cmd {
            Command::Ehlo(name) => {
                self.phase = Phase::Ready(Helo { name, esmtp: true });
                let r = self.ehlo_reply();
                self.reply(r);
            }
            Command::Helo(name) => {
                self.phase = Phase::Ready(Helo { name, esmtp: false });
                let r = Reply::plain(250, self.settings.hostname.clone());
                self.reply(r);
            }
            Command::Mail { from, params } => return self.mail(from, params),
            Command::Rcpt { to, params } => {
                if self.rcpt(to, params) >= 500 {
                    return self.junk();
                }
            }
            Command::Data => return self.data_command(),
            Command::Rset => {
                if let Some(h) = self.helo() {
                    self.phase = Phase::Ready(h);
                }
                if let Next::Close = self.junk() {
                    return Next::Close;
                }
                self.reply(Reply::new(250, "2.0.0", "OK"));
            }
            Command::Noop | Command::Vrfy | Command::Help => {
                if let Next::Close = self.junk() {
                    return Next::Close;
                }
                let r = match cmd {
                    Command::Noop => Reply::new(250, "2.0.0", "OK"),
                    Command::Vrfy => Reply::new(
                        252,
                        "2.5.0",
                        "cannot verify, but will accept the message and attempt delivery",
                    ),
                    _ => Reply::new(214, "2.0.0", "see RFC 5321"),
                };
                self.reply(r);
            }
            Command::Quit => {
                let r = Reply::new(
                    221,
                    "2.0.0",
                    format!("{} closing connection", self.settings.hostname),
                );
                self.reply(r);
                return Next::Close;
            }
            Command::Expn => self.reply(Reply::new(502, "5.5.1", "EXPN not available")),
            Command::StartTls => {
                if self.settings.tls.is_none() {
                    self.reply(Reply::new(502, "5.5.1", "STARTTLS not available"));
                } else if self.tls.is_some() {
                    self.reply(Reply::new(503, "5.5.1", "already using TLS"));
                } else if matches!(self.phase, Phase::Mail(..)) {
                    self.reply(Reply::new(
                        503,
                        "5.5.1",
                        "STARTTLS not allowed inside a transaction",
                    ));
                } else {
                    self.reply(Reply::new(220, "2.0.0", "ready to start TLS"));
                    return Next::StartTls;
                }
            }
            Command::Auth { mechanism, initial } => return Next::Auth { mechanism, initial },
            Command::Bdat => self.reply(Reply::new(502, "5.5.1", "CHUNKING not offered; use DATA")),
        }
        Next::Continue
    }

    fn mail(&mut self, from: String, params: MailArgs) -> Next {
        let helo = match &self.phase {
            Phase::Fresh => {
                self.reply(Reply::new(503, "5.5.1", "send EHLO or HELO first"));
                return Next::Continue;
            }
            Phase::Mail(..) => {
                self.reply(Reply::new(503, "5.5.1", "nested MAIL command"));
                return Next::Continue;
            }
            Phase::Ready(h) => h.clone(),
        };
        if !self.sender_allowed(&from) {
            metrics::counter!("relaygate_submissions_refused_total", "reason" => "sender")
                .increment(1);
            let who = if self.account.is_some() {
                "this account"
            } else {
                "this client"
            };
            self.reply(Reply::new(
                553,
                "5.7.1",
                format!("sender address not allowed for {who}"),
            ));
            return Next::Continue;
        }
        if params
            .size
            .is_some_and(|s| s > self.settings.max_message_size)
        {
            metrics::counter!("relaygate_submissions_refused_total", "reason" => "size")
                .increment(1);
            self.reply(Reply::new(
                552,
                "5.3.4",
                "message size exceeds the fixed limit",
            ));
            return Next::Continue;
        }
        if params.requiretls && self.tls.is_none() {
            // REQUIRETLS needs a TLS session (RFC 8689 §4.1).
            self.reply(Reply::new(530, "5.7.10", "REQUIRETLS needs a TLS session"));
            return Next::Continue;
        }
        if !helo.esmtp && (params.smtputf8 || params.body != Body::Unspecified || params.requiretls)
        {
            self.reply(Reply::new(555, "5.5.4", "parameters need EHLO"));
            return Next::Continue;
        }
        let tx = Transaction {
            from,
            params,
            rcpts: Vec::new(),
            announced: None,
        };
        if let Some(account) = &self.account {
            let limits = self
                .settings
                .snapshot
                .get()
                .accounts
                .rate_limits(account)
                .to_vec();
            if !limits.is_empty() {
                return Next::Rate {
                    helo,
                    tx,
                    account: account.clone(),
                    limits,
                };
            }
        }
        self.phase = Phase::Mail(helo, tx);
        self.reply(Reply::new(250, "2.1.0", "sender OK"));
        Next::Continue
    }

    /// Answers a MAIL of an account with a rate limit: over it, `452 4.7.0` with the
    /// time to wait (the client's queue retries; nothing is lost).
    async fn rate_checked_mail(
        &mut self,
        helo: Helo,
        tx: Transaction,
        account: &str,
        limits: &[crate::queue::rate::Rate],
    ) {
        let key = format!("account:{account}");
        match self
            .settings
            .rates
            .take(&key, limits, std::time::Duration::ZERO)
            .await
        {
            crate::queue::rate::Decision::Now | crate::queue::rate::Decision::After(_) => {
                self.phase = Phase::Mail(helo, tx);
                self.reply(Reply::new(250, "2.1.0", "sender OK"));
            }
            crate::queue::rate::Decision::Defer(wait) => {
                metrics::counter!("relaygate_submissions_refused_total", "reason" => "rate")
                    .increment(1);
                tracing::info!(account, peer = %self.peer, wait_ms = wait.as_millis() as u64,
                    "submission: account over its rate limit");
                self.reply(Reply::new(
                    452,
                    "4.7.0",
                    format!(
                        "sending rate limit of this account reached, try again in {} s",
                        wait.as_secs().max(1)
                    ),
                ));
            }
        }
    }

    /// Answers RCPT; returns the reply code.
    /// Sender identity: an account may use only its `allowed_senders`, a trusted client
    /// without AUTH only `trusted_senders` (either list empty: any). Others cannot relay
    /// at all (RCPT refuses them).
    fn sender_allowed(&self, from: &str) -> bool {
        match &self.account {
            Some(account) => self
                .settings
                .snapshot
                .get()
                .accounts
                .senders(account)
                .is_none_or(|p| p.allows(from)),
            None if self.trusted => self.settings.trusted_senders.allows(from),
            None => true,
        }
    }

    fn rcpt(&mut self, to: String, params: RcptParams) -> u16 {
        let trusted = self.trusted || self.account.is_some();
        let max = self.settings.max_recipients;
        let reply = match &mut self.phase {
            Phase::Mail(_, tx) => {
                if !trusted {
                    metrics::counter!("relaygate_submissions_refused_total", "reason" => "relay")
                        .increment(1);
                    Reply::new(
                        550,
                        "5.7.1",
                        "relaying denied: authenticate or submit from a trusted network",
                    )
                } else if tx.rcpts.len() >= max {
                    Reply::new(452, "4.5.3", "too many recipients")
                } else if to.contains('@') && !to.is_ascii() && !tx.params.smtputf8 {
                    Reply::new(553, "5.6.7", "non-ASCII address needs SMTPUTF8")
                } else {
                    tx.rcpts.push((to, params));
                    Reply::new(250, "2.1.5", "recipient OK")
                }
            }
            Phase::Fresh | Phase::Ready(_) => Reply::new(503, "5.5.1", "send MAIL first"),
        };
        let code = reply.code;
        self.reply(reply);
        code
    }

    fn data_command(&mut self) -> Next {
        match &mut self.phase {
            Phase::Mail(_, tx) if !tx.rcpts.is_empty() => {
                tx.announced = Some(self.queue.announce());
                self.reply(Reply::plain(354, "end data with <CR><LF>.<CR><LF>"));
                Next::Data
            }
            Phase::Mail(..) => {
                self.reply(Reply::new(554, "5.5.1", "no valid recipients"));
                Next::Continue
            }
            Phase::Fresh | Phase::Ready(_) => {
                self.reply(Reply::new(503, "5.5.1", "send MAIL and RCPT first"));
                Next::Continue
            }
        }
    }

    /// Receives the content after 354, queues it, and answers. `Ok(false)` ends the
    /// session (connection lost or timed out).
    async fn receive_data(&mut self, reader: &mut BufReader<Conn>) -> io::Result<bool> {
        let mut rx = DataReceiver::new(self.settings.max_message_size as usize);
        // One deadline for the whole DATA phase (and never past the session's end).
        let (deadline, which) = self.counters.data_deadline(&self.settings.limits);
        loop {
            let avail = match tokio::time::timeout_at(deadline.into(), reader.fill_buf()).await {
                Ok(r) => r?,
                Err(_) => {
                    limits::hit(which);
                    let r = Reply::new(421, "4.4.2", "time limit for the message reached");
                    self.close_with(reader, r).await;
                    return Ok(false);
                }
            };
            if avail.is_empty() {
                return Ok(false);
            }
            let n = avail.len();
            match rx.feed(avail) {
                Feed::NeedMore => reader.consume(n),
                Feed::Done { consumed } => {
                    reader.consume(consumed);
                    break;
                }
            }
        }
        let received = rx.finish();
        let (helo, tx) = match std::mem::replace(&mut self.phase, Phase::Fresh) {
            Phase::Mail(h, tx) => (h, tx),
            other => {
                self.phase = other;
                return Ok(true);
            }
        };
        self.phase = Phase::Ready(helo.clone());
        if received.overflow {
            metrics::counter!("relaygate_submissions_refused_total", "reason" => "size")
                .increment(1);
            self.reply(Reply::new(
                552,
                "5.3.4",
                "message size exceeds the fixed limit",
            ));
            return Ok(true);
        }
        let reply = self
            .enqueue(&helo, tx, received.body, received.eight_bit)
            .await;
        if reply.code == 250 {
            self.counters.accepted();
        }
        self.reply(reply);
        Ok(true)
    }

    async fn enqueue(
        &mut self,
        helo: &Helo,
        tx: Transaction,
        body: Vec<u8>,
        eight_bit: bool,
    ) -> Reply {
        let tx_intent = tx.announced;
        let id = self.queue.next_id();
        let now = now_ms();
        let mut protocol = if tx.params.smtputf8 {
            "UTF8SMTP".to_string()
        } else if helo.esmtp {
            "ESMTP".to_string()
        } else {
            "SMTP".to_string()
        };
        if self.tls.is_some() && helo.esmtp {
            protocol.push('S');
        }
        if self.account.is_some() {
            protocol.push('A');
        }
        let single = (tx.rcpts.len() == 1).then(|| tx.rcpts[0].0.as_str());
        let body = prepare(
            &body,
            &TraceInfo {
                hostname: &self.settings.hostname,
                helo: &helo.name,
                client_ip: self.peer.ip(),
                protocol: &protocol,
                tls: self.tls.as_deref(),
                id,
                single_rcpt: single,
                now_ms: now,
            },
        );
        let signer = Arc::clone(&self.settings.snapshot.get().dkim);
        let (body, dkim) = if signer.is_empty() {
            (body, None)
        } else {
            // Signing is CPU work (about a millisecond with RSA): not on an async worker,
            // where it would stall every session that worker serves.
            let sign = move || {
                let dkim = crate::dkim::sign_for_queue(&signer, &body, id);
                (body, dkim)
            };
            match tokio::task::spawn_blocking(sign).await {
                Ok(signed) => signed,
                Err(e) => {
                    tracing::error!(error = %e, "submission: DKIM signing failed");
                    return Reply::new(451, "4.3.0", "local error, try again later");
                }
            }
        };
        let tls_required_header = field_value(header_section(&body), "TLS-Required")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("no"));
        let new = NewMessage {
            mail_from: tx.from,
            params: crate::model::MailParams {
                eight_bit: eight_bit || tx.params.body == Body::EightBitMime,
                smtputf8: tx.params.smtputf8,
                requiretls: tx.params.requiretls,
                ret: tx.params.ret,
                envid: tx.params.envid,
                // RFC 8689 §5: with REQUIRETLS on MAIL FROM the header field MUST be ignored.
                tls_required_no: tls_required_header && !tx.params.requiretls,
            },
            account: self.account.clone(),
            client: Some(format!("{} [{}]", helo.name, self.peer.ip())),
            rcpts: tx
                .rcpts
                .into_iter()
                .map(|(a, p)| (a, p.notify, p.orcpt))
                .collect(),
            body,
            dkim,
        };
        let nrcpt = new.rcpts.len();
        let size = new.body.len();
        match self.queue.enqueue_announced(id, new, tx_intent).await {
            Ok(id) => {
                metrics::counter!("relaygate_submissions_accepted_total").increment(1);
                tracing::info!(queue_id = %format_id(id), client = %self.peer, rcpts = nrcpt, size, "submission: queued");
                Reply::new(250, "2.0.0", format!("OK queued as {}", ShowId(id)))
            }
            Err(e) => {
                metrics::counter!("relaygate_submissions_refused_total", "reason" => "spool")
                    .increment(1);
                tracing::error!(client = %self.peer, error = %e, "submission: cannot store message");
                Reply::new(
                    451,
                    "4.3.0",
                    "cannot store the message now; try again later",
                )
            }
        }
    }
}
