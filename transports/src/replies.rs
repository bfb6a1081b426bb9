//! Reply classification for providers, as data: rules matching a reply's code, enhanced
//! code and text (at any stage: greeting, MAIL, RCPT, DATA) to a [`ReasonKind`]. The
//! defaults ([`DEFAULT_RULES`], documented in docs/replies.md) cover the well-known
//! throttling, quota and authentication replies of large providers; a transport's
//! `on_reply` adds rules that are tried first.
//!
//! What a classification changes is decided in `transport.rs`: a reply classified
//! throttle, quota or auth is never a permanent failure of the recipient, whatever its
//! code (the account or the provider is at fault, not the address).

use crate::outcome::ReasonKind;
use crate::reply::{EnhancedCode, Reply};

/// The default rules: (match, kind). A match is `"CODE[ ENHANCED][ text]"`; the text
/// matches case-insensitively anywhere in the reply.
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    // Amazon SES.
    (
        "454 Throttling failure: Maximum sending rate exceeded",
        "throttle",
    ),
    (
        "454 Throttling failure: Daily message quota exceeded",
        "quota",
    ),
    ("421 Too many concurrent connections", "throttle"),
    // Google (Gmail, Workspace).
    ("421 4.7.0 Try again later", "throttle"),
    ("421 4.7.28", "throttle"),
    ("450 4.2.1 receiving mail at a rate", "throttle"),
    ("550 5.4.5 Daily user sending quota exceeded", "quota"),
    ("550 5.4.5 Daily sending quota exceeded", "quota"),
    ("454 4.7.0 Too many login attempts", "throttle"),
    ("535 5.7.8", "auth"),
    // Microsoft 365.
    ("554 5.2.0 SubmissionQuotaExceeded", "quota"),
    ("550 5.2.2 SubmissionQuotaExceeded", "quota"),
    ("432 4.3.2 thread limit exceeded", "throttle"),
    ("421 4.7.66", "throttle"),
    ("535 5.7.139", "auth"),
    ("535 5.7.3", "auth"),
    // SendGrid.
    (
        "451 Authentication failed: Maximum credits exceeded",
        "quota",
    ),
    ("550 Unauthenticated senders not allowed", "auth"),
    // Mailgun.
    ("421 Too many requests", "throttle"),
    ("Quota exceeded", "quota"),
    // Postmark.
    ("Sending limit exceeded", "throttle"),
];

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRule {
    code: Option<u16>,
    enhanced: Option<EnhancedCode>,
    /// Lowercase.
    text: Option<String>,
    kind: ReasonKind,
}

impl ReplyRule {
    /// Parses a match (`"454 4.7.0"`, `"454 Throttling failure"`, `"550 5.4.5"`, or just
    /// text) and a kind (`throttle`, `quota`, `auth`, `connect`, `greeting`, `tls`,
    /// `policy`, `recipient`, `message`, `protocol`).
    pub fn parse(pattern: &str, kind: &str) -> Result<ReplyRule, String> {
        let kind = ReasonKind::from_label(kind.trim())
            .filter(|k| *k != ReasonKind::Local)
            .ok_or_else(|| format!("{kind:?} is not a reply class"))?;
        let mut rest = pattern.trim();
        let mut code = None;
        if let Some((first, tail)) = split_token(rest) {
            if first.len() == 3 && first.bytes().all(|b| b.is_ascii_digit()) {
                code = first.parse().ok();
                rest = tail;
            }
        }
        let mut enhanced = None;
        if let Some((first, tail)) = split_token(rest) {
            let parts: Vec<&str> = first.split('.').collect();
            if parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            {
                let n = |s: &str| s.parse::<u16>().ok();
                if let (Some(c), Some(s), Some(d)) = (n(parts[0]), n(parts[1]), n(parts[2])) {
                    enhanced = Some(EnhancedCode::new(c as u8, s, d));
                    rest = tail;
                }
            }
        }
        let text = (!rest.is_empty()).then(|| rest.to_ascii_lowercase());
        if code.is_none() && enhanced.is_none() && text.is_none() {
            return Err(format!("{pattern:?} matches nothing"));
        }
        Ok(ReplyRule {
            code,
            enhanced,
            text,
            kind,
        })
    }

