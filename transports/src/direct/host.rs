//! One session with one MX host: dial its addresses in order (each with a share of the
//! time budget), greet, EHLO, STARTTLS as the [`TlsPolicy`] says, then transactions
//! until every recipient has an answer. The decisions come from `plan.rs`; this file
//! only talks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::time::Instant;

use super::dial::Dialer;
use super::plan::{dial_share, verdict_of, verdict_of_error, HostVerdict, TlsPolicy};
use crate::dns::Host;
use crate::message::OutboundMessage;
use crate::outcome::{Stage, TransportError};
use crate::session::{server_name, Session, Timeouts};
use crate::stream::Stream;
use crate::tls::TlsInfo;

/// Everything one session needs: the host, where to dial, and how.
pub(super) struct HostPlan<'a> {
    /// The MX host.
    pub host: &'a Host,
    /// Addresses in dialing order.
    pub ips: &'a [IpAddr],
    /// Remote port.
    pub port: u16,
    /// TLS policy of this session.
    pub policy: TlsPolicy,
    /// Read 5xx 5.7.x as temporary (first attempt, dual-stack host).
    pub relax_policy: bool,
    /// Our EHLO name.
    pub ehlo_name: &'a str,
    /// Stage timeouts.
    pub timeouts: Timeouts,
    /// Time for dialing all addresses.
    pub dial_budget: Duration,
    /// The accept-any-certificate config for opportunistic and unverified TLS.
    pub unverified_tls: &'a Arc<ClientConfig>,
    /// The TLS server name (SNI) when it is not the host name: the TLSA base domain
    /// under DANE (RFC 7672 §8.1).
    pub sni: Option<&'a str>,
}

/// How dialing went, for the `queue_connection_total{result}` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResult {
    /// Connected to one of the addresses.
    Ok,
    /// The last address failed by timing out.
    Timeout,
    /// The last address failed otherwise (refused, unreachable).
    Error,
}

impl ConnectResult {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ConnectResult::Ok => "ok",
            ConnectResult::Timeout => "timeout",
            ConnectResult::Error => "error",
        }
    }
}

/// What one session showed, for reports, logs and the TLS status record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// How dialing went.
    pub connect: ConnectResult,
    /// The address connected to.
    pub ip: Option<IpAddr>,
    /// The policy this session ran under.
    pub policy: &'static str,
    /// TLS of the session.
    pub tls: TlsInfo,
    /// EHLO succeeded (so `starttls`/`requiretls` mean something).
    pub ehlo_done: bool,
    /// STARTTLS was announced in the first EHLO reply.
    pub starttls: bool,
    /// REQUIRETLS was announced in the last EHLO reply.
    pub requiretls: bool,
    /// The message asked REQUIRETLS and the server did not announce it after TLS.
    pub requiretls_refused: bool,
    /// Under `TLS-Required: No`: why the certificate did not verify (TLS went on).
    pub verify_error: Option<String>,
    /// The error that ended the session early, if any.
    pub error: Option<String>,
}

/// How a session ended.
pub(super) enum SessionEnd {
    /// A verdict per recipient of the batch, in order.
    Verdicts(Vec<HostVerdict>),
    /// The TLS handshake failed under a policy that may fall back to plaintext.
    TlsFailed(TransportError),
}

/// The session's TLS failed in a way that a plaintext retry may get around: the
/// handshake failed or timed out, the server broke the protocol around STARTTLS (an
/// odd reply, or bytes ahead of the handshake), or (under a policy that requires TLS
/// on this connection) STARTTLS was not offered or was refused. Falling back costs no
/// security that opportunistic TLS had: an attacker able to do this could also strip
/// STARTTLS. Whether a fallback is allowed is the policy's call.
fn is_tls_failure(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Tls { .. }
            | TransportError::StartTlsUnavailable { .. }
            | TransportError::StartTlsRejected { .. }
            | TransportError::Timeout {
                stage: Stage::TlsHandshake,
                ..
            }
            | TransportError::Protocol {
                command: Stage::StartTls,
                ..
            }
    )
}

