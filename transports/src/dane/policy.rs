//! What the TLSA answer for one MX host means for delivery (RFC 7672 §2.2): a pure
//! decision over the DNS result, plus the resolver-driven lookup that walks the TLSA
//! candidate base domains (RFC 7672 §2.2.2) and the reference identifiers that a DANE-TA
//! certificate may carry (RFC 7672 §3.2.3).

use crate::dns::{normalize_name, DnsError, ErrorClass, LookupResult, Resolver, Tlsa};

/// Certificate usage DANE-TA: the record names a trust anchor (RFC 7218 §2.1).
pub const USAGE_DANE_TA: u8 = 2;
/// Certificate usage DANE-EE: the record names the server's own certificate or key.
pub const USAGE_DANE_EE: u8 = 3;
/// Selector Cert: the association covers the full DER certificate (RFC 6698 §2.1.2).
pub const SELECTOR_CERT: u8 = 0;
/// Selector SPKI: the association covers the DER SubjectPublicKeyInfo.
pub const SELECTOR_SPKI: u8 = 1;
/// Matching type Full: the data is the selected content itself (RFC 6698 §2.1.3).
pub const MATCHING_FULL: u8 = 0;
/// Matching type SHA2-256.
pub const MATCHING_SHA256: u8 = 1;
/// Matching type SHA2-512.
pub const MATCHING_SHA512: u8 = 2;

/// Why DANE does not apply to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotApplicableReason {
    /// The TLSA answer (or its denial) was not DNSSEC-secure.
    Insecure,
    /// A secure denial: no TLSA records at any candidate name.
    NoRecords,
}

/// The DANE policy for one MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DanePolicy {
    /// No DANE for this host: opportunistic TLS (or whatever MTA-STS says).
    NotApplicable {
        /// Why.
        reason: NotApplicableReason,
    },
    /// STARTTLS required, and the certificate must match one of `records`
    /// (RFC 7672 §2.2: usable records MUST be used to authenticate the server).
    Verify {
        /// The TLSA base domain where the records were found: the SNI to send.
        base_domain: String,
        /// The usable records (DANE-TA/DANE-EE, known selector and matching type).
        records: Vec<Tlsa>,
    },
    /// Records exist but none is usable: STARTTLS is still required, without
    /// authentication (RFC 7672 §2.2).
    RequireTlsUnverified {
        /// The TLSA base domain where the records were found.
        base_domain: String,
    },
    /// The TLSA lookup failed (SERVFAIL, timeout, bogus, network): this host fails
    /// temporarily. Never "no DANE": that would let an attacker who can break the lookup
    /// downgrade the connection (RFC 7672 §2.2).
    TemporaryFailure {
        /// The failed lookup.
        error: DnsError,
    },
}

impl DanePolicy {
    /// Short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DanePolicy::NotApplicable { .. } => "none",
            DanePolicy::Verify { .. } => "verify",
            DanePolicy::RequireTlsUnverified { .. } => "unverified",
            DanePolicy::TemporaryFailure { .. } => "error",
        }
    }

    /// STARTTLS is mandatory for this host (it must not be delivered in plaintext).
    pub fn requires_tls(&self) -> bool {
        match self {
            DanePolicy::Verify { .. } | DanePolicy::RequireTlsUnverified { .. } => true,
            DanePolicy::NotApplicable { .. } | DanePolicy::TemporaryFailure { .. } => false,
        }
    }
}

/// A record relaygate can verify with: DANE-TA or DANE-EE, selector Cert or SPKI,
/// matching Full, SHA2-256 or SHA2-512 with a digest of the right length.
///
/// RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are not used for SMTP; records with
/// unknown parameters are unusable (RFC 6698 §4.1), as are digests of the wrong size.
pub fn is_usable(record: &Tlsa) -> bool {
    let usage_ok = matches!(record.usage, USAGE_DANE_TA | USAGE_DANE_EE);
    let selector_ok = matches!(record.selector, SELECTOR_CERT | SELECTOR_SPKI);
    let data_ok = match record.matching_type {
        MATCHING_FULL => !record.data.is_empty(),
        MATCHING_SHA256 => record.data.len() == 32,
        MATCHING_SHA512 => record.data.len() == 64,
        _ => false,
    };
    usage_ok && selector_ok && data_ok
}

/// The TLSA owner name for a base domain: `_<port>._tcp.<base>` (RFC 6698 §3).
pub fn tlsa_owner(base_domain: &str, port: u16) -> String {
    format!("_{port}._tcp.{}", normalize_name(base_domain))
}

/// One place to look for TLSA records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsaCandidate {
    /// The TLSA base domain (a host name).
    pub base_domain: String,
    /// `_<port>._tcp.<base_domain>`.
    pub owner: String,
}

