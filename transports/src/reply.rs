//! SMTP reply parsing, with no I/O.
//!
//! A [`ReplyParser`] ingests bytes as they arrive from the socket and hands out complete
//! [`Reply`] values (RFC 5321 §4.2), including multi-line replies, enhanced status codes
//! (RFC 2034 / RFC 3463) and leftovers for pipelined replies (RFC 2920). It never panics
//! on input: line length and line count are bounded and garbage is an error.

use std::fmt;

use crate::outcome::Stage;

/// Longest reply line accepted, including the CRLF. RFC 5321 §4.5.3.1.5 says 512 octets;
/// real servers send longer lines, so we allow more but stay bounded.
pub const MAX_LINE_LEN: usize = 4096;
/// Most lines accepted in one multi-line reply (an EHLO reply has one per extension).
pub const MAX_LINES: usize = 256;

/// An enhanced mail system status code such as `5.1.1` (RFC 3463 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient) or 5 (permanent).
    pub class: u8,
    /// 0..=999.
    pub subject: u16,
    /// 0..=999.
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds a code; use for synthesized replies.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses an enhanced code at the start of `text`, returning it and the rest of the text
    /// (after the separating space). The code must be followed by a space or end the text.
    fn parse_prefix(text: &str) -> Option<(EnhancedCode, &str)> {
        let (token, rest) = match text.find(' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        let mut parts = token.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        // RFC 3463 §2: class is "2" / "4" / "5"; subject and detail are 1*3digit.
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        let num = |s: &str| -> Option<u16> {
            if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        Some((EnhancedCode::new(class, num(subject)?, num(detail)?), rest))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete SMTP reply.
///
/// Equality compares what was said (code, enhanced code, lines), not the context
/// (`stage`, `origin`).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code of the first line, when present and of the same class.
    pub enhanced: Option<EnhancedCode>,
    /// Text of each line after "NNN-" / "NNN ", with the enhanced code stripped.
    pub lines: Vec<String>,
    /// The command it answered, when known (the session records it as it reads).
    pub stage: Option<Stage>,
    /// Whether the remote said it or we made it up.
    pub origin: Origin,
}

/// Who produced a reply: the remote server, or this side (a synthesized reply such as
/// "too many recipients" or "invalid recipient").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Read from the remote server.
    Remote,
    /// Synthesized here.
    Local,
}

impl PartialEq for Reply {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.enhanced == other.enhanced && self.lines == other.lines
    }
}

impl Eq for Reply {}

impl Reply {
    /// Builds a one-line reply (used for replies we synthesize ourselves).
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: &str) -> Self {
        Self {
            code,
            enhanced,
            lines: vec![text.to_string()],
            stage: None,
            origin: Origin::Local,
        }
    }

    /// The same reply, noted as the answer to `stage`.
    pub fn at(mut self, stage: Stage) -> Self {
        self.stage = Some(stage);
        self
    }

    /// 2xx or 3xx: the command was accepted (RFC 5321 §4.2.1).
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 2xx: positive completion.
    pub fn is_completion(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: transient negative completion.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: permanent negative completion.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text of all lines joined with a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for line in self.lines.iter().filter(|l| !l.is_empty()) {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

/// Why bytes from the server are not a valid reply. The connection is unusable afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE_LEN`] (or no line end within that many bytes).
    #[error("reply line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// More than [`MAX_LINES`] lines in one reply.
    #[error("reply with more than {MAX_LINES} lines")]
    TooManyLines,
    /// A line that does not start with a reply code and a separator.
    #[error("malformed reply line {line:?}")]
    Malformed {
        /// The offending line, lossily decoded and truncated.
        line: String,
    },
    /// The lines of a multi-line reply carry different codes (RFC 5321 §4.2.1).
    #[error("multi-line reply changes code from {expected} to {got}")]
    CodeMismatch {
        /// The code of the first line.
        expected: u16,
        /// The differing code.
        got: u16,
    },
}

/// Incremental reply parser: `push` bytes, then call `next_reply` until it returns `None`.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Where the unparsed bytes in `buf` start (parsed lines are dropped on `push`).
    start: usize,
    code: Option<u16>,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// An empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the server.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(data);
    }

    /// True when bytes are buffered that are not yet part of a returned reply. Used to
    /// refuse data the server sent ahead of the TLS handshake (RFC 3207 §4.2 / §6).
    pub fn has_buffered(&self) -> bool {
        self.start < self.buf.len() || self.code.is_some()
    }

    /// Returns the next complete reply, `Ok(None)` when more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let pending = &self.buf[self.start..];
            let Some(nl) = pending.iter().position(|&b| b == b'\n') else {
                if pending.len() > MAX_LINE_LEN {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(None);
            };
            if nl + 1 > MAX_LINE_LEN {
                return Err(ReplyError::LineTooLong);
            }
            let mut line = &pending[..nl];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let (code, last, text) = parse_line(line)?;
            match self.code {
                Some(expected) if expected != code => {
                    return Err(ReplyError::CodeMismatch {
                        expected,
                        got: code,
                    });
                }
                _ => self.code = Some(code),
            }
            if self.lines.len() >= MAX_LINES {
                return Err(ReplyError::TooManyLines);
            }
            // An enhanced code of the reply's class is taken off each line; the first
            // line's is the reply's (RFC 2034 §4).
            let class = u8::try_from(code / 100).unwrap_or(0);
            let text = String::from_utf8_lossy(text);
            let text = match EnhancedCode::parse_prefix(&text) {
                Some((ec, rest)) if ec.class == class => {
                    if self.lines.is_empty() {
                        self.enhanced = Some(ec);
                    }
                    rest.to_string()
                }
                _ => text.into_owned(),
            };
            self.start += nl + 1;
            self.lines.push(text);
            if last {
                self.code = None;
                return Ok(Some(Reply {
                    code,
                    enhanced: self.enhanced.take(),
                    lines: std::mem::take(&mut self.lines),
                    stage: None,
                    origin: Origin::Remote,
                }));
            }
        }
    }
}

