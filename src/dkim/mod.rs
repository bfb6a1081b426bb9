//! DKIM signing (RFC 6376; `rsa-sha256`, and `ed25519-sha256` per RFC 8463) for the
//! header `From:` domain, with the keys of `[[dkim.keys]]`.
//!
//! A message is signed once, when it is queued: the `DKIM-Signature` fields (one per
//! key of the domain, e.g. an RSA and an Ed25519 one) are stored with the message in the
//! spool and put in front of it at delivery, unless the transport sets `dkim = false`.
//! Signatures are relaxed/relaxed, never with `l=`; From, To, Subject and Date are
//! over-signed (listed once more than they occur), so that none can be added after
//! signing without breaking the signature.

pub mod canon;
pub mod keygen;

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};

use crate::config::{DkimConfig, DkimKeyConfig};
use crate::model::{format_id, MsgId};

/// Header fields signed when present, in this order.
const SIGNED: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

/// Signed once more than they occur (an added one breaks the signature).
const OVER_SIGNED: &[&str] = &["from", "to", "subject", "date"];

/// The DER `DigestInfo` prefix of SHA-256 for RSA PKCS#1 v1.5 signatures (RFC 8017 §9.2).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Smallest RSA key accepted (RFC 8301 §3.2: at least 1024 bits).
pub const RSA_MIN_BITS: usize = 1024;

type Entry = (String, bool, String, Option<Algorithm>);

/// The domain (normalized), whether subdomains are covered, the selector (lowercase) and
/// the algorithm of an entry, checked without reading its file.
fn parse_entry(c: &DkimKeyConfig) -> Result<Entry, DkimError> {
    let (subdomains, domain) = match c.domain.trim().strip_prefix('.') {
        Some(d) => (true, d),
        None => (false, c.domain.trim()),
    };
    let domain = crate::address::normalize_domain(domain)
        .map_err(|e| DkimError::Config(format!("domain {:?}: {e}", c.domain)))?;
    let selector = c.selector.trim();
    if selector.is_empty()
        || !selector
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(DkimError::Config(format!(
            "selector {:?} is not a DNS label (letters, digits, hyphens)",
            c.selector
        )));
    }
    let algorithm = match c.algorithm.trim() {
        "" => None,
        a => Some(Algorithm::parse(a).ok_or_else(|| {
            DkimError::Config(format!(
                "algorithm {a:?}: \"ed25519-sha256\" or \"rsa-sha256\""
            ))
        })?),
    };
    if c.key_file.trim().is_empty() {
        return Err(DkimError::Config("key_file is empty".into()));
    }
    Ok((domain, subdomains, selector.to_ascii_lowercase(), algorithm))
}

/// Checks an entry's form (domain, selector, algorithm) without reading its key file:
/// what a store write can check on a host that does not hold the keys.
pub fn check_entry(c: &DkimKeyConfig) -> Result<(), DkimError> {
    parse_entry(c).map(|_| ())
}

/// A signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    /// `a=` / the config's `algorithm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The key record's `k=`.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }

    pub fn parse(text: &str) -> Option<Algorithm> {
        match text.trim().to_ascii_lowercase().as_str() {
            "rsa-sha256" | "rsa" => Some(Algorithm::RsaSha256),
            "ed25519-sha256" | "ed25519" => Some(Algorithm::Ed25519Sha256),
            _ => None,
        }
    }
}

/// Why a key could not be used; each names the key file.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("dkim key {file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dkim key {file}: {reason}")]
    Key { file: String, reason: String },
    #[error("dkim.keys: {0}")]
    Config(String),
}

