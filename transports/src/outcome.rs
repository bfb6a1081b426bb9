//! Delivery results as data, and the one place where "temporary" versus "permanent" is
//! decided.
//!
//! Per-recipient results are [`RcptOutcome`] values; failures that hit every recipient of
//! an attempt (connection, TLS, greeting, a message the server cannot take) are
//! [`TransportError`]s. [`classify`] and [`TransportError::severity`] are the only
//! functions that map replies and errors to a [`Severity`]; they match exhaustively on our
//! own enums so that a new variant forces a decision.

use std::{fmt, io};

use crate::{
    oauth2::TokenError,
    reply::{EnhancedCode, Reply},
    sasl::{BearerError, Mechanism, SaslError},
};

/// Whether a failure should be retried later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Retry later (4xx, network trouble).
    Temporary,
    /// Do not retry; the sender gets a failure DSN (5xx, message defects).
    Permanent,
}

/// How a final reply to a command reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    /// 2xx: done.
    Success,
    /// Anything else, with its severity.
    Failure(Severity),
}

/// Classifies a reply that should complete a command (MAIL, RCPT, end of data, EHLO, …).
///
/// 2xx is success, 5xx permanent (RFC 5321 §4.2.1). 4xx is temporary, and so is any other
/// code where a completion was expected (1xx/3xx): a confused server is worth a retry.
pub fn classify(reply: &Reply) -> ReplyClass {
    match reply.code / 100 {
        2 => ReplyClass::Success,
        5 => ReplyClass::Failure(Severity::Permanent),
        _ => ReplyClass::Failure(Severity::Temporary),
    }
}

/// The result for one recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The server accepted responsibility (2xx after the end of data).
    Delivered(Reply),
    /// Try again later; the reply says why.
    Transient(Reply),
    /// Give up; the reply goes into the failure DSN.
    Permanent(Reply),
}

impl RcptOutcome {
    /// Wraps a reply according to [`classify`].
    pub fn from_reply(reply: Reply) -> Self {
        match classify(&reply) {
            ReplyClass::Success => RcptOutcome::Delivered(reply),
            ReplyClass::Failure(Severity::Temporary) => RcptOutcome::Transient(reply),
            ReplyClass::Failure(Severity::Permanent) => RcptOutcome::Permanent(reply),
        }
    }

    /// The remote (or synthesized) reply behind this outcome.
    pub fn reply(&self) -> &Reply {
        match self {
            RcptOutcome::Delivered(r) | RcptOutcome::Transient(r) | RcptOutcome::Permanent(r) => r,
        }
    }

    /// `None` when delivered, else the failure's severity.
    pub fn severity(&self) -> Option<Severity> {
        match self {
            RcptOutcome::Delivered(_) => None,
            RcptOutcome::Transient(_) => Some(Severity::Temporary),
            RcptOutcome::Permanent(_) => Some(Severity::Permanent),
        }
    }
}

/// Where in the SMTP exchange something happened (for errors and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// TCP (or proxy) connect, including name resolution.
    Connect,
    /// The TLS handshake (implicit TLS or after STARTTLS).
    TlsHandshake,
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO.
    Ehlo,
    /// HELO (fallback when EHLO is refused).
    Helo,
    /// STARTTLS.
    StartTls,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// The DATA command.
    Data,
    /// Sending the message body.
    DataBlock,
    /// Waiting for the reply to the final ".".
    DataEnd,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
    /// AUTH and its SASL exchange (RFC 4954).
    Auth,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::TlsHandshake => "TLS handshake",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::StartTls => "STARTTLS",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::DataBlock => "message data",
            Stage::DataEnd => "end of data",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
            Stage::Auth => "AUTH",
        })
    }
}

