//! Decoy credentials for unknown users, so that the server's answers do not reveal
//! which accounts exist.
//!
//! A SCRAM server sends the salt and iteration count before it can check anything, so
//! an attacker who sees a random salt for `bob` and a stable one for `alice` learns who
//! has an account. For a name without credentials we therefore derive a salt from the
//! name and a server secret (HMAC-SHA-256): stable across attempts like a real one,
//! unpredictable without the secret. The exchange then runs to the end with decoy
//! keys and fails as a wrong password would, after the same amount of work.

use super::{
    hash::ScramHash, md5_state::CramMd5Secret, server::ServerSettings, verifier::ScramVerifier,
};

/// Length of a decoy salt, the same as generated salts.
const DECOY_SALT_LEN: usize = super::verifier::SALT_LEN;

fn derive(settings: &ServerSettings, purpose: &str, hash: ScramHash, username: &str) -> Vec<u8> {
    ScramHash::Sha256.hmac(
        settings.decoy_secret(),
        &[
            b"relaygate decoy\0",
            purpose.as_bytes(),
            b"\0",
            hash.scram_name().as_bytes(),
            b"\0",
            username.as_bytes(),
        ],
    )
}

/// A SCRAM verifier for a user that does not exist: deterministic salt, the configured
/// iteration count, and keys nobody knows a password for.
pub(crate) fn verifier(
    settings: &ServerSettings,
    hash: ScramHash,
    username: &str,
) -> ScramVerifier {
    let mut salt = derive(settings, "salt", hash, username);
    salt.truncate(DECOY_SALT_LEN);
    let mut stored_key = derive(settings, "stored key", hash, username);
    stored_key.truncate(hash.output_len());
    let mut server_key = derive(settings, "server key", hash, username);
    server_key.truncate(hash.output_len());
    ScramVerifier {
        hash,
        salt,
        iterations: settings.clamped_decoy_iterations(),
        stored_key,
        server_key,
    }
}

/// A CRAM-MD5 secret for a user that does not exist.
pub(crate) fn cram_md5(settings: &ServerSettings, username: &str) -> CramMd5Secret {
    CramMd5Secret::from_password(&derive(settings, "cram-md5", ScramHash::Sha256, username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_user_and_secret() {
        let a = ServerSettings::new("h", [1; 32]);
        let b = ServerSettings::new("h", [2; 32]);
        let v1 = verifier(&a, ScramHash::Sha256, "bob");
        assert_eq!(v1, verifier(&a, ScramHash::Sha256, "bob"));
        assert_ne!(v1.salt, verifier(&a, ScramHash::Sha256, "alice").salt);
        assert_ne!(v1.salt, verifier(&b, ScramHash::Sha256, "bob").salt);
        assert_ne!(v1.salt, verifier(&a, ScramHash::Sha1, "bob").salt);
        assert_eq!(v1.salt.len(), 16);
        assert_eq!(v1.stored_key.len(), 32);
        assert_eq!(verifier(&a, ScramHash::Sha1, "bob").server_key.len(), 20);
        assert_eq!(v1.iterations, 4096);
        assert_ne!(cram_md5(&a, "bob"), cram_md5(&a, "alice"));
    }
}
