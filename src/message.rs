//! What the gateway adds to a submitted message: the trace header (RFC 5321 §4.4) and,
//! when missing, the Date and Message-ID fields (RFC 5322 §3.6). Also small header
//! helpers shared with DSN generation.

use std::fmt::Write as _;

use crate::model::{push_rfc5322_date, MsgId, ShowId};

/// Facts for the Received header.
pub struct TraceInfo<'a> {
    pub hostname: &'a str,
    /// The client's EHLO/HELO argument.
    pub helo: &'a str,
    pub client_ip: std::net::IpAddr,
    /// "ESMTP", "ESMTPS", "ESMTPSA", "UTF8SMTPS", ... (RFC 3848, RFC 6531).
    pub protocol: &'a str,
    /// TLS version and cipher suite, when TLS was used.
    pub tls: Option<&'a str>,
    pub id: MsgId,
    /// The recipient, named only when there is exactly one (RFC 5321 §4.4 privacy).
    pub single_rcpt: Option<&'a str>,
    pub now_ms: i64,
}

/// Builds the Received header (CRLF terminated, folded).
pub fn received_header(t: &TraceInfo<'_>) -> String {
    let mut h = String::with_capacity(256);
    push_received(&mut h, t);
    h
}

fn push_received(h: &mut String, t: &TraceInfo<'_>) {
    h.push_str("Received: from ");
    h.extend(
        t.helo
            .chars()
            .filter(|c| !c.is_control() && *c != '(' && *c != ')')
            .take(255),
    );
    let _ = write!(h, " ([{}])\r\n\tby {}", t.client_ip, t.hostname);
    if let Some(tls) = t.tls {
        let _ = write!(h, " ({tls})");
    }
    let _ = write!(h, " with {} id {}", t.protocol, ShowId(t.id));
    if let Some(rcpt) = t.single_rcpt {
        let _ = write!(h, "\r\n\tfor <{rcpt}>");
    }
    h.push_str(";\r\n\t");
    push_rfc5322_date(h, t.now_ms);
    h.push_str("\r\n");
}

/// The header section of a message: bytes up to (not including) the empty line, or
/// the whole message when there is none.
pub fn header_section(body: &[u8]) -> &[u8] {
    if body.starts_with(b"\r\n") {
        return &body[..0];
    }
    match find(body, b"\r\n\r\n") {
        Some(i) => &body[..i + 2],
        None => body,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether the header section has a field of this name (case-insensitive).
pub fn has_field(headers: &[u8], name: &str) -> bool {
    headers.split(|&b| b == b'\n').any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()..]
                .iter()
                .find(|&&b| b != b' ' && b != b'\t')
                .is_some_and(|&b| b == b':')
    })
}

/// The first value of a header field, unfolded, or `None`.
pub fn field_value(headers: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    let mut lines = text.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if field.trim_end().eq_ignore_ascii_case(name) && !line.starts_with([' ', '\t']) {
            let mut v = value.trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(v);
        }
    }
    None
}

/// Prepends the trace header and any missing Date/Message-ID to a submitted message.
pub fn prepare(body: &[u8], trace: &TraceInfo<'_>) -> Vec<u8> {
    let headers = header_section(body);
    let mut head = String::with_capacity(384);
    push_received(&mut head, trace);
    if !has_field(headers, "Date") {
        head.push_str("Date: ");
        push_rfc5322_date(&mut head, trace.now_ms);
        head.push_str("\r\n");
    }
    if !has_field(headers, "Message-ID") {
        let _ = write!(
            head,
            "Message-ID: <{}@{}>\r\n",
            ShowId(trace.id),
            trace.hostname
        );
    }
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(rcpt: Option<&str>) -> TraceInfo<'_> {
        TraceInfo {
            hostname: "gw.test",
            helo: "app(1)",
            client_ip: "127.0.0.1".parse().unwrap(),
            protocol: "ESMTP",
            tls: None,
            id: 0x1234,
            single_rcpt: rcpt,
            now_ms: 1_795_954_500_000,
        }
    }

    #[test]
    fn adds_missing_fields_only() {
        let with = b"Date: x\r\nMessage-Id: <a@b>\r\nSubject: s\r\n\r\nbody\r\n";
        let out = prepare(with, &trace(Some("r@x.org")));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Received: from app1 ([127.0.0.1])\r\n\tby gw.test with ESMTP id 0000000000001234\r\n\tfor <r@x.org>;\r\n\tSun, 29 Nov 2026 12:15:00 +0000\r\n"), "{text}");
        assert!(text.ends_with(std::str::from_utf8(with).unwrap()));
        assert_eq!(text.matches("Date:").count(), 1);

        let without = b"Subject: s\r\n\r\nDate: not a header\r\n";
        let text = String::from_utf8(prepare(without, &trace(None))).unwrap();
        assert!(text.contains("\r\nDate: Sun, 29 Nov 2026"));
        assert!(text.contains("\r\nMessage-ID: <0000000000001234@gw.test>\r\n"));
    }

    #[test]
    fn fields() {
        let h = b"Subject: a\r\n b\r\nTo: x\r\n\r\n";
        assert_eq!(
            field_value(header_section(h), "subject").as_deref(),
            Some("a b")
        );
        assert!(has_field(h, "to") && !has_field(h, "cc"));
        assert_eq!(header_section(b"\r\nbody"), b"");
    }
}
