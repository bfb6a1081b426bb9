//! SMTP command lines and DATA encoding, as pure functions.
//!
//! Every byte the client sends is built here, so the exact wire format is unit-tested:
//! EHLO/HELO, MAIL FROM with its ESMTP parameters, RCPT TO with DSN parameters, and the
//! dot-stuffed message body with its terminating "." line (RFC 5321 §4.5.2).

use crate::{
    ehlo::Capabilities,
    message::{OutboundMessage, OutboundRcpt},
};
use std::fmt::Write as _;

/// `STARTTLS` (RFC 3207 §4).
pub const STARTTLS: &str = "STARTTLS\r\n";
/// `DATA`.
pub const DATA: &str = "DATA\r\n";
/// `RSET`.
pub const RSET: &str = "RSET\r\n";
/// `QUIT`.
pub const QUIT: &str = "QUIT\r\n";

/// `EHLO name`.
pub fn ehlo(name: &str) -> String {
    format!("EHLO {name}\r\n")
}

/// `HELO name`.
pub fn helo(name: &str) -> String {
    format!("HELO {name}\r\n")
}

/// `MAIL FROM:<sender>` with the parameters the message needs and the server offers:
/// SIZE (RFC 1870 §6), BODY=8BITMIME (RFC 6152 §2), SMTPUTF8 (RFC 6531 §3.4),
/// REQUIRETLS (RFC 8689 §4.1), RET and ENVID (RFC 3461 §4.3/§4.4, only with DSN).
pub fn mail_from(msg: &OutboundMessage, caps: &Capabilities) -> String {
    let mut line = String::with_capacity(64);
    push_mail_from(&mut line, msg, caps);
    line
}

/// Appends [`mail_from`] to `line` (a pipelined group is built in one buffer).
pub fn push_mail_from(line: &mut String, msg: &OutboundMessage, caps: &Capabilities) {
    line.push_str("MAIL FROM:<");
    line.push_str(&msg.mail_from);
    line.push('>');
    if caps.size.is_some() {
        let _ = write!(line, " SIZE={}", msg.body.len());
    }
    let p = &msg.params;
    if p.eight_bit && caps.eight_bit_mime {
        line.push_str(" BODY=8BITMIME");
    }
    if p.smtputf8 && caps.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if p.requiretls && caps.requiretls {
        line.push_str(" REQUIRETLS");
    }
    if caps.dsn {
        if let Some(ret) = p.ret {
            line.push_str(" RET=");
            line.push_str(ret.as_str());
        }
        if let Some(envid) = &p.envid {
            // RFC 3461 §4.4: ENVID is xtext.
            line.push_str(" ENVID=");
            line.push_str(&crate::xtext::encode(envid));
        }
    }
    line.push_str("\r\n");
}

/// `RCPT TO:<address>` with NOTIFY and ORCPT when the server offers DSN (RFC 3461 §4.1,
/// §4.2; a client must not send them otherwise).
pub fn rcpt_to(rcpt: &OutboundRcpt, caps: &Capabilities) -> String {
    let mut line = String::with_capacity(48);
    push_rcpt_to(&mut line, rcpt, caps);
    line
}

/// Appends [`rcpt_to`] to `line`.
pub fn push_rcpt_to(line: &mut String, rcpt: &OutboundRcpt, caps: &Capabilities) {
    line.push_str("RCPT TO:<");
    line.push_str(&rcpt.address);
    line.push('>');
    if caps.dsn {
        if let Some(notify) = &rcpt.notify {
            line.push_str(" NOTIFY=");
            line.push_str(notify);
        }
        if let Some(orcpt) = &rcpt.orcpt {
            line.push_str(" ORCPT=");
            line.push_str(orcpt);
        }
    }
    line.push_str("\r\n");
}

/// A mailbox may not contain control characters (CR/LF would inject commands).
pub fn is_safe_mailbox(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

/// An ESMTP parameter value is one token: no spaces, no control characters
/// (RFC 5321 §4.1.2 esmtp-value, widened to UTF-8 for RFC 6533).
pub fn is_safe_param(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_control() || c == ' ' || c == '=')
}

