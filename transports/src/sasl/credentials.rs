//! What the server knows about an account: SCRAM verifiers per hash and the CRAM-MD5
//! HMAC state, never a plaintext password; and the lookup the server mechanisms use.

use std::{collections::HashMap, fmt};

use super::{error::SaslError, hash::ScramHash, md5_state::CramMd5Secret, verifier::ScramVerifier};

/// A stored credential string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct CredentialParseError {
    /// What was being parsed, e.g. "SCRAM verifier".
    pub what: &'static str,
    /// What is wrong (never the secret itself).
    pub reason: String,
}

/// The stored credentials of one account. A missing entry disables that mechanism for
/// the account (the server then runs the decoy exchange, as for an unknown user).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoredCredentials {
    /// For SCRAM-SHA-256(-PLUS), and for checking PLAIN/LOGIN passwords.
    pub scram_sha256: Option<ScramVerifier>,
    /// For SCRAM-SHA-1(-PLUS), and for PLAIN/LOGIN when there is no SHA-256 verifier.
    pub scram_sha1: Option<ScramVerifier>,
    /// For CRAM-MD5.
    pub cram_md5: Option<CramMd5Secret>,
}

impl StoredCredentials {
    /// Everything derived from one password, with fresh random salts.
    pub fn from_password(password: &str, iterations: u32) -> Result<Self, SaslError> {
        Ok(StoredCredentials {
            scram_sha256: Some(ScramVerifier::generate(
                ScramHash::Sha256,
                password,
                iterations,
            )?),
            scram_sha1: Some(ScramVerifier::generate(
                ScramHash::Sha1,
                password,
                iterations,
            )?),
            cram_md5: Some(CramMd5Secret::from_password(password.as_bytes())),
        })
    }

    /// The SCRAM verifier for `hash`.
    pub fn scram(&self, hash: ScramHash) -> Option<&ScramVerifier> {
        match hash {
            ScramHash::Sha1 => self.scram_sha1.as_ref(),
            ScramHash::Sha256 => self.scram_sha256.as_ref(),
        }
    }

    /// The verifier to check a plaintext password against: SHA-256, else SHA-1.
    pub fn password_verifier(&self) -> Option<&ScramVerifier> {
        self.scram_sha256.as_ref().or(self.scram_sha1.as_ref())
    }
}

impl fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("scram_sha256", &self.scram_sha256)
            .field("scram_sha1", &self.scram_sha1)
            .field("cram_md5", &self.cram_md5)
            .finish()
    }
}

/// Where server mechanisms find accounts. `username` is the SASLprep'd, unescaped
/// authentication identity.
pub trait CredentialStore: Send + Sync {
    /// The account's credentials, or `None` for an unknown user.
    fn lookup(&self, username: &str) -> Option<StoredCredentials>;
}

impl CredentialStore for HashMap<String, StoredCredentials> {
    fn lookup(&self, username: &str) -> Option<StoredCredentials> {
        self.get(username).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::verifier::verify_password;

    #[test]
    fn from_password_fills_every_mechanism() {
        let creds = StoredCredentials::from_password("pencil", 4096).unwrap();
        assert!(verify_password(
            creds.scram(ScramHash::Sha256).unwrap(),
            "pencil"
        ));
        assert!(verify_password(
            creds.scram(ScramHash::Sha1).unwrap(),
            "pencil"
        ));
        assert_eq!(
            creds.cram_md5,
            Some(CramMd5Secret::from_password(b"pencil"))
        );
        assert_eq!(
            creds.password_verifier().map(|v| v.hash),
            Some(ScramHash::Sha256)
        );
        let only_sha1 = StoredCredentials {
            scram_sha256: None,
            ..creds.clone()
        };
        assert_eq!(
            only_sha1.password_verifier().map(|v| v.hash),
            Some(ScramHash::Sha1)
        );
        assert!(format!("{creds:?}").contains("redacted"));

        let mut store = HashMap::new();
        store.insert("user".to_string(), creds.clone());
        assert_eq!(store.lookup("user"), Some(creds));
        assert_eq!(store.lookup("User"), None);
    }
}
