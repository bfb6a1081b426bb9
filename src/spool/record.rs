//! The spool's on-disk record format: framing, checksums and decoding. No I/O.
//!
//! Each record is `magic(1) kind(1) len(4, LE) crc32(4, LE)` followed by `len` payload
//! bytes; the CRC covers the kind byte and the payload. A message record's payload is
//! `meta_len(4, LE)`, the JSON envelope, then the raw body, so the body can be read back
//! later by offset without decoding anything else.
//!
//! A seal record (kind 5) names an earlier segment that was abandoned after a write
//! error and could not be cut back: replay reads that segment only up to the valid
//! length the seal gives. Seals are written first thing in a new segment.

use serde::{Deserialize, Serialize};

use crate::model::{MsgId, Overrides, Recipient, StoredMessage};

pub const MAGIC: u8 = 0xA7;
pub const HEADER_LEN: usize = 10;
/// Largest message body the spool stores (`submission.max_message_size` is capped here).
pub const MAX_MESSAGE_SIZE: u64 = 1 << 30;
/// Largest record payload: the biggest body plus room for its envelope (JSON metadata).
/// Decoding refuses longer lengths (they can only come from a corrupt header).
pub const MAX_PAYLOAD: usize = (MAX_MESSAGE_SIZE as usize) + (64 << 20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A message with its envelope and body (also written again on relocation).
    Message = 1,
    /// New state for one recipient.
    Recipient = 2,
    /// New operator overrides for a message.
    Overrides = 3,
    /// The message is finished: every recipient delivered or failed.
    Removed = 4,
    /// An earlier segment was abandoned after a write error: only its first
    /// `valid_len` bytes hold acknowledged records.
    Seal = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::Recipient),
            3 => Some(Kind::Overrides),
            4 => Some(Kind::Removed),
            5 => Some(Kind::Seal),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecipientUpdate {
    pub id: MsgId,
    pub index: usize,
    pub rcpt: Recipient,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OverridesUpdate {
    pub id: MsgId,
    pub overrides: Overrides,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Removal {
    pub id: MsgId,
}

/// What a seal record says: segment `segment` holds valid records only up to `valid_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub segment: u64,
    pub valid_len: u64,
}

/// A record that the format cannot hold.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record payload of {len} bytes is over the spool's limit of {MAX_PAYLOAD} bytes")]
    TooLarge { len: usize },
}

/// A record to append, already encoded.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// Offset of the body within `bytes` (message records only).
    pub body_offset: Option<usize>,
}

fn frame(kind: Kind, payload_parts: &[&[u8]]) -> Result<Vec<u8>, RecordError> {
    let len: usize = payload_parts.iter().map(|p| p.len()).sum();
    // The length field is 32 bits; MAX_PAYLOAD keeps every accepted length far below.
    let len32 = match u32::try_from(len) {
        Ok(n) if len <= MAX_PAYLOAD => n,
        _ => return Err(RecordError::TooLarge { len }),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind as u8]);
    for p in payload_parts {
        crc.update(p);
    }
    out.push(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&len32.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    for p in payload_parts {
        out.extend_from_slice(p);
    }
    Ok(out)
}