/// Incremental DATA encoder: dot-stuffs lines that start with "." (RFC 5321 §4.5.2),
/// turns bare CR and bare LF into CRLF (RFC 5321 §2.3.8 forbids sending them, and they
/// are how "SMTP smuggling" hides a second message), and ends with CRLF "." CRLF.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// An encoder at the start of the message.
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Encodes the next piece of the message into `out`, in one pass: runs of bytes
    /// without CR or LF are copied whole.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 8);
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    i += 1;
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    i += 1;
                }
                _ => {
                    // RFC 5321 §4.5.2: a line starting with "." gets another "." first.
                    if self.at_line_start && b == b'.' {
                        out.push(b'.');
                    }
                    let end = ordinary_run_end(input, i);
                    out.extend_from_slice(&input[i..end]);
                    self.at_line_start = false;
                    i = end;
                }
            }
        }
    }

    /// Completes the last line if needed and appends the end-of-data line ".\r\n".
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Where a run of ordinary text from `from` on ends: at the first CR or LF that is not
/// a CRLF followed by an ordinary line start (any byte but ".", CR and LF), else at the
/// end of `input`. Such a run needs no dot-stuffing, un-stuffing or line-end repair, so
/// the DATA encoder here and the gateway's DATA receiver copy it whole.
pub fn ordinary_run_end(input: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(p) = input
        .get(at..)
        .and_then(|rest| memchr::memchr2(b'\r', b'\n', rest))
    {
        let end = at + p;
        match (input[end], input.get(end + 1), input.get(end + 2)) {
            (b'\r', Some(b'\n'), Some(c)) if !matches!(c, b'.' | b'\r' | b'\n') => at = end + 2,
            _ => return end,
        }
    }
    input.len()
}

