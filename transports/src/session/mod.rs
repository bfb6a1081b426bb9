//! One SMTP client session over a [`Stream`]: greeting, EHLO, STARTTLS, transactions,
//! RSET and QUIT.
//!
//! The session knows nothing about queues or routing. Its state is one enum
//! ([`SessionState`]): `Greeted` after the 220, `Ready` once EHLO/HELO succeeded (holding
//! the capabilities), `InTransaction` while a transaction is open or was left unfinished
//! (RSET makes it `Ready` again), `Closed` after any I/O or protocol error. Every wait has
//! the RFC 5321 §4.5.3.2 timeout of its stage ([`Timeouts`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::{pki_types::ServerName, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    command,
    ehlo::Capabilities,
    outcome::{Stage, TransportError},
    reply::{EnhancedCode, Reply, ReplyParser},
    stream::{tls_handshake, Connector, Stream},
};

mod auth;
mod transaction;

pub use auth::{AuthParams, AuthPlan, BindingUse, Secret};

/// Size of the pieces the body is encoded and written in.
const BODY_CHUNK: usize = 64 * 1024;

/// Timeouts per stage. Defaults follow RFC 5321 §4.5.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting, including name resolution (not in the RFC; 30 s).
    pub connect: Duration,
    /// Waiting for the 220 greeting: 5 minutes (§4.5.3.2.1). Also bounds TLS handshakes.
    pub greeting: Duration,
    /// Replies to EHLO, STARTTLS, MAIL, RCPT, RSET, QUIT: 5 minutes (§4.5.3.2.2, .3).
    pub command: Duration,
    /// Reply to DATA: 2 minutes (§4.5.3.2.4).
    pub data_init: Duration,
    /// Each write of message data: 3 minutes (§4.5.3.2.5).
    pub data_block: Duration,
    /// Reply to the final ".": 10 minutes (§4.5.3.2.6).
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(5 * 60),
            command: Duration::from_secs(5 * 60),
            data_init: Duration::from_secs(2 * 60),
            data_block: Duration::from_secs(3 * 60),
            data_end: Duration::from_secs(10 * 60),
        }
    }
}

impl Timeouts {
    /// The same timeout for every stage (tests, labs).
    pub fn uniform(timeout: Duration) -> Self {
        Self {
            connect: timeout,
            greeting: timeout,
            command: timeout,
            data_init: timeout,
            data_block: timeout,
            data_end: timeout,
        }
    }
}

/// Where a session is, without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Greeting received; EHLO not done (also right after STARTTLS).
    Greeted,
    /// EHLO/HELO done, no transaction open: ready for MAIL.
    Ready,
    /// A transaction is open or was not finished; RSET before reuse.
    InTransaction,
    /// Broken or quit; drop it.
    Closed,
}

#[derive(Debug)]
enum State {
    Greeted,
    // Shared: every transaction moves them between states (no copy per message).
    Ready { caps: Arc<Capabilities> },
    InTransaction { caps: Arc<Capabilities> },
    Closed,
}

/// Where to connect and how, for [`Session::connect_and_greet`].
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// Host name (or IP literal) to connect to; also the TLS server name.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `Some` for implicit TLS right after connecting (RFC 8314 §3.3).
    pub implicit_tls: Option<Arc<ClientConfig>>,
    /// Stage timeouts.
    pub timeouts: Timeouts,
}

/// How a transaction ended, which decides the next state.
enum TxnEnd {
    /// The server replied to the end of data: the transaction is over.
    Completed,
    /// Stopped early (MAIL or DATA refused, no recipient accepted): RSET before reuse.
    Aborted,
}

/// An SMTP client session.
#[derive(Debug)]
pub struct Session {
    host: String,
    peer: Option<SocketAddr>,
    stream: Option<Stream>,
    parser: ReplyParser,
    timeouts: Timeouts,
    state: State,
    ehlo_name: String,
    greeting: Reply,
    /// An RSET to send at the head of the next pipelined transaction, with the time its
    /// reply may take: the liveness probe of a reused connection, without a round trip.
    probe: Option<Duration>,
}

/// The TLS server name for `host` (a DNS name or an IP literal).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TransportError> {
    ServerName::try_from(host.to_string()).map_err(|e| TransportError::Tls {
        host: host.to_string(),
        reason: format!("invalid server name: {e}"),
    })
}

fn synthesized(code: u16, enhanced: EnhancedCode, text: &str) -> Reply {
    Reply::new(code, Some(enhanced), text)
}