/// What kind of failure a result is, for the queue's decisions (failover, DSNs, logs).
/// Decided here and nowhere else: [`ReasonKind::of_reply`] for replies,
/// [`TransportError::reason`] for errors that end a whole attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// No connection (resolution, refused, unreachable, proxy).
    Connect,
    /// The greeting or EHLO was refused.
    Greeting,
    /// TLS could not be set up or verified, or a policy needing it could not be met.
    Tls,
    /// Login refused or impossible.
    Auth,
    /// The remote asks us to slow down (congestion, rate).
    Throttle,
    /// The remote's sending quota for us is used up (provider replies; classified by
    /// the provider table).
    Quota,
    /// Refused by policy (sender, security, reputation).
    Policy,
    /// This recipient's address or mailbox.
    Recipient,
    /// This message (size, content, encoding, international addresses).
    Message,
    /// The remote broke the protocol, or the reply says nothing more specific.
    Protocol,
    /// A failure on our side (no such transport, local storage).
    Local,
}

impl ReasonKind {
    /// The label used in records, the admin API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::Connect => "connect",
            ReasonKind::Greeting => "greeting",
            ReasonKind::Tls => "tls",
            ReasonKind::Auth => "auth",
            ReasonKind::Throttle => "throttle",
            ReasonKind::Quota => "quota",
            ReasonKind::Policy => "policy",
            ReasonKind::Recipient => "recipient",
            ReasonKind::Message => "message",
            ReasonKind::Protocol => "protocol",
            ReasonKind::Local => "local",
        }
    }

    /// Reads a label back (records, the admin API).
    pub fn from_label(s: &str) -> Option<ReasonKind> {
        [
            ReasonKind::Connect,
            ReasonKind::Greeting,
            ReasonKind::Tls,
            ReasonKind::Auth,
            ReasonKind::Throttle,
            ReasonKind::Quota,
            ReasonKind::Policy,
            ReasonKind::Recipient,
            ReasonKind::Message,
            ReasonKind::Protocol,
            ReasonKind::Local,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The kind a failure at `stage` has whatever was said: the stages before the
    /// message is offered (connect, greeting, TLS, AUTH); `None` for the transaction.
    pub fn of_stage(stage: Stage) -> Option<ReasonKind> {
        match stage {
            Stage::Connect => Some(ReasonKind::Connect),
            Stage::Greeting | Stage::Ehlo | Stage::Helo => Some(ReasonKind::Greeting),
            Stage::TlsHandshake | Stage::StartTls => Some(ReasonKind::Tls),
            Stage::Auth => Some(ReasonKind::Auth),
            Stage::Mail
            | Stage::Rcpt
            | Stage::Data
            | Stage::DataBlock
            | Stage::DataEnd
            | Stage::Rset
            | Stage::Quit => None,
        }
    }

    /// The kind of a negative reply: by the command it answered where that decides it
    /// (greeting, TLS, AUTH), else by its enhanced code's subject (RFC 3463 §3), else
    /// by the command again.
    pub fn of_reply(reply: &Reply) -> ReasonKind {
        if let Some(kind) = reply.stage.and_then(ReasonKind::of_stage) {
            return kind;
        }
        if let Some(e) = reply.enhanced {
            match (e.subject, e.detail) {
                // X.2.3: message length exceeds an administrative limit.
                (2, 3) => return ReasonKind::Message,
                (1, _) | (2, _) => return ReasonKind::Recipient,
                (3, 4) => return ReasonKind::Message,
                // X.4.5: mail system congestion.
                (4, 5) => return ReasonKind::Throttle,
                (4, _) => return ReasonKind::Connect,
                // X.5.3: too many recipients (this one, not now).
                (5, 3) => return ReasonKind::Recipient,
                (6, _) => return ReasonKind::Message,
                (7, 8) => return ReasonKind::Auth,
                (7, _) => return ReasonKind::Policy,
                _ => {}
            }
        }
        match reply.stage {
            Some(Stage::Rcpt) => ReasonKind::Recipient,
            Some(Stage::Mail) => ReasonKind::Policy,
            Some(Stage::Data | Stage::DataBlock | Stage::DataEnd) => ReasonKind::Message,
            Some(_) | None => ReasonKind::Protocol,
        }
    }
}

/// A failure that ends the attempt for every recipient in it.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Could not connect (resolution or every address failed).
    #[error("{host}:{port}: connect failed: {source}")]
    Connect {
        /// The host we tried.
        host: String,
        /// The port we tried.
        port: u16,
        /// The last error.
        #[source]
        source: io::Error,
    },
    /// The remote did not answer within the RFC 5321 §4.5.3.2 timeout for this stage.
    #[error("{host}: timeout during {stage}")]
    Timeout {
        /// Remote host.
        host: String,
        /// Where we were waiting.
        stage: Stage,
    },
    /// Reading or writing failed, including the server closing the connection.
    #[error("{host}: I/O error during {stage}: {source}")]
    Io {
        /// Remote host.
        host: String,
        /// Where it failed.
        stage: Stage,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// TLS handshake or certificate verification failed.
    #[error("{host}: TLS failed: {reason}")]
    Tls {
        /// Remote host.
        host: String,
        /// What rustls reported.
        reason: String,
    },
    /// We require STARTTLS but the server does not offer it.
    #[error("{host}: STARTTLS required but not offered")]
    StartTlsUnavailable {
        /// Remote host.
        host: String,
    },
    /// The server refused STARTTLS. The session is still usable in plaintext.
    #[error("{host}: STARTTLS refused: {reply}")]
    StartTlsRejected {
        /// Remote host.
        host: String,
        /// The server's reply.
        reply: Reply,
    },
    /// The greeting was not 220.
    #[error("{host}: greeting rejected: {reply}")]
    GreetingRejected {
        /// Remote host.
        host: String,
        /// The greeting.
        reply: Reply,
    },
    /// EHLO (and the HELO fallback) were refused.
    #[error("{host}: EHLO/HELO rejected: {reply}")]
    EhloRejected {
        /// Remote host.
        host: String,
        /// The last reply.
        reply: Reply,
    },
    /// The server broke the protocol (malformed reply, unexpected code, data ahead of TLS).
    #[error("{host}: protocol error after {command}: {detail}")]
    Protocol {
        /// Remote host.
        host: String,
        /// The command we had sent.
        command: Stage,
        /// What went wrong, including the reply where there is one.
        detail: String,
    },
    /// The server's SIZE limit is below the message size (RFC 1870 §6).
    #[error("{host}: message of {size} bytes exceeds the server's SIZE limit of {limit}")]
    MessageTooLarge {
        /// Remote host.
        host: String,
        /// Message size in bytes.
        size: u64,
        /// The announced limit.
        limit: u64,
    },
    /// The message is 8-bit but the server lacks 8BITMIME (RFC 6152 §3).
    #[error("{host}: message needs 8BITMIME, which the server does not offer")]
    EightBitUnsupported {
        /// Remote host.
        host: String,
    },
    /// The message needs SMTPUTF8 but the server lacks it (RFC 6531 §3.4).
    #[error("{host}: message needs SMTPUTF8, which the server does not offer")]
    SmtpUtf8Unsupported {
        /// Remote host.
        host: String,
    },
    /// The message asks REQUIRETLS but the session is not TLS or the server lacks the
    /// extension (RFC 8689 §4.2.1).
    #[error("{host}: message requires TLS (REQUIRETLS), which this session cannot honour")]
    RequireTlsUnsupported {
        /// Remote host.
        host: String,
    },
    /// The server refused AUTH. A 535 (RFC 4954 §6: credentials invalid) is temporary
    /// for the message, since the operator may fix the password; the session is not
    /// retried with a weaker mechanism. 454 and other 4xx are temporary too.
    #[error("{host}: AUTH {mechanism} refused: {reply}{hint}", hint = auth_hint(.reply, .bearer.as_deref()))]
    AuthFailed {
        /// Remote host.
        host: String,
        /// The mechanism we used.
        mechanism: Mechanism,
        /// The server's reply.
        reply: Reply,
        /// For XOAUTH2/OAUTHBEARER: the JSON error the server sent before refusing
        /// (RFC 7628 §3.2.2), with its status and scope.
        bearer: Option<Box<BearerError>>,
    },
    /// No access token for a bearer-token mechanism: the token file or the token
    /// endpoint failed. Temporary: the operator or the provider can fix it.
    #[error("{host}: AUTH {mechanism}: no OAuth2 access token: {source}")]
    Token {
        /// Remote host.
        host: String,
        /// The mechanism that needed the token.
        mechanism: Mechanism,
        /// What failed.
        #[source]
        source: TokenError,
    },
    /// No mechanism of our preference list is advertised after TLS (or AUTH is not
    /// offered at all while credentials are configured). Permanent: retrying will not
    /// make the lists meet (SPEC §2).
    #[error(
        "{host}: no common AUTH mechanism: we accept [{ours}], the server offers [{offered}]{note}",
        ours = join(.ours.iter().map(|m| m.as_str())),
        offered = join(.offered.iter().map(String::as_str)),
        note = if *.plus_needs_binding {
            " (its -PLUS mechanisms need a TLS 1.3 channel binding, which this connection lacks)"
        } else {
            ""
        }
    )]
    NoCommonMechanism {
        /// Remote host.
        host: String,
        /// Our preference list.
        ours: Vec<Mechanism>,
        /// What the server advertised after TLS, as received.
        offered: Vec<String>,
        /// A -PLUS mechanism matched, but this connection has no channel binding.
        plus_needs_binding: bool,
    },
    /// Credentials would travel over an unencrypted connection, and the operator did
    /// not allow that (`no_starttls`).
    #[error("{host}: refusing to send credentials without TLS (set no_starttls to allow it)")]
    AuthWithoutTls {
        /// Remote host.
        host: String,
    },
    /// The SASL exchange failed on our side: a server message failed a check (SCRAM
    /// server signature, nonce, salt, iteration count), the server reported an error,
    /// or our credentials are refused by SASLprep.
    #[error("{host}: AUTH {mechanism}: {source}")]
    Sasl {
        /// Remote host.
        host: String,
        /// The mechanism we used.
        mechanism: Mechanism,
        /// What the mechanism reported.
        #[source]
        source: SaslError,
    },
}

fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(" ")
}

fn auth_hint(reply: &Reply, bearer: Option<&BearerError>) -> String {
    match bearer {
        Some(b) => format!(" (the bearer token was refused: {b})"),
        None if reply.code == 535 => {
            " (the credentials were refused: check the transport's username and password)".into()
        }
        None => String::new(),
    }
}

impl TransportError {
    /// Temporary or permanent, for every recipient of the attempt.
    pub fn severity(&self) -> Severity {
        match self {
            TransportError::Connect { .. }
            | TransportError::Timeout { .. }
            | TransportError::Io { .. }
            | TransportError::Tls { .. }
            | TransportError::StartTlsUnavailable { .. }
            | TransportError::StartTlsRejected { .. }
            | TransportError::Protocol { .. }
            | TransportError::AuthWithoutTls { .. }
            | TransportError::Token { .. }
            | TransportError::Sasl { .. } => Severity::Temporary,
            // RFC 4954 §6: 535 means the credentials are invalid. The operator may fix
            // them, so the message waits rather than bounces.
            TransportError::AuthFailed { reply, .. } if reply.code == 535 => Severity::Temporary,
            TransportError::GreetingRejected { reply, .. }
            | TransportError::AuthFailed { reply, .. }
            | TransportError::EhloRejected { reply, .. } => match classify(reply) {
                // A "successful" rejection cannot happen; retry rather than bounce.
                ReplyClass::Success => Severity::Temporary,
                ReplyClass::Failure(s) => s,
            },
            TransportError::MessageTooLarge { .. }
            | TransportError::EightBitUnsupported { .. }
            | TransportError::SmtpUtf8Unsupported { .. }
            | TransportError::RequireTlsUnsupported { .. }
            | TransportError::NoCommonMechanism { .. } => Severity::Permanent,
        }
    }

