//! The vocabulary of addresses: domains (IDNA, normalisation), the domain of an
//! address, and the xtext encodings of DSN parameters (RFC 3461 §4; the codec itself is
//! `relaygate_transports::xtext`, which the SMTP client uses at the wire) and of UTF-8
//! addresses in DSNs (RFC 6533 §3). Pure functions, used from submission to delivery.

/// Why a domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("empty domain")]
    Empty,
    #[error("{0:?} is not a valid domain")]
    Invalid(String),
}

/// Lowercases a domain and converts it to its ASCII (IDNA) form.
pub fn normalize_domain(domain: &str) -> Result<String, DomainError> {
    let trimmed = domain.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(DomainError::Empty);
    }
    if trimmed.starts_with('[') && trimmed.ends_with(']') {
        // An address literal (RFC 5321 §4.1.3) compares as written, lowercased.
        return Ok(trimmed.to_ascii_lowercase());
    }
    let ascii = if is_plain_ascii(trimmed) {
        // What IDNA gives for such a name anyway, without its per-call allocations.
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(trimmed).map_err(|_| DomainError::Invalid(domain.to_string()))?
    };
    if ascii.is_empty()
        || ascii
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
        || !ascii.bytes().all(is_domain_byte)
    {
        return Err(DomainError::Invalid(domain.to_string()));
    }
    Ok(ascii)
}

/// What a domain in ASCII form may contain: letters, digits, `-`, `_` and `.`.
fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

/// Letters, digits, `-`, `_` and `.` only, and no label in IDNA's ACE form (`xn--`,
/// which IDNA must decode to check): IDNA only lowercases such a name.
fn is_plain_ascii(domain: &str) -> bool {
    domain.bytes().all(is_domain_byte)
        && !domain.split('.').any(|label| {
            label
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
        })
}

/// The domain part of an address (after the last `@`), normalized; empty for the null
/// sender or an address without a domain.
pub fn address_domain(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((_, d)) => normalize_domain(d).unwrap_or_else(|_| d.to_ascii_lowercase()),
        None => String::new(),
    }
}

pub use relaygate_transports::xtext::{decode as xtext_decode, encode as xtext_encode};

/// An ORCPT value with its address xtext-encoded (RFC 3461 §4.2): `type;xtext`.
pub fn orcpt_xtext(orcpt: &str) -> String {
    match orcpt.split_once(';') {
        Some((kind, addr)) => format!("{kind};{}", xtext_encode(addr)),
        None => xtext_encode(orcpt),
    }
}

/// RFC 6533 §3 `utf-8-addr-xtext`: `\x{HEX}` for every character outside printable
/// ASCII and for `\`, `+` and `=`.
pub fn utf8_addr_xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '\\' | '+' | '=') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", c as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_both_ways() {
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext_decode("a+2Bb+3Dc+20d").as_deref(), Some("a+b=c d"));
        assert_eq!(xtext_decode("bad+2"), None);
        assert_eq!(orcpt_xtext("rfc822;a+b@c"), "rfc822;a+2Bb@c");
        for s in ["plain", "ü@例子", "+=+", "tab\there"] {
            assert_eq!(xtext_decode(&xtext_encode(s)).as_deref(), Some(s));
        }
    }

    #[test]
    fn utf8_address_xtext() {
        assert_eq!(
            utf8_addr_xtext("用户@例子.广告"),
            "\\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}"
        );
        assert_eq!(utf8_addr_xtext("a+b=c\\d@x"), "a\\x{2B}b\\x{3D}c\\x{5C}d@x");
    }

    #[test]
    fn domains() {
        assert_eq!(normalize_domain("Example.ORG.").unwrap(), "example.org");
        assert_eq!(
            normalize_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert!(normalize_domain("").is_err());
        assert_eq!(address_domain("a@Bücher.Example"), "xn--bcher-kva.example");
        assert_eq!(address_domain(""), "");
    }

    /// The ASCII shortcut gives what IDNA gives, refusals included.
    #[test]
    fn plain_ascii_domains_match_idna() {
        let names = [
            "Example.ORG",
            "a.b",
            "mail-1.example",
            "_dmarc.Example",
            "a--b.example",
            "-lead.example",
            "trail-.example",
            "a..b",
            ".a",
            "x",
            "UPPER",
            "1.2.3.4",
            "xn--bcher-kva.example",
            "XN--BCHER-KVA.example",
            "xn--invalid-.example",
            &"a".repeat(64),
            &format!("{}.example", "b".repeat(63)),
        ];
        for name in names {
            let idna = idna::domain_to_ascii(name).ok().filter(|a| {
                !a.is_empty()
                    && !a.split('.').any(|l| l.is_empty() || l.len() > 63)
                    && a.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            });
            assert_eq!(normalize_domain(name).ok(), idna, "{name}");
        }
    }
}
