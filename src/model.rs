//! The queue's data model as it is stored: a message with its envelope and one entry per
//! recipient, each with its own delivery state. Shared by the spool (which persists it),
//! the queue (which schedules it) and the admin API (which shows it).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A queue message id: milliseconds since the epoch shifted left by 12 bits, plus a
/// counter, so ids grow across restarts and sort by arrival.
pub type MsgId = u64;

/// Formats an id for people and logs (16 hex digits).
pub fn format_id(id: MsgId) -> String {
    ShowId(id).to_string()
}

/// A queue id as text (16 hex digits), for formatting without a `String` of its own.
pub struct ShowId(pub MsgId);

impl std::fmt::Display for ShowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Parses an id as printed by [`format_id`].
pub fn parse_id(text: &str) -> Option<MsgId> {
    u64::from_str_radix(text.trim(), 16).ok()
}

/// The envelope parameters (the transports' type, stored as is).
pub use relaygate_transports::MailParams;

/// RET (RFC 3461 §4.3): the transports' type, stored as is.
pub use relaygate_transports::Ret;

/// The outcome of the latest attempt for a recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptInfo {
    /// When it ended (unix ms).
    pub at: i64,
    /// Transport name ("direct" when no route matched).
    pub transport: String,
    /// Remote host and IP, when a connection was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The remote's reply or our own reason.
    pub reply: String,
    /// TLS mode of the session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// Direct delivery: the addresses dialed in this attempt, per MX host, in order. The
    /// next attempt starts with the address family not used last (SPEC §2).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dialed: BTreeMap<String, Vec<IpAddr>>,
    /// The result as data, for DSNs, the admin API and failover (absent in records
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultInfo>,
    /// The SOCKS proxy the attempt went through: its transport and addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// One attempt's result as data: the reply's code and enhanced code, the command it
/// answered, who said it, the kind of failure and the remote host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInfo {
    /// The reply code (ours for failures without a remote reply: 451 or 554).
    pub code: u16,
    /// The enhanced status code (RFC 3463) as class, subject, detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<[u16; 3]>,
    /// The command the reply answered ("RCPT TO", "end of data", "connect", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The remote server said it (else it was made up here).
    #[serde(default)]
    pub remote_reply: bool,
    /// The kind of failure (`connect`, `tls`, `auth`, `recipient`, ...); none when
    /// delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The remote host name, when a host was reached or tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    /// The remote's reply as one line, when the attempt's text is an error's context
    /// around it (a refused greeting, a refused login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_line: Option<String>,
}

impl ResultInfo {
    /// The enhanced code as text ("5.1.1").
    pub fn enhanced_text(&self) -> Option<String> {
        self.enhanced.map(|[c, s, d]| format!("{c}.{s}.{d}"))
    }
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RcptState {
    /// Waiting for an attempt at `next_attempt` (unix ms).
    Pending { next_attempt: i64 },
    /// Accepted by the next hop.
    Delivered { at: i64 },
    /// Given up (a DSN went to the sender unless the sender was null).
    Failed { at: i64 },
}

impl RcptState {
    pub fn is_final(&self) -> bool {
        match self {
            RcptState::Pending { .. } => false,
            RcptState::Delivered { .. } | RcptState::Failed { .. } => true,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            RcptState::Pending { .. } => "pending",
            RcptState::Delivered { .. } => "delivered",
            RcptState::Failed { .. } => "failed",
        }
    }
}

/// Attempts kept per recipient besides the latest.
pub const HISTORY_LIMIT: usize = 16;

/// One recipient of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// NOTIFY parameter as given (RFC 3461), e.g. "SUCCESS,FAILURE".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// ORCPT parameter as given, e.g. "rfc822;a@b".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    pub state: RcptState,
    /// Attempts completed.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<AttemptInfo>,
    /// Earlier attempts, oldest first, at most [`HISTORY_LIMIT`] (the latest is `last`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptInfo>,
    /// A delayed DSN was already sent for this recipient.
    #[serde(default)]
    pub delayed_dsn_sent: bool,
}

impl Recipient {
    /// Records a finished attempt: it becomes `last`, the previous one goes to `history`.
    pub fn record_attempt(&mut self, info: AttemptInfo) {
        if let Some(prev) = self.last.take() {
            if self.history.len() >= HISTORY_LIMIT {
                self.history.remove(0);
            }
            self.history.push(prev);
        }
        self.last = Some(info);
    }