/// The whole body encoded for DATA, including the final ".\r\n".
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut enc = DotStuffer::new();
    enc.encode(body, &mut out);
    enc.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MailParams, Ret};

    fn msg() -> OutboundMessage {
        OutboundMessage {
            mail_from: "a@example.org".into(),
            rcpts: vec![],
            body: b"0123456789".to_vec().into(),
            params: Default::default(),
        }
    }

    #[test]
    fn simple_commands() {
        assert_eq!(ehlo("relay.example"), "EHLO relay.example\r\n");
        assert_eq!(helo("relay.example"), "HELO relay.example\r\n");
    }

    #[test]
    fn mail_from_table() {
        let none = Capabilities::default();
        let all = Capabilities {
            size: Some(0),
            eight_bit_mime: true,
            smtputf8: true,
            requiretls: true,
            dsn: true,
            ..Capabilities::default()
        };
        let full = OutboundMessage {
            params: MailParams {
                eight_bit: true,
                smtputf8: true,
                requiretls: true,
                ret: Some(Ret::Hdrs),
                // Decoded; the wire has it xtext-encoded.
                envid: Some("QQ+1".into()),
                tls_required_no: false,
            },
            ..msg()
        };
        let null = OutboundMessage {
            mail_from: String::new(),
            ..msg()
        };
        let cases = [
            (msg(), none.clone(), "MAIL FROM:<a@example.org>\r\n"),
            (null, none.clone(), "MAIL FROM:<>\r\n"),
            (msg(), all.clone(), "MAIL FROM:<a@example.org> SIZE=10\r\n"),
            // Nothing the server does not offer.
            (full.clone(), none.clone(), "MAIL FROM:<a@example.org>\r\n"),
            (
                full.clone(),
                all.clone(),
                "MAIL FROM:<a@example.org> SIZE=10 BODY=8BITMIME SMTPUTF8 REQUIRETLS RET=HDRS ENVID=QQ+2B1\r\n",
            ),
            (
                OutboundMessage {
                    params: MailParams {
                        ret: Some(Ret::Full),
                        ..Default::default()
                    },
                    ..msg()
                },
                Capabilities {
                    dsn: true,
                    ..none.clone()
                },
                "MAIL FROM:<a@example.org> RET=FULL\r\n",
            ),
        ];
        for (m, caps, want) in cases {
            assert_eq!(mail_from(&m, &caps), want);
        }
    }

    #[test]
    fn rcpt_to_table() {
        let dsn = Capabilities {
            dsn: true,
            ..Capabilities::default()
        };
        let with = OutboundRcpt {
            address: "b@example.net".into(),
            notify: Some("SUCCESS,FAILURE".into()),
            orcpt: Some("rfc822;b@example.net".into()),
        };
        let cases = [
            (
                OutboundRcpt::new("b@example.net"),
                dsn.clone(),
                "RCPT TO:<b@example.net>\r\n",
            ),
            (
                with.clone(),
                Capabilities::default(),
                "RCPT TO:<b@example.net>\r\n",
            ),
            (
                with,
                dsn,
                "RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.net\r\n",
            ),
        ];
        for (r, caps, want) in cases {
            assert_eq!(rcpt_to(&r, &caps), want);
        }
    }

    #[test]
    fn safety_checks() {
        assert!(is_safe_mailbox("a@b"));
        assert!(is_safe_mailbox("\"john doe\"@b"));
        assert!(is_safe_mailbox("用户@例子.中国"));
        assert!(!is_safe_mailbox("a@b>\r\nRCPT TO:<c@d"));
        assert!(is_safe_param("rfc822;a@b"));
        assert!(!is_safe_param(""));
        assert!(!is_safe_param("SUCCESS FAILURE"));
        assert!(!is_safe_param("x\r\nQUIT"));
    }

    #[test]
    fn dot_stuffing_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b".a\r\n..b\r\nc.\r\n", b"..a\r\n...b\r\nc.\r\n.\r\n"),
            (b"a\r\n.", b"a\r\n..\r\n.\r\n"),
            // Bare LF and bare CR become CRLF, so "\n.\n" cannot end the data early.
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.\rb\r", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r\r\n", b"a\r\n\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(
                dot_stuff(input),
                want.to_vec(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// The encoder as first written, one byte at a time: the reference for the run copy.
    fn dot_stuff_bytewise(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut at_line_start, mut pending_cr) = (true, false);
        for &b in input {
            if pending_cr {
                pending_cr = false;
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    at_line_start = true;
                }
                _ => {
                    if at_line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    at_line_start = false;
                }
            }
        }
        if pending_cr {
            out.extend_from_slice(b"\r\n");
            at_line_start = true;
        }
        if !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn dot_stuffing_matches_the_bytewise_encoder() {
        // Fixed pseudo-random walks, in many lengths: over the bytes that matter, and over
        // whole lines, so that runs of several ordinary lines are copied at once.
        let bytes: [&[u8]; 5] = [b".", b"\r", b"\n", b"a", b"b"];
        let lines: [&[u8]; 8] = [
            b"ab\r\n", b"x\r\n", b".", b"\r\n", b"\r", b"\n", b"a", b".y\r\n",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for (tokens, lengths) in [(&bytes[..], 400), (&lines[..], 300)] {
            for len in 0..lengths {
                let input = token_walk(&mut seed, tokens, len);
                assert_eq!(dot_stuff(&input), dot_stuff_bytewise(&input), "{input:?}");
            }
        }
    }

    /// `len` tokens picked by a xorshift generator.
    fn token_walk(seed: &mut u64, tokens: &[&[u8]], len: usize) -> Vec<u8> {
        (0..len)
            .flat_map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                tokens[(*seed % tokens.len() as u64) as usize]
                    .iter()
                    .copied()
            })
            .collect()
    }

    #[test]
    fn ordinary_runs_end_where_lines_need_care() {
        let end = |s: &[u8]| ordinary_run_end(s, 0);
        assert_eq!(end(b"abc"), 3);
        assert_eq!(end(b"ab\r\ncd\r\nef"), 10);
        assert_eq!(end(b"ab\r\n.cd"), 2);
        assert_eq!(end(b"ab\r\n\r\n"), 2);
        assert_eq!(end(b"ab\r\n"), 2);
        assert_eq!(end(b"ab\ncd"), 2);
        assert_eq!(end(b"ab\rcd"), 2);
        assert_eq!(ordinary_run_end(b"ab\r\ncd", 4), 6);
        assert_eq!(ordinary_run_end(b"ab", 2), 2);
    }

    #[test]
    fn dot_stuffing_is_chunking_independent() {
        let body = b"x\r\n.y\r\n\r\n.\r\nz\r.w\n.".repeat(7);
        let whole = dot_stuff(&body);
        for size in 1..9 {
            let mut out = Vec::new();
            let mut enc = DotStuffer::new();
            for chunk in body.chunks(size) {
                enc.encode(chunk, &mut out);
            }
            enc.finish(&mut out);
            assert_eq!(out, whole, "chunk size {size}");
        }
    }
}
