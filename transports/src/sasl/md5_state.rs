//! What the server stores for CRAM-MD5: the two intermediate MD5 states of HMAC-MD5
//! keyed with the password, instead of the password itself.
//!
//! HMAC-MD5(K, m) = MD5((K ⊕ opad) || MD5((K ⊕ ipad) || m)) (RFC 2104 §2). K ⊕ ipad and
//! K ⊕ opad are exactly one 64-byte block each, so after hashing them the whole key is
//! summed up in two 128-bit MD5 states. We keep those, and to finish a digest we resume
//! an `Md5` hasher from each state (through the crate's state serialization) and let it
//! hash the rest and pad. This is the one HMAC not done by the `hmac` crate, which
//! cannot be loaded from stored states; a client that has the password uses
//! `Hmac<Md5>` (see [`super::cram_md5`]). The states are password-equivalent for
//! CRAM-MD5 (that is the mechanism's weakness) but do not reveal the password to other
//! mechanisms.
//!
//! Text form: `CRAM-MD5$<inner state hex>:<outer state hex>`, each state as the 16
//! bytes MD5 would output for it (words little-endian).

use std::{fmt, str::FromStr};

use md5::{
    digest::common::hazmat::{SerializableState, SerializedState},
    Digest, Md5,
};

use super::credentials::CredentialParseError;

/// MD5's block size: HMAC pads (or first hashes) the key to one block.
const BLOCK_LEN: usize = 64;
/// Length of an MD5 state (four 32-bit words) and of an MD5 digest.
const STATE_LEN: usize = 16;

/// HMAC-MD5 keyed with one password, as two intermediate MD5 states.
#[derive(Clone, PartialEq, Eq)]
pub struct CramMd5Secret {
    inner: [u8; STATE_LEN],
    outer: [u8; STATE_LEN],
}

impl CramMd5Secret {
    /// Keys HMAC-MD5 with `password` (its bytes as given: RFC 2195 does not SASLprep).
    pub fn from_password(password: &[u8]) -> Self {
        // RFC 2104 §2: a key longer than the block is hashed first; the key is then
        // padded with zeros to one block.
        let mut key = [0u8; BLOCK_LEN];
        if password.len() > BLOCK_LEN {
            key[..STATE_LEN].copy_from_slice(&Md5::digest(password));
        } else {
            key[..password.len()].copy_from_slice(password);
        }
        CramMd5Secret {
            inner: state_after(&key.map(|b| b ^ 0x36)),
            outer: state_after(&key.map(|b| b ^ 0x5c)),
        }
    }

    /// HMAC-MD5(password, message), finished from the stored states.
    pub fn hmac(&self, message: &[u8]) -> [u8; 16] {
        let mut inner = resume(&self.inner);
        inner.update(message);
        let mut outer = resume(&self.outer);
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

// The serialized form of an `Md5` hasher (md-5 0.11 with digest 0.11's block buffer):
// the four state words little-endian, the number of blocks hashed (u64 little-endian),
// then the buffer: how many bytes it holds and 64 bytes of which the unused ones are
// zero. The tests pin it: the RFC 2195 vector, the `hmac` crate at every padding
// boundary and the text of a known secret all go through it.
const STATE_AT: std::ops::Range<usize> = 0..STATE_LEN;
const BLOCKS_AT: std::ops::Range<usize> = STATE_LEN..STATE_LEN + 8;

/// The MD5 state after hashing exactly one block.
fn state_after(block: &[u8; BLOCK_LEN]) -> [u8; STATE_LEN] {
    let mut md5 = Md5::new();
    md5.update(block);
    let serialized = md5.serialize();
    let mut state = [0u8; STATE_LEN];
    state.copy_from_slice(&serialized[STATE_AT]);
    state
}

/// An `Md5` hasher that has hashed one block (a key block) leading to `state`, with an
/// empty buffer.
fn resume(state: &[u8; STATE_LEN]) -> Md5 {
    let mut serialized = SerializedState::<Md5>::default();
    serialized[STATE_AT].copy_from_slice(state);
    serialized[BLOCKS_AT].copy_from_slice(&1u64.to_le_bytes());
    // An empty buffer (length 0, all zeros) is always a valid one, so this cannot fail.
    Md5::deserialize(&serialized).expect("an MD5 state with an empty buffer is valid")
}

fn state_from_hex(hex: &str) -> Option<[u8; STATE_LEN]> {
    hex_decode(hex)?.try_into().ok()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex in either case; `None` for anything else or an odd length.
pub(crate) fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

impl fmt::Display for CramMd5Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CRAM-MD5${}:{}", hex(&self.inner), hex(&self.outer))
    }
}

impl fmt::Debug for CramMd5Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CramMd5Secret(<redacted>)")
    }
}

