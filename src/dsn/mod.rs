//! Delivery status notifications (RFC 3464, carried in multipart/report, RFC 6522):
//! what the sender gets back when recipients fail or are delayed. Pure: facts in, the
//! message bytes out. The queue decides when one is due and submits it to itself with a
//! null sender, so a DSN is never answered by another DSN.
//!
//! International mail (SMTPUTF8, or a UTF-8 address) gets the RFC 6533 form:
//! `message/global-delivery-status` with `utf-8` address types, the original returned as
//! `message/global` or `message/global-headers`, sent with SMTPUTF8. When the sender's
//! path cannot take SMTPUTF8, `downgrade.rs` turns it into the ASCII form.

mod downgrade;
pub use downgrade::downgrade;

use crate::message::{field_value, header_section};
use crate::model::{format_id, rfc5322_date, Ret, StoredMessage};

/// Largest original message included whole; above it only the headers are returned.
const FULL_RETURN_LIMIT: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        }
    }
}

/// One recipient's line in the report, from the recorded result's fields.
#[derive(Debug, Clone, Default)]
pub struct DsnRecipient {
    pub address: String,
    pub orcpt: Option<String>,
    /// The remote's reply or our own reason, e.g. "550 5.1.1 no such user".
    pub diagnostic: String,
    /// The remote server said `diagnostic` (`Diagnostic-Code: smtp`); else it is our
    /// own reason (`x-local`).
    pub remote_reply: bool,
    /// The enhanced status code (class, subject, detail), when known.
    pub status: Option<[u16; 3]>,
    /// The reply code, when known (its class stands in for a missing status).
    pub code: Option<u16>,
    /// "host [ip]" of the remote MTA, when a connection was made.
    pub remote_mta: Option<String>,
    /// The remote MTA's host name (`Remote-MTA: dns;`).
    pub remote_host: Option<String>,
    pub last_attempt_ms: i64,
    /// For delayed DSNs: when we give up.
    pub will_retry_until_ms: Option<i64>,
}

pub struct DsnInput<'a> {
    pub hostname: &'a str,
    pub original: &'a StoredMessage,
    pub body: &'a [u8],
    pub action: Action,
    pub rcpts: &'a [DsnRecipient],
    pub now_ms: i64,
    /// Id of the DSN message itself (for its Message-ID).
    pub dsn_id: u64,
}

