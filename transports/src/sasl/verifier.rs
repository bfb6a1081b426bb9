//! Stored SCRAM credentials: the verifier a server keeps instead of a password
//! (RFC 5802 §3: salt, iteration count, StoredKey, ServerKey), its text form from
//! RFC 5803, and password checks against it for PLAIN and LOGIN.
//!
//! Text form: `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
//! StoredKey lets a server check a proof but not log in as the user; ServerKey lets
//! whoever holds it impersonate the *server*. Both stay out of logs: `Debug` redacts.

use std::{fmt, str::FromStr};

use crate::ct::ct_eq;

use super::{
    credentials::CredentialParseError,
    error::SaslError,
    hash::ScramHash,
    mechanism::Mechanism,
    saslprep::saslprep,
    scram_msg::{b64, b64_decode, parse_count},
};

/// Fewest SCRAM iterations accepted, from servers (client side) and in verifiers.
/// RFC 7677 §4 asks for at least 4096; the RFC test vectors use 4096.
pub const MIN_ITERATIONS: u32 = 4096;
/// Most SCRAM iterations accepted: a server asking for more is refused rather than
/// letting it make us burn CPU (a cheap denial of service).
pub const MAX_ITERATIONS: u32 = 600_000;
/// Salt length used by [`ScramVerifier::generate`], in bytes.
pub const SALT_LEN: usize = 16;

/// A SCRAM verifier for one user and one hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// SHA-1 or SHA-256.
    pub hash: ScramHash,
    /// The salt (raw bytes).
    pub salt: Vec<u8>,
    /// The iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramVerifier {
    /// Derives the verifier of `password` (SASLprep'd first, RFC 5802 §2.2 `Normalize`).
    pub fn from_password(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, SaslError> {
        let mechanism = Mechanism::scram(hash, false);
        if salt.is_empty() {
            return Err(SaslError::InvalidSalt {
                mechanism,
                salt: String::new(),
                reason: "empty",
            });
        }
        check_iterations(mechanism, iterations)?;
        let password = saslprep(password, "password")?;
        let salted = hash.hi(password.as_bytes(), salt, iterations);
        Ok(Self::from_salted_password(hash, &salted, salt, iterations))
    }

    /// Like [`from_password`](Self::from_password) with a fresh random salt.
    pub fn generate(hash: ScramHash, password: &str, iterations: u32) -> Result<Self, SaslError> {
        Self::from_password(
            hash,
            password,
            &rand::random::<[u8; SALT_LEN]>(),
            iterations,
        )
    }

    /// The verifier for an already computed SaltedPassword (RFC 5802 §3).
    pub fn from_salted_password(
        hash: ScramHash,
        salted_password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let client_key = hash.hmac(salted_password, &[b"Client Key"]);
        ScramVerifier {
            hash,
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.h(&client_key),
            server_key: hash.hmac(salted_password, &[b"Server Key"]),
        }
    }
}

/// Checks a SCRAM iteration count against [`MIN_ITERATIONS`] and [`MAX_ITERATIONS`].
pub(crate) fn check_iterations(mechanism: Mechanism, iterations: u32) -> Result<(), SaslError> {
    if iterations < MIN_ITERATIONS {
        return Err(SaslError::IterationsTooLow {
            mechanism,
            iterations,
            minimum: MIN_ITERATIONS,
        });
    }
    if iterations > MAX_ITERATIONS {
        return Err(SaslError::IterationsTooHigh {
            mechanism,
            iterations,
            maximum: MAX_ITERATIONS,
        });
    }
    Ok(())
}

/// Checks a plaintext password (from PLAIN or LOGIN) against a verifier: derive the
/// StoredKey with the stored salt and iterations and compare in constant time. A
/// password that SASLprep refuses never matches.
pub fn verify_password(verifier: &ScramVerifier, password: &str) -> bool {
    let Ok(password) = saslprep(password, "password") else {
        return false;
    };
    let hash = verifier.hash;
    let salted = hash.hi(password.as_bytes(), &verifier.salt, verifier.iterations);
    let client_key = hash.hmac(&salted, &[b"Client Key"]);
    ct_eq(&hash.h(&client_key), &verifier.stored_key)
}

