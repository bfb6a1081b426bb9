//! Certificate verification against TLSA records, as a rustls [`ServerCertVerifier`].
//!
//! - **DANE-EE(3)**: the end-entity certificate (selector Cert) or its key (selector SPKI)
//!   must match, exactly or by SHA2-256/512. Nothing else is checked: no name, no
//!   validity period, no chain (RFC 7672 §3.1.1).
//! - **DANE-TA(2)**: the record must match a certificate the server sent in its chain
//!   (RFC 7672 §3.1.2: servers MUST include the TA certificate), or carry the full public
//!   key (`2 1 0`, then the certificate may be absent). The end-entity certificate must
//!   chain to that anchor with valid dates (webpki path building, server-auth usage), and
//!   carry one of the reference identifiers (RFC 7672 §3.2.3, at most four names).
//!
//! The handshake signatures are always verified with the ring provider's algorithms, so
//! the peer must hold the private key of the certificate that matched. Optionally a PKIX
//! check runs too, for a host where DANE and MTA-STS `enforce` both apply.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, Der, ServerName, TrustAnchor, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256, Sha512};
use webpki::EndEntityCert;

use super::policy::{
    is_usable, MATCHING_FULL, MATCHING_SHA256, MATCHING_SHA512, SELECTOR_CERT, SELECTOR_SPKI,
    USAGE_DANE_EE, USAGE_DANE_TA,
};
use crate::dns::{normalize_name, Tlsa};
use crate::tls::{provider, TlsRoots};

/// Why a certificate chain failed DANE verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaneError {
    /// No record matched the end-entity certificate or a certificate of the chain.
    #[error(
        "DANE: no TLSA record matches the server certificate chain ({records} usable record(s))"
    )]
    NoMatch {
        /// How many usable records were tried.
        records: usize,
    },
    /// A DANE-TA record named an anchor, but the chain does not verify to it.
    #[error("DANE: TLSA record {record} matches a trust anchor, but the chain does not verify to it: {reason}")]
    TrustAnchorChain {
        /// The record, as "usage selector matching data-prefix".
        record: String,
        /// What webpki said (expired, bad signature, ...).
        reason: String,
    },
    /// The chain verifies to a DANE-TA anchor, but the certificate has none of the names.
    #[error(
        "DANE: certificate verified by TLSA record {record} is not valid for any of {names:?}"
    )]
    NameMismatch {
        /// The record, as "usage selector matching data-prefix".
        record: String,
        /// The reference identifiers tried.
        names: Vec<String>,
    },
    /// The end-entity certificate could not be parsed for the DANE-TA checks.
    #[error("DANE: cannot parse the server certificate: {reason}")]
    BadCertificate {
        /// What webpki said.
        reason: String,
    },
}

/// A [`DaneVerifier`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaneSetupError {
    /// None of the records given is usable: use `RequireTlsUnverified`, not a verifier.
    #[error("DANE: none of the {given} TLSA record(s) is usable for verification")]
    NoUsableRecords {
        /// How many records were given.
        given: usize,
    },
    /// The PKIX host name is not a valid DNS name.
    #[error("DANE: {name:?} is not a valid host name for the PKIX check")]
    InvalidPkixName {
        /// The name.
        name: String,
    },
    /// The PKIX verifier could not be built from the roots.
    #[error("DANE: building the PKIX verifier: {reason}")]
    Pkix {
        /// What rustls said.
        reason: String,
    },
}

/// The PKIX check that runs after DANE when MTA-STS `enforce` also applies.
#[derive(Debug)]
struct PkixCheck {
    verifier: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

/// Verifies a server certificate chain against usable TLSA records.
///
/// Build one per connection ([`DaneVerifier::client_config`]); after the handshake,
/// [`DaneVerifier::matched`] tells which record verified the server, for logs.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<Tlsa>,
    names: Vec<ServerName<'static>>,
    name_text: Vec<String>,
    algorithms: WebPkiSupportedAlgorithms,
    pkix: Option<PkixCheck>,
    matched: Mutex<Option<Tlsa>>,
}