/// The TLSA candidate base domains of an MX host, in lookup order: the CNAME-expanded
/// name first, then the original name (RFC 7672 §2.2.2).
///
/// `expanded_host` is the name the host's CNAME chain leads to; pass it only when that
/// chain was DNSSEC-secure (otherwise the expanded name cannot be trusted as a base).
pub fn tlsa_candidates(host: &str, expanded_host: Option<&str>, port: u16) -> Vec<TlsaCandidate> {
    let host = normalize_name(host);
    let mut bases = Vec::with_capacity(2);
    if let Some(expanded) = expanded_host.map(normalize_name) {
        if expanded != host && !expanded.is_empty() {
            bases.push(expanded);
        }
    }
    bases.push(host);
    bases
        .into_iter()
        .map(|base| TlsaCandidate {
            owner: tlsa_owner(&base, port),
            base_domain: base,
        })
        .collect()
}

/// The policy that one TLSA answer gives (the pure part of [`lookup_tlsa_policy`]).
pub fn policy_from_answer(base_domain: &str, result: LookupResult<Tlsa>) -> DanePolicy {
    match result {
        Ok(answer) if !answer.authentic => DanePolicy::NotApplicable {
            // RFC 7672 §2.2: insecure TLSA records are ignored (opportunistic TLS).
            reason: NotApplicableReason::Insecure,
        },
        Ok(answer) => {
            let records: Vec<Tlsa> = answer.records.into_iter().filter(is_usable).collect();
            if records.is_empty() {
                // RFC 7672 §2.2: "at least one TLSA record, but none usable": the client
                // MUST use TLS, but need not authenticate the server.
                DanePolicy::RequireTlsUnverified {
                    base_domain: normalize_name(base_domain),
                }
            } else {
                DanePolicy::Verify {
                    base_domain: normalize_name(base_domain),
                    records,
                }
            }
        }
        Err(error) => match error.class() {
            ErrorClass::NotFound => DanePolicy::NotApplicable {
                reason: if error.authentic() {
                    NotApplicableReason::NoRecords
                } else {
                    NotApplicableReason::Insecure
                },
            },
            // RFC 7672 §2.2: a failed TLSA lookup (SERVFAIL, timeout, bogus) makes the
            // host unusable for now; it is NOT treated as "no TLSA records".
            ErrorClass::Temporary => DanePolicy::TemporaryFailure { error },
        },
    }
}

/// Looks up the TLSA records of an MX host and decides its DANE policy.
///
/// Call it only when DANE can apply: the MX answer (or the recipient domain, for an
/// implicit MX) and the host's address answers were DNSSEC-secure (RFC 7672 §2.2.1,
/// §2.2.2). `expanded_host` is the CNAME-expanded host name when its chain was secure.
/// Candidates are tried in order: a secure denial or an insecure answer at the expanded
/// name moves on to the original name; a lookup error at any candidate fails the host.
pub async fn lookup_tlsa_policy(
    resolver: &dyn Resolver,
    host: &str,
    expanded_host: Option<&str>,
    port: u16,
) -> DanePolicy {
    let candidates = tlsa_candidates(host, expanded_host, port);
    let last = candidates.len().saturating_sub(1);
    let mut policy = DanePolicy::NotApplicable {
        reason: NotApplicableReason::NoRecords,
    };
    for (index, candidate) in candidates.iter().enumerate() {
        let result = resolver.lookup_tlsa(&candidate.owner).await;
        policy = policy_from_answer(&candidate.base_domain, result);
        match policy {
            DanePolicy::NotApplicable { .. } if index < last => {
                // RFC 7672 §2.2.2: nothing (secure) at the expanded name: try the original.
                continue;
            }
            DanePolicy::NotApplicable { .. }
            | DanePolicy::Verify { .. }
            | DanePolicy::RequireTlsUnverified { .. }
            | DanePolicy::TemporaryFailure { .. } => break,
        }
    }
    policy
}