/// Parses "NNN-text", "NNN text" or "NNN" (RFC 5321 §4.2: Reply-line).
fn parse_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let malformed = || ReplyError::Malformed {
        line: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
    };
    if line.len() < 3 {
        return Err(malformed());
    }
    let d = &line[..3];
    // RFC 5321 §4.2: first digit 2-5, second 0-5, third 0-9.
    if !(b'2'..=b'5').contains(&d[0]) || !(b'0'..=b'5').contains(&d[1]) || !d[2].is_ascii_digit() {
        return Err(malformed());
    }
    let code = u16::from(d[0] - b'0') * 100 + u16::from(d[1] - b'0') * 10 + u16::from(d[2] - b'0');
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(malformed()),
    };
    Ok((code, last, text))
}

/// Strips enhanced codes whose class matches the reply code (RFC 3463 §2, RFC 2034 §4).
#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::new();
        p.push(input);
        let mut out = Vec::new();
        while let Some(r) = p.next_reply()? {
            out.push(r);
        }
        Ok(out)
    }

    /// input, code, enhanced code, lines, Display.
    type Case = (
        &'static [u8],
        u16,
        Option<EnhancedCode>,
        &'static [&'static str],
        &'static str,
    );

    #[test]
    fn parses_valid_replies() {
        let ec = |c, s, d| Some(EnhancedCode::new(c, s, d));
        let cases: &[Case] = &[
            (b"250 ok\r\n", 250, None, &["ok"], "250 ok"),
            (b"250\r\n", 250, None, &[""], "250"),
            (b"250 \r\n", 250, None, &[""], "250"),
            (b"220 mx ESMTP\n", 220, None, &["mx ESMTP"], "220 mx ESMTP"),
            (
                b"550 5.1.1 no such user\r\n",
                550,
                ec(5, 1, 1),
                &["no such user"],
                "550 5.1.1 no such user",
            ),
            (
                b"550-5.1.1 text\r\n550 5.1.1 text2\r\n",
                550,
                ec(5, 1, 1),
                &["text", "text2"],
                "550 5.1.1 text text2",
            ),
            (b"451 4.7.1\r\n", 451, ec(4, 7, 1), &[""], "451 4.7.1"),
            (
                b"452 4.5.3 too many\r\n",
                452,
                ec(4, 5, 3),
                &["too many"],
                "452 4.5.3 too many",
            ),
            // Class differs from the reply code: not an enhanced code, text kept.
            (
                b"250 5.1.1 odd\r\n",
                250,
                None,
                &["5.1.1 odd"],
                "250 5.1.1 odd",
            ),
            // Not a valid enhanced code (four-digit subject).
            (
                b"550 5.1234.1 x\r\n",
                550,
                None,
                &["5.1234.1 x"],
                "550 5.1234.1 x",
            ),
            (
                b"354 go ahead\r\n",
                354,
                None,
                &["go ahead"],
                "354 go ahead",
            ),
            (
                b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
                250,
                None,
                &["mx.example", "PIPELINING", "SIZE 100"],
                "250 mx.example PIPELINING SIZE 100",
            ),
        ];
        for (input, code, enhanced, lines, display) in cases {
            let replies = parse_all(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(replies.len(), 1, "{input:?}");
            let r = &replies[0];
            assert_eq!(r.code, *code, "{input:?}");
            assert_eq!(r.enhanced, *enhanced, "{input:?}");
            assert_eq!(r.lines, *lines, "{input:?}");
            assert_eq!(r.to_string(), *display, "{input:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        let cases: &[(&[u8], ReplyError)] = &[
            (
                b"hello\r\n",
                ReplyError::Malformed {
                    line: "hello".into(),
                },
            ),
            (b"25\r\n", ReplyError::Malformed { line: "25".into() }),
            (
                b"250x\r\n",
                ReplyError::Malformed {
                    line: "250x".into(),
                },
            ),
            (
                b"150 x\r\n",
                ReplyError::Malformed {
                    line: "150 x".into(),
                },
            ),
            (
                b"260 x\r\n",
                ReplyError::Malformed {
                    line: "260 x".into(),
                },
            ),
            (
                b"250-a\r\n251 b\r\n",
                ReplyError::CodeMismatch {
                    expected: 250,
                    got: 251,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_all(input).err().as_ref(), Some(want), "{input:?}");
        }
    }

    #[test]
    fn bounds_line_length_and_count() {
        let long = vec![b'2'; MAX_LINE_LEN + 1];
        assert_eq!(parse_all(&long).err(), Some(ReplyError::LineTooLong));
        let mut line = b"250 ".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_LINE_LEN));
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&line).err(), Some(ReplyError::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(
            parse_all(many.as_bytes()).err(),
            Some(ReplyError::TooManyLines)
        );
    }

    #[test]
    fn incremental_and_pipelined() {
        let input = b"250-first\r\n250 2.1.0 second\r\n550 5.1.1 nope\r\n354 go\r\n";
        // Feed one byte at a time: replies come out whole and in order.
        let mut p = ReplyParser::new();
        let mut got = Vec::new();
        for b in input.iter() {
            p.push(std::slice::from_ref(b));
            while let Some(r) = p.next_reply().unwrap_or_else(|e| panic!("{e}")) {
                got.push(r);
            }
        }
        assert!(!p.has_buffered());
        let codes: Vec<u16> = got.iter().map(|r| r.code).collect();
        assert_eq!(codes, vec![250, 550, 354]);
        // Only the first line's enhanced code is reported, but every line is stripped.
        assert_eq!(got[0].enhanced, None);
        assert_eq!(got[0].lines, vec!["first", "second"]);
        // A partial reply stays buffered.
        p.push(b"250-partial\r\n");
        assert_eq!(p.next_reply(), Ok(None));
        assert!(p.has_buffered());
        // More bytes arrive while earlier ones of the same push are not read yet.
        let mut p = ReplyParser::new();
        p.push(b"250 a\r\n251 b\r\n25");
        let code = |p: &mut ReplyParser| p.next_reply().ok().flatten().map(|r| r.code);
        assert_eq!(code(&mut p), Some(250));
        p.push(b"2 c\r\n");
        assert_eq!(code(&mut p), Some(251));
        assert_eq!(code(&mut p), Some(252));
        assert_eq!(code(&mut p), None);
        assert!(!p.has_buffered());
    }

    #[test]
    fn classes() {
        let r = |code| Reply::new(code, None, "");
        assert!(r(250).is_positive() && r(250).is_completion());
        assert!(r(354).is_positive() && !r(354).is_completion());
        assert!(r(421).is_transient() && !r(421).is_permanent());
        assert!(r(554).is_permanent() && !r(554).is_positive());
        assert_eq!(EnhancedCode::new(4, 7, 1).to_string(), "4.7.1");
    }
}