    /// The enhanced status code (RFC 3463) that describes this failure in a DSN: the
    /// remote's own when it gave one, else ours.
    pub fn status_code(&self) -> String {
        self.status().to_string()
    }

    /// [`TransportError::status_code`] as data.
    pub fn status(&self) -> EnhancedCode {
        let class = match self.severity() {
            Severity::Temporary => 4,
            Severity::Permanent => 5,
        };
        if let TransportError::AuthFailed { reply, .. } = self {
            // A 535 is permanent for the server but temporary for us: keep its detail
            // with our class, so a delayed DSN does not say 5.x.
            if let Some(e) = reply.enhanced {
                return EnhancedCode::new(class, e.subject, e.detail);
            }
        }
        if let Some(e) = self.reply().and_then(|r| r.enhanced) {
            return e;
        }
        let (subject, detail) = match self {
            TransportError::Connect { .. } => (4, 1),
            TransportError::Timeout { .. } | TransportError::Io { .. } => (4, 2),
            TransportError::Tls { .. }
            | TransportError::StartTlsUnavailable { .. }
            | TransportError::StartTlsRejected { .. } => (7, 10),
            TransportError::GreetingRejected { .. } | TransportError::EhloRejected { .. } => (0, 0),
            TransportError::Protocol { .. } => (5, 0),
            TransportError::MessageTooLarge { .. } => (3, 4),
            TransportError::EightBitUnsupported { .. } => (6, 3),
            TransportError::SmtpUtf8Unsupported { .. } => (6, 7),
            // RFC 8689 §5: REQUIRETLS could not be honoured.
            TransportError::RequireTlsUnsupported { .. } => (7, 30),
            // RFC 4954 §6: 5.7.8 authentication credentials invalid.
            TransportError::AuthFailed { .. } => (7, 8),
            // RFC 3463: X.7.4 security features not supported.
            TransportError::NoCommonMechanism { .. } => (7, 4),
            // RFC 5248: X.7.11 encryption required for the authentication mechanism.
            TransportError::AuthWithoutTls { .. } => (7, 11),
            TransportError::Sasl { .. } => (7, 0),
            // RFC 4954 §6: 454 4.7.0 temporary authentication failure.
            TransportError::Token { .. } => (7, 0),
        };
        EnhancedCode::new(class, subject, detail)
    }

