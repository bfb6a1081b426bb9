//! Direct delivery: the recipient domain's MX hosts, reached over the Internet. This is
//! what happens when no route matches, so it decides the fate of most mail.
//!
//! # The flow of one attempt ([`DirectTransport::deliver`])
//!
//! 1. **Destinations.** [`gather_destinations`] follows the domain's CNAMEs (bounded,
//!    loop-safe) and returns its MX hosts in preference order, random within a preference;
//!    no MX means the domain itself (RFC 5321 §5.1). A null MX or NXDOMAIN fails every
//!    recipient permanently at once; a SERVFAIL, timeout or CNAME loop temporarily.
//! 2. **MTA-STS** (RFC 8461), at the original recipient domain, through the
//!    [`PolicyCache`]: `enforce`, `testing` or nothing. When the policy cannot be
//!    determined (DNS failure, nothing cached) the attempt waits, unless the message says
//!    `TLS-Required: No`.
//! 3. **Per host**, in order, for the recipients that no host has answered for good:
//!    - MTA-STS first ([`plan::mtasts_step`]): a host that an `enforce` policy does not
//!      list is skipped without a lookup (temporary); a `testing` mismatch is logged;
//!    - its addresses ([`resolve_host`], without the families `disable_ipv4/6` rule out),
//!      ordered so that this attempt starts with the family the last attempt did not use
//!      ([`plan::order_ips`]); the addresses dialed are reported back for the queue to keep;
//!    - DANE (RFC 7672) when the whole chain to those addresses was DNSSEC-authentic:
//!      TLSA records at `_<direct.port>._tcp.<host>` ([`lookup_tlsa_policy`]);
//!    - the TLS policy ([`plan::tls_policy`], a pure table): verified against the TLSA
//!      records and/or PKIX, required unverified, or opportunistic; or the host is
//!      skipped (TLSA lookup failed: temporary; REQUIRETLS without usable DANE or MTA-STS
//!      `enforce`: permanent 5.7.30). `TLS-Required: No` (RFC 8689 §5) turns the
//!      failures into counted findings ([`plan::Ignored`]);
//!    - the verifiers ([`verify`]): [`DaneVerifier`](crate::dane::DaneVerifier), PKIX, or
//!      both, or a [`RelaxedVerifier`] that only notes a failure under `TLS-Required: No`;
//!    - a session ([`host`]): each address dialed with a share of the time budget through
//!      the [`Dialer`], EHLO with our host name, STARTTLS as the policy says, then
//!      transactions (LIMITS RCPTMAX honoured, 452s retried in a new transaction on the
//!      same connection; REQUIRETLS passed on MAIL FROM, and refused by the session when
//!      the server does not announce it after TLS);
//!    - after a failed TLS session, when the policy allows it (opportunistic, or relaxed
//!      by `TLS-Required: No`): a new connection to the same host without TLS (RFC 7435),
//!      reported so the gateway counts `queue_plaintext_fallback_total`. Never under DANE,
//!      MTA-STS `enforce` or REQUIRETLS.
//! 4. **Verdicts** ([`plan::HostVerdict`]): a delivery or a 5xx for the transaction is
//!    final; a temporary failure (connection, 4xx, TLS, a skipped host) moves on to the
//!    next host; a host that can never take the message (its SIZE, missing
//!    8BITMIME/SMTPUTF8/REQUIRETLS, no DANE/MTA-STS for a REQUIRETLS message, a 5xx
//!    greeting) also moves on, and the message fails only when every host said so. On the
//!    first attempt at a dual-stack host a 5xx with enhanced code 5.7.x is temporary, so
//!    the other family gets its chance next time.
//! 5. **Record.** What the last session offered (STARTTLS, REQUIRETLS) is written per
//!    recipient domain by a [`TlsStatusSink`] (files: [`TlsStatusStore`]; Redis in the
//!    gateway), in the background; a failed write never touches the delivery.
//!
//! Every synthesized reply names the remote host and address, and every recipient's
//! result says which remote MTA gave it ([`RemoteMta`]), for DSNs. Each [`HostReport`]
//! carries what the gateway turns into metrics (DANE outcome, MTA-STS mismatch, ignored
//! findings, REQUIRETLS refusals, plaintext fallbacks).

