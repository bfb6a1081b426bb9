//! The hash functions behind SCRAM (RFC 5802 §2.2): `H`, `HMAC` and `Hi` (PBKDF2 with
//! HMAC as the PRF), for SHA-1 and SHA-256, plus the constant-time comparison every
//! proof and signature check goes through.
//!
//! HMAC (RFC 2104) is written out here on top of the digest crates because the keyed
//! inner and outer states are what make `Hi` cheap (they are computed once and cloned
//! for each of the thousands of iterations) and what CRAM-MD5 stores (see
//! [`super::md5_state`]). The tests check it against the `hmac` crate.

use sha1::Sha1;
use sha2::{digest::Digest, Sha256};

/// Block size of MD5, SHA-1 and SHA-256, in bytes (the HMAC key is padded to it).
pub(crate) const BLOCK_LEN: usize = 64;

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SHA-1: SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SHA-256: SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// Output length of `H` and `HMAC`, in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// The mechanism name without -PLUS, which is also the scheme name of RFC 5803.
    pub const fn scram_name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// `H(data)`.
    pub fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, part1 || part2 || ...)`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => HmacKey::<Sha1>::new(key).mac(parts).to_vec(),
            ScramHash::Sha256 => HmacKey::<Sha256>::new(key).mac(parts).to_vec(),
        }
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with one output block (RFC 5802 §2.2).
    /// `iterations` of 0 is treated as 1; callers enforce the real bounds.
    pub fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hi::<Sha1>(password, salt, iterations),
            ScramHash::Sha256 => hi::<Sha256>(password, salt, iterations),
        }
    }
}

/// An HMAC key, kept as the two hash states after absorbing `key ⊕ ipad` and
/// `key ⊕ opad` (RFC 2104 §2). Cloning a state is cheaper than re-keying.
#[derive(Clone)]
pub(crate) struct HmacKey<D: Digest + Clone> {
    inner: D,
    outer: D,
}

impl<D: Digest + Clone> HmacKey<D> {
    /// Keys the HMAC. RFC 2104 §2: keys longer than the block are hashed first, shorter
    /// ones are padded with zeros.
    pub(crate) fn new(key: &[u8]) -> Self {
        let block = padded_key::<D>(key);
        let mut inner = D::new();
        inner.update(block.map(|b| b ^ 0x36));
        let mut outer = D::new();
        outer.update(block.map(|b| b ^ 0x5c));
        HmacKey { inner, outer }
    }

    /// HMAC of the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> sha2::digest::Output<D> {
        let mut inner = self.inner.clone();
        for part in parts {
            inner.update(part);
        }
        let inner_hash = inner.finalize();
        let mut outer = self.outer.clone();
        outer.update(inner_hash);
        outer.finalize()
    }
}

/// The key as one zero-padded block (hashed first when longer than a block).
pub(crate) fn padded_key<D: Digest>(key: &[u8]) -> [u8; BLOCK_LEN] {
    let mut block = [0u8; BLOCK_LEN];
    if key.len() > BLOCK_LEN {
        let digest = D::digest(key);
        for (dst, src) in block.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
    } else {
        for (dst, src) in block.iter_mut().zip(key) {
            *dst = *src;
        }
    }
    block
}

/// RFC 5802 §2.2: `Hi(str, salt, i) = U1 XOR U2 XOR ... XOR Ui` with
/// `U1 = HMAC(str, salt + INT(1))` and `Uk = HMAC(str, Uk-1)`.
fn hi<D: Digest + Clone>(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let key = HmacKey::<D>::new(password);
    let mut u = key.mac(&[salt, &1u32.to_be_bytes()]);
    let mut result = u.clone();
    for _ in 1..iterations {
        u = key.mac(&[u.as_slice()]);
        for (r, x) in result.iter_mut().zip(u.iter()) {
            *r ^= x;
        }
    }
    result.to_vec()
}

/// XOR of two equally long byte strings; a shorter `b` leaves the rest of `a` unchanged.
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    for (o, x) in out.iter_mut().zip(b) {
        *o ^= x;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    fn reference_hmac<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn hmac_matches_the_hmac_crate() {
        let long_key = [0xaau8; 131];
        for key in [&b""[..], b"key", &[7u8; 64][..], &long_key[..]] {
            for data in [&b""[..], b"The quick brown fox", &[0u8; 200][..]] {
                assert_eq!(
                    ScramHash::Sha1.hmac(key, &[data]),
                    reference_hmac::<Hmac<Sha1>>(key, data)
                );
                assert_eq!(
                    ScramHash::Sha256.hmac(key, &[data]),
                    reference_hmac::<Hmac<Sha256>>(key, data)
                );
            }
        }
        // Parts are concatenated.
        assert_eq!(
            ScramHash::Sha256.hmac(b"k", &[b"ab", b"", b"cd"]),
            ScramHash::Sha256.hmac(b"k", &[b"abcd"])
        );
    }

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 §4.3: HMAC-SHA-256 with key "Jefe".
        let mac = ScramHash::Sha256.hmac(b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pbkdf2_vectors() {
        // RFC 6070 §2, PBKDF2-HMAC-SHA1, dkLen 20.
        assert_eq!(
            hex(&ScramHash::Sha1.hi(b"password", b"salt", 1)),
            "0c60c80f961f0e71f3a9b524af6012062fe037a6"
        );
        assert_eq!(
            hex(&ScramHash::Sha1.hi(b"password", b"salt", 4096)),
            "4b007901b765489abead49d926f721d065a429c1"
        );
        // PBKDF2-HMAC-SHA256, dkLen 32 (widely published vector).
        assert_eq!(
            hex(&ScramHash::Sha256.hi(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn xor_of_equal_and_shorter() {
        assert_eq!(xor(&[1, 2, 3], &[1, 1, 1]), vec![0, 3, 2]);
        assert_eq!(xor(&[1, 2, 3], &[1]), vec![0, 2, 3]);
    }

    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
