//! `relaygate dkim keygen`: a new signing key as PKCS#8 PEM, and the TXT record that
//! publishes it.

use super::{Algorithm, Key, Material};

/// RSA keys made here (RFC 8301 §3.2 recommends at least 2048 bits).
pub const RSA_BITS: usize = 2048;

/// A new key of `algorithm`, as PKCS#8 PEM.
pub fn generate(algorithm: Algorithm) -> Result<String, String> {
    let der: Vec<u8> = match algorithm {
        Algorithm::Ed25519Sha256 => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            use rand::RngCore;
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .to_pkcs8_der()
                .map_err(|e| format!("encoding the key: {e}"))?
                .as_bytes()
                .to_vec()
        }
        Algorithm::RsaSha256 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                .map_err(|e| format!("generating the key: {e}"))?;
            key.to_pkcs8_der()
                .map_err(|e| format!("encoding the key: {e}"))?
                .as_bytes()
                .to_vec()
        }
    };
    Ok(pem("PRIVATE KEY", &der))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The zone-file line publishing `pem`'s public key for `domain` and `selector`, with
/// the record split in strings of at most 255 characters (RFC 1035 §3.3).
pub fn zone_line(domain: &str, selector: &str, pem: &str) -> Result<String, String> {
    let (algorithm, material) =
        Key::from_pem("(new key)", pem.as_bytes(), None).map_err(|e| e.to_string())?;
    let key = Key {
        domain: domain.to_string(),
        subdomains: false,
        selector: selector.to_string(),
        algorithm,
        material,
    };
    let record = key.record();
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    Ok(format!(
        "{}. IN TXT ( {} )",
        key.record_name(),
        strings.join(" ")
    ))
}

impl Material {
    #[cfg(test)]
    fn is_ed25519(&self) -> bool {
        matches!(self, Material::Ed25519(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_key_and_record() {
        let pem = generate(Algorithm::Ed25519Sha256).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let (a, m) = Key::from_pem("k", pem.as_bytes(), None).unwrap();
        assert_eq!(a, Algorithm::Ed25519Sha256);
        assert!(m.is_ed25519());
        let line = zone_line("example.org", "ed1", &pem).unwrap();
        assert!(
            line.starts_with("ed1._domainkey.example.org. IN TXT ( \"v=DKIM1; k=ed25519; p="),
            "{line}"
        );
    }
}
