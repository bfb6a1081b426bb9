//! xtext (RFC 3461 §4), the encoding of the DSN parameters ENVID and ORCPT: printable
//! ASCII except "+" and "=" as is, every other byte as "+XX". Used by the submission
//! server (decoding what clients send) and the SMTP client (encoding at the wire).

/// Decodes xtext (RFC 3461 §4): "+XX" hex escapes.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes xtext (RFC 3461 §4): "+", "=", controls and non-ASCII as "+XX".
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways() {
        assert_eq!(encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(decode("a+2Bb+3Dc+20d").as_deref(), Some("a+b=c d"));
        assert_eq!(decode("bad+2"), None);
    }
}
