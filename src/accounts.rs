//! Accounts of submitting applications: their SASL credentials as the server keeps them
//! (SCRAM-SHA-256 and SCRAM-SHA-1 verifiers, the CRAM-MD5 HMAC state; never a plaintext
//! password), built from the config (a password file or environment variable, turned
//! into verifiers at load, or verifiers given directly) or, with the Redis store, from
//! [`AccountRecord`] JSON.

use std::collections::HashMap;
use std::path::Path;

use relaygate_transports::sasl::{
    CramMd5Secret, CredentialStore, ScramVerifier, StoredCredentials,
};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// PBKDF2 iterations for verifiers derived here (RFC 7677 §4: at least 4096).
pub const ITERATIONS: u32 = 4096;

/// The stored form of an account (config keys, Redis JSON, `relaygate account hash`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRecord {
    /// RFC 5803 form: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha256: Option<String>,
    /// RFC 5803 form for SCRAM-SHA-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha1: Option<String>,
    /// `CRAM-MD5$<inner>:<outer>`: the HMAC-MD5 intermediate states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cram_md5: Option<String>,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("scram_sha256", &self.scram_sha256.as_ref().map(|_| "<set>"))
            .field("scram_sha1", &self.scram_sha1.as_ref().map(|_| "<set>"))
            .field("cram_md5", &self.cram_md5.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl AccountRecord {
    /// Derives every verifier from a password, with fresh salts.
    pub fn from_password(password: &str) -> Result<AccountRecord, String> {
        let creds =
            StoredCredentials::from_password(password, ITERATIONS).map_err(|e| e.to_string())?;
        Ok(AccountRecord {
            scram_sha256: creds.scram_sha256.map(|v| v.to_string()),
            scram_sha1: creds.scram_sha1.map(|v| v.to_string()),
            cram_md5: creds.cram_md5.map(|v| v.to_string()),
        })
    }

    /// Parses the stored strings.
    pub fn credentials(&self) -> Result<StoredCredentials, String> {
        let scram = |s: &Option<String>, what: &str| -> Result<Option<ScramVerifier>, String> {
            s.as_deref()
                .map(|t| {
                    t.parse::<ScramVerifier>()
                        .map_err(|e| format!("{what}: {e}"))
                })
                .transpose()
        };
        Ok(StoredCredentials {
            scram_sha256: scram(&self.scram_sha256, "scram_sha256")?,
            scram_sha1: scram(&self.scram_sha1, "scram_sha1")?,
            cram_md5: self
                .cram_md5
                .as_deref()
                .map(|t| {
                    t.parse::<CramMd5Secret>()
                        .map_err(|e| format!("cram_md5: {e}"))
                })
                .transpose()?,
        })
    }
}

/// Reads a secret: the first line of a file, or an environment variable.
pub fn read_secret(file: &str, env: &str, what: &str) -> Result<Option<String>, String> {
    if !file.is_empty() {
        let text = std::fs::read_to_string(Path::new(file))
            .map_err(|e| format!("{what}: password_file {file}: {e}"))?;
        let line = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_end_matches('\r')
            .to_string();
        if line.is_empty() {
            return Err(format!("{what}: password_file {file} is empty"));
        }
        return Ok(Some(line));
    }
    if !env.is_empty() {
        return match std::env::var(env) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(format!("{what}: environment variable {env} is not set")),
        };
    }
    Ok(None)
}

/// The accounts the submission server authenticates against.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    map: HashMap<String, StoredCredentials>,
}

impl Accounts {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Builds the accounts of a config: verifiers given in the file win; else the password
    /// (file or environment) is turned into verifiers.
    pub fn from_config(config: &Config) -> Result<Accounts, String> {
        let mut map = HashMap::new();
        for (name, a) in &config.accounts {
            let what = format!("accounts.{name}");
            let given = AccountRecord {
                scram_sha256: non_empty(&a.scram_sha256),
                scram_sha1: non_empty(&a.scram_sha1),
                cram_md5: non_empty(&a.cram_md5),
            };
            let record = if given != AccountRecord::default() {
                given
            } else {
                match read_secret(&a.password_file, &a.password_env, &what)? {
                    Some(pw) => {
                        AccountRecord::from_password(&pw).map_err(|e| format!("{what}: {e}"))?
                    }
                    None => {
                        return Err(format!(
                            "{what}: set password_file, password_env or verifiers"
                        ))
                    }
                }
            };
            let creds = record.credentials().map_err(|e| format!("{what}: {e}"))?;
            map.insert(name.clone(), creds);
        }
        Ok(Accounts { map })
    }

    /// Accounts from stored records (the Redis store).
    pub fn from_records(records: &HashMap<String, AccountRecord>) -> Result<Accounts, String> {
        let mut map = HashMap::new();
        for (name, r) in records {
            map.insert(
                name.clone(),
                r.credentials()
                    .map_err(|e| format!("account {name}: {e}"))?,
            );
        }
        Ok(Accounts { map })
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl CredentialStore for Accounts {
    fn lookup(&self, username: &str) -> Option<StoredCredentials> {
        self.map.get(username).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_verifies_the_password() {
        let r = AccountRecord::from_password("pässword").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("pässword"));
        let back: AccountRecord = serde_json::from_str(&json).unwrap();
        let creds = back.credentials().unwrap();
        let v = creds.password_verifier().unwrap();
        assert!(relaygate_transports::sasl::verify_password(v, "pässword"));
        assert!(!relaygate_transports::sasl::verify_password(v, "wrong"));
        assert!(
            !format!("{r:?}").contains("SCRAM"),
            "Debug must not print verifiers"
        );
    }

    #[test]
    fn bad_verifier_is_an_error() {
        let r = AccountRecord {
            scram_sha256: Some("nonsense".into()),
            ..Default::default()
        };
        assert!(r.credentials().unwrap_err().contains("scram_sha256"));
    }
}
