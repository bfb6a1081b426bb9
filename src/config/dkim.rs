//! The `[dkim]` table: the signing keys (`[[dkim.keys]]`).

use serde::Deserialize;

/// DKIM signing (RFC 6376): several keys for one domain give several signatures.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    #[serde(default)]
    pub keys: Vec<DkimKeyConfig>,
}

/// One signing key.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// The header `From:` domain signed for (`d=`); `.example.org` also signs for its
    /// subdomains (still with `d=example.org`).
    pub domain: String,
    /// The selector (`s=`): the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PKCS#8 (or PKCS#1 for RSA) PEM file.
    pub key_file: String,
    /// `ed25519-sha256` or `rsa-sha256`; empty: from the key.
    #[serde(default)]
    pub algorithm: String,
}
