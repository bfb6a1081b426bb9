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
    /// BODY, SMTPUTF8, REQUIRETLS (as in force for this attempt), RET, ENVID, and
    /// `TLS-Required: No`.
    pub params: MailParams,
}

/// What the client asked of the message in MAIL FROM parameters, and what the message
/// says of itself: one type from submission through the queue's records to the SMTP
/// client (which encodes them at the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailParams {
    /// The content has 8-bit bytes or was declared BODY=8BITMIME.
    #[serde(default)]
    pub eight_bit: bool,
    /// SMTPUTF8 was given (RFC 6531).
    #[serde(default)]
    pub smtputf8: bool,
    /// REQUIRETLS was given (RFC 8689).
    #[serde(default)]
    pub requiretls: bool,
    /// RET=FULL or RET=HDRS (RFC 3461).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// ENVID, xtext-decoded (RFC 3461 §4.4); encoded again at the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// The message carries `TLS-Required: No` and did not ask REQUIRETLS (RFC 8689 §5):
    /// the sender prefers delivery over TLS policy failures.
    #[serde(default)]
    pub tls_required_no: bool,
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
