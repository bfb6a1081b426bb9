//! The MTA-STS policy file (RFC 8461 §3.2) and MX matching (RFC 8461 §4.1). No I/O.
//!
//! ```text
//! version: STSv1
//! mode: enforce
//! mx: mail.example.com
//! mx: *.example.net
//! max_age: 604800
//! ```
//!
//! Lines end in LF or CRLF; keys are case-sensitive; a field other than `mx` that appears
//! twice counts once (the first); unknown keys are extensions and ignored.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dns::normalize_name;

/// Largest policy body accepted (RFC 8461 §3.3: senders may limit it; 64 KiB like the
/// reference design).
pub const MAX_POLICY_SIZE: usize = 64 * 1024;
/// Largest `max_age` honoured: about one year (RFC 8461 §3.2).
pub const MAX_MAX_AGE: u64 = 31_557_600;
/// Shortest time a fetched policy is cached, whatever its `max_age` says.
pub const MIN_CACHE_AGE: u64 = 3600;

/// What the policy asks of senders (RFC 8461 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only listed MX hosts, with PKIX-verified TLS; failures stop delivery.
    Enforce,
    /// Check and report, but deliver as without MTA-STS.
    Testing,
    /// No policy (a domain withdrawing MTA-STS).
    None,
}

impl Mode {
    /// The keyword, as in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `mx:` pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MxPattern {
    /// This host name exactly.
    Exact(String),
    /// `*.<parent>`: exactly one label in front of the parent domain.
    Wildcard(String),
}

impl MxPattern {
    /// Parses `mx.example.com` or `*.example.com` (A-labels only; case-insensitive).
    pub fn parse(text: &str) -> Result<MxPattern, String> {
        let (wildcard, domain) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        validate_domain(domain)?;
        let domain = domain.to_ascii_lowercase();
        Ok(if wildcard {
            MxPattern::Wildcard(domain)
        } else {
            MxPattern::Exact(domain)
        })
    }

    /// Whether `host` (any case, with or without trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize_name(host);
        match self {
            MxPattern::Exact(name) => host == *name,
            // RFC 8461 §4.1: "*.example.com" matches "mx.example.com" but neither
            // "example.com" nor "a.b.example.com": the wildcard is one whole label.
            MxPattern::Wildcard(parent) => match host.split_once('.') {
                Some((label, rest)) => !label.is_empty() && rest == parent,
                None => false,
            },
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MxPattern::Exact(name) => f.write_str(name),
            MxPattern::Wildcard(parent) => write!(f, "*.{parent}"),
        }
    }
}

impl From<MxPattern> for String {
    fn from(pattern: MxPattern) -> String {
        pattern.to_string()
    }
}

impl TryFrom<String> for MxPattern {
    type Error = String;

    fn try_from(text: String) -> Result<MxPattern, String> {
        MxPattern::parse(&text)
    }
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `mode`.
    pub mode: Mode,
    /// `mx` patterns, in file order.
    pub mx: Vec<MxPattern>,
    /// `max_age` in seconds, as published (see [`Policy::cache_lifetime`]).
    pub max_age: u64,
}

impl Policy {
    /// How long to cache the policy: `max_age` clamped to
    /// [[`MIN_CACHE_AGE`], [`MAX_MAX_AGE`]].
    pub fn cache_lifetime(&self) -> u64 {
        self.max_age.clamp(MIN_CACHE_AGE, MAX_MAX_AGE)
    }

    /// Whether the MX host is listed (see [`mx_matches`]).
    pub fn matches(&self, host: &str) -> bool {
        mx_matches(self, host)
    }
}

/// Whether an MX host name is allowed by the policy's `mx` patterns (RFC 8461 §4.1).
pub fn mx_matches(policy: &Policy, host: &str) -> bool {
    policy.mx.iter().any(|pattern| pattern.matches(host))
}