mod dial;
mod host;
mod metrics;
pub mod plan;
mod seam;
pub mod tls_record;
mod verify;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

pub use dial::{DialFuture, Dialer, TcpDialer};
pub use host::{ConnectResult, SessionReport};
pub use plan::{DaneHost, DialedIps, HostVerdict, Ignored, RemoteMta, SkipReason, TlsPolicy};
pub use tls_record::{
    is_recordable, CoalescingSink, TlsStatus, TlsStatusBackend, TlsStatusFiles, TlsStatusSink,
    TlsStatusStore,
};
pub use verify::RelaxedVerifier;

use crate::dane::{lookup_tlsa_policy, reference_names, DanePolicy};
use crate::dns::destinations::parse_address_literal;
use crate::dns::{
    gather_destinations, resolve_host, AddressFamilies, Destinations, Host, MxHost, Resolver,
};
use crate::message::OutboundMessage;
use crate::mtasts::{Mode, Policy, PolicyCache, PolicyLookupError};
use crate::outcome::RcptOutcome;
use crate::reply::{EnhancedCode, Reply};
use crate::session::Timeouts;
use crate::tls::{danger, TlsRoots};
use host::{HostPlan, SessionEnd};
use plan::{MtaStsHost, PolicyDecision, PolicyInputs, Tally, TlsSources};
use verify::VerifyInputs;

/// Settings of direct delivery.
#[derive(Debug, Clone)]
pub struct DirectConfig {
    /// Our EHLO name (`hostname`).
    pub ehlo_name: String,
    /// Remote SMTP port (`direct.port`, 25 except in labs and tests).
    pub port: u16,
    /// Per MX host name (lowercase, no trailing dot): another port (labs and tests).
    pub port_overrides: BTreeMap<String, u16>,
    /// Address families to look up and dial (`direct.disable_ipv4/6`).
    pub families: AddressFamilies,
    /// Stage timeouts of the SMTP sessions.
    pub timeouts: Timeouts,
    /// Time for dialing all the addresses of one host.
    pub dial_budget: Duration,
    /// Provider reply classification (the defaults, plus a socks transport's `on_reply`).
    pub reply_rules: Arc<crate::replies::ReplyRules>,
}

impl DirectConfig {
    /// Port 25, both families, RFC 5321 timeouts, 30 s to dial a host.
    pub fn new(ehlo_name: impl Into<String>) -> Self {
        DirectConfig {
            ehlo_name: ehlo_name.into(),
            port: 25,
            port_overrides: BTreeMap::new(),
            families: AddressFamilies::BOTH,
            timeouts: Timeouts::default(),
            dial_budget: Duration::from_secs(30),
            reply_rules: Arc::default(),
        }
    }
}

/// One attempt for some recipients at one domain.
#[derive(Debug, Clone)]
pub struct DirectRequest {
    /// The recipient domain, ASCII (A-labels), or an address literal.
    pub domain: String,
    /// The message; every recipient is at `domain`.
    pub message: OutboundMessage,
    /// This attempt's number, 1 for the first.
    pub attempt: u32,
    /// Addresses dialed per host on earlier attempts, oldest first.
    pub dialed: DialedIps,
    /// The message carries `TLS-Required: No` (RFC 8689 §5): TLS policy failures are
    /// ignored (and counted). Has no effect on a REQUIRETLS message.
    pub tls_required_no: bool,
}

/// The result for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectRcpt {
    /// Delivered, or why not (remote reply or a synthesized one).
    pub outcome: RcptOutcome,
    /// The remote MTA that gave it, when a host was reached or tried.
    pub remote: Option<RemoteMta>,
}

