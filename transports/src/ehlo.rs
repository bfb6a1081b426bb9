//! Server capabilities from an EHLO reply (RFC 5321 §4.1.1.1), with no I/O.
//!
//! Only the extensions the client acts on are kept. A HELO session has
//! `Capabilities::default()`: no extensions at all.

use crate::reply::Reply;

/// What the server announced in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(n)` when announced; `Some(0)` means announced without a
    /// fixed limit (no value, or an explicit 0).
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// REQUIRETLS (RFC 8689).
    pub requiretls: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// AUTH mechanisms (RFC 4954), uppercased, in the server's order, without duplicates.
    pub auth: Vec<String>,
    /// LIMITS RCPTMAX=n (RFC 9422 §4.2): most recipients per transaction.
    pub limits_rcptmax: Option<usize>,
}

impl Capabilities {
    /// Parses the lines of a positive EHLO reply. The first line is the server's greeting
    /// name, the others are `keyword *(SP param)` (RFC 5321 §4.1.1.1); unknown keywords
    /// are ignored.
    pub fn from_ehlo_reply(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            caps.add_line(line);
        }
        caps
    }

    /// The SIZE limit when the server announced one, `None` when unlimited or unknown.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }

    fn add_line(&mut self, line: &str) {
        let mut words = line.split_ascii_whitespace();
        let Some(keyword) = words.next() else {
            return;
        };
        let keyword = keyword.to_ascii_uppercase();
        // Some old servers announce "AUTH=PLAIN LOGIN".
        if let Some(first) = keyword.strip_prefix("AUTH=") {
            self.add_auth(std::iter::once(first).chain(words));
            return;
        }
        match keyword.as_str() {
            "PIPELINING" => self.pipelining = true,
            // RFC 1870 §4: "SIZE" with an optional number; 0 or absent means no limit. An
            // unparsable value is treated as announced without a limit.
            "SIZE" => self.size = Some(words.next().and_then(|v| v.parse().ok()).unwrap_or(0)),
            "8BITMIME" => self.eight_bit_mime = true,
            "SMTPUTF8" => self.smtputf8 = true,
            "STARTTLS" => self.starttls = true,
            "REQUIRETLS" => self.requiretls = true,
            "ENHANCEDSTATUSCODES" => self.enhanced_status_codes = true,
            "CHUNKING" => self.chunking = true,
            "DSN" => self.dsn = true,
            "AUTH" => self.add_auth(words),
            "LIMITS" => {
                for param in words {
                    let Some((name, value)) = param.split_once('=') else {
                        continue;
                    };
                    if name.eq_ignore_ascii_case("RCPTMAX") {
                        // RFC 9422 §4.2: a positive integer; anything else is ignored.
                        self.limits_rcptmax = value.parse().ok().filter(|&n: &usize| n > 0);
                    }
                }
            }
            _ => {}
        }
    }

    fn add_auth<'a>(&mut self, mechs: impl Iterator<Item = &'a str>) {
        for m in mechs {
            let m = m.to_ascii_uppercase();
            if !self.auth.contains(&m) {
                self.auth.push(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(lines: &[&str]) -> Capabilities {
        let mut all = vec!["mx.example greets you".to_string()];
        all.extend(lines.iter().map(|s| s.to_string()));
        let mut reply = Reply::new(250, None, "");
        reply.lines = all;
        Capabilities::from_ehlo_reply(&reply)
    }

    #[test]
    fn table() {
        let none = Capabilities::default();
        let cases: Vec<(&[&str], Capabilities)> = vec![
            (&[], none.clone()),
            // The greeting line is never a keyword.
            (&["garbage here", ""], none.clone()),
            (
                &["PIPELINING", "8BITMIME", "SMTPUTF8", "STARTTLS"],
                Capabilities {
                    pipelining: true,
                    eight_bit_mime: true,
                    smtputf8: true,
                    starttls: true,
                    ..none.clone()
                },
            ),
            (
                &["requiretls", "EnhancedStatusCodes", "CHUNKING", "DSN"],
                Capabilities {
                    requiretls: true,
                    enhanced_status_codes: true,
                    chunking: true,
                    dsn: true,
                    ..none.clone()
                },
            ),
            (
                &["SIZE 35882577"],
                Capabilities {
                    size: Some(35_882_577),
                    ..none.clone()
                },
            ),
            (
                &["SIZE"],
                Capabilities {
                    size: Some(0),
                    ..none.clone()
                },
            ),
            (
                &["SIZE lots"],
                Capabilities {
                    size: Some(0),
                    ..none.clone()
                },
            ),
            (
                &["AUTH plain LOGIN cram-md5", "AUTH=LOGIN XOAUTH2"],
                Capabilities {
                    auth: vec![
                        "PLAIN".into(),
                        "LOGIN".into(),
                        "CRAM-MD5".into(),
                        "XOAUTH2".into(),
                    ],
                    ..none.clone()
                },
            ),
            (
                &["LIMITS MAILMAX=5 RCPTMAX=10"],
                Capabilities {
                    limits_rcptmax: Some(10),
                    ..none.clone()
                },
            ),
            (&["LIMITS RCPTMAX=0"], none.clone()),
            (&["LIMITS RCPTMAX=x"], none.clone()),
            (&["LIMITS RCPTMAX"], none.clone()),
        ];
        for (lines, want) in cases {
            assert_eq!(caps(lines), want, "{lines:?}");
        }
    }

    #[test]
    fn size_limit() {
        assert_eq!(caps(&["SIZE 0"]).size_limit(), None);
        assert_eq!(caps(&["SIZE"]).size_limit(), None);
        assert_eq!(caps(&["SIZE 10"]).size_limit(), Some(10));
        assert_eq!(caps(&[]).size_limit(), None);
    }
}
