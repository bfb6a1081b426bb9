//! SASLprep (RFC 4013) of user names and passwords, and the escaping of SCRAM user
//! names (RFC 5802 §5.1).
//!
//! SASLprep maps non-ASCII spaces to U+0020, removes "commonly mapped to nothing"
//! characters such as the soft hyphen U+00AD, normalises to NFKC (so U+2168 ROMAN
//! NUMERAL NINE becomes "IX"), and refuses control and private-use characters. It is
//! applied before anything is hashed, so both sides derive the same keys from the
//! same password however it was typed.

use super::error::SaslError;

/// SASLprep of a user name or password; `field` names it in the error (the value is
/// never reported).
pub fn saslprep(value: &str, field: &'static str) -> Result<String, SaslError> {
    // RFC 4013 §2: mapping, NFKC normalisation, prohibited output, bidi checks.
    stringprep::saslprep(value)
        .map(|prepared| prepared.into_owned())
        .map_err(|_| SaslError::SaslPrep { field })
}

/// Escapes a user name for the SCRAM `n=` and `a=` attributes: RFC 5802 §5.1 says ","
/// and "=" MUST be sent as "=2C" and "=3D".
pub fn escape_username(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '=' => out.push_str("=3D"),
            ',' => out.push_str("=2C"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_username`]. RFC 5802 §5.1: an "=" not followed by "2C" or "3D"
/// MUST fail the authentication, so it is an error here (and so is a bare ",").
pub fn unescape_username(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find(['=', ',']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = after;
        } else {
            return None;
        }
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4013_examples() {
        // RFC 4013 §3 examples.
        assert_eq!(saslprep("I\u{00AD}X", "password").unwrap(), "IX");
        assert_eq!(saslprep("user", "username").unwrap(), "user");
        assert_eq!(saslprep("USER", "username").unwrap(), "USER");
        assert_eq!(saslprep("\u{00AA}", "password").unwrap(), "a");
        assert_eq!(saslprep("\u{2168}", "password").unwrap(), "IX");
        assert_eq!(
            saslprep("\u{0007}", "password"),
            Err(SaslError::SaslPrep { field: "password" })
        );
        // Bidi rule: a string starting with RandALCat must end with one.
        assert!(saslprep("\u{0627}\u{0031}", "password").is_err());
    }

    #[test]
    fn non_ascii_space_becomes_space() {
        assert_eq!(saslprep("a\u{00A0}b", "password").unwrap(), "a b");
    }

    #[test]
    fn escaping_round_trips() {
        for name in ["plain", "a,b", "a=b", "=,=,", ",", "=2C", "", "ünï"] {
            let escaped = escape_username(name);
            assert!(!escaped.contains(','), "{escaped}");
            assert_eq!(unescape_username(&escaped).as_deref(), Some(name));
        }
        assert_eq!(escape_username("a,b=c"), "a=2Cb=3Dc");
    }

    #[test]
    fn bad_escapes_are_refused() {
        for bad in ["a=b", "=", "=2c", "=3", "a,b", "x=41"] {
            assert_eq!(unescape_username(bad), None, "{bad}");
        }
    }
}