/// The "host [ip]" label a session uses in its errors and logs, so that every error
/// reply names the remote MTA.
fn label(host: &Host, ip: Option<IpAddr>) -> String {
    match ip {
        Some(ip) => format!("{host} [{ip}]"),
        None => host.to_string(),
    }
}

/// Dials the addresses in order; the first that connects wins.
async fn dial(
    dialer: &dyn Dialer,
    plan: &HostPlan<'_>,
) -> (
    ConnectResult,
    Result<(Box<dyn crate::stream::Io>, IpAddr), TransportError>,
) {
    let deadline = Instant::now() + plan.dial_budget;
    let mut last: Option<(ConnectResult, std::io::Error)> = None;
    for (k, &ip) in plan.ips.iter().enumerate() {
        let share = dial_share(
            deadline.saturating_duration_since(Instant::now()),
            plan.ips.len() - k,
        );
        let addr = SocketAddr::new(ip, plan.port);
        match tokio::time::timeout(share, dialer.dial(addr)).await {
            Ok(Ok(io)) => {
                tracing::debug!(host = %plan.host, %addr, "connected");
                return (ConnectResult::Ok, Ok((io, ip)));
            }
            Ok(Err(e)) => {
                tracing::debug!(host = %plan.host, %addr, error = %e, "connect failed");
                last = Some((
                    ConnectResult::Error,
                    std::io::Error::new(e.kind(), format!("{addr}: {e}")),
                ));
            }
            Err(_) => {
                tracing::debug!(host = %plan.host, %addr, ?share, "connect timed out");
                last = Some((
                    ConnectResult::Timeout,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{addr}: no connection within {share:?}"),
                    ),
                ));
            }
        }
    }
    let (result, source) = last.unwrap_or_else(|| {
        (
            ConnectResult::Error,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address to dial"),
        )
    });
    let err = TransportError::Connect {
        host: plan.host.to_string(),
        port: plan.port,
        source,
    };
    (result, Err(err))
}

/// Runs one session for `msg` (the recipients still pending) at the planned host.
pub(super) async fn run(
    dialer: &dyn Dialer,
    plan: &HostPlan<'_>,
    msg: &OutboundMessage,
) -> (SessionReport, SessionEnd) {
    let mut report = SessionReport {
        connect: ConnectResult::Error,
        ip: None,
        policy: plan.policy.label(),
        tls: TlsInfo::None,
        ehlo_done: false,
        starttls: false,
        requiretls: false,
        requiretls_refused: false,
        verify_error: None,
        error: None,
    };
    let all =
        |err: &TransportError| SessionEnd::Verdicts(vec![verdict_of_error(err); msg.rcpts.len()]);
    let (connect, dialed) = dial(dialer, plan).await;
    report.connect = connect;
    let (io, ip) = match dialed {
        Ok(ok) => ok,
        Err(e) => {
            report.error = Some(e.to_string());
            return (report, all(&e));
        }
    };
    report.ip = Some(ip);
    let peer = SocketAddr::new(ip, plan.port);
    let mut session = match Session::greet(
        Stream::Plain(io),
        &label(plan.host, Some(ip)),
        Some(peer),
        plan.timeouts,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return (report, all(&e));
        }
    };
    match prepare(&mut session, plan, &mut report).await {
        Ok(()) => {}
        Err(e) => {
            report.error = Some(e.to_string());
            let end = if is_tls_failure(&e) && plan.policy.allows_plaintext_fallback() {
                SessionEnd::TlsFailed(e)
            } else {
                all(&e)
            };
            tokio::spawn(session.quit());
            return (report, end);
        }
    }
    let verdicts = transactions(&mut session, plan, msg, &mut report).await;
    tokio::spawn(session.quit());
    (report, SessionEnd::Verdicts(verdicts))
}

