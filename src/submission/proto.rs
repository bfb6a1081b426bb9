//! SMTP server-side protocol, no I/O: command lines in, [`Command`]s out, and the
//! parameter parsing of MAIL and RCPT (SIZE, BODY, SMTPUTF8, REQUIRETLS, RET, ENVID,
//! NOTIFY, ORCPT). Replies are built by [`Reply`].

use crate::address::xtext_decode;
use std::borrow::Cow;

/// Longest command line we accept, CRLF included. RFC 5321 §4.5.3.1.4 sets 512 octets as
/// the minimum a server must accept; SMTP extensions add parameters (§4.5.3.1.4 allows
/// more), so we allow more.
pub const MAX_COMMAND_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: String,
        params: MailArgs,
    },
    Rcpt {
        to: String,
        params: RcptParams,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    Bdat,
}

/// The arguments of a MAIL command as the client wrote them (SIZE, BODY, AUTH are
/// about this transaction; the rest becomes the message's `MailParams`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailArgs {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
    pub requiretls: bool,
    pub ret: Option<crate::model::Ret>,
    pub envid: Option<String>,
    pub auth: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Body {
    #[default]
    Unspecified,
    SevenBit,
    EightBitMime,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

/// Why a command line was refused; carries the reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub Reply);

/// An SMTP reply with its enhanced status code (RFC 2034).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    text: Text,
}

