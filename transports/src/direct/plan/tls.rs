//! The TLS policy of one MX host as a pure function of what the recipient domain asked
//! for (MTA-STS, RFC 8461; DANE, RFC 7672), what the sender asked for (REQUIRETLS, RFC
//! 8689) and what the message allows (`TLS-Required: No`, RFC 8689 §5).
//!
//! [`tls_policy`] decides, in this order:
//! 1. **MTA-STS** ([`mtasts_step`], also asked before the host's DNS lookups): `enforce`
//!    and the host is not listed → skip the host for now; `testing` → only a mismatch to
//!    log and count; `none` or no policy → nothing.
//! 2. **TLSA lookup failed** → skip the host for now; never read as "no DANE".
//! 3. **REQUIRETLS** without usable DANE records and without MTA-STS `enforce` → refuse
//!    the host (permanent for this host, 5.7.30).
//! 4. **The requirement**: verified against the TLSA records and/or PKIX, or STARTTLS
//!    required without verification (DANE with only unusable records), or opportunistic.
//! 5. **`TLS-Required: No`** turns the skips of steps 1 and 2 into findings that are
//!    counted and ignored, and relaxes a requirement: verification failures are noted
//!    and ignored, and a failed TLS session may be retried in plaintext.

use std::fmt;
use std::sync::Arc;

use rustls::ClientConfig;

use super::super::verify::RelaxedVerifier;
use crate::dane::DanePolicy;
use crate::dns::Host;
use crate::mtasts::{Mode, Policy};
use crate::outcome::Severity;
use crate::reply::{EnhancedCode, Reply};

/// How TLS is used in one session with an MX host.
#[derive(Clone)]
pub enum TlsPolicy {
    /// STARTTLS when offered, certificate not verified (RFC 7435 opportunistic
    /// security); after a TLS failure, one new plaintext connection to the same host.
    Opportunistic,
    /// Never STARTTLS: the reconnect after a TLS failure that allows it.
    Plaintext,
    /// STARTTLS must be offered and succeed; the certificate is not verified (DANE with
    /// only unusable TLSA records, RFC 7672 §2.2). No plaintext fallback.
    RequiredUnverified,
    /// STARTTLS must be offered and succeed with a certificate this config verifies
    /// (PKIX for MTA-STS `enforce`, the TLSA records for DANE). No plaintext fallback.
    RequiredVerified(Arc<ClientConfig>),
    /// A required policy relaxed by `TLS-Required: No` (RFC 8689 §5): STARTTLS is tried
    /// and the certificate checked, but a verification failure is only noted by
    /// `verifier`, and a failed TLS session (or no STARTTLS) allows a plaintext retry.
    Relaxed {
        /// The config of the TLS session.
        config: Arc<ClientConfig>,
        /// Notes the verification result; `None` when nothing is verified.
        verifier: Option<Arc<RelaxedVerifier>>,
    },
}

impl fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl TlsPolicy {
    /// Short name for logs.
    pub fn label(&self) -> &'static str {
        match self {
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Plaintext => "plaintext",
            TlsPolicy::RequiredUnverified => "required-unverified",
            TlsPolicy::RequiredVerified(_) => "required-verified",
            TlsPolicy::Relaxed { .. } => "tls-required-no",
        }
    }

    /// After a failed TLS session, may the host be tried again without TLS?
    /// RFC 7435 §3: opportunistic security falls back to cleartext; the required
    /// policies exist precisely to forbid that, unless the message said
    /// `TLS-Required: No` (RFC 8689 §5).
    pub fn allows_plaintext_fallback(&self) -> bool {
        match self {
            TlsPolicy::Opportunistic | TlsPolicy::Relaxed { .. } => true,
            TlsPolicy::Plaintext
            | TlsPolicy::RequiredUnverified
            | TlsPolicy::RequiredVerified(_) => false,
        }
    }

    /// STARTTLS must be offered and must succeed on this connection.
    pub fn requires_tls(&self) -> bool {
        match self {
            TlsPolicy::Opportunistic | TlsPolicy::Plaintext => false,
            TlsPolicy::RequiredUnverified
            | TlsPolicy::RequiredVerified(_)
            | TlsPolicy::Relaxed { .. } => true,
        }
    }
}