    /// Where in the exchange it happened.
    pub fn stage(&self) -> Stage {
        match self {
            TransportError::Connect { .. } => Stage::Connect,
            TransportError::Timeout { stage, .. } | TransportError::Io { stage, .. } => *stage,
            TransportError::Tls { .. } => Stage::TlsHandshake,
            TransportError::StartTlsUnavailable { .. }
            | TransportError::StartTlsRejected { .. } => Stage::StartTls,
            TransportError::GreetingRejected { .. } => Stage::Greeting,
            TransportError::EhloRejected { .. } => Stage::Ehlo,
            TransportError::Protocol { command, .. } => *command,
            TransportError::MessageTooLarge { .. }
            | TransportError::EightBitUnsupported { .. }
            | TransportError::SmtpUtf8Unsupported { .. }
            | TransportError::RequireTlsUnsupported { .. } => Stage::Mail,
            TransportError::AuthFailed { .. }
            | TransportError::NoCommonMechanism { .. }
            | TransportError::AuthWithoutTls { .. }
            | TransportError::Token { .. }
            | TransportError::Sasl { .. } => Stage::Auth,
        }
    }

    /// The kind of failure (see [`ReasonKind`]).
    pub fn reason(&self) -> ReasonKind {
        match self {
            TransportError::Connect { .. } => ReasonKind::Connect,
            TransportError::Timeout { stage, .. } | TransportError::Io { stage, .. } => {
                ReasonKind::of_stage(*stage).unwrap_or(ReasonKind::Protocol)
            }
            TransportError::Tls { .. }
            | TransportError::StartTlsUnavailable { .. }
            | TransportError::StartTlsRejected { .. }
            | TransportError::RequireTlsUnsupported { .. } => ReasonKind::Tls,
            TransportError::GreetingRejected { reply, .. }
            | TransportError::EhloRejected { reply, .. } => match reply.enhanced {
                Some(e) if (e.subject, e.detail) == (4, 5) => ReasonKind::Throttle,
                _ => ReasonKind::Greeting,
            },
            TransportError::Protocol { .. } => ReasonKind::Protocol,
            TransportError::MessageTooLarge { .. }
            | TransportError::EightBitUnsupported { .. }
            | TransportError::SmtpUtf8Unsupported { .. } => ReasonKind::Message,
            TransportError::AuthFailed { .. }
            | TransportError::NoCommonMechanism { .. }
            | TransportError::AuthWithoutTls { .. }
            | TransportError::Token { .. }
            | TransportError::Sasl { .. } => ReasonKind::Auth,
        }
    }

