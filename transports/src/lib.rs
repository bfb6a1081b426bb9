//! Outbound SMTP for relaygate: client sessions, TLS and smarthost delivery.
//!
//! This crate sends mail; it knows nothing about queues, routes or retries. The queue
//! hands a transport an [`OutboundMessage`] (envelope, DSN parameters, body) and gets
//! back either one [`RcptOutcome`] per recipient or a [`TransportError`] that applies to
//! all of them.
//!
//! # The flow of one delivery
//!
//! 1. **Connect.** A [`Connector`] opens the byte stream ([`TcpConnector`] today, a SOCKS5
//!    tunnel later) and returns it as a boxed [`stream::Io`]. For implicit TLS (port 465,
//!    RFC 8314) the TLS handshake runs right away.
//! 2. **Greeting and EHLO.** [`Session`] reads the 220 greeting and sends EHLO, falling
//!    back to HELO (no extensions) when EHLO gets a 5xx. The reply becomes
//!    [`Capabilities`] (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, STARTTLS, REQUIRETLS, DSN,
//!    AUTH, LIMITS RCPTMAX, …).
//! 3. **STARTTLS.** When offered and wanted, the session upgrades the stream with a
//!    rustls config from [`tls`] (PKIX-verified against [`TlsRoots`], or the
//!    accept-anything config in [`tls::danger`]), discards the old capabilities
//!    (RFC 3207 §4.2) and says EHLO again.
//! 4. **AUTH.** With credentials, [`Session::authenticate`] (RFC 4954) picks the first
//!    mechanism of the operator's list that the fresh capabilities offer, binds SCRAM to
//!    TLS 1.3 with `tls-exporter` where the server offers -PLUS, and verifies the SCRAM
//!    server signature before believing `235`. Mechanisms themselves are in [`sasl`].
//! 5. **Transaction.** The message is checked against the capabilities first (SIZE,
//!    8BITMIME, SMTPUTF8, REQUIRETLS: permanent errors without sending anything). Then
//!    MAIL FROM (with SIZE, BODY, SMTPUTF8, REQUIRETLS, RET, ENVID), one RCPT TO per
//!    recipient (NOTIFY, ORCPT with DSN; at most LIMITS RCPTMAX, the rest get a synthesized
//!    452 4.5.3) and DATA — in one write with PIPELINING (RFC 2920), else one by one. The
//!    body is dot-stuffed and terminated with "." (RFC 5321 §4.5.2).
//! 6. **Outcomes.** A recipient refused at RCPT gets that reply; a refused MAIL gives every
//!    recipient the MAIL reply; the DATA or end-of-data reply goes to every recipient
//!    accepted at RCPT. [`outcome::classify`] is the one place deciding temporary versus
//!    permanent.
//! 7. **Reuse.** [`SmarthostTransport`] keeps finished sessions in an idle pool; the next
//!    delivery probes one with RSET and reconnects if the probe fails.
//!
//! # Layout
//!
//! - [`reply`] — incremental reply parser (no I/O).
//! - [`ct`] — the constant-time comparison of secrets ([`ct_eq`]).
//! - [`ehlo`] — EHLO capabilities (no I/O).
//! - [`command`] — command lines and dot-stuffing (no I/O).
//! - [`message`] — what to deliver.
//! - [`outcome`] — results, errors and their severity.
//! - [`tls`] — trusted roots and rustls client configs.
//! - [`stream`] — plain/TLS streams and connectors.
//! - [`session`] — the SMTP client session and its timeouts.
//! - [`smarthost`] — smarthost delivery with a connection pool.
//! - [`dns`] — the DNSSEC-aware resolver and MX destinations.
//! - [`dane`] — DANE (RFC 7672): TLSA policy per MX host and the rustls verifier.
//! - [`mtasts`] — MTA-STS (RFC 8461): TXT record, policy parser, HTTPS fetch, cache.
//! - [`oauth2`] — access tokens for XOAUTH2/OAUTHBEARER: a token file, or our own
//!   client for the token endpoint (client-credentials and refresh-token grants).
//! - [`direct`] — direct MX delivery: hosts in order, address-family alternation, the
//!   TLS policy per host (DANE, MTA-STS, REQUIRETLS, `TLS-Required: No`; otherwise
//!   opportunistic STARTTLS with plaintext fallback), per-domain TLS status records.

pub mod capped_body;
pub mod command;
pub mod ct;
pub mod dane;
pub mod direct;
pub mod dns;
pub mod ehlo;
pub mod message;
pub mod mtasts;
pub mod oauth2;
pub mod outcome;
pub mod replies;
pub mod reply;
pub mod sasl;
pub mod session;
pub mod smarthost;
pub mod socks;
pub mod stream;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod transport;
pub mod xtext;

pub use ct::ct_eq;
pub use ehlo::Capabilities;
pub use message::{MailParams, OutboundMessage, OutboundRcpt, Ret};
pub use outcome::{classify, RcptOutcome, ReasonKind, ReplyClass, Severity, Stage, TransportError};
pub use reply::{EnhancedCode, Origin, Reply, ReplyError, ReplyParser};
pub use session::{
    AuthParams, AuthPlan, BindingUse, ConnectParams, Secret, Session, SessionState, Timeouts,
};
pub use smarthost::{
    AuthProbe, Delivery, RemoteInfo, SmarthostAuth, SmarthostConfig, SmarthostTls,
    SmarthostTransport, TlsClientConfigs,
};
pub use stream::{Connector, Io, Stream, TcpConnector};
pub use tls::{TlsInfo, TlsRoots, TlsSetupError};
pub use transport::{Batch, BatchResult, RcptResult, RemoteEnd, Transport, Verdict};