/// The recipient domain's MTA-STS policy as it bears on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtaStsHost {
    /// No policy, or mode `none`.
    NoPolicy,
    /// Mode `testing`; whether the policy lists the host.
    Testing {
        /// The host matches one of the policy's `mx` patterns.
        listed: bool,
    },
    /// Mode `enforce`; whether the policy lists the host.
    Enforce {
        /// The host matches one of the policy's `mx` patterns.
        listed: bool,
    },
}

impl MtaStsHost {
    /// What `policy` (if any) says about `host`. An address literal is never listed.
    pub fn of(policy: Option<&Policy>, host: &Host) -> MtaStsHost {
        let listed = || match host {
            Host::Name(name) => policy.is_some_and(|p| p.matches(name)),
            Host::Ip(_) => false,
        };
        match policy.map(|p| p.mode) {
            None | Some(Mode::None) => MtaStsHost::NoPolicy,
            Some(Mode::Testing) => MtaStsHost::Testing { listed: listed() },
            Some(Mode::Enforce) => MtaStsHost::Enforce { listed: listed() },
        }
    }

    /// A policy exists and does not list the host (logged and counted in any mode).
    pub fn mismatch(self) -> bool {
        match self {
            MtaStsHost::Testing { listed } | MtaStsHost::Enforce { listed } => !listed,
            MtaStsHost::NoPolicy => false,
        }
    }
}

/// What DANE says about one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaneHost {
    /// DANE does not apply: the DNS chain was not authentic, or no (secure) TLSA records.
    NotApplicable,
    /// Usable TLSA records: the certificate must match one.
    Verify,
    /// TLSA records, none usable: STARTTLS required, not verified.
    Unverified,
    /// The TLSA lookup failed (SERVFAIL, timeout, bogus).
    LookupFailed,
}

impl DaneHost {
    /// The summary of a looked-up policy.
    pub fn of(policy: &DanePolicy) -> DaneHost {
        match policy {
            DanePolicy::NotApplicable { .. } => DaneHost::NotApplicable,
            DanePolicy::Verify { .. } => DaneHost::Verify,
            DanePolicy::RequireTlsUnverified { .. } => DaneHost::Unverified,
            DanePolicy::TemporaryFailure { .. } => DaneHost::LookupFailed,
        }
    }
}

/// Everything the TLS policy of one host depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyInputs {
    /// The message asks for REQUIRETLS (RFC 8689), by parameter or queue override.
    pub requiretls: bool,
    /// The message carries `TLS-Required: No` (RFC 8689 §5).
    pub tls_required_no: bool,
    /// The recipient domain's MTA-STS policy for this host.
    pub mtasts: MtaStsHost,
    /// DANE for this host (`NotApplicable` when not looked up).
    pub dane: DaneHost,
}

/// What verifies the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The TLSA records (RFC 7672 §3).
    Dane,
    /// PKIX for the MX host name (RFC 8461 §4.2).
    Pkix,
    /// Both: a DANE host under an MTA-STS `enforce` policy.
    DaneAndPkix,
}

/// What TLS the host must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRequirement {
    /// STARTTLS when offered, not verified; plaintext retry after a TLS failure.
    Opportunistic,
    /// STARTTLS required, not verified.
    RequiredUnverified,
    /// STARTTLS required and verified.
    Verified(Verification),
}

/// Which policies asked for TLS at a host (for the `tlsmode` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlsSources {
    /// DANE records (usable or not) required TLS.
    pub dane: bool,
    /// An MTA-STS `enforce` policy listing the host required verified TLS.
    pub mtasts: bool,
}

impl TlsSources {
    /// The TLS mode of a session ("none", "unverified", "verified") with the policies
    /// that asked for it: e.g. "verified+dane", "verified+mtasts+dane".
    pub fn label(self, tls_mode: &str) -> String {
        let mut label = tls_mode.to_string();
        if self.mtasts {
            label.push_str("+mtasts");
        }
        if self.dane {
            label.push_str("+dane");
        }
        label
    }
}

/// A policy finding ignored because of `TLS-Required: No`
/// (`relaygate_queue_tlsrequiredno_ignored_total{ignored}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The MTA-STS policy could not be looked up.
    MtaStsPolicy,
    /// The host is not listed by an `enforce` policy.
    MtaStsMx,
    /// The TLSA lookup failed.
    BadTlsa,
    /// TLS failed where it was required: plaintext retry.
    BadTls,
    /// The certificate did not verify where verification was required.
    TlsVerify,
}

