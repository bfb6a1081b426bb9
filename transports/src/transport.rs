//! The one seam between the queue and every way out. A [`Transport`] (direct MX
//! delivery, the same through a SOCKS5 proxy, or a smarthost) takes a [`Batch`] — one
//! message for some recipients — and returns a [`BatchResult`]: one structured
//! [`RcptResult`] per recipient, in order. Nothing here knows about the queue; the caller
//! decides what a result means for retries and DSNs, reading fields, never text.
//!
//! A result carries the verdict (delivered / temporary / permanent), the reply as data
//! (code, enhanced code, lines, the command it answered, whether the remote said it),
//! a [`ReasonKind`] (decided in `outcome.rs`, the one place for classification), and the
//! remote end. Metrics a kind owns (DANE, MTA-STS, connections) are emitted by the kind.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use crate::direct::DialedIps;
use crate::message::OutboundMessage;
use crate::outcome::{RcptOutcome, ReasonKind, Severity, TransportError};
use crate::reply::{EnhancedCode, Origin, Reply};

/// One message for some recipients, all through one transport (for direct delivery:
/// all at one domain).
#[derive(Debug, Clone)]
pub struct Batch {
    pub message: OutboundMessage,
    /// The recipients' domain (ASCII), for transports that route by it.
    pub domain: String,
    /// This attempt's number, 1 for the first.
    pub attempt: u32,
    /// Addresses dialed per host on earlier attempts (direct delivery alternates the
    /// address family).
    pub dialed: DialedIps,
}

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The next hop took responsibility.
    Delivered,
    /// Try again later.
    Temporary,
    /// Give up; the sender gets a DSN.
    Permanent,
}

impl Verdict {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Temporary => "temporary",
            Verdict::Permanent => "permanent",
        }
    }
}

/// The remote end of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEnd {
    /// Host name as configured or found (MX name, smarthost name, address literal).
    pub host: String,
    /// The address connected to, when a connection was made.
    pub ip: Option<IpAddr>,
    /// The TLS mode of the session ("verified", "verified+dane", "none", ...).
    pub tls: String,
}

impl std::fmt::Display for RemoteEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{} [{ip}]", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// The result for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    pub verdict: Verdict,
    /// Why it failed (none when delivered).
    pub reason: Option<ReasonKind>,
    /// The reply behind the verdict: the remote's, or one we made up (`origin` Local)
    /// for failures without a reply (connect, TLS, our own checks).
    pub reply: Reply,
    /// Who answered, when a host was reached or tried.
    pub remote: Option<RemoteEnd>,
    /// For a failure that ended the whole attempt: the error as one line with its
    /// status and context ("4.4.1 mx.example:25: connect failed: ...").
    pub context: Option<String>,
}

impl RcptResult {
    /// From a per-recipient outcome of a session.
    pub fn from_outcome(outcome: RcptOutcome, remote: Option<RemoteEnd>) -> RcptResult {
        let (verdict, reply) = match outcome {
            RcptOutcome::Delivered(r) => (Verdict::Delivered, r),
            RcptOutcome::Transient(r) => (Verdict::Temporary, r),
            RcptOutcome::Permanent(r) => (Verdict::Permanent, r),
        };
        let reason = match verdict {
            Verdict::Delivered => None,
            Verdict::Temporary | Verdict::Permanent => Some(ReasonKind::of_reply(&reply)),
        };
        RcptResult {
            verdict,
            reason,
            reply,
            remote,
            context: None,
        }
    }

    /// From an error that ended the attempt for every recipient.
    pub fn from_error(e: &TransportError, remote: Option<RemoteEnd>) -> RcptResult {
        RcptResult {
            verdict: verdict_of(e.severity()),
            reason: Some(e.reason()),
            reply: e.as_reply(),
            remote,
            context: Some(format!("{} {e}", e.status_code())),
        }
    }

    /// A failure on this side before any remote was involved (no such transport, the
    /// spool unreadable): temporary, reason `Local`.
    pub fn local(status: EnhancedCode, text: &str) -> RcptResult {
        let code = if status.class == 5 { 554 } else { 451 };
        RcptResult {
            verdict: if status.class == 5 {
                Verdict::Permanent
            } else {
                Verdict::Temporary
            },
            reason: Some(ReasonKind::Local),
            reply: Reply::new(code, Some(status), text),
            remote: None,
            context: Some(format!("{status} {text}")),
        }
    }

    /// The result as one line for people: the context of an error, else the reply
    /// ("550 5.1.1 no such user").
    pub fn text(&self) -> String {
        match &self.context {
            Some(c) => c.clone(),
            None => self.reply.to_string(),
        }
    }

    /// Applies provider classification: a failure whose reply a rule matches takes the
    /// rule's kind; throttle, quota and auth are never permanent for the recipient,
    /// whatever the code (the account or the provider is at fault, not the address).
    pub fn classify_with(&mut self, rules: &crate::replies::ReplyRules) {
        if self.verdict == Verdict::Delivered {
            return;
        }
        if let Some(kind) = rules.classify(&self.reply) {
            self.reason = Some(kind);
            if matches!(
                kind,
                ReasonKind::Throttle | ReasonKind::Quota | ReasonKind::Auth
            ) {
                self.verdict = Verdict::Temporary;
            }
        }
    }