/// EHLO and TLS as the policy says; on success the session is ready for MAIL.
async fn prepare(
    session: &mut Session,
    plan: &HostPlan<'_>,
    report: &mut SessionReport,
) -> Result<(), TransportError> {
    let caps = session.ehlo(plan.ehlo_name).await?;
    report.ehlo_done = true;
    report.starttls = caps.starttls;
    report.requiretls = caps.requiretls;
    let config = match &plan.policy {
        TlsPolicy::Plaintext => return Ok(()),
        TlsPolicy::Opportunistic if !caps.starttls => {
            tracing::debug!(host = %session.host(), "STARTTLS not offered, plaintext");
            return Ok(());
        }
        TlsPolicy::Opportunistic | TlsPolicy::RequiredUnverified => plan.unverified_tls,
        TlsPolicy::RequiredVerified(config) | TlsPolicy::Relaxed { config, .. } => config,
    };
    if !caps.starttls {
        return Err(TransportError::StartTlsUnavailable {
            host: session.host().to_string(),
        });
    }
    let name = match plan.sni {
        Some(sni) => server_name(sni)?,
        None => tls_name(plan.host)?,
    };
    match session.starttls(name, Arc::clone(config)).await {
        Ok(caps) => {
            // RFC 3207 §4.2: only the post-TLS EHLO counts from here on.
            report.requiretls = caps.requiretls;
            let version = session.tls_version().unwrap_or_default();
            report.tls = match &plan.policy {
                TlsPolicy::RequiredVerified(_) => TlsInfo::Verified { version },
                TlsPolicy::Relaxed {
                    verifier: Some(verifier),
                    ..
                } => match verifier.failure() {
                    None => TlsInfo::Verified { version },
                    Some(failure) => {
                        // RFC 8689 §5: TLS-Required: No, so the failure is only noted.
                        tracing::info!(host = %session.host(), error = %failure,
                            "certificate not verified; going on (TLS-Required: No)");
                        report.verify_error = Some(failure);
                        TlsInfo::Unverified { version }
                    }
                },
                TlsPolicy::Opportunistic
                | TlsPolicy::Plaintext
                | TlsPolicy::RequiredUnverified
                | TlsPolicy::Relaxed { verifier: None, .. } => TlsInfo::Unverified { version },
            };
            Ok(())
        }
        // RFC 3207 §4: after a refused STARTTLS the client may go on in plaintext;
        // opportunistic TLS does.
        Err(e @ TransportError::StartTlsRejected { .. }) if !plan.policy.requires_tls() => {
            tracing::info!(host = %session.host(), error = %e, "STARTTLS refused, plaintext");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The name the certificate is checked against (and sent as SNI).
fn tls_name(host: &Host) -> Result<ServerName<'static>, TransportError> {
    match host {
        Host::Name(name) => server_name(name),
        Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
    }
}

/// Runs transactions until every recipient has an answer (the session sends the
/// recipients refused with 452 again in another transaction).
async fn transactions(
    session: &mut Session,
    plan: &HostPlan<'_>,
    msg: &OutboundMessage,
    report: &mut SessionReport,
) -> Vec<HostVerdict> {
    let (outcomes, error) = session.send_message_all(msg).await;
    if let Some(e) = &error {
        if matches!(e, TransportError::RequireTlsUnsupported { .. }) {
            // RFC 8689 §4.2.1: the server did not announce REQUIRETLS.
            report.requiretls_refused = true;
        }
        report.error = Some(e.to_string());
    }
    let verdicts: Vec<Option<HostVerdict>> = outcomes
        .into_iter()
        .map(|o| match (o, &error) {
            (Some(outcome), _) => Some(verdict_of(outcome, plan.relax_policy)),
            (None, Some(e)) => Some(verdict_of_error(e)),
            (None, None) => None,
        })
        .collect();
    verdicts
        .into_iter()
        .map(|v| {
            v.unwrap_or_else(|| {
                verdict_of_error(&TransportError::Protocol {
                    host: session.host().to_string(),
                    command: Stage::Rcpt,
                    detail: "no outcome for a recipient".into(),
                })
            })
        })
        .collect()
}