/// What happened at one MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// The host as displayed.
    pub host: String,
    /// Its addresses were looked up (it counts as a destination); false when MTA-STS
    /// ruled it out first.
    pub looked_up: bool,
    /// The whole chain to this host's addresses was DNSSEC-authentic (recipient domain,
    /// its MX records unless implicit, the host's address records): DANE may apply.
    pub authentic: bool,
    /// What the TLSA lookup gave, when there was one (authentic hosts only).
    pub dane: Option<DaneHost>,
    /// The recipient domain has an MTA-STS policy (`enforce` or `testing`) that does not
    /// list this host.
    pub mtasts_mismatch: bool,
    /// The TLS policy chosen, or `None` when the host was not dialed.
    pub policy: Option<&'static str>,
    /// Why the host was not dialed (no address, DNS failure, policy refusal).
    pub skipped: Option<String>,
    /// The TLS policy ruled the host out.
    pub skip_reason: Option<SkipReason>,
    /// Findings ignored because the message says `TLS-Required: No`.
    pub ignored: Vec<Ignored>,
    /// Its sessions: one, or two after a plaintext fallback.
    pub sessions: Vec<SessionReport>,
    /// The second session is the plaintext retry after a failed TLS session.
    pub plaintext_fallback: bool,
    /// The message asked REQUIRETLS and the host did not announce it.
    pub requiretls_refused: bool,
}

impl HostReport {
    fn new(host: &str) -> Self {
        HostReport {
            host: host.to_string(),
            looked_up: false,
            authentic: false,
            dane: None,
            mtasts_mismatch: false,
            policy: None,
            skipped: None,
            skip_reason: None,
            ignored: Vec::new(),
            sessions: Vec::new(),
            plaintext_fallback: false,
            requiretls_refused: false,
        }
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResult {
    /// One per recipient of the request, in order.
    pub rcpts: Vec<DirectRcpt>,
    /// Addresses dialed in this attempt, per host (for the next attempt's ordering).
    pub dialed: DialedIps,
    /// The hosts tried, in order (empty when the destinations could not be found).
    pub hosts: Vec<HostReport>,
    /// The recipient domain's MTA-STS policy mode, when it has a policy.
    pub mtasts: Option<Mode>,
    /// Findings about the whole domain ignored because of `TLS-Required: No`.
    pub ignored: Vec<Ignored>,
}

impl DirectResult {
    /// Plaintext retries after failed TLS handshakes.
    pub fn plaintext_fallbacks(&self) -> usize {
        self.hosts.iter().filter(|h| h.plaintext_fallback).count()
    }

    /// Every finding ignored because of `TLS-Required: No`, for the domain and each host.
    pub fn ignored(&self) -> impl Iterator<Item = Ignored> + '_ {
        self.ignored
            .iter()
            .chain(self.hosts.iter().flat_map(|h| h.ignored.iter()))
            .copied()
    }

    /// Every dial's result, for `queue_connection_total{result}`.
    pub fn connections(&self) -> impl Iterator<Item = ConnectResult> + '_ {
        self.hosts
            .iter()
            .flat_map(|h| h.sessions.iter().map(|s| s.connect))
    }
}

/// MTA-STS as direct delivery uses it: the policy cache and the roots that verify MX
/// certificates under `enforce`.
struct MtaSts {
    cache: Arc<PolicyCache>,
    roots: TlsRoots,
}

/// Direct MX delivery. Share it behind an `Arc`; `deliver` may run concurrently.
pub struct DirectTransport {
    config: DirectConfig,
    resolver: Arc<dyn Resolver>,
    dialer: Arc<dyn Dialer>,
    unverified_tls: Arc<ClientConfig>,
    tls_status: Option<Arc<dyn TlsStatusSink>>,
    mtasts: Option<MtaSts>,
}

impl std::fmt::Debug for DirectTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectTransport")
            .field("config", &self.config)
            .field("tls_status", &self.tls_status)
            .field("mtasts", &self.mtasts.is_some())
            .finish()
    }
}

