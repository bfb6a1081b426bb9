//! The message handed to a transport: envelope, DSN parameters and the body bytes.
//!
//! Transports know nothing about queues; the queue builds an [`OutboundMessage`] for each
//! attempt with the recipients it wants delivered in one transaction.

use std::sync::Arc;

/// One message to deliver in one SMTP transaction.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// Envelope sender, passed as-is inside `<...>`; empty means the null sender `<>`.
    pub mail_from: String,
    /// Envelope recipients; outcomes come back in the same order.
    pub rcpts: Vec<OutboundRcpt>,
    /// The message (headers and body), lines ending in CRLF, not dot-stuffed.
    pub body: Arc<[u8]>,
    /// The message has 8-bit content (BODY=8BITMIME, RFC 6152).
    pub eight_bit: bool,
    /// The message needs SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// The sender asked for REQUIRETLS (RFC 8689).
    pub requiretls: bool,
    /// DSN RET parameter (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// DSN ENVID parameter as received, xtext-encoded (RFC 3461 §4.4).
    pub envid: Option<String>,
}

/// One envelope recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRcpt {
    /// Recipient address, passed as-is inside `<...>`.
    pub address: String,
    /// NOTIFY parameter value as received, e.g. "SUCCESS,FAILURE" (RFC 3461 §4.1).
    pub notify: Option<String>,
    /// ORCPT parameter value as received, e.g. "rfc822;a@b" (RFC 3461 §4.2).
    pub orcpt: Option<String>,
}

impl OutboundRcpt {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// What a failure DSN should return of the message (RFC 3461 §4.3). One type from
/// submission to delivery (the queue stores it as `"Full"` / `"Hdrs"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ret {
    /// The whole message.
    Full,
    /// Headers only.
    Hdrs,
}

impl Ret {
    /// The parameter value, "FULL" or "HDRS".
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}
