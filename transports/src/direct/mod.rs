//! Direct delivery: the recipient domain's MX hosts, reached over the Internet. This is
//! what happens when no route matches, so it decides the fate of most mail.
//!
//! # The flow of one attempt ([`DirectTransport::deliver`])
//!
//! 1. **Destinations.** [`gather_destinations`] follows the domain's CNAMEs (bounded,
//!    loop-safe) and returns its MX hosts in preference order, random within a preference;
//!    no MX means the domain itself (RFC 5321 §5.1). A null MX or NXDOMAIN fails every
//!    recipient permanently at once; a SERVFAIL, timeout or CNAME loop temporarily.
//! 2. **Per host**, in order, for the recipients that no host has answered for good:
//!    - its addresses ([`resolve_host`], without the families `disable_ipv4/6` rule out),
//!      ordered so that this attempt starts with the family the last attempt did not use
//!      ([`plan::order_ips`]); the addresses dialed are reported back for the queue to keep;
//!    - the TLS policy ([`plan::tls_policy`]): opportunistic today; a REQUIRETLS message
//!      cannot be delivered until DANE/MTA-STS exist, so the host is refused without dialing;
//!    - a session ([`host`]): each address dialed with a share of the time budget through
//!      the [`Dialer`], EHLO with our host name, STARTTLS without certificate checks when
//!      offered, then transactions (LIMITS RCPTMAX honoured, 452s retried in a new
//!      transaction on the same connection);
//!    - after a failed TLS handshake: a new connection to the same host without TLS
//!      (RFC 7435), reported so the gateway counts `queue_plaintext_fallback_total`.
//! 3. **Verdicts** ([`plan::HostVerdict`]): a delivery or a 5xx for the transaction is
//!    final; a temporary failure (connection, 4xx, TLS) moves on to the next host; a host
//!    that can never take the message (its SIZE, missing 8BITMIME/SMTPUTF8, a 5xx
//!    greeting) also moves on, and the message fails only when every host said so. On the
//!    first attempt at a dual-stack host a 5xx with enhanced code 5.7.x is temporary, so
//!    the other family gets its chance next time.
//! 4. **Record.** What the last session offered (STARTTLS, REQUIRETLS) is written per
//!    recipient domain by a [`TlsStatusStore`], in the background; a failed write never
//!    touches the delivery.
//!
//! Every synthesized reply names the remote host and address, and every recipient's
//! result says which remote MTA gave it ([`RemoteMta`]), for DSNs.

mod dial;
mod host;
pub mod plan;
pub mod tls_record;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

pub use dial::{DialFuture, Dialer, TcpDialer};
pub use host::{ConnectResult, SessionReport};
pub use plan::{DialedIps, HostVerdict, RemoteMta, TlsPolicy};
pub use tls_record::{TlsStatus, TlsStatusStore};

use crate::dns::{gather_destinations, resolve_host, AddressFamilies, Host, Resolver};
use crate::message::OutboundMessage;
use crate::outcome::RcptOutcome;
use crate::session::Timeouts;
use crate::tls::danger;
use host::{HostPlan, SessionEnd};
use plan::{PolicyDecision, PolicyInputs, Tally};

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
    /// The whole chain to this host's addresses was DNSSEC-authentic (recipient domain,
    /// its MX records unless implicit, the host's address records): DANE may apply.
    pub authentic: bool,
    /// The TLS policy chosen, or `None` when the host was not dialed.
    pub policy: Option<&'static str>,
    /// Why the host was not dialed (no address, DNS failure, policy refusal).
    pub skipped: Option<String>,
    /// The TLS policy ruled the host out (a REQUIRETLS message without DANE/MTA-STS).
    pub refused_by_policy: bool,
    /// Its sessions: one, or two after a plaintext fallback.
    pub sessions: Vec<SessionReport>,
    /// The second session is the plaintext retry after a failed TLS handshake.
    pub plaintext_fallback: bool,
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
}

impl DirectResult {
    /// Plaintext retries after failed TLS handshakes.
    pub fn plaintext_fallbacks(&self) -> usize {
        self.hosts.iter().filter(|h| h.plaintext_fallback).count()
    }

    /// Every dial's result, for `queue_connection_total{result}`.
    pub fn connections(&self) -> impl Iterator<Item = ConnectResult> + '_ {
        self.hosts
            .iter()
            .flat_map(|h| h.sessions.iter().map(|s| s.connect))
    }
}

/// Direct MX delivery. Share it behind an `Arc`; `deliver` may run concurrently.
pub struct DirectTransport {
    config: DirectConfig,
    resolver: Arc<dyn Resolver>,
    dialer: Arc<dyn Dialer>,
    unverified_tls: Arc<ClientConfig>,
    tls_status: Option<TlsStatusStore>,
}