impl FromStr for CramMd5Secret {
    type Err = CredentialParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s.trim().split_once('$').and_then(|(scheme, states)| {
            if !scheme.eq_ignore_ascii_case("CRAM-MD5") {
                return None;
            }
            let (inner, outer) = states.split_once(':')?;
            Some(CramMd5Secret {
                inner: state_from_hex(inner)?,
                outer: state_from_hex(outer)?,
            })
        });
        parsed.ok_or_else(|| CredentialParseError {
            what: "CRAM-MD5 secret",
            reason: "expected CRAM-MD5$<32 hex digits>:<32 hex digits>".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{digest::KeyInit, Hmac, Mac};

    fn reference(key: &[u8], data: &[u8]) -> [u8; 16] {
        let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn rfc2195_vector() {
        // RFC 2195 §2.
        let secret = CramMd5Secret::from_password(b"tanstaaftanstaaf");
        let digest = secret.hmac(b"<1896.697170952@postoffice.reston.mci.net>");
        assert_eq!(hex(&digest), "b913a602c7eda7a495b4e6e7334d3890");
    }

    #[test]
    fn matches_hmac_crate_at_every_padding_boundary() {
        let long_key = [0x5au8; 100];
        for key in [&b""[..], b"k", &[1u8; 64][..], &long_key[..]] {
            let secret = CramMd5Secret::from_password(key);
            // 55/56/63/64/119/120 cross the one- and two-block padding cases.
            for len in [0usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 300] {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                assert_eq!(
                    secret.hmac(&data),
                    reference(key, &data),
                    "key {} len {len}",
                    key.len()
                );
            }
        }
    }

    #[test]
    fn rfc2202_hmac_md5() {
        // RFC 2202 §2, test case 2.
        let secret = CramMd5Secret::from_password(b"Jefe");
        assert_eq!(
            hex(&secret.hmac(b"what do ya want for nothing?")),
            "750c783e6ab0b503eaa86e310a5db738"
        );
    }

    #[test]
    fn stored_text_is_stable() {
        // Secrets already in operators' configs must keep working.
        assert_eq!(
            CramMd5Secret::from_password(b"tanstaaftanstaaf").to_string(),
            "CRAM-MD5$54b21152711fb604ca3e035e7015116b:d06d4e1b26fccaa4b0b61801132340a3"
        );
    }

    #[test]
    fn text_round_trip_and_redaction() {
        let secret = CramMd5Secret::from_password(b"tanstaaftanstaaf");
        let text = secret.to_string();
        assert!(text.starts_with("CRAM-MD5$"));
        assert_eq!(text.len(), "CRAM-MD5$".len() + 32 + 1 + 32);
        assert_eq!(text.parse::<CramMd5Secret>().unwrap(), secret);
        assert_eq!(
            text.to_uppercase()
                .replace("CRAM-MD5", "cram-md5")
                .parse::<CramMd5Secret>()
                .unwrap(),
            secret
        );
        for bad in [
            "",
            "CRAM-MD5$",
            "CRAM-MD5$00:00",
            "PLAIN$x:y",
            &text[..text.len() - 1],
            &format!("{text}0"),
        ] {
            assert!(bad.parse::<CramMd5Secret>().is_err(), "{bad}");
        }
        assert!(!format!("{secret:?}").contains(&text[9..20]));
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(hex_decode("00ffAB"), Some(vec![0, 255, 171]));
        assert_eq!(hex_decode("0"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(hex_decode("é1"), None);
    }
}