    /// Every recorded attempt, oldest first.
    pub fn attempts_log(&self) -> impl Iterator<Item = &AttemptInfo> {
        self.history.iter().chain(self.last.iter())
    }

    /// Whether the sender wants a DSN of this kind (RFC 3461 §4.1): without NOTIFY,
    /// failures and delays are reported; NOTIFY=NEVER reports nothing.
    pub fn wants_notify(&self, kind: &str) -> bool {
        match &self.notify {
            None => kind != "SUCCESS",
            Some(list) => list.split(',').any(|k| k.trim().eq_ignore_ascii_case(kind)),
        }
    }
}

/// Operator settings on a message (hold, forced transport, REQUIRETLS override).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default)]
    pub held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requiretls: Option<bool>,
}

/// A message's envelope and per-recipient state; the body is stored beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: MsgId,
    /// Arrival time (unix ms).
    pub received_at: i64,
    /// Envelope sender; empty for the null sender (DSNs).
    pub mail_from: String,
    #[serde(default)]
    pub params: MailParams,
    /// The SASL account that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Who submitted it ("helo [ip]").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Body size in bytes.
    pub size: u64,
    #[serde(default)]
    pub overrides: Overrides,
    pub rcpts: Vec<Recipient>,
    /// The `DKIM-Signature` fields made when it was queued (each ending in CRLF), put in
    /// front of the body at delivery unless the transport sets `dkim = false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<String>,
}

impl StoredMessage {
    pub fn is_done(&self) -> bool {
        self.rcpts.iter().all(|r| r.state.is_final())
    }
}

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC text for a unix-ms time, e.g. "2026-11-29T12:00:00.123Z".
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// RFC 5322 date text for a unix-ms time, in UTC, e.g. "Sun, 29 Nov 2026 12:00:00 +0000".
pub fn rfc5322_date(ms: i64) -> String {
    let mut out = String::with_capacity(32);
    push_rfc5322_date(&mut out, ms);
    out
}

/// Appends [`rfc5322_date`] to `out`.
pub fn push_rfc5322_date(out: &mut String, ms: i64) {
    use std::fmt::Write as _;
    let secs = ms.div_euclid(1000);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let start = out.len();
    let _ = write!(out, "{}", httpdate::HttpDate::from(at));
    // HTTP dates end in "GMT"; RFC 5322 §3.3 wants a numeric zone.
    if out[start..].ends_with(" GMT") {
        out.truncate(out.len() - " GMT".len());
        out.push_str(" +0000");
    }
}

// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Test fixtures shared by the modules that store and replay messages.
#[cfg(test)]
impl Recipient {
    /// A fresh pending recipient.
    pub fn pending(address: &str) -> Recipient {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
            state: RcptState::Pending { next_attempt: 0 },
            attempts: 0,
            last: None,
            history: Vec::new(),
            delayed_dsn_sent: false,
        }
    }
}

#[cfg(test)]
impl StoredMessage {
    /// A one-recipient message `a@b` → `c@d` with id `id`.
    pub fn sample(id: MsgId) -> StoredMessage {
        StoredMessage {
            dkim: None,
            id,
            received_at: 1,
            mail_from: "a@b".into(),
            params: MailParams::default(),
            account: None,
            client: None,
            size: 5,
            overrides: Overrides::default(),
            rcpts: vec![Recipient::pending("c@d")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_954_500_123), "2026-11-29T12:15:00.123Z");
        assert_eq!(
            rfc5322_date(1_795_954_500_123),
            "Sun, 29 Nov 2026 12:15:00 +0000"
        );
    }

    #[test]
    fn notify() {
        let mut r = Recipient::pending("a@b");
        assert!(r.wants_notify("FAILURE") && r.wants_notify("DELAY") && !r.wants_notify("SUCCESS"));
        r.notify = Some("NEVER".into());
        assert!(!r.wants_notify("FAILURE"));
        r.notify = Some("SUCCESS,FAILURE".into());
        assert!(r.wants_notify("FAILURE") && !r.wants_notify("DELAY"));
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id(&format_id(0xabc)), Some(0xabc));
    }
}
