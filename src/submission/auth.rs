//! SMTP AUTH on the submission listener (RFC 4954): which mechanisms a session offers,
//! the growing delay after failed logins per client address, and the wire encoding of
//! the exchange. The mechanisms themselves (SCRAM, CRAM-MD5, PLAIN, LOGIN) are the pure
//! state machines of `relaygate_transports::sasl`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use relaygate_transports::sasl::Mechanism;

/// Failures are forgotten after this long without another one.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// The delay before the answer to the first failure; it doubles with each further one.
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Addresses remembered at most (oldest dropped), so a flood cannot grow the table.
const MAX_TRACKED: usize = 10_000;

/// SASL steps that may run at once on the blocking pool: password checks run PBKDF2
/// with the verifier's iteration count, which must not stall the async threads, nor
/// take every core when guessers hammer the listener.
const VERIFY_SLOTS: usize = 2;

/// Failed logins per client address, and the slots for password checks.
#[derive(Debug)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Held while a SASL step runs on the blocking pool.
    pub verify_slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            failures: Mutex::default(),
            verify_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(VERIFY_SLOTS)),
        }
    }
}

impl AuthThrottle {
    /// Notes a failure and returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, t)| now.duration_since(*t) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let shift = (entry.0 - 1).min(10);
        FIRST_DELAY.saturating_mul(1 << shift).min(MAX_DELAY)
    }

    /// Forgets an address after a successful login.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

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
    fn delays_grow_and_reset() {
        let t = AuthThrottle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let d: Vec<_> = (0..4).map(|_| t.failed(ip)).collect();
        assert!(d.windows(2).all(|w| w[1] > w[0]), "{d:?}");
        t.succeeded(ip);
        assert_eq!(t.failed(ip), FIRST_DELAY);
        assert_eq!(
            t.failed("192.0.2.2".parse().unwrap()),
            FIRST_DELAY,
            "per address"
        );
    }

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