enum Material {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// One loaded key.
pub struct Key {
    /// `d=`, normalized.
    pub domain: String,
    /// Also signs for subdomains of `domain` (configured as `.domain`).
    pub subdomains: bool,
    pub selector: String,
    pub algorithm: Algorithm,
    material: Material,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("domain", &self.domain)
            .field("subdomains", &self.subdomains)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Parses a PEM key (PKCS#8, or PKCS#1 for RSA); `algorithm` checks what it is.
    fn from_pem(
        file: &str,
        pem: &[u8],
        algorithm: Option<Algorithm>,
    ) -> Result<(Algorithm, Material), DkimError> {
        let bad = |reason: String| DkimError::Key {
            file: file.to_string(),
            reason,
        };
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| bad(format!("not a PEM private key: {e}")))?;
        let ed25519 = || match &der {
            PrivateKeyDer::Pkcs8(d) => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                ed25519_dalek::SigningKey::from_pkcs8_der(d.secret_pkcs8_der()).ok()
            }
            _ => None,
        };
        let rsa = || {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::pkcs8::DecodePrivateKey;
            match &der {
                PrivateKeyDer::Pkcs8(d) => {
                    rsa::RsaPrivateKey::from_pkcs8_der(d.secret_pkcs8_der()).ok()
                }
                PrivateKeyDer::Pkcs1(d) => {
                    rsa::RsaPrivateKey::from_pkcs1_der(d.secret_pkcs1_der()).ok()
                }
                _ => None,
            }
        };
        let found = match algorithm {
            Some(Algorithm::Ed25519Sha256) => ed25519().map(|k| Material::Ed25519(Box::new(k))),
            Some(Algorithm::RsaSha256) => rsa().map(|k| Material::Rsa(Box::new(k))),
            None => ed25519()
                .map(|k| Material::Ed25519(Box::new(k)))
                .or_else(|| rsa().map(|k| Material::Rsa(Box::new(k)))),
        };
        let material = found.ok_or_else(|| {
            bad(match algorithm {
                Some(a) => format!("not a {} key", a.as_str()),
                None => "neither an Ed25519 nor an RSA key".into(),
            })
        })?;
        Ok(match material {
            Material::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                let bits = k.size() * 8;
                if bits < RSA_MIN_BITS {
                    return Err(bad(format!(
                        "RSA key of {bits} bits: at least {RSA_MIN_BITS} needed (RFC 8301)"
                    )));
                }
                (Algorithm::RsaSha256, Material::Rsa(k))
            }
            m @ Material::Ed25519(_) => (Algorithm::Ed25519Sha256, m),
        })
    }

    /// Loads one `[[dkim.keys]]` entry.
    pub fn load(c: &DkimKeyConfig, base: Option<&Path>) -> Result<Key, DkimError> {
        let (domain, subdomains, selector, algorithm) = parse_entry(c)?;
        let path = match base {
            Some(b) if Path::new(&c.key_file).is_relative() => b.join(&c.key_file),
            _ => Path::new(&c.key_file).to_path_buf(),
        };
        let pem = std::fs::read(&path).map_err(|source| DkimError::Read {
            file: c.key_file.clone(),
            source,
        })?;
        let (algorithm, material) = Key::from_pem(&c.key_file, &pem, algorithm)?;
        Ok(Key {
            domain,
            subdomains,
            selector,
            algorithm,
            material,
        })
    }

    /// The public key as a key record's `p=` (RFC 6376 §3.6.1: SubjectPublicKeyInfo for
    /// RSA; RFC 8463 §4: the raw 32 bytes for Ed25519), base64.
    pub fn public_b64(&self) -> String {
        use base64::Engine;
        let bytes = match &self.material {
            Material::Rsa(k) => {
                use rsa::pkcs8::EncodePublicKey;
                rsa::RsaPublicKey::from(k.as_ref())
                    .to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
            }
            Material::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The TXT record to publish at `SELECTOR._domainkey.DOMAIN`.
    pub fn record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.key_type(),
            self.public_b64()
        )
    }

    /// Where the record goes.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// Whether this key signs mail whose header From is in `domain`.
    pub fn signs_for(&self, domain: &str) -> bool {
        self.covers(domain)
    }

    fn covers(&self, from_domain: &str) -> bool {
        from_domain == self.domain
            || (self.subdomains
                && from_domain
                    .strip_suffix(self.domain.as_str())
                    .is_some_and(|p| p.ends_with('.')))
    }

    fn sign_hash(&self, hash: &[u8]) -> Result<Vec<u8>, String> {
        match &self.material {
            Material::Rsa(k) => k
                .sign(
                    rsa::Pkcs1v15Sign {
                        hash_len: Some(32),
                        prefix: SHA256_DIGEST_INFO.into(),
                    },
                    hash,
                )
                .map_err(|e| e.to_string()),
            // RFC 8463 §3: PureEdDSA over the SHA-256 hash.
            Material::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                Ok(k.sign(hash).to_bytes().to_vec())
            }
        }
    }
}