/// Logs command lines, never secrets: anything after "AUTH" is redacted.
fn loggable(line: &str) -> &str {
    let line = line.trim_end();
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case("AUTH") {
        "AUTH <redacted>"
    } else {
        line
    }
}

impl Session {
    /// Connects through `connector`, runs the implicit TLS handshake if asked, and reads
    /// the greeting.
    pub async fn connect_and_greet(
        connector: &dyn Connector,
        params: &ConnectParams,
    ) -> Result<Session, TransportError> {
        let host = params.host.as_str();
        let (io, addr) = tokio::time::timeout(
            params.timeouts.connect,
            connector.connect(host, params.port),
        )
        .await
        .map_err(|_| TransportError::Timeout {
            host: host.to_string(),
            stage: Stage::Connect,
        })?
        .map_err(|source| TransportError::Connect {
            host: host.to_string(),
            port: params.port,
            source,
        })?;
        tracing::debug!(host, %addr, "connected");
        let stream = match &params.implicit_tls {
            None => Stream::Plain(io),
            Some(config) => {
                let name = server_name(host)?;
                handshake(host, io, name, Arc::clone(config), params.timeouts.greeting).await?
            }
        };
        Session::greet(stream, host, Some(addr), params.timeouts).await
    }

    /// Reads the 220 greeting on an established stream (RFC 5321 §3.1, §4.3.2).
    pub async fn greet(
        stream: Stream,
        host: &str,
        peer: Option<SocketAddr>,
        timeouts: Timeouts,
    ) -> Result<Session, TransportError> {
        let mut session = Session {
            host: host.to_string(),
            peer,
            stream: Some(stream),
            parser: ReplyParser::new(),
            timeouts,
            state: State::Greeted,
            ehlo_name: String::new(),
            greeting: Reply::new(0, None, ""),
            probe: None,
        };
        let reply = session
            .read_reply(Stage::Greeting, timeouts.greeting)
            .await?;
        tracing::debug!(host, reply = %reply, "greeting");
        if reply.code != 220 {
            session.state = State::Closed;
            return Err(TransportError::GreetingRejected {
                host: session.host,
                reply,
            });
        }
        session.greeting = reply;
        Ok(session)
    }

    /// Sends EHLO; on a 5xx falls back to HELO with no extensions (RFC 5321 §3.2, §4.1.4).
    /// Returns the capabilities, which the session keeps until the next EHLO.
    pub async fn ehlo(&mut self, name: &str) -> Result<Capabilities, TransportError> {
        match self.state {
            State::Greeted | State::Ready { .. } => {}
            State::InTransaction { .. } | State::Closed => {
                return Err(self.misuse(Stage::Ehlo));
            }
        }
        self.send_command(&command::ehlo(name), Stage::Ehlo).await?;
        let reply = self.read_reply(Stage::Ehlo, self.timeouts.command).await?;
        let caps = if reply.is_completion() {
            Capabilities::from_ehlo_reply(&reply)
        } else if reply.is_permanent() {
            tracing::debug!(host = %self.host, reply = %reply, "EHLO refused, trying HELO");
            self.send_command(&command::helo(name), Stage::Helo).await?;
            let helo = self.read_reply(Stage::Helo, self.timeouts.command).await?;
            if !helo.is_completion() {
                return Err(self.rejected_ehlo(helo));
            }
            Capabilities::default()
        } else {
            return Err(self.rejected_ehlo(reply));
        };
        self.ehlo_name = name.to_string();
        self.state = State::Ready {
            caps: Arc::new(caps.clone()),
        };
        Ok(caps)
    }

