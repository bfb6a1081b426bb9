//! DANE for SMTP (RFC 7672, on RFC 6698/7218): TLSA records, found under DNSSEC, say
//! which certificate an MX host must present.
//!
//! # The flow for one MX host
//!
//! 1. **Applicability.** DANE applies only when the MX answer and the host's address
//!    answers were DNSSEC-secure (RFC 7672 §2.2.1/§2.2.2); the caller knows that from the
//!    `authentic` flags of [`crate::dns`].
//! 2. **Lookup.** [`lookup_tlsa_policy`] asks for TLSA at `_<port>._tcp.<host>`: at the
//!    CNAME-expanded host name first (when its chain was secure), then at the original
//!    name ([`tlsa_candidates`]). [`policy_from_answer`] turns one answer into a
//!    [`DanePolicy`]:
//!    - insecure answer, or a denial (NXDOMAIN/NODATA): [`DanePolicy::NotApplicable`];
//!    - usable DANE-EE/DANE-TA records ([`is_usable`]): [`DanePolicy::Verify`];
//!    - records, none usable: [`DanePolicy::RequireTlsUnverified`] (STARTTLS, no checks);
//!    - SERVFAIL, timeout, bogus or any other failure: [`DanePolicy::TemporaryFailure`],
//!      the host is skipped for this attempt — never a silent downgrade to "no DANE".
//! 3. **Verification.** For `Verify`, [`DaneVerifier`] (a rustls `ServerCertVerifier`)
//!    accepts the chain iff a record matches it; DANE-TA also checks the chain to the
//!    anchor, its dates and the names from [`reference_names`]. Handshake signatures are
//!    always checked. [`DaneVerifier::client_config`] gives the per-connection config; the
//!    TLS SNI is the `base_domain` of the policy.
//!
//! # Layout
//!
//! - [`policy`] — the decision over DNS answers (pure), candidates, reference names.
//! - [`verify`] — record matching and the rustls verifier.

pub mod policy;
pub mod verify;

#[cfg(test)]
mod tests;

pub use policy::{
    is_usable, lookup_tlsa_policy, policy_from_answer, reference_names, tlsa_candidates,
    tlsa_owner, DanePolicy, NotApplicableReason, TlsaCandidate,
};
pub use verify::{record_matches, spki_of, DaneError, DaneSetupError, DaneVerifier};
