//! Accounts of submitting applications: their SASL credentials as the server keeps them
//! (SCRAM-SHA-256 and SCRAM-SHA-1 verifiers, the CRAM-MD5 HMAC state; never a plaintext
//! password), built from the config (a password file or environment variable, turned
//! into verifiers at load, or verifiers given directly) or, with the Redis store, from
//! [`AccountRecord`] JSON. Each account may also be limited to the envelope senders it
//! may use ([`SenderPolicy`]: `allowed_senders`).

use std::collections::HashMap;
use std::path::Path;

use relaygate_transports::sasl::{
    CramMd5Secret, CredentialStore, ScramVerifier, StoredCredentials,
};
use serde::{Deserialize, Serialize};

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
    /// MAIL FROM addresses this account may use (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_senders: Vec<String>,
    /// Submission rate limit(s) (`"10/s"`, `"1000/h"`, ...); a MAIL over one is answered
    /// `452 4.7.0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limit: Vec<String>,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("scram_sha256", &self.scram_sha256.as_ref().map(|_| "<set>"))
            .field("scram_sha1", &self.scram_sha1.as_ref().map(|_| "<set>"))
            .field("cram_md5", &self.cram_md5.as_ref().map(|_| "<set>"))
            .field("allowed_senders", &self.allowed_senders)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// Why account data was refused; each names the field (and the account, where known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// Verifiers cannot be derived from the password (SASLprep refused it).
    #[error("{0}")]
    Password(String),
    /// A stored verifier does not parse.
    #[error("{field}: {reason}")]
    Verifier { field: &'static str, reason: String },
    /// An `allowed_senders` entry is not an address, `@domain` or `.domain`.
    #[error("{0:?} is not an address, @domain or .domain")]
    Sender(String),
    /// A `rate_limit` entry does not parse.
    #[error("{0}")]
    Rate(String),
    /// In this field.
    #[error("{field}: {source}")]
    Field {
        field: &'static str,
        #[source]
        source: Box<AccountError>,
    },
    /// The same, for a named account.
    #[error("account {account}: {source}")]
    Account {
        account: String,
        #[source]
        source: Box<AccountError>,
    },
}

impl AccountError {
    fn of(account: &str, e: AccountError) -> AccountError {
        AccountError::Account {
            account: account.to_string(),
            source: Box::new(e),
        }
    }
}

impl AccountRecord {
    /// Derives every verifier from a password, with fresh salts.
    pub fn from_password(password: &str) -> Result<AccountRecord, AccountError> {
        let creds = StoredCredentials::from_password(password, ITERATIONS)
            .map_err(|e| AccountError::Password(e.to_string()))?;
        Ok(AccountRecord {
            scram_sha256: creds.scram_sha256.map(|v| v.to_string()),
            scram_sha1: creds.scram_sha1.map(|v| v.to_string()),
            cram_md5: creds.cram_md5.map(|v| v.to_string()),
            allowed_senders: Vec::new(),
            rate_limit: Vec::new(),
        })
    }