    /// STARTTLS, the TLS handshake, then EHLO again with the name of the last EHLO.
    ///
    /// A 4xx/5xx to STARTTLS returns [`TransportError::StartTlsRejected`] and leaves the
    /// session usable in plaintext; every other error closes it.
    pub async fn starttls(
        &mut self,
        server_name: ServerName<'static>,
        config: Arc<ClientConfig>,
    ) -> Result<Capabilities, TransportError> {
        let offered = match &self.state {
            State::Ready { caps } => caps.starttls,
            State::Greeted | State::InTransaction { .. } | State::Closed => {
                return Err(self.misuse(Stage::StartTls));
            }
        };
        if self.is_tls() {
            return Err(self.misuse(Stage::StartTls));
        }
        if !offered {
            return Err(TransportError::StartTlsUnavailable {
                host: self.host.clone(),
            });
        }
        self.send_command(command::STARTTLS, Stage::StartTls)
            .await?;
        let reply = self
            .read_reply(Stage::StartTls, self.timeouts.command)
            .await?;
        if reply.code != 220 {
            if reply.is_transient() || reply.is_permanent() {
                // RFC 3207 §4: the client may continue the session in plaintext.
                return Err(TransportError::StartTlsRejected {
                    host: self.host.clone(),
                    reply,
                });
            }
            return Err(self.protocol(Stage::StartTls, format!("unexpected reply {reply}")));
        }
        if self.parser.has_buffered() {
            // Bytes sent before the handshake could be injected by an attacker and would be
            // taken as replies inside TLS; refuse them (RFC 3207 §6).
            return Err(self.protocol(Stage::StartTls, "data after 220 ahead of TLS".into()));
        }
        // RFC 3207 §4.2: the client MUST discard any knowledge obtained from the server,
        // such as the list of SMTP service extensions, which was not obtained from the TLS
        // negotiation itself. The reference design kept the old list; we drop it here.
        self.state = State::Greeted;
        let io = match self.stream.take() {
            Some(Stream::Plain(io)) => io,
            Some(tls @ Stream::Tls(_)) => {
                self.stream = Some(tls);
                return Err(self.misuse(Stage::StartTls));
            }
            None => return Err(self.misuse(Stage::StartTls)),
        };
        match handshake(&self.host, io, server_name, config, self.timeouts.greeting).await {
            Ok(stream) => self.stream = Some(stream),
            Err(e) => {
                self.state = State::Closed;
                return Err(e);
            }
        }
        tracing::debug!(host = %self.host, version = ?self.tls_version(), "STARTTLS done");
        // RFC 3207 §4.2: the client SHOULD send EHLO as the first command after TLS.
        let name = self.ehlo_name.clone();
        self.ehlo(&name).await
    }

    /// RSET (RFC 5321 §4.1.1.5): ends any transaction; `Ready` on a 2xx, else `Closed`.
    pub async fn rset(&mut self) -> Result<(), TransportError> {
        self.rset_within(self.timeouts.command).await
    }

    /// RSET with its own timeout (a short probe for pooled connections).
    pub async fn rset_within(&mut self, limit: Duration) -> Result<(), TransportError> {
        let caps = match &self.state {
            State::Ready { caps } | State::InTransaction { caps } => caps.clone(),
            State::Greeted | State::Closed => return Err(self.misuse(Stage::Rset)),
        };
        self.probe = None;
        self.send_with(command::RSET, Stage::Rset, limit).await?;
        let reply = self.read_reply(Stage::Rset, limit).await?;
        if !reply.is_completion() {
            return Err(self.protocol(Stage::Rset, format!("unexpected reply {reply}")));
        }
        self.state = State::Ready { caps };
        Ok(())
    }

    /// Probes a reused connection with RSET: with PIPELINING the RSET goes out in the
    /// same write as the next transaction's MAIL, RCPTs and DATA, and its reply is read
    /// first (a refusal or a dead connection fails the transaction at stage RSET, before
    /// anything could be accepted); without, it is sent and answered now.
    pub async fn probe_reuse(&mut self, limit: Duration) -> Result<(), TransportError> {
        match &self.state {
            State::Ready { caps } if caps.pipelining => {
                self.probe = Some(limit);
                Ok(())
            }
            _ => self.rset_within(limit).await,
        }
    }

    /// QUIT (RFC 5321 §4.1.1.10), best effort, then closes the connection.
    pub async fn quit(mut self) {
        if !matches!(self.state, State::Closed) {
            let limit = self.timeouts.command;
            if self
                .send_with(command::QUIT, Stage::Quit, limit)
                .await
                .is_ok()
            {
                let _ = self.read_reply(Stage::Quit, limit).await;
            }
        }
        if let Some(mut stream) = self.stream.take() {
            let _ = tokio::time::timeout(self.timeouts.command, stream.shutdown()).await;
        }
    }

    /// The host this session talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The remote address, when known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// Where the session is.
    pub fn state(&self) -> SessionState {
        match self.state {
            State::Greeted => SessionState::Greeted,
            State::Ready { .. } => SessionState::Ready,
            State::InTransaction { .. } => SessionState::InTransaction,
            State::Closed => SessionState::Closed,
        }
    }

    /// The capabilities of the last EHLO, `None` before EHLO (and right after STARTTLS).
    pub fn capabilities(&self) -> Option<&Capabilities> {
        match &self.state {
            State::Ready { caps } | State::InTransaction { caps } => Some(caps),
            State::Greeted | State::Closed => None,
        }
    }