    fn matches(&self, reply: &Reply) -> bool {
        self.code.is_none_or(|c| c == reply.code)
            && self.enhanced.is_none_or(|e| Some(e) == reply.enhanced)
            && self
                .text
                .as_deref()
                .is_none_or(|t| reply.text().to_ascii_lowercase().contains(t))
    }
}

fn split_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    Some(match s.split_once(char::is_whitespace) {
        Some((a, b)) => (a, b.trim_start()),
        None => (s, ""),
    })
}

/// A transport's rules: its own first, then the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRules {
    rules: Vec<ReplyRule>,
}

impl Default for ReplyRules {
    fn default() -> Self {
        ReplyRules::with_overrides(Vec::new())
    }
}

impl ReplyRules {
    /// `own` rules, then the defaults.
    pub fn with_overrides(own: Vec<ReplyRule>) -> ReplyRules {
        let mut rules = own;
        rules.extend(
            DEFAULT_RULES
                .iter()
                .filter_map(|(p, k)| ReplyRule::parse(p, k).ok()),
        );
        ReplyRules { rules }
    }

    /// The class of the first rule matching `reply`.
    pub fn classify(&self, reply: &Reply) -> Option<ReasonKind> {
        self.rules.iter().find(|r| r.matches(reply)).map(|r| r.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, enhanced: Option<(u8, u16, u16)>, text: &str) -> Reply {
        Reply::new(
            code,
            enhanced.map(|(c, s, d)| EnhancedCode::new(c, s, d)),
            text,
        )
    }

    #[test]
    fn defaults_parse_and_classify_provider_replies() {
        for (p, k) in DEFAULT_RULES {
            ReplyRule::parse(p, k).unwrap();
        }
        let rules = ReplyRules::default();
        let c = |r: Reply| rules.classify(&r);
        assert_eq!(
            c(reply(
                454,
                None,
                "Throttling failure: Maximum sending rate exceeded."
            )),
            Some(ReasonKind::Throttle)
        );
        assert_eq!(
            c(reply(
                454,
                None,
                "Throttling failure: Daily message quota exceeded."
            )),
            Some(ReasonKind::Quota)
        );
        assert_eq!(
            c(reply(
                550,
                Some((5, 4, 5)),
                "Daily user sending quota exceeded. g-1"
            )),
            Some(ReasonKind::Quota)
        );
        assert_eq!(
            c(reply(
                535,
                Some((5, 7, 8)),
                "Username and Password not accepted"
            )),
            Some(ReasonKind::Auth)
        );
        assert_eq!(c(reply(550, Some((5, 1, 1)), "no such user")), None);
    }

    #[test]
    fn own_rules_come_first_and_parse_strictly() {
        let own = vec![ReplyRule::parse("550 5.4.5", "throttle").unwrap()];
        let rules = ReplyRules::with_overrides(own);
        assert_eq!(
            rules.classify(&reply(
                550,
                Some((5, 4, 5)),
                "Daily user sending quota exceeded"
            )),
            Some(ReasonKind::Throttle)
        );
        assert!(ReplyRule::parse("454", "nonsense").is_err());
        assert!(ReplyRule::parse("454", "local").is_err());
        assert!(ReplyRule::parse("  ", "quota").is_err());
        let r = ReplyRule::parse("454 4.7.0", "throttle").unwrap();
        assert!(r.matches(&reply(454, Some((4, 7, 0)), "anything")));
        assert!(!r.matches(&reply(454, None, "anything")));
    }
}

#[cfg(test)]
mod docs_tests {
    /// docs/replies.md lists every default rule.
    #[test]
    fn every_default_rule_is_documented() {
        let doc = include_str!("../../docs/replies.md");
        for (pattern, kind) in super::DEFAULT_RULES {
            assert!(
                doc.contains(&format!("| `{pattern}` | {kind} |")),
                "docs/replies.md lacks {pattern:?} -> {kind}"
            );
        }
    }
}