/// The `Status:` of a recipient (RFC 3464 §2.3.4): its enhanced code (RFC 3463), with
/// class 4 in a delay report; without one, X.0.0 of the reply code's class.
pub fn status_of(r: &DsnRecipient, action: Action) -> String {
    let class_of_code = match r.code {
        Some(c) if (400..500).contains(&c) => 4,
        _ => 5,
    };
    match (r.status, action) {
        (Some([_, s, d]), Action::Delayed) => format!("4.{s}.{d}"),
        (Some([c @ (4 | 5), s, d]), Action::Failed) => format!("{c}.{s}.{d}"),
        (Some([_, s, d]), Action::Failed) => format!("{class_of_code}.{s}.{d}"),
        (None, Action::Delayed) => "4.0.0".into(),
        (None, Action::Failed) => format!("{class_of_code}.0.0"),
    }
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether the DSN for `original` takes the international form of RFC 6533 (and must
/// be sent with SMTPUTF8): the message was sent with SMTPUTF8, or an address is UTF-8.
pub fn is_international(original: &StoredMessage, rcpts: &[DsnRecipient]) -> bool {
    original.params.smtputf8
        || !original.mail_from.is_ascii()
        || rcpts.iter().any(|r| !r.address.is_ascii())
}

/// `Final-Recipient` / address type and value (RFC 3464 §2.3.2; RFC 6533 §3: `utf-8`
/// for an address that is not ASCII).
fn address_field(address: &str) -> String {
    if address.is_ascii() {
        format!("rfc822; {address}")
    } else {
        format!("utf-8; {address}")
    }
}

/// Builds the DSN message (headers and body, CRLF line ends). The header section is
/// ours; the MIME structure (multipart/report, RFC 6522) is assembled by `mail-builder`,
/// which also picks the human-readable part's transfer encoding.
pub fn build(input: &DsnInput<'_>) -> Vec<u8> {
    use mail_builder::headers::content_type::ContentType;
    use mail_builder::mime::MimePart;

    let o = input.original;
    let global = is_international(o, input.rcpts);
    let subject = match input.action {
        Action::Failed => "Delivery Status Notification (Failure)",
        Action::Delayed => "Delivery Status Notification (Delay)",
    };
    let mut out = String::new();
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{}>\r\n",
        input.hostname
    ));
    out.push_str(&format!("To: <{}>\r\n", o.mail_from));
    out.push_str(&format!("Subject: {subject}\r\n"));
    out.push_str(&format!("Date: {}\r\n", rfc5322_date(input.now_ms)));
    out.push_str(&format!(
        "Message-ID: <{}@{}>\r\n",
        format_id(input.dsn_id),
        input.hostname
    ));
    // RFC 3834 §5: automatic responses are marked.
    out.push_str("Auto-Submitted: auto-replied\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    let mut out = out.into_bytes();

    // RFC 6533 §6.2: the UTF-8 form of the status part.
    let status_type = if global {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    // The original: whole for failures when asked (or small enough), headers otherwise.
    // RFC 6532 §3.7 / RFC 6533 §6.3, 6.4: an international original is message/global.
    let full = input.action == Action::Failed
        && o.params.ret != Some(Ret::Hdrs)
        && input.body.len() <= FULL_RETURN_LIMIT;
    let (returned_type, mut returned) = match (full, global) {
        (true, true) => ("message/global", input.body.to_vec()),
        (true, false) => ("message/rfc822", input.body.to_vec()),
        (false, true) => (
            "message/global-headers",
            header_section(input.body).to_vec(),
        ),
        (false, false) => ("text/rfc822-headers", header_section(input.body).to_vec()),
    };
    if !returned.ends_with(b"\r\n") {
        returned.extend_from_slice(b"\r\n");
    }
    let status = status_fields(input, global).into_bytes();
    // RFC 2046 §5.2.1: message/* parts are 7bit or 8bit, never encoded.
    let cte = |bytes: &[u8]| if bytes.is_ascii() { "7bit" } else { "8bit" };
    let (status_cte, returned_cte) = (cte(&status), cte(&returned));
    let report = MimePart::new(
        ContentType::new("multipart/report")
            .attribute("report-type", "delivery-status")
            .attribute("boundary", boundary(input)),
        vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "utf-8"),
                human_text(input),
            ),
            MimePart::new(ContentType::new(status_type), status).transfer_encoding(status_cte),
            MimePart::new(ContentType::new(returned_type), returned)
                .transfer_encoding(returned_cte),
        ],
    );
    report.write_part(&mut out);
    out
}

/// The MIME boundary: unique per DSN, without characters that need quoting.
fn boundary(input: &DsnInput<'_>) -> String {
    let host: String = input
        .hostname
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    format!("dsn-{}-{host}", format_id(input.dsn_id))
}

/// The human-readable part.
fn human_text(input: &DsnInput<'_>) -> String {
    let mut m = String::new();
    match input.action {
        Action::Failed => m.push_str(&format!(
            "This is the mail gateway at {}.\r\n\r\nYour message could not be delivered to the following recipients; no further attempts will be made:\r\n\r\n",
            input.hostname
        )),
        Action::Delayed => m.push_str(&format!(
            "This is the mail gateway at {}.\r\n\r\nYour message has not been delivered yet to the following recipients. Delivery will be retried; you do not need to resend it.\r\n\r\n",
            input.hostname
        )),
    }
    for r in input.rcpts {
        m.push_str(&format!(
            "  <{}>\r\n    {}\r\n",
            r.address,
            clean(&r.diagnostic)
        ));
        if let Some(mta) = &r.remote_mta {
            m.push_str(&format!("    (remote server {})\r\n", clean(mta)));
        }
        if let Some(until) = r.will_retry_until_ms {
            m.push_str(&format!("    Will retry until {}\r\n", rfc5322_date(until)));
        }
    }
    let orig_subject = field_value(header_section(input.body), "Subject").unwrap_or_default();
    if !orig_subject.is_empty() {
        m.push_str(&format!(
            "\r\nSubject of your message: {}\r\n",
            clean(&orig_subject)
        ));
    }
    m.push_str(&format!("Queue id: {}\r\n", format_id(input.original.id)));
    m
}