/// What every host of one attempt shares.
struct Attempt<'a> {
    req: &'a DirectRequest,
    destinations: &'a Destinations,
    /// The recipient domain's MTA-STS policy, if any.
    policy: Option<&'a Policy>,
    /// The message's side of the policy inputs.
    base: PolicyInputs,
}

impl DirectTransport {
    /// A transport resolving with `resolver` and connecting with `dialer`.
    pub fn new(config: DirectConfig, resolver: Arc<dyn Resolver>, dialer: Arc<dyn Dialer>) -> Self {
        DirectTransport {
            config,
            resolver,
            dialer,
            unverified_tls: danger::insecure_client_config(),
            tls_status: None,
            mtasts: None,
        }
    }

    /// Records what each recipient domain's last session offered in `sink` (the file
    /// writer [`TlsStatusStore`], or another [`TlsStatusSink`]).
    pub fn with_tls_status(self, sink: impl TlsStatusSink + 'static) -> Self {
        self.with_tls_status_sink(Arc::new(sink))
    }

    /// [`DirectTransport::with_tls_status`] with a sink shared with other transports.
    pub fn with_tls_status_sink(mut self, sink: Arc<dyn TlsStatusSink>) -> Self {
        self.tls_status = Some(sink);
        self
    }

    /// Applies MTA-STS policies from `cache`, verifying MX certificates under `enforce`
    /// against `roots` (webpki roots plus `tls.extra_ca_file`).
    pub fn with_mtasts(mut self, cache: Arc<PolicyCache>, roots: TlsRoots) -> Self {
        self.mtasts = Some(MtaSts { cache, roots });
        self
    }

    /// The MTA-STS policy cache, for the background refresh.
    pub fn mtasts_cache(&self) -> Option<&Arc<PolicyCache>> {
        self.mtasts.as_ref().map(|m| &m.cache)
    }

    /// The configuration.
    pub fn config(&self) -> &DirectConfig {
        &self.config
    }