/// What signing made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// The `DKIM-Signature` fields to put in front, each ending in CRLF.
    Headers(String),
    /// No key covers the header From domain (or there is no From).
    NoKey { from_domain: Option<String> },
}

/// The keys in force.
#[derive(Debug, Default)]
pub struct Signer {
    keys: Vec<Key>,
}

impl Signer {
    /// Loads every `[[dkim.keys]]` entry; relative paths are taken from `base`.
    pub fn from_config(c: &DkimConfig, base: Option<&Path>) -> Result<Signer, DkimError> {
        Signer::from_entries(c.keys.iter(), base)
    }

    /// Loads entries; the same (domain, selector) twice is loaded once (the config's
    /// keys and the store's may name the same).
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a DkimKeyConfig>,
        base: Option<&Path>,
    ) -> Result<Signer, DkimError> {
        let mut keys: Vec<Key> = Vec::new();
        for entry in entries {
            let key = Key::load(entry, base)?;
            if !keys
                .iter()
                .any(|k| k.domain == key.domain && k.selector == key.selector)
            {
                keys.push(key);
            }
        }
        Ok(Signer { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Signs `message` with every key covering its header From domain, at `now` (Unix
    /// seconds, `t=`).
    pub fn sign(&self, message: &[u8], now: u64) -> Result<Signed, String> {
        let (fields, body) = canon::split(message);
        let from_domain = fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(b"from"))
            .and_then(|f| header_from_domain(f.raw));
        let keys: Vec<&Key> = match &from_domain {
            Some(d) => self.keys.iter().filter(|k| k.covers(d)).collect(),
            None => Vec::new(),
        };
        if keys.is_empty() {
            return Ok(Signed::NoKey { from_domain });
        }
        let body_hash = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(canon::relaxed_body(body)))
        };
        // The fields signed, and h=, the same for every key.
        let mut names: Vec<&str> = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for &name in SIGNED {
            let present: Vec<&canon::Field<'_>> = fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
                .collect();
            // Several instances are signed from the last upwards (RFC 6376 §5.4.2).
            for f in present.iter().rev() {
                names.push(name);
                data.extend_from_slice(&canon::relaxed_header(f.raw));
                data.extend_from_slice(b"\r\n");
            }
            if OVER_SIGNED.contains(&name) {
                // A name listed with no instance left adds nothing to the hash.
                names.push(name);
            }
        }
        let mut out = String::new();
        for key in keys {
            let header = unsigned_header(key, now, &names, &body_hash);
            let mut input = data.clone();
            input.extend_from_slice(&canon::relaxed_header(header.as_bytes()));
            let hash = Sha256::digest(&input);
            let sig = key
                .sign_hash(&hash)
                .map_err(|e| format!("signing with {}: {e}", key.record_name()))?;
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(sig);
            out.push_str(&header);
            out.push_str(&fold_b64(&b64));
            out.push_str("\r\n");
        }
        Ok(Signed::Headers(out))
    }
}

