//! The hash functions behind SCRAM (RFC 5802 §2.2): `H`, `HMAC` and `Hi` (PBKDF2 with
//! HMAC as the PRF), for SHA-1 and SHA-256.
//!
//! HMAC is the `hmac` crate (RFC 2104) and `Hi` the `pbkdf2` crate. PBKDF2 keys the HMAC
//! with the password once and clones the keyed state (the hash states after `key ⊕
//! ipad` and `key ⊕ opad`) for each of the thousands of iterations, so no iteration
//! re-hashes the key. CRAM-MD5's stored states are the one HMAC that `hmac` cannot
//! load; they are finished in [`super::md5_state`].

use hmac::{EagerHash, Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{digest::Digest, Sha256};

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
            ScramHash::Sha1 => hmac::<Sha1>(key, parts),
            ScramHash::Sha256 => hmac::<Sha256>(key, parts),
        }
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with one output block (RFC 5802 §2.2:
    /// `U1 = HMAC(str, salt + INT(1))`, `Uk = HMAC(str, Uk-1)`, the result their XOR).
    /// `iterations` of 0 is treated as 1; callers enforce the real bounds.
    pub fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

/// HMAC keyed with `key`. RFC 2104 §2 takes keys of any length (longer than a block
/// they are hashed first), so keying cannot fail.
pub(crate) fn keyed_hmac<D: EagerHash>(key: &[u8]) -> Hmac<D> {
    <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hmac<D: EagerHash>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = keyed_hmac::<D>(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
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

    #[test]
    fn hmac_vectors() {
        // RFC 2202 §3, test case 2: HMAC-SHA-1 with key "Jefe".
        let data: &[u8] = b"what do ya want for nothing?";
        assert_eq!(
            hex(&ScramHash::Sha1.hmac(b"Jefe", &[data])),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // RFC 4231 §4.3, test case 2: HMAC-SHA-256 with key "Jefe".
        assert_eq!(
            hex(&ScramHash::Sha256.hmac(b"Jefe", &[data])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 4231 §4.7, test case 6: a key longer than the block is hashed first.
        let long_key = [0xaau8; 131];
        assert_eq!(
            hex(&ScramHash::Sha256.hmac(
                &long_key,
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        // Parts are concatenated.
        assert_eq!(
            ScramHash::Sha256.hmac(b"k", &[b"ab", b"", b"cd"]),
            ScramHash::Sha256.hmac(b"k", &[b"abcd"])
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
        // No iterations count as one.
        assert_eq!(
            ScramHash::Sha256.hi(b"password", b"salt", 0),
            ScramHash::Sha256.hi(b"password", b"salt", 1)
        );
    }

    #[test]
    fn xor_of_equal_and_shorter() {
        assert_eq!(xor(&[1, 2, 3], &[1, 1, 1]), vec![0, 3, 2]);
        assert_eq!(xor(&[1, 2, 3], &[1]), vec![0, 2, 3]);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