impl Ignored {
    /// The metric label (the reference design's names, plus `tlsverify`).
    pub fn label(self) -> &'static str {
        match self {
            Ignored::MtaStsPolicy => "mtastspolicy",
            Ignored::MtaStsMx => "mtastsmx",
            Ignored::BadTlsa => "badtlsa",
            Ignored::BadTls => "badtls",
            Ignored::TlsVerify => "tlsverify",
        }
    }
}

/// Why a host is not dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Not listed by the domain's MTA-STS `enforce` policy.
    MtaStsMx,
    /// Its TLSA lookup failed.
    TlsaLookup,
    /// A REQUIRETLS message, and neither usable DANE records nor MTA-STS `enforce`.
    RequireTlsNoPolicy,
}

impl SkipReason {
    /// Temporary: the next host, or a later attempt, may do. Permanent: this host can
    /// never take the message (the message fails if every host says so).
    pub fn severity(self) -> Severity {
        match self {
            // The policy or the MX records may be fixed before the message expires.
            SkipReason::MtaStsMx => Severity::Temporary,
            // RFC 7672 §2.2: a failed lookup makes the host unusable for now.
            SkipReason::TlsaLookup => Severity::Temporary,
            SkipReason::RequireTlsNoPolicy => Severity::Permanent,
        }
    }

    /// The reply for the recipients, naming the host; `detail` says more (the policy's
    /// patterns, the DNS error).
    pub fn reply(self, host: &str, detail: &str) -> Reply {
        let (code, enhanced, what) = match self {
            // RFC 3463 §3.8: X.7.0 other security status.
            SkipReason::MtaStsMx => (
                451,
                EnhancedCode::new(4, 7, 0),
                "not listed by the recipient domain's MTA-STS policy (enforce)",
            ),
            // RFC 3463 §3.5: X.4.3 directory server failure.
            SkipReason::TlsaLookup => (
                451,
                EnhancedCode::new(4, 4, 3),
                "DANE TLSA lookup failed",
            ),
            // RFC 8689 §5: 5.7.30 REQUIRETLS support required.
            SkipReason::RequireTlsNoPolicy => (
                554,
                EnhancedCode::new(5, 7, 30),
                "REQUIRETLS: no usable DANE records and no MTA-STS enforce policy to verify this host",
            ),
        };
        let text = if detail.is_empty() {
            format!("{host}: {what}")
        } else {
            format!("{host}: {what}: {detail}")
        };
        Reply::new(code, Some(enhanced), &text)
    }
}

/// The TLS a host must give and what was relaxed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTls {
    /// The requirement.
    pub requirement: TlsRequirement,
    /// `TLS-Required: No` relaxes the requirement: verification failures are noted, and
    /// a TLS failure allows a plaintext retry (RFC 8689 §5).
    pub relaxed: bool,
    /// The policies behind the requirement.
    pub sources: TlsSources,
    /// Findings ignored because of `TLS-Required: No`.
    pub ignored: Vec<Ignored>,
}

/// The policy for one host, or why the host must not be used for this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    /// Deliver under this policy.
    Deliver(HostTls),
    /// Do not connect.
    Skip(SkipReason),
}

/// `TLS-Required: No` counts only without REQUIRETLS: RFC 8689 §5, "If the REQUIRETLS
/// MAIL FROM parameter is specified, the TLS-Required header field MUST be ignored".
fn relaxed(inputs: &PolicyInputs) -> bool {
    inputs.tls_required_no && !inputs.requiretls
}

/// The MTA-STS step: whether the policy lets the host be used, and whether it is
/// enforced for it. Decided before the host's own lookups, so a host the policy rules
/// out costs no DNS query and no connection.
pub fn mtasts_step(inputs: &PolicyInputs) -> Result<(bool, Option<Ignored>), SkipReason> {
    match inputs.mtasts {
        MtaStsHost::Enforce { listed: true } => Ok((true, None)),
        MtaStsHost::Enforce { listed: false } if relaxed(inputs) => {
            Ok((false, Some(Ignored::MtaStsMx)))
        }
        // RFC 8461 §5: in enforce mode, a sending MTA MUST NOT deliver to an MX host
        // that does not match the policy.
        MtaStsHost::Enforce { listed: false } => Err(SkipReason::MtaStsMx),
        // RFC 8461 §5: testing mode reports failures but delivers as without a policy.
        MtaStsHost::Testing { .. } | MtaStsHost::NoPolicy => Ok((false, None)),
    }
}