    /// Makes one attempt for the request's recipients. Never fails as a whole: every
    /// recipient gets an outcome, temporary or permanent as the hosts and DNS decided.
    pub async fn deliver(&self, req: &DirectRequest) -> DirectResult {
        let n = req.message.rcpts.len();
        let mut result = DirectResult {
            rcpts: Vec::with_capacity(n),
            dialed: DialedIps::new(),
            hosts: Vec::new(),
            mtasts: None,
            ignored: Vec::new(),
        };
        let mut tally = Tally::new(n);
        let destinations = match gather_destinations(self.resolver.as_ref(), &req.domain).await {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(domain = %req.domain, error = %e, "direct: no destinations");
                for i in 0..n {
                    tally.record(i, plan::destination_verdict(&e), None);
                }
                result.rcpts = finish(tally);
                return result;
            }
        };
        tracing::debug!(domain = %req.domain, expanded = %destinations.expanded_domain,
            hosts = destinations.hosts.len(), authentic = destinations.authentic_original,
            "direct: destinations");
        let base = PolicyInputs {
            requiretls: req.message.params.requiretls,
            tls_required_no: req.tls_required_no,
            mtasts: MtaStsHost::NoPolicy,
            dane: DaneHost::NotApplicable,
        };
        let policy = match self.mtasts_policy(&req.domain).await {
            Ok(policy) => policy,
            Err(e) => match plan::mtasts_unavailable(&base, &e.to_string()) {
                Ok(ignored) => {
                    tracing::info!(domain = %req.domain, error = %e,
                        "direct: MTA-STS policy unknown; going on (TLS-Required: No)");
                    result.ignored.push(ignored);
                    None
                }
                Err(reply) => {
                    tracing::info!(domain = %req.domain, error = %e,
                        "direct: MTA-STS policy unknown; trying later");
                    for i in 0..n {
                        tally.record(i, HostVerdict::Deferred(reply.clone()), None);
                    }
                    result.rcpts = finish(tally);
                    return result;
                }
            },
        };
        result.mtasts = policy.as_ref().map(|p| p.mode);
        let attempt = Attempt {
            req,
            destinations: &destinations,
            policy: policy.as_ref(),
            base,
        };
        for mx in &destinations.hosts {
            let pending = tally.pending();
            if pending.is_empty() {
                break;
            }
            let report = self
                .deliver_host(&attempt, mx, &pending, &mut tally, &mut result.dialed)
                .await;
            result.hosts.push(report);
        }
        result.rcpts = finish(tally);
        result
    }

    /// The MTA-STS policy of the ORIGINAL recipient domain: RFC 8461 §4 has senders look
    /// it up there, never at a CNAME target (one forged CNAME would swap the policy).
    async fn mtasts_policy(&self, domain: &str) -> Result<Option<Policy>, PolicyLookupError> {
        let Some(mtasts) = &self.mtasts else {
            return Ok(None);
        };
        // Address literals have no domain to publish a policy.
        if !matches!(parse_address_literal(domain), Ok(None)) {
            return Ok(None);
        }
        Ok(mtasts.cache.get(domain).await?.map(|active| active.policy))
    }

    /// One MX host for the recipients still pending: MTA-STS, addresses, DANE, the TLS
    /// policy, then the session (and a plaintext retry where the policy allows it).
    async fn deliver_host(
        &self,
        at: &Attempt<'_>,
        mx: &MxHost,
        pending: &[usize],
        tally: &mut Tally,
        dialed: &mut DialedIps,
    ) -> HostReport {
        let req = at.req;
        let host_name = mx.host.to_string();
        let mut report = HostReport::new(&host_name);
        let skipped_remote = Some(RemoteMta {
            host: host_name.clone(),
            ip: None,
            tls: crate::tls::TlsInfo::None,
            sources: TlsSources::default(),
        });
        let mut skip = |report: &mut HostReport, reason: SkipReason, detail: &str| {
            let verdict = plan::skip_verdict(reason, &host_name, detail);
            tracing::info!(domain = %req.domain, host = %host_name, ?reason, ?verdict,
                "direct: host skipped by the TLS policy");
            for &i in pending {
                tally.record(i, verdict.clone(), skipped_remote.clone());
            }
            report.skipped = Some(verdict.reply().text().to_string());
            report.skip_reason = Some(reason);
        };
        let inputs = PolicyInputs {
            mtasts: MtaStsHost::of(at.policy, &mx.host),
            ..at.base
        };
        let patterns = at.policy.map_or_else(String::new, |p| {
            let mx: Vec<String> = p.mx.iter().map(ToString::to_string).collect();
            format!("mode {}, mx {}", p.mode, mx.join(", "))
        });
        if inputs.mtasts.mismatch() {
            tracing::warn!(domain = %req.domain, host = %host_name, policy = %patterns,
                "direct: MX host not listed by the MTA-STS policy");
            report.mtasts_mismatch = true;
        }
        if let Err(reason) = plan::mtasts_step(&inputs) {
            skip(&mut report, reason, &patterns);
            return report;
        }
        report.looked_up = true;
        let addrs = match resolve_host(self.resolver.as_ref(), &mx.host, self.config.families).await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(domain = %req.domain, host = %host_name, error = %e,
                    "direct: host has no usable address");
                for &i in pending {
                    tally.record(i, plan::destination_verdict(&e), skipped_remote.clone());
                }
                report.skipped = Some(e.to_string());
                return report;
            }
        };
        // As the reference: DANE is possible only when every step to these
        // addresses was DNSSEC-secure (RFC 7672 §2.2.1, §2.2.2).
        report.authentic = addrs.authentic
            && at.destinations.authentic_original
            && (at.destinations.implicit || at.destinations.authentic_expanded)
            && matches!(mx.host, Host::Name(_));
        // RFC 7672 §2.2: TLSA records are looked up only for secure hosts; the owner's
        // port is the one the MX is reached on (`direct.port`).
        let dane = match &mx.host {
            Host::Name(name) if report.authentic => Some(
                lookup_tlsa_policy(
                    self.resolver.as_ref(),
                    name,
                    Some(&addrs.expanded_name),
                    self.config.port,
                )
                .await,
            ),
            Host::Name(_) | Host::Ip(_) => None,
        };
        report.dane = dane.as_ref().map(DaneHost::of);
        let inputs = PolicyInputs {
            dane: report.dane.unwrap_or(DaneHost::NotApplicable),
            ..inputs
        };
        let host_tls = match plan::tls_policy(&inputs) {
            PolicyDecision::Deliver(t) => t,
            PolicyDecision::Skip(reason) => {
                let detail = match (&dane, reason) {
                    (Some(DanePolicy::TemporaryFailure { error }), SkipReason::TlsaLookup) => {
                        error.to_string()
                    }
                    _ => String::new(),
                };
                skip(&mut report, reason, &detail);
                return report;
            }
        };
        for ignored in &host_tls.ignored {
            tracing::info!(domain = %req.domain, host = %host_name, ignored = ignored.label(),
                "direct: policy finding ignored (TLS-Required: No)");
        }
        report.ignored.extend(host_tls.ignored.iter().copied());
        let (records, base_domain) = match &dane {
            Some(DanePolicy::Verify {
                base_domain,
                records,
            }) => (records.as_slice(), Some(base_domain.as_str())),
            Some(DanePolicy::RequireTlsUnverified { base_domain }) => {
                (&[][..], Some(base_domain.as_str()))
            }
            Some(DanePolicy::NotApplicable { .. } | DanePolicy::TemporaryFailure { .. }) | None => {
                (&[][..], None)
            }
        };
        let expanded_domain = at
            .destinations
            .authentic_expanded
            .then_some(at.destinations.expanded_domain.as_str());
        let names = base_domain.map_or_else(Vec::new, |base| {
            reference_names(
                base,
                &host_name,
                &at.destinations.original_domain,
                expanded_domain,
            )
        });
        let policy = match verify::session_policy(
            &host_tls,
            &VerifyInputs {
                records,
                reference_names: &names,
                mx_host: &host_name,
                roots: self.mtasts.as_ref().map(|m| &m.roots),
                unverified: &self.unverified_tls,
            },
        ) {
            Ok(policy) => policy,
            Err(e) => {
                tracing::warn!(domain = %req.domain, host = %host_name, error = %e,
                    "direct: cannot set up TLS verification");
                // RFC 3463 §3.8: X.7.5 cryptographic failure (a local one; try later).
                let text = format!("{host_name}: cannot set up TLS verification: {e}");
                let reply = Reply::new(451, Some(EnhancedCode::new(4, 7, 5)), &text);
                for &i in pending {
                    tally.record(
                        i,
                        HostVerdict::Deferred(reply.clone()),
                        skipped_remote.clone(),
                    );
                }
                report.skipped = Some(text);
                return report;
            }
        };
        let previous = req.dialed.get(&host_name).map_or(&[][..], Vec::as_slice);
        let ips = plan::order_ips(&addrs.ips, previous);
        let batch = OutboundMessage {
            rcpts: pending
                .iter()
                .map(|&i| req.message.rcpts[i].clone())
                .collect(),
            ..req.message.clone()
        };
        let mut host_plan = HostPlan {
            host: &mx.host,
            ips: &ips,
            port: plan::port_for(&mx.host, self.config.port, &self.config.port_overrides),
            policy,
            relax_policy: req.attempt <= 1 && plan::dual_stack(&ips),
            ehlo_name: &self.config.ehlo_name,
            timeouts: self.config.timeouts,
            dial_budget: self.config.dial_budget,
            unverified_tls: &self.unverified_tls,
            // RFC 7672 §8.1: under DANE the SNI is the TLSA base domain.
            sni: base_domain,
        };
        report.policy = Some(host_plan.policy.label());
        let (mut session, mut end) = host::run(self.dialer.as_ref(), &host_plan, &batch).await;
        note_dialed(dialed, &host_name, &session);
        let mut tls_error = None;
        if let SessionEnd::TlsFailed(e) = &end {
            if matches!(host_plan.policy, TlsPolicy::Relaxed { .. }) {
                // RFC 8689 §5: TLS-Required: No allows the plaintext retry that the
                // recipient's policy would forbid.
                report.ignored.push(Ignored::BadTls);
            }
            tracing::info!(domain = %req.domain, host = %host_name, ip = ?session.ip,
                error = %e, policy = host_plan.policy.label(),
                "direct: TLS failed, reconnecting without TLS");
            tls_error = Some(e.to_string());
            report.sessions.push(session);
            report.plaintext_fallback = true;
            host_plan.policy = TlsPolicy::Plaintext;
            (session, end) = host::run(self.dialer.as_ref(), &host_plan, &batch).await;
            note_dialed(dialed, &host_name, &session);
        }
        if session.verify_error.is_some() {
            report.ignored.push(Ignored::TlsVerify);
        }
        report.requiretls_refused = session.requiretls_refused;
        let remote = Some(RemoteMta {
            host: host_name.clone(),
            ip: session.ip,
            tls: session.tls.clone(),
            sources: host_tls.sources,
        });
        let verdicts = match end {
            SessionEnd::Verdicts(v) => v,
            // Only policies that allow a fallback end this way, and the fallback
            // runs in plaintext; should it happen anyway, the host failed.
            SessionEnd::TlsFailed(e) => vec![plan::verdict_of_error(&e); pending.len()],
        };
        self.record_tls_status(&req.domain, &host_name, &session, tls_error);
        log_session(&req.domain, &host_name, &report, &session, remote.as_ref());
        for (&i, verdict) in pending.iter().zip(verdicts) {
            tally.record(i, verdict, remote.clone());
        }
        report.sessions.push(session);
        report
    }

    fn record_tls_status(
        &self,
        domain: &str,
        host: &str,
        session: &SessionReport,
        tls_error: Option<String>,
    ) {
        let Some(store) = &self.tls_status else {
            return;
        };
        if !session.ehlo_done {
            return;
        }
        let updated_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        store.record(
            domain,
            TlsStatus {
                host: host.to_string(),
                ip: session.ip,
                starttls: session.starttls,
                requiretls: session.requiretls,
                tls: session.tls.mode(),
                tls_error,
                updated_at,
            },
        );
    }
}