/// Signs a message being queued: the signature fields, or `None` (logged: no key for
/// its From domain while keys are configured, or a signing error).
pub fn sign_for_queue(signer: &Signer, message: &[u8], id: MsgId) -> Option<String> {
    if signer.is_empty() {
        return None;
    }
    let queue_id = format_id(id);
    let queue_id = queue_id.as_str();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match signer.sign(message, now) {
        Ok(Signed::Headers(h)) => {
            metrics::counter!("relaygate_dkim_signed_total").increment(1);
            Some(h)
        }
        Ok(Signed::NoKey { from_domain }) => {
            metrics::counter!("relaygate_dkim_unsigned_total").increment(1);
            tracing::info!(
                queue_id,
                from_domain = from_domain.as_deref().unwrap_or("-"),
                "dkim: no key for the header From domain; the message goes unsigned"
            );
            None
        }
        Err(e) => {
            metrics::counter!("relaygate_dkim_unsigned_total").increment(1);
            tracing::warn!(queue_id, error = %e, "dkim: signing failed; the message goes unsigned");
            None
        }
    }
}

/// The `DKIM-Signature` field up to and including `b=`, folded.
fn unsigned_header(key: &Key, now: u64, names: &[&str], body_hash: &str) -> String {
    let mut h = String::from("DKIM-Signature: v=1; a=");
    h.push_str(key.algorithm.as_str());
    h.push_str("; c=relaxed/relaxed; d=");
    h.push_str(&key.domain);
    h.push_str("; s=");
    h.push_str(&key.selector);
    h.push_str(&format!(";\r\n\tt={now}; h="));
    let mut line = 10;
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            h.push(':');
            line += 1;
        }
        if line + name.len() > 76 {
            h.push_str("\r\n\t ");
            line = 2;
        }
        h.push_str(name);
        line += name.len();
    }
    h.push_str(";\r\n\tbh=");
    h.push_str(body_hash);
    h.push_str(";\r\n\tb=");
    h
}

/// The signature, folded in lines of 72 (whitespace in `b=` is ignored, §3.5).
fn fold_b64(b64: &str) -> String {
    let mut out = String::with_capacity(b64.len() + b64.len() / 36);
    for (i, chunk) in b64.as_bytes().chunks(72).enumerate() {
        if i > 0 {
            out.push_str("\r\n\t ");
        }
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    out
}

/// The domain of the first address of a `From:` field, normalized.
pub fn header_from_domain(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let value = text.split_once(':').map(|(_, v)| v)?;
    let value = value.replace(['\r', '\n'], "");
    let addr = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value
            .split(',')
            .next()
            .unwrap_or("")
            .split('(')
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
    };
    let (_, domain) = addr.rsplit_once('@')?;
    crate::address::normalize_domain(domain.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domains() {
        assert_eq!(
            header_from_domain(b"From: App <app@Example.ORG>"),
            Some("example.org".into())
        );
        assert_eq!(
            header_from_domain(b"From: app@example.org (App)"),
            Some("example.org".into())
        );
        assert_eq!(header_from_domain(b"From: nobody"), None);
    }

    #[test]
    fn headers_are_folded_and_over_signed() {
        let k = Key {
            domain: "example.org".into(),
            subdomains: true,
            selector: "s1".into(),
            algorithm: Algorithm::Ed25519Sha256,
            material: Material::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(
                &[7u8; 32],
            ))),
        };
        assert!(k.covers("example.org") && k.covers("news.example.org"));
        assert!(!k.covers("badexample.org"));
        let signer = Signer { keys: vec![k] };
        let msg = b"From: a@news.example.org\r\nTo: b@dst.test\r\nSubject: hi\r\n\r\nbody\r\n";
        let Ok(Signed::Headers(h)) = signer.sign(msg, 1_700_000_000) else {
            panic!("not signed")
        };
        assert!(
            h.starts_with(
                "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.org; s=s1;"
            ),
            "{h}"
        );
        assert!(h.contains("h=from:from:to:to:subject:subject:date;"), "{h}");
        assert!(!h.contains("l="), "{h}");
        assert!(h.lines().all(|l| l.len() <= 78), "{h}");
        let other = b"From: a@other.test\r\n\r\nx\r\n";
        assert_eq!(
            signer.sign(other, 0),
            Ok(Signed::NoKey {
                from_domain: Some("other.test".into())
            })
        );
    }
}