/// Chooses the TLS policy for one host (see the module comment).
pub fn tls_policy(inputs: &PolicyInputs) -> PolicyDecision {
    let relax = relaxed(inputs);
    let (enforce, mut ignored) = match mtasts_step(inputs) {
        Ok((enforce, ignored)) => (enforce, ignored.into_iter().collect::<Vec<_>>()),
        Err(reason) => return PolicyDecision::Skip(reason),
    };
    match inputs.dane {
        DaneHost::LookupFailed if relax => ignored.push(Ignored::BadTlsa),
        // RFC 7672 §2.2: a failed TLSA lookup makes the host unusable; it MUST NOT be
        // taken as "no TLSA records", which would let an attacker downgrade to plaintext.
        DaneHost::LookupFailed => return PolicyDecision::Skip(SkipReason::TlsaLookup),
        DaneHost::NotApplicable | DaneHost::Verify | DaneHost::Unverified => {}
    }
    // RFC 8689 §4.2.1: a REQUIRETLS message MUST only go to a host whose certificate is
    // verified through DANE (usable records) or an MTA-STS policy (enforce).
    if inputs.requiretls && !(inputs.dane == DaneHost::Verify || enforce) {
        return PolicyDecision::Skip(SkipReason::RequireTlsNoPolicy);
    }
    let requirement = match (inputs.dane, enforce) {
        // RFC 7672 §2.2 and RFC 8461 §4.2: each policy verifies; both must pass.
        (DaneHost::Verify, true) => TlsRequirement::Verified(Verification::DaneAndPkix),
        // RFC 7672 §2.2: usable TLSA records MUST be used to authenticate the server.
        (DaneHost::Verify, false) => TlsRequirement::Verified(Verification::Dane),
        // RFC 8461 §4.2: the certificate MUST be PKIX-valid for the MX host name.
        (DaneHost::Unverified | DaneHost::NotApplicable | DaneHost::LookupFailed, true) => {
            TlsRequirement::Verified(Verification::Pkix)
        }
        // RFC 7672 §2.2: records present but none usable: TLS MUST still be used.
        (DaneHost::Unverified, false) => TlsRequirement::RequiredUnverified,
        // A failed lookup reaches here only when `TLS-Required: No` ignored it.
        (DaneHost::NotApplicable | DaneHost::LookupFailed, false) => TlsRequirement::Opportunistic,
    };
    PolicyDecision::Deliver(HostTls {
        requirement,
        relaxed: relax && requirement != TlsRequirement::Opportunistic,
        sources: TlsSources {
            dane: matches!(inputs.dane, DaneHost::Verify | DaneHost::Unverified),
            mtasts: enforce,
        },
        ignored,
    })
}