    /// The error as a reply for a result: the remote's reply when there is one, else a
    /// reply made up here (origin `Local`) with our status and the error's text.
    pub fn as_reply(&self) -> Reply {
        match self.reply() {
            Some(r) => {
                let mut r = r.clone();
                r.stage = r.stage.or(Some(self.stage()));
                r
            }
            None => {
                let code = match self.severity() {
                    Severity::Temporary => 451,
                    Severity::Permanent => 554,
                };
                Reply::new(code, Some(self.status()), &self.to_string()).at(self.stage())
            }
        }
    }

    /// The remote reply behind this error, if there is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            TransportError::StartTlsRejected { reply, .. }
            | TransportError::GreetingRejected { reply, .. }
            | TransportError::EhloRejected { reply, .. }
            | TransportError::AuthFailed { reply, .. } => Some(reply),
            TransportError::Connect { .. }
            | TransportError::Timeout { .. }
            | TransportError::Io { .. }
            | TransportError::Tls { .. }
            | TransportError::StartTlsUnavailable { .. }
            | TransportError::Protocol { .. }
            | TransportError::MessageTooLarge { .. }
            | TransportError::EightBitUnsupported { .. }
            | TransportError::SmtpUtf8Unsupported { .. }
            | TransportError::RequireTlsUnsupported { .. }
            | TransportError::NoCommonMechanism { .. }
            | TransportError::AuthWithoutTls { .. }
            | TransportError::Token { .. }
            | TransportError::Sasl { .. } => None,
        }
    }

    /// The SASL mechanism an AUTH error is about, if it is one and one was chosen.
    pub fn auth_mechanism(&self) -> Option<Mechanism> {
        match self {
            TransportError::AuthFailed { mechanism, .. }
            | TransportError::Token { mechanism, .. }
            | TransportError::Sasl { mechanism, .. } => Some(*mechanism),
            TransportError::Connect { .. }
            | TransportError::Timeout { .. }
            | TransportError::Io { .. }
            | TransportError::Tls { .. }
            | TransportError::StartTlsUnavailable { .. }
            | TransportError::StartTlsRejected { .. }
            | TransportError::GreetingRejected { .. }
            | TransportError::EhloRejected { .. }
            | TransportError::Protocol { .. }
            | TransportError::MessageTooLarge { .. }
            | TransportError::EightBitUnsupported { .. }
            | TransportError::SmtpUtf8Unsupported { .. }
            | TransportError::RequireTlsUnsupported { .. }
            | TransportError::NoCommonMechanism { .. }
            | TransportError::AuthWithoutTls { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16) -> Reply {
        Reply::new(code, None, "x")
    }

    #[test]
    fn classify_table() {
        let cases = [
            (250, ReplyClass::Success),
            (251, ReplyClass::Success),
            (354, ReplyClass::Failure(Severity::Temporary)),
            (421, ReplyClass::Failure(Severity::Temporary)),
            (450, ReplyClass::Failure(Severity::Temporary)),
            (452, ReplyClass::Failure(Severity::Temporary)),
            (500, ReplyClass::Failure(Severity::Permanent)),
            (550, ReplyClass::Failure(Severity::Permanent)),
            (554, ReplyClass::Failure(Severity::Permanent)),
        ];
        for (code, want) in cases {
            assert_eq!(classify(&reply(code)), want, "{code}");
        }
    }

    #[test]
    fn outcome_from_reply() {
        assert_eq!(
            RcptOutcome::from_reply(reply(250)),
            RcptOutcome::Delivered(reply(250))
        );
        assert_eq!(
            RcptOutcome::from_reply(reply(452)),
            RcptOutcome::Transient(reply(452))
        );
        assert_eq!(
            RcptOutcome::from_reply(reply(550)),
            RcptOutcome::Permanent(reply(550))
        );
        assert_eq!(RcptOutcome::from_reply(reply(550)).reply().code, 550);
        assert_eq!(RcptOutcome::from_reply(reply(250)).severity(), None);
    }

    #[test]
    fn error_severity_table() {
        let h = || "mx.example".to_string();
        let io = || io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let cases = [
            (
                TransportError::Connect {
                    host: h(),
                    port: 25,
                    source: io(),
                },
                Severity::Temporary,
            ),
            (
                TransportError::Timeout {
                    host: h(),
                    stage: Stage::DataEnd,
                },
                Severity::Temporary,
            ),
            (
                TransportError::Io {
                    host: h(),
                    stage: Stage::Rcpt,
                    source: io(),
                },
                Severity::Temporary,
            ),
            (
                TransportError::Tls {
                    host: h(),
                    reason: "bad cert".into(),
                },
                Severity::Temporary,
            ),
            (
                TransportError::StartTlsUnavailable { host: h() },
                Severity::Temporary,
            ),
            (
                TransportError::StartTlsRejected {
                    host: h(),
                    reply: reply(554),
                },
                Severity::Temporary,
            ),
            (
                TransportError::GreetingRejected {
                    host: h(),
                    reply: reply(421),
                },
                Severity::Temporary,
            ),
            (
                TransportError::GreetingRejected {
                    host: h(),
                    reply: reply(554),
                },
                Severity::Permanent,
            ),
            (
                TransportError::EhloRejected {
                    host: h(),
                    reply: reply(550),
                },
                Severity::Permanent,
            ),
            (
                TransportError::Protocol {
                    host: h(),
                    command: Stage::Mail,
                    detail: "garbage".into(),
                },
                Severity::Temporary,
            ),
            (
                TransportError::MessageTooLarge {
                    host: h(),
                    size: 10,
                    limit: 5,
                },
                Severity::Permanent,
            ),
            (
                TransportError::EightBitUnsupported { host: h() },
                Severity::Permanent,
            ),
            (
                TransportError::SmtpUtf8Unsupported { host: h() },
                Severity::Permanent,
            ),
            (
                TransportError::RequireTlsUnsupported { host: h() },
                Severity::Permanent,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.severity(), want, "{err}");
        }
    }

    #[test]
    fn error_messages_carry_context() {
        let e = TransportError::EhloRejected {
            host: "mx.example".into(),
            reply: Reply::new(
                550,
                Some(crate::reply::EnhancedCode::new(5, 7, 1)),
                "go away",
            ),
        };
        assert_eq!(
            e.to_string(),
            "mx.example: EHLO/HELO rejected: 550 5.7.1 go away"
        );
        assert_eq!(e.reply().map(|r| r.code), Some(550));
    }
}