/// The machine-readable part (RFC 3464 §2.2, §2.3).
fn status_fields(input: &DsnInput<'_>, global: bool) -> String {
    let o = input.original;
    let mut m = String::new();
    m.push_str(&format!("Reporting-MTA: dns; {}\r\n", input.hostname));
    if let Some(envid) = &o.params.envid {
        m.push_str(&format!("Original-Envelope-Id: {}\r\n", clean(envid)));
    }
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        rfc5322_date(o.received_at)
    ));
    for r in input.rcpts {
        m.push_str("\r\n");
        if let Some(orcpt) = &r.orcpt {
            m.push_str(&format!("Original-Recipient: {}\r\n", clean(orcpt)));
        }
        let address = if global {
            address_field(&r.address)
        } else {
            format!("rfc822; {}", r.address)
        };
        m.push_str(&format!("Final-Recipient: {address}\r\n"));
        m.push_str(&format!("Action: {}\r\n", input.action.as_str()));
        m.push_str(&format!("Status: {}\r\n", status_of(r, input.action)));
        if let Some(host) = &r.remote_host {
            m.push_str(&format!("Remote-MTA: dns; {}\r\n", clean(host)));
        }
        let diag_type = if r.remote_reply { "smtp" } else { "x-local" };
        m.push_str(&format!(
            "Diagnostic-Code: {diag_type}; {}\r\n",
            clean(&r.diagnostic)
        ));
        m.push_str(&format!(
            "Last-Attempt-Date: {}\r\n",
            rfc5322_date(r.last_attempt_ms)
        ));
        if let Some(until) = r.will_retry_until_ms {
            m.push_str(&format!("Will-Retry-Until: {}\r\n", rfc5322_date(until)));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MailParams, Overrides};

    fn original() -> StoredMessage {
        StoredMessage {
            dkim: None,
            id: 1,
            received_at: 0,
            mail_from: "sender@s.org".into(),
            params: MailParams {
                envid: Some("E1".into()),
                ..Default::default()
            },
            account: None,
            client: None,
            size: 10,
            overrides: Overrides::default(),
            rcpts: vec![],
        }
    }

    fn rcpt(status: Option<[u16; 3]>, code: Option<u16>) -> DsnRecipient {
        DsnRecipient {
            status,
            code,
            ..Default::default()
        }
    }

    #[test]
    fn status_codes() {
        let s = |st, code, action| status_of(&rcpt(st, code), action);
        assert_eq!(s(Some([5, 1, 1]), Some(550), Action::Failed), "5.1.1");
        assert_eq!(s(Some([4, 7, 1]), Some(451), Action::Delayed), "4.7.1");
        assert_eq!(s(None, Some(550), Action::Failed), "5.0.0");
        assert_eq!(s(None, None, Action::Failed), "5.0.0");
        assert_eq!(s(Some([5, 7, 30]), Some(554), Action::Failed), "5.7.30");
        assert_eq!(s(Some([5, 1, 1]), Some(550), Action::Delayed), "4.1.1");
        assert_eq!(s(None, Some(451), Action::Failed), "4.0.0");
    }

    #[test]
    fn failed_report_has_the_fields() {
        let o = original();
        let body = b"Subject: hello\r\n\r\nbody\r\n";
        let rcpts = vec![DsnRecipient {
            address: "r@x.org".into(),
            orcpt: Some("rfc822;R@x.org".into()),
            diagnostic: "550 5.1.1 user unknown".into(),
            remote_reply: true,
            status: Some([5, 1, 1]),
            code: Some(550),
            remote_mta: Some("mx.x.org [192.0.2.1]".into()),
            remote_host: Some("mx.x.org".into()),
            last_attempt_ms: 0,
            will_retry_until_ms: None,
        }];
        let out = String::from_utf8(build(&DsnInput {
            hostname: "gw.test",
            original: &o,
            body,
            action: Action::Failed,
            rcpts: &rcpts,
            now_ms: 0,
            dsn_id: 2,
        }))
        .unwrap();
        for needle in [
            "To: <sender@s.org>\r\n",
            "report-type=\"delivery-status\"",
            "Reporting-MTA: dns; gw.test\r\n",
            "Original-Envelope-Id: E1\r\n",
            "Original-Recipient: rfc822;R@x.org\r\n",
            "Final-Recipient: rfc822; r@x.org\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx.x.org\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n",
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: hello\r\n\r\nbody\r\n",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
        assert!(out.ends_with("--\r\n"));
    }
}

#[cfg(test)]
mod intl_tests {
    use super::*;
    use crate::model::{MailParams, Overrides};

    fn intl() -> StoredMessage {
        StoredMessage {
            dkim: None,
            id: 1,
            received_at: 0,
            mail_from: "sender@s.org".into(),
            params: MailParams {
                smtputf8: true,
                ..Default::default()
            },
            account: None,
            client: None,
            size: 10,
            overrides: Overrides::default(),
            rcpts: vec![],
        }
    }

    fn report(body: &[u8], rcpt: &str) -> String {
        let rcpts = vec![DsnRecipient {
            address: rcpt.into(),
            diagnostic: "550 5.1.1 用户不存在".into(),
            remote_reply: true,
            status: Some([5, 1, 1]),
            code: Some(550),
            ..Default::default()
        }];
        String::from_utf8(build(&DsnInput {
            hostname: "gw.test",
            original: &intl(),
            body,
            action: Action::Failed,
            rcpts: &rcpts,
            now_ms: 0,
            dsn_id: 2,
        }))
        .unwrap()
    }

    #[test]
    fn international_form_and_its_downgrade() {
        let body = "Subject: 你好\r\nFrom: sender@s.org\r\n\r\nbody\r\n".as_bytes();
        let out = report(body, "用户@例子.广告");
        for needle in [
            "Content-Type: message/global-delivery-status\r\n",
            "Final-Recipient: utf-8; 用户@例子.广告\r\n",
            "Content-Type: message/global\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: 你好\r\n",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
        let down = String::from_utf8(downgrade(out.as_bytes()).unwrap()).unwrap();
        for needle in [
            "Content-Type: message/delivery-status\r\n",
            "Final-Recipient: utf-8; \\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 \\x{7528}",
            "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 7bit\r\n\r\nFrom: sender@s.org\r\n",
        ] {
            assert!(down.contains(needle), "missing {needle:?} in\n{down}");
        }
        assert!(!down.contains("message/global"), "{down}");
        assert!(!down.contains("Subject: 你好"), "{down}");
        assert!(down.ends_with("--\r\n"), "{down}");
        // The machine-readable part is ASCII now.
        let status_part = down
            .split("Content-Type: message/delivery-status\r\n")
            .nth(1)
            .unwrap()
            .split("\r\n--")
            .next()
            .unwrap();
        assert!(status_part.is_ascii(), "{status_part}");
    }

    #[test]
    fn ascii_reports_are_left_alone() {
        let mut o = intl();
        o.params.smtputf8 = false;
        let rcpts = vec![DsnRecipient {
            address: "r@x.org".into(),
            ..Default::default()
        }];
        assert!(!is_international(&o, &rcpts));
        let out = build(&DsnInput {
            hostname: "gw.test",
            original: &o,
            body: b"Subject: a\r\n\r\nb\r\n",
            action: Action::Failed,
            rcpts: &rcpts,
            now_ms: 0,
            dsn_id: 2,
        });
        assert!(downgrade(&out).is_none());
    }
}