/// The names a DANE-TA certificate may be issued for (RFC 7672 §3.2.3): the TLSA base
/// domain, the MX host name as found in the MX record, the recipient (next-hop) domain,
/// and that domain after CNAME expansion. Lowercase, without duplicates, at most four.
pub fn reference_names(
    base_domain: &str,
    mx_host: &str,
    next_hop: &str,
    expanded_next_hop: Option<&str>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(4);
    let all = [
        Some(base_domain),
        Some(mx_host),
        Some(next_hop),
        expanded_next_hop,
    ];
    for name in all.into_iter().flatten().map(normalize_name) {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{Answer, QueryType};

    fn rec(usage: u8, selector: u8, matching: u8, len: usize) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching_type: matching,
            data: vec![0x5a; len],
        }
    }

    fn answer(authentic: bool, records: Vec<Tlsa>) -> LookupResult<Tlsa> {
        Ok(Answer { authentic, records })
    }

    fn err(kind: &str, authentic: bool) -> DnsError {
        let name = "_25._tcp.mx.example.org".to_string();
        let qtype = QueryType::Tlsa;
        match kind {
            "nx" => DnsError::NxDomain {
                name,
                qtype,
                authentic,
            },
            "nodata" => DnsError::NoData {
                name,
                qtype,
                authentic,
            },
            "servfail" => DnsError::ServFail { name, qtype },
            "timeout" => DnsError::Timeout { name, qtype },
            "bogus" => DnsError::Bogus {
                name,
                qtype,
                reason: "bad RRSIG".into(),
            },
            _ => DnsError::Other {
                name,
                qtype,
                message: "refused".into(),
            },
        }
    }

    #[test]
    fn dane_usable_records() {
        let table = [
            (rec(3, 1, 1, 32), true),
            (rec(3, 0, 1, 32), true),
            (rec(3, 1, 2, 64), true),
            (rec(3, 1, 0, 91), true),
            (rec(2, 1, 1, 32), true),
            (rec(2, 0, 2, 64), true),
            (rec(0, 1, 1, 32), false), // PKIX-TA: not for SMTP (RFC 7672 §3.1.3)
            (rec(1, 1, 1, 32), false), // PKIX-EE
            (rec(4, 1, 1, 32), false), // unknown usage
            (rec(3, 2, 1, 32), false), // unknown selector
            (rec(3, 1, 3, 32), false), // unknown matching type
            (rec(3, 1, 1, 31), false), // digest too short
            (rec(3, 1, 2, 32), false), // SHA-512 with a SHA-256 length
            (rec(3, 1, 0, 0), false),  // empty full data
        ];
        for (record, usable) in table {
            assert_eq!(is_usable(&record), usable, "{record:?}");
        }
    }

    #[test]
    fn dane_policy_from_answers() {
        let base = "MX.Example.org.";
        let verify =
            policy_from_answer(base, answer(true, vec![rec(3, 1, 1, 32), rec(0, 0, 1, 32)]));
        assert_eq!(
            verify,
            DanePolicy::Verify {
                base_domain: "mx.example.org".into(),
                records: vec![rec(3, 1, 1, 32)],
            }
        );
        assert!(verify.requires_tls());

        let unusable = policy_from_answer(
            base,
            answer(
                true,
                vec![
                    rec(0, 1, 1, 32),
                    rec(1, 0, 1, 32),
                    rec(3, 7, 1, 32),
                    rec(3, 1, 9, 32),
                ],
            ),
        );
        assert_eq!(
            unusable,
            DanePolicy::RequireTlsUnverified {
                base_domain: "mx.example.org".into()
            }
        );
        assert!(unusable.requires_tls());

        let insecure = policy_from_answer(base, answer(false, vec![rec(3, 1, 1, 32)]));
        assert_eq!(
            insecure,
            DanePolicy::NotApplicable {
                reason: NotApplicableReason::Insecure
            }
        );
        assert!(!insecure.requires_tls());

        for (kind, authentic, reason) in [
            ("nx", true, NotApplicableReason::NoRecords),
            ("nodata", true, NotApplicableReason::NoRecords),
            ("nx", false, NotApplicableReason::Insecure),
            ("nodata", false, NotApplicableReason::Insecure),
        ] {
            assert_eq!(
                policy_from_answer(base, Err(err(kind, authentic))),
                DanePolicy::NotApplicable { reason },
                "{kind} authentic={authentic}"
            );
        }
    }

    /// The known downgrade bug: a failed lookup must never read as "no DANE".
    #[test]
    fn dane_lookup_errors_are_temporary_failures() {
        for kind in ["servfail", "timeout", "bogus", "other"] {
            let policy = policy_from_answer("mx.example.org", Err(err(kind, false)));
            assert!(
                matches!(policy, DanePolicy::TemporaryFailure { .. }),
                "{kind}: {policy:?}"
            );
            assert_eq!(policy.label(), "error");
        }
    }

    #[test]
    fn dane_candidates_expanded_first() {
        let c = tlsa_candidates("MX.example.org.", Some("real.example.net"), 25);
        let owners: Vec<&str> = c.iter().map(|c| c.owner.as_str()).collect();
        assert_eq!(
            owners,
            ["_25._tcp.real.example.net", "_25._tcp.mx.example.org"]
        );
        assert_eq!(c[0].base_domain, "real.example.net");

        let same = tlsa_candidates("mx.example.org", Some("MX.example.org."), 2525);
        assert_eq!(same.len(), 1);
        assert_eq!(same[0].owner, "_2525._tcp.mx.example.org");
        assert_eq!(tlsa_candidates("mx.example.org", None, 25).len(), 1);
    }

    #[test]
    fn dane_reference_names_deduplicated() {
        assert_eq!(
            reference_names(
                "real.example.net",
                "mx.example.org",
                "Example.org.",
                Some("hosted.example.com")
            ),
            [
                "real.example.net",
                "mx.example.org",
                "example.org",
                "hosted.example.com"
            ]
        );
        assert_eq!(
            reference_names("example.org", "example.org", "example.org", None),
            ["example.org"]
        );
    }
}