    /// Parses the stored strings.
    pub fn credentials(&self) -> Result<StoredCredentials, AccountError> {
        let scram = |s: &Option<String>,
                     field: &'static str|
         -> Result<Option<ScramVerifier>, AccountError> {
            s.as_deref()
                .map(|t| {
                    t.parse::<ScramVerifier>()
                        .map_err(|e| AccountError::Verifier {
                            field,
                            reason: e.to_string(),
                        })
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
                        .map_err(|e| AccountError::Verifier {
                            field: "cram_md5",
                            reason: e.to_string(),
                        })
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

/// One entry of `allowed_senders` / `trusted_senders`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SenderPattern {
    /// This address (compared without case; the domain in IDNA form).
    Address(String),
    /// `@domain`: any address at exactly this domain.
    Domain(String),
    /// `.domain`: any address at this domain or below it.
    Subdomains(String),
}

/// The envelope senders a client may use; empty allows any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderPolicy {
    patterns: Vec<SenderPattern>,
}

/// An address with its domain normalised and the local part lowercased.
fn normal_address(addr: &str) -> Option<String> {
    let (local, domain) = addr.rsplit_once('@')?;
    let domain = crate::address::normalize_domain(domain).ok()?;
    (!local.is_empty()).then(|| format!("{}@{domain}", local.to_lowercase()))
}

impl SenderPolicy {
    /// Parses `"addr"`, `"@domain"`, `".domain"` entries; the error names the entry.
    pub fn parse(entries: &[String]) -> Result<SenderPolicy, AccountError> {
        let mut patterns = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.trim();
            let bad = || AccountError::Sender(e.to_string());
            let p = if let Some(d) = e.strip_prefix('@') {
                SenderPattern::Domain(crate::address::normalize_domain(d).map_err(|_| bad())?)
            } else if let Some(d) = e.strip_prefix('.') {
                SenderPattern::Subdomains(crate::address::normalize_domain(d).map_err(|_| bad())?)
            } else {
                SenderPattern::Address(normal_address(e).ok_or_else(bad)?)
            };
            patterns.push(p);
        }
        Ok(SenderPolicy { patterns })
    }

    /// Whether any sender is allowed (no entries).
    pub fn is_open(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `sender` (a MAIL FROM path, `""` for the null sender) is allowed. The null
    /// sender always is: it is what notifications go out with.
    pub fn allows(&self, sender: &str) -> bool {
        if self.patterns.is_empty() || sender.is_empty() {
            return true;
        }
        let Some(addr) = normal_address(sender) else {
            return false;
        };
        let domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
        self.patterns.iter().any(|p| match p {
            SenderPattern::Address(a) => *a == addr,
            SenderPattern::Domain(d) => d == domain,
            SenderPattern::Subdomains(d) => {
                domain == d
                    || domain
                        .strip_suffix(d.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
        })
    }
}

/// The accounts the submission server authenticates against.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    map: HashMap<String, StoredCredentials>,
    senders: HashMap<String, SenderPolicy>,
    rates: HashMap<String, Vec<crate::queue::rate::Rate>>,
}

impl Accounts {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The iteration count most accounts' SCRAM verifiers use ([`ITERATIONS`] when there
    /// are none): the decoy shown to unknown users must use the same, or the count would
    /// tell which accounts exist.
    pub fn typical_iterations(&self) -> u32 {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for c in self.map.values() {
            for v in [&c.scram_sha256, &c.scram_sha1].into_iter().flatten() {
                *counts.entry(v.iterations).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|&(iterations, n)| (n, iterations))
            .map_or(ITERATIONS, |(iterations, _)| iterations)
    }

    /// The senders `account` may use (any, for an account without a list).
    pub fn senders(&self, account: &str) -> Option<&SenderPolicy> {
        self.senders.get(account)
    }

    /// The submission rate limits of `account` (none: unlimited).
    pub fn rate_limits(&self, account: &str) -> &[crate::queue::rate::Rate] {
        self.rates.get(account).map_or(&[], Vec::as_slice)
    }

    /// Accounts from stored records (the Redis store).
    pub fn from_records(
        records: &HashMap<String, AccountRecord>,
    ) -> Result<Accounts, AccountError> {
        let mut map = HashMap::new();
        let mut senders = HashMap::new();
        let mut rates = HashMap::new();
        for (name, r) in records {
            map.insert(
                name.clone(),
                r.credentials().map_err(|e| AccountError::of(name, e))?,
            );
            let policy = SenderPolicy::parse(&r.allowed_senders).map_err(|e| {
                let e = AccountError::Field {
                    field: "allowed_senders",
                    source: Box::new(e),
                };
                AccountError::of(name, e)
            })?;
            senders.insert(name.clone(), policy);
            let limits = r
                .rate_limit
                .iter()
                .map(|t| crate::queue::rate::Rate::parse(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    AccountError::of(
                        name,
                        AccountError::Field {
                            field: "rate_limit",
                            source: Box::new(AccountError::Rate(e)),
                        },
                    )
                })?;
            if !limits.is_empty() {
                rates.insert(name.clone(), limits);
            }
        }
        Ok(Accounts {
            map,
            senders,
            rates,
        })
    }
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
        assert!(r
            .credentials()
            .unwrap_err()
            .to_string()
            .contains("scram_sha256"));
    }
}

#[cfg(test)]
mod sender_tests {
    use super::*;

    #[test]
    fn sender_patterns() {
        let p = SenderPolicy::parse(&[
            "App@Example.ORG".into(),
            "@billing.example.net".into(),
            ".example.com".into(),
        ])
        .unwrap();
        for ok in [
            "app@example.org",
            "APP@example.org.",
            "x@billing.example.net",
            "x@example.com",
            "x@mail.example.com",
            "",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for no in [
            "other@example.org",
            "x@sub.billing.example.net",
            "x@notexample.com",
            "x@example.com.evil.test",
            "not-an-address",
        ] {
            assert!(!p.allows(no), "{no}");
        }
        assert!(SenderPolicy::default().allows("anyone@anywhere.test"));
        assert!(SenderPolicy::parse(&["@".into()]).is_err());
        assert!(SenderPolicy::parse(&["bad domain@x y".into()]).is_err());
    }
}