/// The recipient domain's MTA-STS policy could not be determined (its TXT lookup failed
/// and nothing is cached): with `TLS-Required: No` the delivery goes on without it
/// (counted); otherwise every recipient waits for a later attempt, since delivering
/// without the policy would let an attacker who breaks the lookup strip it.
pub fn mtasts_unavailable(inputs: &PolicyInputs, detail: &str) -> Result<Ignored, Reply> {
    if relaxed(inputs) {
        Ok(Ignored::MtaStsPolicy)
    } else {
        // RFC 3463 §3.5: X.4.3 directory server failure.
        Err(Reply::new(
            451,
            Some(EnhancedCode::new(4, 4, 3)),
            &format!("MTA-STS policy lookup failed: {detail}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mtasts::MxPattern;

    const NO: MtaStsHost = MtaStsHost::NoPolicy;
    const ENF: MtaStsHost = MtaStsHost::Enforce { listed: true };
    const ENF_X: MtaStsHost = MtaStsHost::Enforce { listed: false };
    const TST_X: MtaStsHost = MtaStsHost::Testing { listed: false };

    fn inputs(mtasts: MtaStsHost, dane: DaneHost, requiretls: bool, no: bool) -> PolicyInputs {
        PolicyInputs {
            requiretls,
            tls_required_no: no,
            mtasts,
            dane,
        }
    }

    /// One row: inputs → (requirement or skip, relaxed, sources "mtasts+dane", ignored).
    fn row(i: PolicyInputs) -> String {
        match tls_policy(&i) {
            PolicyDecision::Skip(reason) => format!("skip {reason:?}"),
            PolicyDecision::Deliver(t) => {
                let ignored: Vec<&str> = t.ignored.iter().map(|x| x.label()).collect();
                format!(
                    "{:?} relaxed={} {} [{}]",
                    t.requirement,
                    t.relaxed,
                    t.sources.label("tls"),
                    ignored.join(",")
                )
            }
        }
    }

    #[test]
    fn direct_tls_policy_table() {
        use DaneHost::{LookupFailed as Fail, NotApplicable as NA, Unverified as Unv, Verify};
        let cases: &[(PolicyInputs, &str)] = &[
            // Nothing: opportunistic.
            (
                inputs(NO, NA, false, false),
                "Opportunistic relaxed=false tls []",
            ),
            (
                inputs(TST_X, NA, false, false),
                "Opportunistic relaxed=false tls []",
            ),
            // DANE.
            (
                inputs(NO, Verify, false, false),
                "Verified(Dane) relaxed=false tls+dane []",
            ),
            (
                inputs(NO, Unv, false, false),
                "RequiredUnverified relaxed=false tls+dane []",
            ),
            (inputs(NO, Fail, false, false), "skip TlsaLookup"),
            // MTA-STS enforce.
            (
                inputs(ENF, NA, false, false),
                "Verified(Pkix) relaxed=false tls+mtasts []",
            ),
            (inputs(ENF_X, NA, false, false), "skip MtaStsMx"),
            (inputs(ENF_X, Verify, false, false), "skip MtaStsMx"),
            // Both: both verified.
            (
                inputs(ENF, Verify, false, false),
                "Verified(DaneAndPkix) relaxed=false tls+mtasts+dane []",
            ),
            (
                inputs(ENF, Unv, false, false),
                "Verified(Pkix) relaxed=false tls+mtasts+dane []",
            ),
            (inputs(ENF, Fail, false, false), "skip TlsaLookup"),
            // REQUIRETLS: only with usable DANE or MTA-STS enforce.
            (inputs(NO, NA, true, false), "skip RequireTlsNoPolicy"),
            (inputs(TST_X, NA, true, false), "skip RequireTlsNoPolicy"),
            (inputs(NO, Unv, true, false), "skip RequireTlsNoPolicy"),
            (inputs(NO, Fail, true, false), "skip TlsaLookup"),
            (inputs(ENF_X, Verify, true, false), "skip MtaStsMx"),
            (
                inputs(NO, Verify, true, false),
                "Verified(Dane) relaxed=false tls+dane []",
            ),
            (
                inputs(ENF, NA, true, false),
                "Verified(Pkix) relaxed=false tls+mtasts []",
            ),
            // TLS-Required: No relaxes and counts.
            (
                inputs(NO, NA, false, true),
                "Opportunistic relaxed=false tls []",
            ),
            (
                inputs(NO, Verify, false, true),
                "Verified(Dane) relaxed=true tls+dane []",
            ),
            (
                inputs(NO, Unv, false, true),
                "RequiredUnverified relaxed=true tls+dane []",
            ),
            (
                inputs(NO, Fail, false, true),
                "Opportunistic relaxed=false tls [badtlsa]",
            ),
            (
                inputs(ENF_X, NA, false, true),
                "Opportunistic relaxed=false tls [mtastsmx]",
            ),
            (
                inputs(ENF_X, Fail, false, true),
                "Opportunistic relaxed=false tls [mtastsmx,badtlsa]",
            ),
            (
                inputs(ENF, Verify, false, true),
                "Verified(DaneAndPkix) relaxed=true tls+mtasts+dane []",
            ),
            // ...but never next to REQUIRETLS (RFC 8689 §5).
            (inputs(NO, NA, true, true), "skip RequireTlsNoPolicy"),
            (inputs(ENF_X, NA, true, true), "skip MtaStsMx"),
            (inputs(NO, Fail, true, true), "skip TlsaLookup"),
        ];
        for (i, want) in cases {
            assert_eq!(row(*i), *want, "{i:?}");
        }
    }

    #[test]
    fn direct_mtasts_step_before_lookups() {
        let i = inputs(ENF_X, DaneHost::NotApplicable, false, false);
        assert_eq!(mtasts_step(&i), Err(SkipReason::MtaStsMx));
        let i = inputs(ENF_X, DaneHost::NotApplicable, false, true);
        assert_eq!(mtasts_step(&i), Ok((false, Some(Ignored::MtaStsMx))));
        let i = inputs(ENF, DaneHost::NotApplicable, true, false);
        assert_eq!(mtasts_step(&i), Ok((true, None)));
        let i = inputs(TST_X, DaneHost::NotApplicable, false, false);
        assert_eq!(mtasts_step(&i), Ok((false, None)));
    }

    #[test]
    fn direct_mtasts_host_and_unavailable_policy() {
        let policy = |mode| Policy {
            mode,
            mx: vec![
                MxPattern::parse("mx.example.org").unwrap(),
                MxPattern::parse("*.example.net").unwrap(),
            ],
            max_age: 86400,
        };
        let name = |n: &str| Host::Name(n.into());
        let enforce = policy(Mode::Enforce);
        assert_eq!(
            MtaStsHost::of(Some(&enforce), &name("mx.example.org")),
            MtaStsHost::Enforce { listed: true }
        );
        assert_eq!(
            MtaStsHost::of(Some(&enforce), &name("a.b.example.net")),
            MtaStsHost::Enforce { listed: false }
        );
        assert_eq!(
            MtaStsHost::of(Some(&enforce), &Host::Ip("192.0.2.1".parse().unwrap())),
            MtaStsHost::Enforce { listed: false }
        );
        assert_eq!(
            MtaStsHost::of(Some(&policy(Mode::Testing)), &name("x.example.net")),
            MtaStsHost::Testing { listed: true }
        );
        assert_eq!(
            MtaStsHost::of(Some(&policy(Mode::None)), &name("other.test")),
            MtaStsHost::NoPolicy
        );
        assert_eq!(MtaStsHost::of(None, &name("x")), MtaStsHost::NoPolicy);
        assert!(MtaStsHost::Testing { listed: false }.mismatch());
        assert!(!MtaStsHost::Enforce { listed: true }.mismatch());

        let plain = inputs(NO, DaneHost::NotApplicable, false, false);
        let r = mtasts_unavailable(&plain, "SERVFAIL").unwrap_err();
        assert_eq!(r.code, 451);
        assert!(r.text().contains("SERVFAIL"), "{r}");
        let no = inputs(NO, DaneHost::NotApplicable, false, true);
        assert_eq!(mtasts_unavailable(&no, "x"), Ok(Ignored::MtaStsPolicy));
        let both = inputs(NO, DaneHost::NotApplicable, true, true);
        assert!(mtasts_unavailable(&both, "x").is_err());
    }

    #[test]
    fn direct_skip_replies() {
        for (reason, prefix, severity) in [
            (SkipReason::MtaStsMx, "451 4.7.0", Severity::Temporary),
            (SkipReason::TlsaLookup, "451 4.4.3", Severity::Temporary),
            (
                SkipReason::RequireTlsNoPolicy,
                "554 5.7.30",
                Severity::Permanent,
            ),
        ] {
            let r = reason.reply("mx.dst.test", "why");
            assert!(r.to_string().starts_with(prefix), "{r}");
            assert!(r.text().starts_with("mx.dst.test: "), "{r}");
            assert!(r.text().ends_with(": why"), "{r}");
            assert_eq!(reason.severity(), severity);
        }
        assert_eq!(
            TlsSources {
                dane: true,
                mtasts: false
            }
            .label("verified"),
            "verified+dane"
        );
        assert_eq!(TlsSources::default().label("none"), "none");
    }

    #[test]
    fn direct_tls_policy_properties() {
        let verified = TlsPolicy::RequiredVerified(crate::tls::danger::insecure_client_config());
        let relaxed = TlsPolicy::Relaxed {
            config: crate::tls::danger::insecure_client_config(),
            verifier: None,
        };
        for (policy, fallback, required) in [
            (TlsPolicy::Opportunistic, true, false),
            (TlsPolicy::Plaintext, false, false),
            (TlsPolicy::RequiredUnverified, false, true),
            (verified, false, true),
            (relaxed, true, true),
        ] {
            assert_eq!(policy.allows_plaintext_fallback(), fallback, "{policy:?}");
            assert_eq!(policy.requires_tls(), required, "{policy:?}");
        }
    }
}
