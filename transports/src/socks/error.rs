//! Why a tunnel through one proxy failed: which proxy, to which target, at which step
//! of the handshake, and the proxy's own reason where it gave one (the RFC 1928 §6
//! reply code, the RFC 1929 status).
//!
//! The dialer and connector seams speak `io::Error`; a [`SocksError`] travels inside
//! one (`io::Error::other`), so its text reaches logs and queue replies unchanged and
//! `get_ref()`/`downcast` gives the value back.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// The step of the tunnel that failed, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Our TCP connection to the proxy.
    Dial,
    /// Method negotiation (RFC 1928 §3).
    Method,
    /// Username/password sub-negotiation (RFC 1929 §2).
    Auth,
    /// The CONNECT request and its reply (RFC 1928 §4, §6).
    Connect,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Dial => "dialing the proxy",
            Step::Method => "method negotiation",
            Step::Auth => "username/password authentication",
            Step::Connect => "CONNECT",
        })
    }
}

/// A failed tunnel through one proxy.
#[derive(Debug, thiserror::Error)]
#[error("SOCKS5 proxy {proxy}: connect to {target}: {failure}")]
pub struct SocksError {
    /// The proxy we went through.
    pub proxy: SocketAddr,
    /// Where the proxy was to connect.
    pub target: SocketAddr,
    /// What went wrong.
    pub failure: SocksFailure,
}

impl SocksError {
    /// The step that failed.
    pub fn step(&self) -> Step {
        self.failure.step()
    }
}

impl From<SocksError> for io::Error {
    fn from(e: SocksError) -> io::Error {
        io::Error::other(e)
    }
}

/// What went wrong, with the proxy's own code where it sent one.
#[derive(Debug, thiserror::Error)]
pub enum SocksFailure {
    /// The TCP connection to the proxy failed.
    #[error("proxy unreachable: {0}")]
    Unreachable(#[source] io::Error),
    /// The proxy did not finish the step within the configured timeout.
    #[error("timeout during {0}")]
    Timeout(Step),
    /// Reading or writing failed, or the proxy closed the connection.
    #[error("{step}: {source}")]
    Io {
        step: Step,
        #[source]
        source: io::Error,
    },
    /// The reply does not start with the version we speak.
    #[error("{step}: not a SOCKS5 proxy (version byte {version} in its reply)")]
    BadVersion { step: Step, version: u8 },
    /// RFC 1928 §3: X'FF', none of the methods we offered.
    #[error("proxy accepts none of our authentication methods")]
    NoAcceptableMethod,
    /// RFC 1928 §3: the proxy must select one of the methods we offered.
    #[error(
        "proxy chose method {chosen:#04x}, which we did not offer (we offered {})",
        offer_text(*with_credentials)
    )]
    MethodNotOffered { chosen: u8, with_credentials: bool },
    /// RFC 1929 §2: a status other than 0.
    #[error("proxy refused our username/password (status {0})")]
    AuthRefused(u8),
    /// RFC 1928 §6: a CONNECT reply other than "succeeded".
    #[error("proxy reply {code} ({})", reply_text(*code))]
    Refused { code: u8 },
    /// A reply we cannot parse.
    #[error("{step}: {detail}")]
    Malformed { step: Step, detail: String },
    /// RFC 1929 §2: ULEN and PLEN are one byte and at least 1.
    #[error("SOCKS username and password must be 1 to 255 bytes")]
    BadCredentials,
}

impl SocksFailure {
    /// The step this failure belongs to.
    pub fn step(&self) -> Step {
        match self {
            SocksFailure::Unreachable(_) => Step::Dial,
            SocksFailure::Timeout(step)
            | SocksFailure::Io { step, .. }
            | SocksFailure::BadVersion { step, .. }
            | SocksFailure::Malformed { step, .. } => *step,
            SocksFailure::NoAcceptableMethod | SocksFailure::MethodNotOffered { .. } => {
                Step::Method
            }
            SocksFailure::AuthRefused(_) | SocksFailure::BadCredentials => Step::Auth,
            SocksFailure::Refused { .. } => Step::Connect,
        }
    }
}

fn offer_text(with_credentials: bool) -> &'static str {
    if with_credentials {
        "0x02, username/password only"
    } else {
        "0x00, no authentication"
    }
}

/// The meaning of a CONNECT reply code (RFC 1928 §6).
pub fn reply_text(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}
