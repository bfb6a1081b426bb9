//! SCRAM message syntax (RFC 5802 §7): comma-separated `a=value` attributes, nonces and
//! base64 fields, shared by the client and the server.

use base64::{engine::general_purpose::STANDARD, Engine as _};

/// Length of the random part of our nonces, in bytes, before base64.
pub(crate) const NONCE_RANDOM_LEN: usize = 24;

/// Splits a SCRAM message into its attributes, in order. Each must be one ASCII letter,
/// "=", and a value (RFC 5802 §7: `attr-val = ALPHA "=" value`); values never contain
/// "," but may contain "=" (base64 padding).
pub(crate) fn attributes(message: &str) -> Result<Vec<(char, &str)>, String> {
    message
        .split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(name), Some('=')) if name.is_ascii_alphabetic() => Ok((name, &part[2..])),
                _ => Err(format!("{part:?} is not an attribute (letter=value)")),
            }
        })
        .collect()
}

/// Takes the attribute at `index`, which must be `name`.
pub(crate) fn expect_attr<'a>(
    attrs: &[(char, &'a str)],
    index: usize,
    name: char,
) -> Result<&'a str, String> {
    match attrs.get(index) {
        Some((n, value)) if *n == name => Ok(value),
        Some((n, _)) => Err(format!("expected attribute {name}= but found {n}=")),
        None => Err(format!("attribute {name}= is missing")),
    }
}

/// A fresh nonce: random bytes in base64, which has no "," (RFC 5802 §5.1: printable
/// characters except ",").
pub(crate) fn new_nonce() -> String {
    STANDARD.encode(rand::random::<[u8; NONCE_RANDOM_LEN]>())
}

/// RFC 5802 §7: `printable = %x21-2B / %x2D-7E` (no ","), and a nonce is `1*printable`.
pub(crate) fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Decodes standard base64 (with padding), as SCRAM uses throughout.
pub(crate) fn b64_decode(value: &str) -> Option<Vec<u8>> {
    STANDARD.decode(value).ok()
}

/// Encodes standard base64 (with padding).
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Parses a decimal iteration count, saturating at `u32::MAX` so that a huge count is
/// reported as too high rather than malformed. `None` for anything but digits.
pub(crate) fn parse_count(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u32>().unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_split() {
        let attrs = attributes("r=abc,s=QSXCR+Q6sek8bf92,i=4096").unwrap();
        assert_eq!(
            attrs,
            vec![('r', "abc"), ('s', "QSXCR+Q6sek8bf92"), ('i', "4096")]
        );
        assert_eq!(attributes("v=a==").unwrap(), vec![('v', "a==")]);
        assert_eq!(attributes("r=").unwrap(), vec![('r', "")]);
        for bad in ["", "r", "r=a,,s=b", "1=a", "rr=a", "=a"] {
            assert!(attributes(bad).is_err(), "{bad:?}");
        }
        let attrs = attributes("r=a,s=b").unwrap();
        assert_eq!(expect_attr(&attrs, 1, 's'), Ok("b"));
        assert!(expect_attr(&attrs, 0, 's').is_err());
        assert!(expect_attr(&attrs, 2, 'i').is_err());
    }

    #[test]
    fn nonces() {
        let a = new_nonce();
        let b = new_nonce();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(valid_nonce(&a));
        assert!(valid_nonce("fyko+d2lbbFgONRv9qkxdawL"));
        assert!(!valid_nonce(""));
        assert!(!valid_nonce("a b"));
        assert!(!valid_nonce("a,b"));
        assert!(!valid_nonce("é"));
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("4096"), Some(4096));
        assert_eq!(parse_count("99999999999999"), Some(u32::MAX));
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count(""), None);
        assert_eq!(parse_count("12a"), None);
    }
}