impl fmt::Display for ScramVerifier {
    /// The RFC 5803 form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}${}:{}${}:{}",
            self.hash.scram_name(),
            self.iterations,
            b64(&self.salt),
            b64(&self.stored_key),
            b64(&self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .field("salt", &b64(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

impl FromStr for ScramVerifier {
    type Err = CredentialParseError;

    /// Parses the RFC 5803 form (scheme name in any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| CredentialParseError {
            what: "SCRAM verifier",
            reason,
        };
        let mut parts = s.trim().split('$');
        let (Some(scheme), Some(params), Some(keys), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err(
                "expected SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>".into(),
            ));
        };
        let hash = if scheme.eq_ignore_ascii_case("SCRAM-SHA-256") {
            ScramHash::Sha256
        } else if scheme.eq_ignore_ascii_case("SCRAM-SHA-1") {
            ScramHash::Sha1
        } else {
            return Err(err(format!("unknown scheme {scheme:?}")));
        };
        let (Some((iterations, salt)), Some((stored_key, server_key))) =
            (params.split_once(':'), keys.split_once(':'))
        else {
            return Err(err("missing \":\" between fields".into()));
        };
        let iterations = parse_count(iterations)
            .ok_or_else(|| err(format!("iteration count {iterations:?} is not a number")))?;
        check_iterations(Mechanism::scram(hash, false), iterations)
            .map_err(|e| err(e.to_string()))?;
        let salt = b64_decode(salt)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| err("salt is empty or not base64".into()))?;
        let key = |value: &str, name: &str| {
            b64_decode(value)
                .filter(|k| k.len() == hash.output_len())
                .ok_or_else(|| {
                    err(format!(
                        "{name} is not base64 of {} bytes",
                        hash.output_len()
                    ))
                })
        };
        Ok(ScramVerifier {
            hash,
            salt,
            iterations,
            stored_key: key(stored_key, "StoredKey")?,
            server_key: key(server_key, "ServerKey")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==.
    fn rfc7677() -> ScramVerifier {
        let salt = b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramVerifier::from_password(ScramHash::Sha256, "pencil", &salt, 4096).unwrap()
    }

    #[test]
    fn string_round_trip() {
        for v in [
            rfc7677(),
            ScramVerifier::generate(ScramHash::Sha1, "pencil", 4096).unwrap(),
        ] {
            let text = v.to_string();
            assert_eq!(text.parse::<ScramVerifier>().unwrap(), v, "{text}");
        }
        let text = rfc7677().to_string();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{text}"
        );
    }

    #[test]
    fn parse_errors() {
        let good = rfc7677().to_string();
        let (_, keys) = good.rsplit_once('$').unwrap();
        let bad = [
            "".to_string(),
            "SCRAM-SHA-256".to_string(),
            format!("SCRAM-MD5$4096:c2FsdA==${keys}"),
            format!("SCRAM-SHA-256$40x6:c2FsdA==${keys}"),
            format!("SCRAM-SHA-256$1000:c2FsdA==${keys}"),
            format!("SCRAM-SHA-256$9999999:c2FsdA==${keys}"),
            format!("SCRAM-SHA-256$4096:${keys}"),
            format!("SCRAM-SHA-256$4096:!!!${keys}"),
            format!("SCRAM-SHA-1$4096:c2FsdA==${keys}"), // 32-byte keys for SHA-1
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA".to_string(),
            format!("{good}$extra"),
        ];
        for text in bad {
            assert!(text.parse::<ScramVerifier>().is_err(), "{text}");
        }
    }

    #[test]
    fn verify_password_checks_the_stored_key() {
        let v = rfc7677();
        assert!(verify_password(&v, "pencil"));
        assert!(!verify_password(&v, "pencil "));
        assert!(!verify_password(&v, "Pencil"));
        assert!(!verify_password(&v, "\u{0007}"));
    }

    #[test]
    fn saslprep_is_applied() {
        let v = ScramVerifier::generate(ScramHash::Sha256, "I\u{00AD}X", 4096).unwrap();
        assert!(verify_password(&v, "IX"));
        assert!(verify_password(&v, "\u{2168}"));
        assert!(!verify_password(&v, "I-X"));
    }

    #[test]
    fn bounds_and_salt() {
        assert!(matches!(
            ScramVerifier::from_password(ScramHash::Sha256, "p", b"s", 4095),
            Err(SaslError::IterationsTooLow {
                iterations: 4095,
                ..
            })
        ));
        assert!(matches!(
            ScramVerifier::from_password(ScramHash::Sha256, "p", b"s", 600_001),
            Err(SaslError::IterationsTooHigh { .. })
        ));
        assert!(matches!(
            ScramVerifier::from_password(ScramHash::Sha256, "p", b"", 4096),
            Err(SaslError::InvalidSalt { .. })
        ));
    }

    #[test]
    fn debug_redacts_keys() {
        let v = rfc7677();
        let text = format!("{v:?}");
        assert!(!text.contains(&b64(&v.stored_key)), "{text}");
        assert!(!text.contains(&b64(&v.server_key)), "{text}");
        assert!(text.contains("redacted"));
    }
}