impl DaneVerifier {
    /// A verifier for the usable ones among `records`; `reference_names` are the names a
    /// DANE-TA certificate may carry (see [`super::reference_names`]). Names that are not
    /// valid DNS names are left out.
    pub fn new(records: &[Tlsa], reference_names: &[String]) -> Result<Self, DaneSetupError> {
        let usable: Vec<Tlsa> = records.iter().filter(|r| is_usable(r)).cloned().collect();
        if usable.is_empty() {
            return Err(DaneSetupError::NoUsableRecords {
                given: records.len(),
            });
        }
        let mut names = Vec::new();
        let mut name_text = Vec::new();
        for name in reference_names.iter().map(|n| normalize_name(n)) {
            if let Ok(server_name) = ServerName::try_from(name.clone()) {
                names.push(server_name);
                name_text.push(name);
            }
        }
        Ok(DaneVerifier {
            records: usable,
            names,
            name_text,
            algorithms: provider().signature_verification_algorithms,
            pkix: None,
            matched: Mutex::new(None),
        })
    }

    /// Also require a PKIX-valid certificate for `host` (MTA-STS `enforce` on a DANE host:
    /// both policies are verified).
    pub fn require_pkix(mut self, roots: &TlsRoots, host: &str) -> Result<Self, DaneSetupError> {
        let host = normalize_name(host);
        let name = ServerName::try_from(host.clone())
            .map_err(|_| DaneSetupError::InvalidPkixName { name: host })?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.root_store(), provider())
            .build()
            .map_err(|e| DaneSetupError::Pkix {
                reason: e.to_string(),
            })?;
        self.pkix = Some(PkixCheck { verifier, name });
        Ok(self)
    }

    /// The usable records this verifier checks.
    pub fn records(&self) -> &[Tlsa] {
        &self.records
    }

    /// The record that verified the last handshake, if any.
    pub fn matched(&self) -> Option<Tlsa> {
        self.matched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A client config for one connection that verifies with this verifier (and never
    /// resumes a session, which would skip verification).
    pub fn client_config(self: &Arc<Self>) -> Arc<ClientConfig> {
        let verifier: Arc<dyn ServerCertVerifier> = self.clone();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            // The ring provider supports both default protocol versions; this cannot fail.
            .expect("ring provider supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }

    /// The DANE decision on a chain (without handshake signatures): the matching record.
    pub fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Tlsa, DaneError> {
        // RFC 7672 §3.1.1: for DANE-EE only the match counts; names and dates are ignored.
        for record in self.records.iter().filter(|r| r.usage == USAGE_DANE_EE) {
            if record_matches(record, end_entity) {
                return Ok(record.clone());
            }
        }
        let mut failure = None;
        for record in self.records.iter().filter(|r| r.usage == USAGE_DANE_TA) {
            match self.verify_trust_anchor(record, end_entity, intermediates, now) {
                Ok(()) => return Ok(record.clone()),
                Err(Some(error)) => {
                    failure.get_or_insert(error);
                }
                Err(None) => {}
            }
        }
        Err(failure.unwrap_or(DaneError::NoMatch {
            records: self.records.len(),
        }))
    }

    /// One DANE-TA record: `Err(None)` when it names no anchor of this chain.
    fn verify_trust_anchor(
        &self,
        record: &Tlsa,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Option<DaneError>> {
        let ee = EndEntityCert::try_from(end_entity).map_err(|e| {
            Some(DaneError::BadCertificate {
                reason: e.to_string(),
            })
        })?;
        let mut failure = None;
        // RFC 7672 §3.1.2: the TA certificate is in the chain the server sent.
        for ca in intermediates.iter().filter(|ca| record_matches(record, ca)) {
            let result = match webpki::anchor_from_trusted_cert(ca) {
                Ok(anchor) => self.chain_and_names(record, &ee, anchor, intermediates, now),
                Err(e) => Err(DaneError::TrustAnchorChain {
                    record: describe(record),
                    reason: format!("unusable trust anchor certificate: {e}"),
                }),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        // `2 1 0` carries the anchor's whole public key, so the server may omit the TA
        // certificate (RFC 7672 §3.1.2). Its subject is the issuer of a certificate we have.
        if record.selector == SELECTOR_SPKI && record.matching_type == MATCHING_FULL {
            if let Some(spki) = der_sequence_contents(&record.data) {
                let mut issuers: Vec<Vec<u8>> = vec![ee.issuer().to_vec()];
                for ca in intermediates {
                    if let Ok(cert) = EndEntityCert::try_from(ca) {
                        issuers.push(cert.issuer().to_vec());
                    }
                }
                for issuer in &issuers {
                    let anchor = TrustAnchor {
                        subject: Der::from_slice(issuer),
                        subject_public_key_info: Der::from_slice(spki),
                        name_constraints: None,
                    };
                    match self.chain_and_names(record, &ee, anchor, intermediates, now) {
                        Ok(()) => return Ok(()),
                        // The chain led to this key: the names were wrong.
                        Err(error @ DaneError::NameMismatch { .. }) => {
                            failure.get_or_insert(error);
                        }
                        // Not this key's chain (a guess at the subject, or another key).
                        Err(_) => {}
                    }
                }
            }
        }
        Err(failure)
    }

    /// Path building to one anchor (dates, signatures, server-auth usage), then names.
    fn chain_and_names(
        &self,
        record: &Tlsa,
        ee: &EndEntityCert<'_>,
        anchor: TrustAnchor<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), DaneError> {
        ee.verify_for_usage(
            self.algorithms.all,
            &[anchor],
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| DaneError::TrustAnchorChain {
            record: describe(record),
            reason: e.to_string(),
        })?;
        // RFC 7672 §3.2.3: the certificate must carry one of the reference identifiers.
        if self
            .names
            .iter()
            .any(|name| ee.verify_is_valid_for_subject_name(name).is_ok())
        {
            Ok(())
        } else {
            Err(DaneError::NameMismatch {
                record: describe(record),
                names: self.name_text.clone(),
            })
        }
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let record = self
            .verify_chain(end_entity, intermediates, now)
            .map_err(|e| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
            })?;
        if let Some(pkix) = &self.pkix {
            pkix.verifier.verify_server_cert(
                end_entity,
                intermediates,
                &pkix.name,
                ocsp_response,
                now,
            )?;
        }
        *self.matched.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The peer must prove it holds the key of the certificate that matched.
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The DER SubjectPublicKeyInfo of a certificate (with its outer SEQUENCE), or `None`
/// when the certificate cannot be parsed.
pub fn spki_of(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    // The trust-anchor parser is the lenient one (v1 certificates, unknown critical
    // extensions), which suits a key we only hash.
    let anchor = webpki::anchor_from_trusted_cert(cert).ok()?;
    Some(webpki::spki_for_anchor(&anchor).as_ref().to_vec())
}

/// Whether a record's association data matches a certificate (RFC 6698 §2.1.2, §2.1.3).
pub fn record_matches(record: &Tlsa, cert: &CertificateDer<'_>) -> bool {
    let selected: Cow<'_, [u8]> = match record.selector {
        SELECTOR_CERT => Cow::Borrowed(cert.as_ref()),
        SELECTOR_SPKI => match spki_of(cert) {
            Some(spki) => Cow::Owned(spki),
            None => return false,
        },
        _ => return false,
    };
    match record.matching_type {
        MATCHING_FULL => selected.as_ref() == record.data.as_slice(),
        MATCHING_SHA256 => Sha256::digest(selected.as_ref())[..] == record.data[..],
        MATCHING_SHA512 => Sha512::digest(selected.as_ref())[..] == record.data[..],
        _ => false,
    }
}

/// The contents of a DER SEQUENCE that spans all of `der` (a full SPKI from a `2 1 0`
/// record, without its tag and length, as webpki's [`TrustAnchor`] wants it).
fn der_sequence_contents(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    (rest.len() == len).then_some(rest)
}

/// "2 1 1 3f5a9c0e…" for messages.
fn describe(record: &Tlsa) -> String {
    let hex: String = record
        .data
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let more = if record.data.len() > 8 { "…" } else { "" };
    format!(
        "{} {} {} {hex}{more}",
        record.usage, record.selector, record.matching_type
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dane_der_sequence_contents() {
        assert_eq!(der_sequence_contents(&[0x30, 2, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(der_sequence_contents(&[0x30, 3, 1, 2]), None);
        assert_eq!(der_sequence_contents(&[0x31, 2, 1, 2]), None);
        let mut long = vec![0x30, 0x81, 200];
        long.extend(std::iter::repeat_n(7u8, 200));
        assert_eq!(der_sequence_contents(&long).map(<[u8]>::len), Some(200));
        assert_eq!(der_sequence_contents(&[0x30, 0x80]), None);
        assert_eq!(der_sequence_contents(&[]), None);
    }

    #[test]
    fn dane_describe_records() {
        let record = Tlsa {
            usage: 3,
            selector: 1,
            matching_type: 1,
            data: (0..32).collect(),
        };
        assert_eq!(describe(&record), "3 1 1 0001020304050607…");
    }

    #[test]
    fn dane_verifier_needs_usable_records() {
        let unusable = Tlsa {
            usage: 1,
            selector: 1,
            matching_type: 1,
            data: vec![0; 32],
        };
        let err = DaneVerifier::new(&[unusable], &[]).unwrap_err();
        assert_eq!(err, DaneSetupError::NoUsableRecords { given: 1 });
    }
}