    /// True once TLS is up.
    pub fn is_tls(&self) -> bool {
        self.stream.as_ref().is_some_and(Stream::is_tls)
    }

    /// The negotiated TLS version, if TLS.
    pub fn tls_version(&self) -> Option<String> {
        self.stream.as_ref().and_then(Stream::tls_version)
    }

    async fn send_command(&mut self, lines: &str, stage: Stage) -> Result<(), TransportError> {
        for line in lines.split_inclusive("\r\n") {
            tracing::debug!(host = %self.host, command = loggable(line), "send");
        }
        self.send_with(lines.as_bytes(), stage, self.timeouts.command)
            .await
    }

    /// Writes and flushes `bytes`; any failure closes the session.
    async fn send_with(
        &mut self,
        bytes: impl AsRef<[u8]>,
        stage: Stage,
        limit: Duration,
    ) -> Result<(), TransportError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.misuse(stage));
        };
        let write = async {
            stream.write_all(bytes.as_ref()).await?;
            stream.flush().await
        };
        let result = match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(TransportError::Io {
                host: self.host.clone(),
                stage,
                source,
            }),
            Err(_) => Err(TransportError::Timeout {
                host: self.host.clone(),
                stage,
            }),
        };
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    /// Reads one complete reply within `limit`; any failure closes the session.
    async fn read_reply(&mut self, stage: Stage, limit: Duration) -> Result<Reply, TransportError> {
        let result = match tokio::time::timeout(limit, self.read_reply_inner(stage)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                host: self.host.clone(),
                stage,
            }),
        };
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    async fn read_reply_inner(&mut self, stage: Stage) -> Result<Reply, TransportError> {
        let mut buf = [0u8; 4096];
        loop {
            match self.parser.next_reply() {
                Ok(Some(reply)) => return Ok(reply.at(stage)),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(stage, e.to_string())),
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.misuse(stage));
            };
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|source| TransportError::Io {
                    host: self.host.clone(),
                    stage,
                    source,
                })?;
            if n == 0 {
                return Err(TransportError::Io {
                    host: self.host.clone(),
                    stage,
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed by server",
                    ),
                });
            }
            self.parser.push(&buf[..n]);
        }
    }

    fn rejected_ehlo(&mut self, reply: Reply) -> TransportError {
        self.state = State::Closed;
        TransportError::EhloRejected {
            host: self.host.clone(),
            reply,
        }
    }

    fn protocol(&mut self, command: Stage, detail: String) -> TransportError {
        self.state = State::Closed;
        TransportError::Protocol {
            host: self.host.clone(),
            command,
            detail,
        }
    }

    /// A method called in the wrong state: a bug in the caller, reported not panicked.
    fn misuse(&self, stage: Stage) -> TransportError {
        TransportError::Protocol {
            host: self.host.clone(),
            command: stage,
            detail: format!("session is {:?}", self.state()),
        }
    }

    fn protocol_ref(&self, stage: Stage, index: usize) -> TransportError {
        TransportError::Protocol {
            host: self.host.clone(),
            command: stage,
            detail: format!("no outcome recorded for recipient {index}"),
        }
    }
}

async fn handshake(
    host: &str,
    io: Box<dyn crate::stream::Io>,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
    limit: Duration,
) -> Result<Stream, TransportError> {
    match tokio::time::timeout(limit, tls_handshake(io, name, config)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(TransportError::Tls {
            host: host.to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Err(TransportError::Timeout {
            host: host.to_string(),
            stage: Stage::TlsHandshake,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timeouts_follow_rfc5321() {
        let t = Timeouts::default();
        assert_eq!(t.greeting, Duration::from_secs(300));
        assert_eq!(t.command, Duration::from_secs(300));
        assert_eq!(t.data_init, Duration::from_secs(120));
        assert_eq!(t.data_block, Duration::from_secs(180));
        assert_eq!(t.data_end, Duration::from_secs(600));
        assert_eq!(
            Timeouts::uniform(Duration::from_secs(1)).data_end,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn logs_never_show_auth() {
        assert_eq!(loggable("AUTH PLAIN AGZvbwBiYXI=\r\n"), "AUTH <redacted>");
        assert_eq!(loggable("auth login\r\n"), "AUTH <redacted>");
        assert_eq!(loggable("MAIL FROM:<a@b>\r\n"), "MAIL FROM:<a@b>");
    }
}