/// Why a policy file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Larger than [`MAX_POLICY_SIZE`].
    #[error("MTA-STS policy is {size} bytes, more than the {MAX_POLICY_SIZE} allowed")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// A line is not `key: value` with a valid key.
    #[error("MTA-STS policy line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A required field is absent.
    #[error("MTA-STS policy has no {field:?} field")]
    Missing {
        /// The field.
        field: &'static str,
    },
}

/// Parses a policy file body.
pub fn parse_policy(text: &str) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_SIZE {
        return Err(PolicyError::TooLarge { size: text.len() });
    }
    let mut version = false;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let syntax = |message: String| PolicyError::Syntax {
            line: index + 1,
            message,
        };
        // RFC 8461 §3.2: sts-policy-term-delim = CRLF / LF.
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_matches([' ', '\t']).is_empty() {
            // Blank lines (a trailing newline, say) carry nothing.
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(syntax(format!("expected \"key: value\", got {line:?}")));
        };
        if !valid_key(key) {
            return Err(syntax(format!("invalid field name {key:?}")));
        }
        // field-delim = ":" *WSP; trailing WSP is allowed after the value.
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" => {
                if value != "STSv1" {
                    return Err(syntax(format!("unsupported version {value:?}")));
                }
                version = true;
            }
            "mode" => {
                let parsed = match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(syntax(format!("invalid mode {other:?}"))),
                };
                // RFC 8461 §3.2: of a repeated field only the first is used.
                mode.get_or_insert(parsed);
            }
            "max_age" => {
                // RFC 8461 §3.2: max_age = 1*10DIGIT.
                if value.is_empty()
                    || value.len() > 10
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(syntax(format!("invalid max_age {value:?}")));
                }
                let seconds = value
                    .parse::<u64>()
                    .map_err(|e| syntax(format!("invalid max_age {value:?}: {e}")))?;
                max_age.get_or_insert(seconds);
            }
            "mx" => {
                let pattern = MxPattern::parse(value)
                    .map_err(|e| syntax(format!("invalid mx {value:?}: {e}")))?;
                mx.push(pattern);
            }
            // Extensions: ignored (RFC 8461 §3.2).
            _ => {}
        }
    }
    if !version {
        return Err(PolicyError::Missing { field: "version" });
    }
    let mode = mode.ok_or(PolicyError::Missing { field: "mode" })?;
    let max_age = max_age.ok_or(PolicyError::Missing { field: "max_age" })?;
    if mx.is_empty() && mode != Mode::None {
        // RFC 8461 §3.2: "mx" is required unless the mode is "none".
        return Err(PolicyError::Missing { field: "mx" });
    }
    Ok(Policy { mode, mx, max_age })
}

/// sts-policy-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && rest.len() <= 31
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        }
        None => false,
    }
}