fn note_dialed(dialed: &mut DialedIps, host: &str, session: &SessionReport) {
    if let Some(ip) = session.ip {
        dialed.entry(host.to_string()).or_default().push(ip);
    }
}

fn finish(tally: Tally) -> Vec<DirectRcpt> {
    tally
        .finish()
        .into_iter()
        .map(|(outcome, remote)| DirectRcpt { outcome, remote })
        .collect()
}

fn log_session(
    domain: &str,
    host: &str,
    report: &HostReport,
    session: &SessionReport,
    remote: Option<&RemoteMta>,
) {
    tracing::info!(
        domain,
        host,
        ip = ?session.ip.map(|ip: IpAddr| ip.to_string()),
        authentic = report.authentic,
        dane = ?report.dane,
        mtasts_mismatch = report.mtasts_mismatch,
        policy = session.policy,
        connect = session.connect.label(),
        tls = %remote.map_or_else(|| session.tls.mode().to_string(), RemoteMta::tls_mode),
        starttls_offered = session.starttls,
        requiretls_offered = session.requiretls,
        plaintext_fallback = report.plaintext_fallback,
        error = session.error.as_deref().unwrap_or("-"),
        "direct: host session"
    );
}

#[cfg(all(test, feature = "testkit"))]
mod tests;