/// A reply's text: most replies are one fixed line, which costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Text {
    One(Cow<'static, str>),
    Many(Vec<String>),
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: Text::One(text.into()),
        }
    }

    pub fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: None,
            text: Text::One(text.into()),
        }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            text: Text::Many(lines),
        }
    }

    fn lines(&self) -> impl Iterator<Item = &str> {
        let (one, many): (Option<&str>, &[String]) = match &self.text {
            Text::One(t) => (Some(t), &[]),
            Text::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }

    /// Appends the wire form, CRLF terminated, with continuation lines (RFC 5321 §4.2.1).
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let code = [
            b'0' + (self.code / 100 % 10) as u8,
            b'0' + (self.code / 10 % 10) as u8,
            b'0' + (self.code % 10) as u8,
        ];
        let n = self.lines().count().max(1);
        let mut lines = self.lines();
        for i in 0..n {
            out.extend_from_slice(&code);
            out.push(if i + 1 < n { b'-' } else { b' ' });
            if let Some(e) = self.enhanced {
                out.extend_from_slice(e.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(lines.next().unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Wire form, CRLF terminated, with continuation lines (RFC 5321 §4.2.1).
    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_wire(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// One line for logs and the queue: "550 5.1.1 text".
    pub fn summary(&self) -> String {
        let mut s = self.code.to_string();
        if let Some(e) = self.enhanced {
            s.push(' ');
            s.push_str(e);
        }
        for l in self.lines() {
            s.push(' ');
            s.push_str(l);
        }
        s
    }
}

fn err(code: u16, enhanced: &'static str, text: impl Into<Cow<'static, str>>) -> ParseError {
    ParseError(Reply::new(code, enhanced, text))
}

/// Parses one command line (without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line)
        .map_err(|_| err(500, "5.5.2", "command line is not valid UTF-8"))?;
    if line.bytes().any(|b| b < 0x20 && b != b'\t') {
        return Err(err(500, "5.5.2", "control characters in command"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let arg = rest.trim();
    match verb.as_str() {
        "EHLO" | "HELO" => {
            if arg.is_empty() || arg.contains(' ') {
                return Err(err(501, "5.5.4", "syntax: EHLO domain"));
            }
            Ok(if verb == "EHLO" {
                Command::Ehlo(arg.to_string())
            } else {
                Command::Helo(arg.to_string())
            })
        }
        "MAIL" => {
            let rest = strip_prefix_ci(rest, "FROM:")
                .ok_or_else(|| err(501, "5.5.4", "syntax: MAIL FROM:<address>"))?;
            let (from, params) = split_path(rest.trim_start())?;
            Ok(Command::Mail {
                from,
                params: parse_mail_params(params)?,
            })
        }
        "RCPT" => {
            let rest = strip_prefix_ci(rest, "TO:")
                .ok_or_else(|| err(501, "5.5.4", "syntax: RCPT TO:<address>"))?;
            let (to, params) = split_path(rest.trim_start())?;
            if to.is_empty() {
                return Err(err(501, "5.1.3", "empty recipient"));
            }
            Ok(Command::Rcpt {
                to,
                params: parse_rcpt_params(params)?,
            })
        }
        "DATA" => no_arg(arg, Command::Data),
        "RSET" => no_arg(arg, Command::Rset),
        // NOOP may carry a string that is ignored (RFC 5321 §4.1.1.9).
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(arg, Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(arg, Command::StartTls),
        "BDAT" => Ok(Command::Bdat),
        "AUTH" => {
            let mut parts = arg.split_ascii_whitespace();
            let mechanism = parts
                .next()
                .ok_or_else(|| err(501, "5.5.4", "syntax: AUTH mechanism [initial-response]"))?
                .to_ascii_uppercase();
            let initial = parts.next().map(str::to_string);
            if parts.next().is_some() {
                return Err(err(
                    501,
                    "5.5.4",
                    "syntax: AUTH mechanism [initial-response]",
                ));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        _ => Err(err(500, "5.5.2", "command not recognized")),
    }
}

fn no_arg(arg: &str, cmd: Command) -> Result<Command, ParseError> {
    if arg.is_empty() {
        Ok(cmd)
    } else {
        Err(err(501, "5.5.4", "no parameters allowed"))
    }
}

/// `s` without an ASCII `prefix` (compared case-insensitively). Compares bytes, so a
/// non-ASCII character where the prefix ends is a mismatch, never a slice off a char
/// boundary.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Splits `<path> params` and validates the path loosely: a mailbox `local@domain`, the
/// null path `<>`, and source routes (RFC 5321 §4.1.2: accepted, ignored).
fn split_path(s: &str) -> Result<(String, &str), ParseError> {
    let s = s
        .strip_prefix('<')
        .ok_or_else(|| err(501, "5.5.4", "address must be in <>"))?;
    let end = find_path_end(s).ok_or_else(|| err(501, "5.5.4", "missing > after address"))?;
    let mut path = &s[..end];
    let params = s[end + 1..].trim();
    if path.starts_with('@') {
        // Source route "@a,@b:user@c": drop the route (RFC 5321 §4.1.2, Appendix C).
        path = path
            .split_once(':')
            .map(|(_, p)| p)
            .ok_or_else(|| err(501, "5.1.7", "bad source route"))?;
    }
    if !path.is_empty() {
        validate_mailbox(path)?;
    }
    Ok((path.to_string(), params))
}

fn find_path_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn validate_mailbox(path: &str) -> Result<(), ParseError> {
    let (local, domain) = path
        .rsplit_once('@')
        .ok_or_else(|| err(501, "5.1.3", "address must be local@domain"))?;
    if local.is_empty() || domain.is_empty() || local.len() > 64 * 4 || domain.len() > 255 {
        return Err(err(501, "5.1.3", "bad address syntax"));
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() && !local.starts_with('"'))
    {
        return Err(err(501, "5.1.3", "bad address syntax"));
    }
    if domain.starts_with('[') {
        if !domain.ends_with(']') {
            return Err(err(501, "5.1.3", "bad address literal"));
        }
    } else if crate::address::normalize_domain(domain).is_err() {
        return Err(err(501, "5.1.2", "bad domain in address"));
    }
    Ok(())
}

fn params(s: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    s.split_ascii_whitespace().map(|p| match p.split_once('=') {
        Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
        None => (p.to_ascii_uppercase(), None),
    })
}

fn parse_mail_params(s: &str) -> Result<MailArgs, ParseError> {
    let mut p = MailArgs::default();
    for (key, value) in params(s) {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                p.size = Some(v.parse().map_err(|_| err(501, "5.5.4", "bad SIZE value"))?)
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => p.body = Body::EightBitMime,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.body = Body::SevenBit,
            ("BODY", _) => return Err(err(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")),
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("REQUIRETLS", None) => p.requiretls = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => {
                p.ret = Some(crate::model::Ret::Full)
            }
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => {
                p.ret = Some(crate::model::Ret::Hdrs)
            }
            ("RET", _) => return Err(err(501, "5.5.4", "RET must be FULL or HDRS")),
            ("ENVID", Some(v)) => {
                p.envid = Some(xtext_decode(v).ok_or_else(|| err(501, "5.5.4", "bad ENVID xtext"))?)
            }
            ("AUTH", Some(v)) => p.auth = Some(v.to_string()),
            _ => return Err(err(555, "5.5.4", "unsupported MAIL parameter")),
        }
    }
    Ok(p)
}

fn parse_rcpt_params(s: &str) -> Result<RcptParams, ParseError> {
    let mut p = RcptParams::default();
    for (key, value) in params(s) {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => {
                let items: Vec<String> = v.split(',').map(|x| x.to_ascii_uppercase()).collect();
                let valid = items
                    .iter()
                    .all(|x| matches!(x.as_str(), "NEVER" | "SUCCESS" | "FAILURE" | "DELAY"));
                // NEVER must stand alone (RFC 3461 §4.1).
                if !valid || (items.len() > 1 && items.iter().any(|x| x == "NEVER")) {
                    return Err(err(501, "5.5.4", "bad NOTIFY value"));
                }
                p.notify = Some(items.join(","));
            }
            ("ORCPT", Some(v)) => {
                let (kind, addr) = v
                    .split_once(';')
                    .ok_or_else(|| err(501, "5.5.4", "ORCPT must be type;address"))?;
                let addr =
                    xtext_decode(addr).ok_or_else(|| err(501, "5.5.4", "bad ORCPT xtext"))?;
                p.orcpt = Some(format!("{kind};{addr}"));
            }
            _ => return Err(err(555, "5.5.4", "unsupported RCPT parameter")),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_after_the_verb_is_an_error_not_a_panic() {
        for line in [
            "MAIL FROMé:<a@b>",
            "MAIL FRé:<a@b>",
            "RCPT TOé:<a@b>",
            "RCPT é",
            "MAIL é",
            "MAIL FROM:é",
        ] {
            let e = parse_command(line.as_bytes()).expect_err(line);
            assert!(e.0.code >= 500, "{line}: {}", e.0.code);
        }
        assert_eq!(strip_prefix_ci("FROMé", "FROM:"), None);
        assert_eq!(strip_prefix_ci("fRoM:<x>", "FROM:"), Some("<x>"));
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_command(b"EHLO client.example").unwrap(),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(parse_command(b"quit").unwrap(), Command::Quit);
        assert_eq!(parse_command(b"NOOP hello").unwrap(), Command::Noop);
        assert!(parse_command(b"DATA x").is_err());
        assert_eq!(parse_command(b"FOO").unwrap_err().0.code, 500);
        assert_eq!(parse_command(b"EHLO").unwrap_err().0.code, 501);
    }

    #[test]
    fn mail_and_params() {
        match parse_command(
            b"MAIL FROM:<a@b.org> SIZE=1000 BODY=8BITMIME SMTPUTF8 REQUIRETLS RET=HDRS ENVID=x+2By",
        )
        .unwrap()
        {
            Command::Mail { from, params } => {
                assert_eq!(from, "a@b.org");
                assert_eq!(params.size, Some(1000));
                assert_eq!(params.body, Body::EightBitMime);
                assert!(params.smtputf8 && params.requiretls);
                assert_eq!(params.ret, Some(crate::model::Ret::Hdrs));
                assert_eq!(params.envid.as_deref(), Some("x+y"));
            }
            other => panic!("{other:?}"),
        }
        match parse_command(b"mail from: <>").unwrap() {
            Command::Mail { from, .. } => assert_eq!(from, ""),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b.org> FOO=1")
                .unwrap_err()
                .0
                .code,
            555
        );
        assert_eq!(parse_command(b"MAIL FROM:a@b.org").unwrap_err().0.code, 501);
        assert_eq!(
            parse_command(b"MAIL FROM:<nodomain>").unwrap_err().0.code,
            501
        );
    }

    #[test]
    fn rcpt() {
        match parse_command(b"RCPT TO:<@relay:c@d.org> NOTIFY=failure,delay ORCPT=rfc822;c+40d.org")
            .unwrap()
        {
            Command::Rcpt { to, params } => {
                assert_eq!(to, "c@d.org");
                assert_eq!(params.notify.as_deref(), Some("FAILURE,DELAY"));
                assert_eq!(params.orcpt.as_deref(), Some("rfc822;c@d.org"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_command(b"RCPT TO:<c@d.org> NOTIFY=NEVER,SUCCESS").is_err());
        assert!(parse_command(b"RCPT TO:<>").is_err());
        match parse_command(b"RCPT TO:<\"a b\"@d.org>").unwrap() {
            Command::Rcpt { to, .. } => assert_eq!(to, "\"a b\"@d.org"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_wire() {
        assert_eq!(Reply::new(250, "2.0.0", "OK").to_wire(), "250 2.0.0 OK\r\n");
        assert_eq!(
            Reply::multi(250, vec!["a".into(), "b".into()]).to_wire(),
            "250-a\r\n250 b\r\n"
        );
    }
}