/// Frames a small record whose payload is our own JSON (always far below the limit).
fn small(kind: Kind, payload: &[u8]) -> Encoded {
    Encoded {
        // A JSON update is a few KiB at most; should one ever exceed the limit, an empty
        // payload makes the record fail to decode rather than be cut by a cast.
        bytes: frame(kind, &[payload]).unwrap_or_default(),
        body_offset: None,
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain structs to JSON cannot fail (string keys, no maps with
    // non-string keys); an empty object is a safe fallback that decoding will reject.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// Encodes a message record; refused when envelope and body exceed [`MAX_PAYLOAD`].
pub fn encode_message(meta: &StoredMessage, body: &[u8]) -> Result<Encoded, RecordError> {
    let meta_json = json(meta);
    let meta_len = u32::try_from(meta_json.len())
        .map_err(|_| RecordError::TooLarge {
            len: meta_json.len(),
        })?
        .to_le_bytes();
    let bytes = frame(Kind::Message, &[&meta_len, &meta_json, body])?;
    Ok(Encoded {
        body_offset: Some(HEADER_LEN + 4 + meta_json.len()),
        bytes,
    })
}

pub fn encode_recipient(update: &RecipientUpdate) -> Encoded {
    small(Kind::Recipient, &json(update))
}

pub fn encode_overrides(update: &OverridesUpdate) -> Encoded {
    small(Kind::Overrides, &json(update))
}

pub fn encode_removal(id: MsgId) -> Encoded {
    small(Kind::Removed, &json(&Removal { id }))
}

pub fn encode_seal(seal: Seal) -> Encoded {
    small(Kind::Seal, &json(&seal))
}

/// A decoded record; message bodies are not copied, only located.
// Values live only while the spool is replayed, one at a time: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded {
    Message {
        meta: Box<StoredMessage>,
        /// Body offset and length relative to the record start.
        body_offset: usize,
        body_len: usize,
    },
    Recipient(RecipientUpdate),
    Overrides(OverridesUpdate),
    Removed(Removal),
    Seal(Seal),
}

/// Why decoding stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeStop {
    /// Not enough bytes for a whole record: the normal end, or a torn write.
    Incomplete,
    /// The bytes are not a valid record.
    Corrupt(String),
}

/// Decodes the record at the start of `buf`, returning it and its total length.
pub fn decode(buf: &[u8]) -> Result<(Decoded, usize), DecodeStop> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeStop::Incomplete);
    }
    if buf[0] != MAGIC {
        return Err(DecodeStop::Corrupt(format!("bad magic byte {:#x}", buf[0])));
    }
    let kind = Kind::from_u8(buf[1])
        .ok_or_else(|| DecodeStop::Corrupt(format!("unknown record kind {}", buf[1])))?;
    let len = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeStop::Corrupt(format!(
            "record length {len} too large"
        )));
    }
    let want_crc = u32::from_le_bytes([buf[6], buf[7], buf[8], buf[9]]);
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Err(DecodeStop::Incomplete);
    }
    let payload = &buf[HEADER_LEN..total];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind as u8]);
    crc.update(payload);
    if crc.finalize() != want_crc {
        return Err(DecodeStop::Corrupt("checksum mismatch".into()));
    }
    let bad = |e: serde_json::Error| DecodeStop::Corrupt(format!("bad record JSON: {e}"));
    let decoded = match kind {
        Kind::Message => {
            if payload.len() < 4 {
                return Err(DecodeStop::Corrupt("short message record".into()));
            }
            let meta_len =
                u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
            if 4 + meta_len > payload.len() {
                return Err(DecodeStop::Corrupt(
                    "message metadata overruns record".into(),
                ));
            }
            let mut meta: StoredMessage =
                serde_json::from_slice(&payload[4..4 + meta_len]).map_err(bad)?;
            // The JSON reader grows vectors by doubling (a one-recipient message gets
            // room for four): a replayed queue must cost what a submitted one does.
            meta.rcpts.shrink_to_fit();
            for r in &mut meta.rcpts {
                r.history.shrink_to_fit();
            }
            Decoded::Message {
                meta: Box::new(meta),
                body_offset: HEADER_LEN + 4 + meta_len,
                body_len: payload.len() - 4 - meta_len,
            }
        }
        Kind::Recipient => {
            let mut update: RecipientUpdate = serde_json::from_slice(payload).map_err(bad)?;
            update.rcpt.history.shrink_to_fit();
            Decoded::Recipient(update)
        }
        Kind::Overrides => Decoded::Overrides(serde_json::from_slice(payload).map_err(bad)?),
        Kind::Removed => Decoded::Removed(serde_json::from_slice(payload).map_err(bad)?),
        Kind::Seal => Decoded::Seal(serde_json::from_slice(payload).map_err(bad)?),
    };
    Ok((decoded, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> StoredMessage {
        StoredMessage::sample(7)
    }

    #[test]
    fn roundtrip_and_torn_tail() {
        let enc = encode_message(&msg(), b"hello").unwrap();
        let (dec, len) = decode(&enc.bytes).unwrap();
        assert_eq!(len, enc.bytes.len());
        match dec {
            Decoded::Message {
                meta,
                body_offset,
                body_len,
            } => {
                assert_eq!(*meta, msg());
                assert_eq!(Some(body_offset), enc.body_offset);
                assert_eq!(&enc.bytes[body_offset..body_offset + body_len], b"hello");
            }
            other => panic!("unexpected {other:?}"),
        }
        for cut in 0..enc.bytes.len() {
            assert_eq!(
                decode(&enc.bytes[..cut]).unwrap_err(),
                DecodeStop::Incomplete,
                "cut {cut}"
            );
        }
        let mut flipped = enc.bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(decode(&flipped), Err(DecodeStop::Corrupt(_))));
    }

    #[test]
    fn too_large_is_refused_not_cut() {
        // A body over the limit is an error, never a length truncated by a cast.
        let body = vec![b'x'; MAX_PAYLOAD + 1];
        assert!(matches!(
            encode_message(&msg(), &body),
            Err(RecordError::TooLarge { .. })
        ));
        // A corrupt header claiming more than the limit is corrupt, not "incomplete".
        let mut enc = encode_removal(1).bytes;
        enc[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&enc), Err(DecodeStop::Corrupt(_))));
    }

    #[test]
    fn seal_roundtrip() {
        let enc = encode_seal(Seal {
            segment: 4,
            valid_len: 1234,
        });
        match decode(&enc.bytes).unwrap().0 {
            Decoded::Seal(s) => assert_eq!((s.segment, s.valid_len), (4, 1234)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn small_records() {
        let enc = encode_removal(9);
        match decode(&enc.bytes).unwrap().0 {
            Decoded::Removed(r) => assert_eq!(r.id, 9),
            other => panic!("unexpected {other:?}"),
        }
    }
}
