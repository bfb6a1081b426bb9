//! What the server stores for CRAM-MD5: the two intermediate MD5 states of HMAC-MD5
//! keyed with the password, instead of the password itself.
//!
//! HMAC-MD5(K, m) = MD5((K ⊕ opad) || MD5((K ⊕ ipad) || m)) (RFC 2104 §2). K ⊕ ipad and
//! K ⊕ opad are exactly one 64-byte block each, so after compressing them the whole key
//! is summed up in two 128-bit states. We keep those and finish each hash from its
//! state: compress the remaining full blocks, then pad (RFC 1321 §3.1–3.2: 0x80, zeros,
//! the bit length of the *whole* input, counting the key block, little-endian) and
//! compress once more. The states are password-equivalent for CRAM-MD5 (that is the
//! mechanism's weakness) but do not reveal the password to other mechanisms.
//!
//! Text form: `CRAM-MD5$<inner state hex>:<outer state hex>`, each state as the 16
//! bytes MD5 would output for it (words little-endian).

use std::{fmt, str::FromStr};

use md5::{block_api::compress, Md5};

use super::{
    credentials::CredentialParseError,
    hash::{padded_key, BLOCK_LEN},
};

/// MD5 initial state (RFC 1321 §3.3).
const MD5_IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// HMAC-MD5 keyed with one password, as two intermediate MD5 states.
#[derive(Clone, PartialEq, Eq)]
pub struct CramMd5Secret {
    inner: [u32; 4],
    outer: [u32; 4],
}

impl CramMd5Secret {
    /// Keys HMAC-MD5 with `password` (its bytes as given: RFC 2195 does not SASLprep).
    pub fn from_password(password: &[u8]) -> Self {
        let key = padded_key::<Md5>(password);
        let mut inner = MD5_IV;
        compress(&mut inner, &[key.map(|b| b ^ 0x36)]);
        let mut outer = MD5_IV;
        compress(&mut outer, &[key.map(|b| b ^ 0x5c)]);
        CramMd5Secret { inner, outer }
    }

    /// HMAC-MD5(password, message), finished from the stored states.
    pub fn hmac(&self, message: &[u8]) -> [u8; 16] {
        let inner = finish(self.inner, message);
        finish(self.outer, &inner)
    }
}

/// Finishes an MD5 hash whose first 64-byte block is already in `state`, over `data`.
fn finish(mut state: [u32; 4], data: &[u8]) -> [u8; 16] {
    let (blocks, rest) = data.as_chunks::<BLOCK_LEN>();
    compress(&mut state, blocks);
    // RFC 1321 §3.1: append 0x80 and zeros up to 56 bytes mod 64; §3.2: then the
    // message length in bits (mod 2^64), low-order byte first.
    let mut tail = [0u8; 2 * BLOCK_LEN];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < BLOCK_LEN - 8 {
        BLOCK_LEN
    } else {
        2 * BLOCK_LEN
    };
    let bits = (BLOCK_LEN as u64)
        .wrapping_add(data.len() as u64)
        .wrapping_mul(8);
    tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_le_bytes());
    let (tail_blocks, _) = tail[..tail_len].as_chunks::<BLOCK_LEN>();
    compress(&mut state, tail_blocks);
    state_bytes(&state)
}

/// RFC 1321 §3.5: the output is the state words, each low-order byte first.
fn state_bytes(state: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

fn state_from_hex(hex: &str) -> Option<[u32; 4]> {
    let bytes = hex_decode(hex)?;
    let (words, rest) = bytes.as_chunks::<4>();
    if words.len() != 4 || !rest.is_empty() {
        return None;
    }
    let mut state = [0u32; 4];
    for (s, w) in state.iter_mut().zip(words) {
        *s = u32::from_le_bytes(*w);
    }
    Some(state)
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
        write!(
            f,
            "CRAM-MD5${}:{}",
            hex(&state_bytes(&self.inner)),
            hex(&state_bytes(&self.outer))
        )
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
