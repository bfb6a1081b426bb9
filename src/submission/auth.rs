//! SMTP AUTH on the submission listener (RFC 4954): which mechanisms a session offers
//! and the wire encoding of the exchange (failed logins are `auth_guard`'s). The
//! mechanisms themselves (SCRAM, CRAM-MD5, PLAIN, LOGIN) are the pure state machines of
//! `relaygate_transports::sasl`.

use base64::Engine;
use relaygate_transports::sasl::Mechanism;

/// Mechanisms a session offers, strongest first: -PLUS only with a TLS 1.3 channel
/// binding; PLAIN and LOGIN only inside TLS or from loopback (SPEC §2).
pub fn offered(channel_binding: bool, tls: bool, loopback: bool) -> Vec<Mechanism> {
    let mut v = Vec::with_capacity(7);
    if channel_binding {
        v.push(Mechanism::ScramSha256Plus);
    }
    v.push(Mechanism::ScramSha256);
    if channel_binding {
        v.push(Mechanism::ScramSha1Plus);
    }
    v.push(Mechanism::ScramSha1);
    v.push(Mechanism::CramMd5);
    if tls || loopback {
        v.push(Mechanism::Plain);
        v.push(Mechanism::Login);
    }
    v
}

/// Decodes a client's base64 line; `=` is an empty response (RFC 4954 §4).
pub fn decode(line: &str) -> Option<Vec<u8>> {
    let line = line.trim();
    if line == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(line).ok()
}

pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_mechanisms_need_tls_or_loopback() {
        assert!(!offered(false, false, false).contains(&Mechanism::Plain));
        assert!(offered(false, false, true).contains(&Mechanism::Plain));
        assert!(offered(false, true, false).contains(&Mechanism::Login));
        assert!(!offered(false, true, false).contains(&Mechanism::ScramSha256Plus));
        assert_eq!(offered(true, true, false)[0], Mechanism::ScramSha256Plus);
    }

    #[test]
    fn empty_response() {
        assert_eq!(decode("="), Some(vec![]));
        assert_eq!(decode("AGE="), Some(vec![0, b'a']));
        assert_eq!(decode("!!"), None);
    }
}