impl std::fmt::Debug for DirectTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectTransport")
            .field("config", &self.config)
            .field("tls_status", &self.tls_status)
            .finish()
    }
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
        }
    }

    /// Records what each recipient domain's last session offered in `store`.
    pub fn with_tls_status(mut self, store: TlsStatusStore) -> Self {
        self.tls_status = Some(store);
        self
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
        };
        let destinations = match gather_destinations(self.resolver.as_ref(), &req.domain).await {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(domain = %req.domain, error = %e, "direct: no destinations");
                let mut tally = Tally::new(n);
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
        let mut tally = Tally::new(n);
        for mx in &destinations.hosts {
            let pending = tally.pending();
            if pending.is_empty() {
                break;
            }
            let host_name = mx.host.to_string();
            let mut report = HostReport {
                host: host_name.clone(),
                authentic: false,
                policy: None,
                skipped: None,
                refused_by_policy: false,
                sessions: Vec::new(),
                plaintext_fallback: false,
            };
            let skipped_remote = Some(RemoteMta {
                host: host_name.clone(),
                ip: None,
                tls: crate::tls::TlsInfo::None,
            });
            let addrs =
                match resolve_host(self.resolver.as_ref(), &mx.host, self.config.families).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::info!(domain = %req.domain, host = %host_name, error = %e,
                        "direct: host has no usable address");
                        for &i in &pending {
                            tally.record(i, plan::destination_verdict(&e), skipped_remote.clone());
                        }
                        report.skipped = Some(e.to_string());
                        result.hosts.push(report);
                        continue;
                    }
                };
            // As the reference: DANE is possible only when every step to these
            // addresses was DNSSEC-secure (RFC 7672 §2.2.1, §2.2.2).
            report.authentic = addrs.authentic
                && destinations.authentic_original
                && (destinations.implicit || destinations.authentic_expanded)
                && matches!(mx.host, Host::Name(_));
            let policy = match plan::tls_policy(&PolicyInputs {
                requiretls: req.message.requiretls,
            }) {
                PolicyDecision::Deliver(policy) => policy,
                PolicyDecision::Refuse(reply) => {
                    tracing::info!(domain = %req.domain, host = %host_name, reply = %reply,
                        "direct: TLS policy refuses this host");
                    let text = format!("{host_name}: {}", reply.text());
                    let reply = crate::reply::Reply::new(reply.code, reply.enhanced, &text);
                    for &i in &pending {
                        tally.record(
                            i,
                            HostVerdict::HostRefused(reply.clone()),
                            skipped_remote.clone(),
                        );
                    }
                    report.skipped = Some(text);
                    report.refused_by_policy = true;
                    result.hosts.push(report);
                    continue;
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
            };
            report.policy = Some(host_plan.policy.label());
            let (mut session, mut end) = host::run(self.dialer.as_ref(), &host_plan, &batch).await;
            note_dialed(&mut result.dialed, &host_name, &session);
            let mut tls_error = None;
            if let SessionEnd::TlsFailed(e) = &end {
                tracing::info!(domain = %req.domain, host = %host_name, ip = ?session.ip,
                    error = %e, "direct: TLS failed, reconnecting without TLS");
                tls_error = Some(e.to_string());
                report.sessions.push(session);
                report.plaintext_fallback = true;
                host_plan.policy = TlsPolicy::Plaintext;
                (session, end) = host::run(self.dialer.as_ref(), &host_plan, &batch).await;
                note_dialed(&mut result.dialed, &host_name, &session);
            }
            let remote = Some(RemoteMta {
                host: host_name.clone(),
                ip: session.ip,
                tls: session.tls.clone(),
            });
            let verdicts = match end {
                SessionEnd::Verdicts(v) => v,
                // Only policies that allow a fallback end this way, and the fallback
                // runs in plaintext; should it happen anyway, the host failed.
                SessionEnd::TlsFailed(e) => vec![plan::verdict_of_error(&e); pending.len()],
            };
            self.record_tls_status(&req.domain, &host_name, &session, tls_error);
            log_session(&req.domain, &host_name, &report, &session);
            for (&i, verdict) in pending.iter().zip(verdicts) {
                tally.record(i, verdict, remote.clone());
            }
            report.sessions.push(session);
            result.hosts.push(report);
        }
        result.rcpts = finish(tally);
        result
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

fn log_session(domain: &str, host: &str, report: &HostReport, session: &SessionReport) {
    tracing::info!(
        domain,
        host,
        ip = ?session.ip.map(|ip: IpAddr| ip.to_string()),
        authentic = report.authentic,
        policy = session.policy,
        connect = session.connect.label(),
        tls = session.tls.mode(),
        starttls_offered = session.starttls,
        requiretls_offered = session.requiretls,
        plaintext_fallback = report.plaintext_fallback,
        error = session.error.as_deref().unwrap_or("-"),
        "direct: host session"
    );
}

#[cfg(all(test, feature = "testkit"))]
mod tests;