/// A host name of A-labels: letters, digits and inner hyphens, 1–63 per label.
fn validate_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain".into());
    }
    if domain.len() > 253 {
        return Err("domain longer than 253 characters".into());
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("invalid label {label:?}"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            // RFC 8461 §3.2: patterns are A-labels; U-labels and wildcards inside are out.
            return Err(format!("invalid label {label:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n";

    #[test]
    fn mtasts_policy_parses() {
        let policy = parse_policy(GOOD).unwrap();
        assert_eq!(
            policy,
            Policy {
                mode: Mode::Enforce,
                mx: vec![
                    MxPattern::Exact("mail.example.com".into()),
                    MxPattern::Wildcard("example.net".into()),
                ],
                max_age: 604800,
            }
        );
        // CRLF, extra whitespace, unknown keys, no final newline, field order free.
        let crlf = "mx:   MAIL.example.com.\r\nversion: STSv1\r\nmax_age:86400 \r\nmode: testing\r\nx-extension: some value\r\nfoo.bar_baz: 1";
        let policy = parse_policy(crlf).unwrap();
        assert_eq!(policy.mode, Mode::Testing);
        assert_eq!(policy.mx, [MxPattern::Exact("mail.example.com".into())]);
        assert_eq!(policy.max_age, 86400);
        // Mode none needs no mx.
        let none = parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert_eq!((none.mode, none.mx.len()), (Mode::None, 0));
        // Repeated fields: the first wins (mx accumulates).
        let dup = parse_policy("version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 100\nmax_age: 200\nmx: b.example\n").unwrap();
        assert_eq!(
            (dup.mode, dup.max_age, dup.mx.len()),
            (Mode::Testing, 100, 2)
        );
    }

    #[test]
    fn mtasts_policy_rejects() {
        let table: &[(&str, &str)] = &[
            (
                "missing version",
                "mode: enforce\nmx: a.example\nmax_age: 1\n",
            ),
            (
                "bad version",
                "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
            ),
            (
                "missing mode",
                "version: STSv1\nmx: a.example\nmax_age: 1\n",
            ),
            (
                "bad mode",
                "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n",
            ),
            (
                "bad mode 2",
                "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
            ),
            (
                "missing max_age",
                "version: STSv1\nmode: enforce\nmx: a.example\n",
            ),
            (
                "bad max_age",
                "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
            ),
            (
                "long max_age",
                "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
            ),
            ("missing mx", "version: STSv1\nmode: enforce\nmax_age: 1\n"),
            (
                "missing mx testing",
                "version: STSv1\nmode: testing\nmax_age: 1\n",
            ),
            (
                "bad mx",
                "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
            ),
            (
                "inner wildcard",
                "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
            ),
            (
                "bare wildcard",
                "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n",
            ),
            (
                "u-label",
                "version: STSv1\nmode: enforce\nmx: mäil.example\nmax_age: 1\n",
            ),
            (
                "no colon",
                "version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1\n",
            ),
            (
                "bad key",
                "version: STSv1\n-mode: enforce\nmx: a.example\nmax_age: 1\n",
            ),
            (
                "key case",
                "Version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
            ),
            ("empty", ""),
        ];
        for (what, text) in table {
            assert!(parse_policy(text).is_err(), "{what}: accepted");
        }
        let big = format!("{GOOD}{}", "x: y\n".repeat(MAX_POLICY_SIZE / 5));
        assert!(matches!(
            parse_policy(&big),
            Err(PolicyError::TooLarge { .. })
        ));
        let err = parse_policy("version: STSv1\nmode: strict\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "MTA-STS policy line 2: invalid mode \"strict\""
        );
    }

    #[test]
    fn mtasts_mx_wildcard_rules() {
        let policy = parse_policy(GOOD).unwrap();
        let table = [
            ("mail.example.com", true),
            ("MAIL.Example.COM.", true),
            ("mail2.example.com", false),
            ("example.com", false),
            ("mx1.example.net", true),
            ("MX1.example.net.", true),
            ("a.b.example.net", false),
            ("example.net", false),
            (".example.net", false),
            ("mx1.example.net.evil", false),
        ];
        for (host, ok) in table {
            assert_eq!(mx_matches(&policy, host), ok, "{host}");
        }
        let wildcard = MxPattern::parse("*.example.com").unwrap();
        assert!(wildcard.matches("mx1.example.com"));
        assert!(!wildcard.matches("a.b.example.com"));
        assert!(!wildcard.matches("example.com"));
    }

    #[test]
    fn mtasts_max_age_clamped() {
        let mut policy = parse_policy(GOOD).unwrap();
        policy.max_age = 0;
        assert_eq!(policy.cache_lifetime(), MIN_CACHE_AGE);
        policy.max_age = 9_999_999_999;
        assert_eq!(policy.cache_lifetime(), MAX_MAX_AGE);
        policy.max_age = 86400;
        assert_eq!(policy.cache_lifetime(), 86400);
    }

    #[test]
    fn mtasts_policy_json_round_trip() {
        let policy = parse_policy(GOOD).unwrap();
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(
            json,
            r#"{"mode":"enforce","mx":["mail.example.com","*.example.net"],"max_age":604800}"#
        );
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), policy);
        assert!(
            serde_json::from_str::<Policy>(r#"{"mode":"enforce","mx":["a..b"],"max_age":1}"#)
                .is_err()
        );
    }
}