    /// The remote said the reply (it was not made up here).
    pub fn remote_reply(&self) -> bool {
        self.reply.origin == Origin::Remote
    }
}

fn verdict_of(s: Severity) -> Verdict {
    match s {
        Severity::Temporary => Verdict::Temporary,
        Severity::Permanent => Verdict::Permanent,
    }
}

/// The result of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchResult {
    /// One per recipient of the batch, in order.
    pub rcpts: Vec<RcptResult>,
    /// Addresses dialed in this attempt, per host (for the next attempt's ordering).
    pub dialed: DialedIps,
}

impl BatchResult {
    /// Every recipient of `batch` gets the same result.
    pub fn all(batch: &Batch, result: RcptResult) -> BatchResult {
        BatchResult {
            rcpts: vec![result; batch.message.rcpts.len()],
            dialed: DialedIps::new(),
        }
    }
}

/// A boxed future, for object-safe async.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way out.
pub trait Transport: Send + Sync {
    /// The kind, for logs ("direct", "socks", "smarthost").
    fn kind(&self) -> &'static str;

    /// Where concurrency limits count attempts through this transport named `name` for
    /// recipients at `domain`: one smarthost is one destination; direct delivery has
    /// one per recipient domain.
    fn destination(&self, name: &str, domain: &str) -> String;

    /// Makes one attempt for the batch.
    fn deliver<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, BatchResult>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Stage;

    fn remote(code: u16, enhanced: Option<EnhancedCode>, stage: Stage) -> Reply {
        let mut r = Reply::new(code, enhanced, "text").at(stage);
        r.origin = Origin::Remote;
        r
    }

    #[test]
    fn reasons_of_replies() {
        let e = |c, s, d| Some(EnhancedCode::new(c, s, d));
        for (reply, want) in [
            (remote(550, e(5, 1, 1), Stage::Rcpt), ReasonKind::Recipient),
            (remote(552, e(5, 2, 2), Stage::Rcpt), ReasonKind::Recipient),
            (remote(552, e(5, 3, 4), Stage::DataEnd), ReasonKind::Message),
            (remote(451, e(4, 4, 5), Stage::Rcpt), ReasonKind::Throttle),
            (remote(550, e(5, 7, 1), Stage::Mail), ReasonKind::Policy),
            (remote(554, None, Stage::DataEnd), ReasonKind::Message),
            (remote(550, None, Stage::Rcpt), ReasonKind::Recipient),
            (remote(553, None, Stage::Mail), ReasonKind::Policy),
            (
                remote(421, e(4, 7, 0), Stage::Greeting),
                ReasonKind::Greeting,
            ),
            (remote(535, e(5, 7, 8), Stage::Auth), ReasonKind::Auth),
            (remote(452, e(4, 5, 3), Stage::Rcpt), ReasonKind::Recipient),
        ] {
            assert_eq!(ReasonKind::of_reply(&reply), want, "{reply}");
            assert_eq!(ReasonKind::from_label(want.as_str()), Some(want));
        }
    }

    #[test]
    fn results_from_outcomes_and_errors() {
        let r = RcptResult::from_outcome(
            RcptOutcome::Permanent(remote(550, Some(EnhancedCode::new(5, 1, 1)), Stage::Rcpt)),
            None,
        );
        assert_eq!(r.verdict, Verdict::Permanent);
        assert_eq!(r.reason, Some(ReasonKind::Recipient));
        assert!(r.remote_reply());
        assert_eq!(r.reply.stage, Some(Stage::Rcpt));
        assert_eq!(r.text(), "550 5.1.1 text");

        // An error without a reply: a local reply with our status, the error as text.
        let e = TransportError::Connect {
            host: "mx.example".into(),
            port: 25,
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let r = RcptResult::from_error(&e, None);
        assert_eq!(r.verdict, Verdict::Temporary);
        assert_eq!(r.reason, Some(ReasonKind::Connect));
        assert!(!r.remote_reply());
        assert_eq!(r.reply.code, 451);
        assert_eq!(r.reply.enhanced, Some(EnhancedCode::new(4, 4, 1)));
        assert_eq!(r.reply.stage, Some(Stage::Connect));
        assert!(
            r.text().starts_with("4.4.1 mx.example:25: connect failed"),
            "{}",
            r.text()
        );

        // An error around a remote reply keeps the reply as data.
        let e = TransportError::GreetingRejected {
            host: "smtp.example".into(),
            reply: remote(421, Some(EnhancedCode::new(4, 7, 0)), Stage::Greeting),
        };
        let r = RcptResult::from_error(&e, None);
        assert!(r.remote_reply());
        assert_eq!((r.reply.code, r.reason), (421, Some(ReasonKind::Greeting)));
        assert!(r.text().contains("greeting rejected"), "{}", r.text());
    }
}
