//! DNSSEC for the test DNS server: one Ed25519 key signs the root zone on the fly, NSEC
//! records prove denials, and a name can be made bogus by corrupting its signatures.
//!
//! The root is the signed zone so that the validator's trust anchor is, as in real life,
//! the root key; insecure child zones are delegations without DS (proved by an NSEC at the
//! cut), which is how the validator reaches "Insecure" for unsigned data.

use std::collections::BTreeSet;
use std::time::Duration;

use hickory_proto::dnssec::crypto::Ed25519SigningKey;
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, NSEC, RRSIG};
use hickory_proto::dnssec::{DnssecSigner, PublicKeyBuf, SigningKey};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};
use time::OffsetDateTime;

/// Why the signing key could not be made (ring failures; not expected).
#[derive(Debug, thiserror::Error)]
#[error("test DNSSEC key: {0}")]
pub struct KeyError(String);

/// The zone key of the signed test root.
pub(crate) struct ZoneKey {
    signer: DnssecSigner,
    dnskey: DNSKEY,
}

impl ZoneKey {
    /// A fresh Ed25519 key for the root zone, valid for signatures of two days.
    pub(crate) fn generate() -> Result<Self, KeyError> {
        let pkcs8 = Ed25519SigningKey::generate_pkcs8().map_err(|e| KeyError(e.to_string()))?;
        let key = Ed25519SigningKey::from_pkcs8(&pkcs8).map_err(|e| KeyError(e.to_string()))?;
        let public: PublicKeyBuf = key.to_public_key().map_err(|e| KeyError(e.to_string()))?;
        // Zone key and secure entry point (flags 257): one key signs everything.
        let dnskey = DNSKEY::new(true, true, false, public);
        let signer = DnssecSigner::new(
            dnskey.clone(),
            Box::new(key),
            Name::root(),
            Duration::from_secs(2 * 86400),
        );
        Ok(ZoneKey { signer, dnskey })
    }

    /// The DNSKEY record data of the root.
    pub(crate) fn dnskey(&self) -> &DNSKEY {
        &self.dnskey
    }

    /// The trust anchor file for [`crate::dns::DnssecMode::Validate`]: the root DNSKEY.
    pub(crate) fn trust_anchor_text(&self) -> String {
        format!(". 3600 IN DNSKEY {}\n", self.dnskey)
    }

    /// The RRSIG over `records` (one RRset); `corrupt` flips a bit of the signature.
    pub(crate) fn sign(&self, records: &[Record], corrupt: bool) -> Option<Record> {
        let first = records.first()?;
        let mut rrset = RecordSet::with_ttl(first.name.clone(), first.record_type(), first.ttl);
        rrset.set_records(records.to_vec());
        // An hour in the past, so clock differences never matter.
        let inception = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let rrsig = RRSIG::from_rrset(&rrset, DNSClass::IN, inception, &self.signer).ok()?;
        let rrsig = if corrupt {
            let mut sig = rrsig.sig().to_vec();
            if let Some(last) = sig.last_mut() {
                *last ^= 0x01;
            }
            RRSIG::from_sig(rrsig.input().clone(), sig)
        } else {
            rrsig
        };
        Some(Record::from_rdata(
            first.name.clone(),
            first.ttl,
            RData::DNSSEC(DNSSECRData::RRSIG(rrsig)),
        ))
    }
}

/// One link of the NSEC chain: an owner name with the types it has (parent side at cuts).
pub(crate) struct ChainName {
    pub(crate) name: Name,
    pub(crate) types: BTreeSet<RecordType>,
}

/// The NSEC record owned by `chain[index]` (RFC 4034 §4.1: next owner name, type bitmap).
pub(crate) fn nsec_at(chain: &[ChainName], index: usize, ttl: u32) -> Option<Record> {
    let link = chain.get(index)?;
    // The last name points back to the apex (RFC 4034 §4.1.1).
    let next = chain
        .get(index + 1)
        .or_else(|| chain.first())
        .map(|c| c.name.clone())?;
    let nsec = NSEC::new_cover_self(next, link.types.iter().copied());
    Some(Record::from_rdata(
        link.name.clone(),
        ttl,
        RData::DNSSEC(DNSSECRData::NSEC(nsec)),
    ))
}

/// The index of the chain name equal to `name`, or else of the one whose NSEC covers it
/// (the last owner sorting before it in canonical order, RFC 4034 §6.1).
pub(crate) fn covering_index(chain: &[ChainName], name: &Name) -> Option<usize> {
    let after = chain.partition_point(|c| c.name <= *name);
    after.checked_sub(1)
}
