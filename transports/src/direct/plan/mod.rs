//! The decisions of direct delivery as pure functions: which TLS policy a host gets
//! ([`tls`]), the order in which its addresses are dialed, how each remote reply or error
//! reads for one recipient at one host, and how the results of several hosts add up. No
//! I/O here; `host.rs` and `mod.rs` do the talking and call these.

mod tls;

pub use tls::{
    mtasts_step, mtasts_unavailable, tls_policy, DaneHost, HostTls, Ignored, MtaStsHost,
    PolicyDecision, PolicyInputs, SkipReason, TlsPolicy, TlsRequirement, TlsSources, Verification,
};

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::dns::{DestinationError, Host};
use crate::outcome::{RcptOutcome, Severity, TransportError};
use crate::reply::{EnhancedCode, Reply};
use crate::tls::TlsInfo;

/// IPs dialed per host name, in dialing order (the key is the MX host as displayed).
pub type DialedIps = BTreeMap<String, Vec<IpAddr>>;

/// The least time one address gets when the host's dial budget is shared out, unless
/// less than this is left of the budget.
pub const MIN_DIAL_SHARE: Duration = Duration::from_secs(1);

/// The port for a host: `direct.port_overrides[host]` or `direct.port`.
pub fn port_for(host: &Host, port: u16, overrides: &BTreeMap<String, u16>) -> u16 {
    match host {
        Host::Name(name) => overrides.get(name).copied().unwrap_or(port),
        Host::Ip(_) => port,
    }
}

/// Orders a host's addresses for dialing, given the addresses dialed for it on earlier
/// attempts (oldest first).
///
/// The family not used last time comes first, so that consecutive attempts alternate
/// between IPv4 and IPv6 (our address of one family may be on a block list). Within the
/// family used last time, the address used last time comes first when that family was
/// used only once, to help with greylisting. Otherwise the resolver's order is kept.
pub fn order_ips(ips: &[IpAddr], previous: &[IpAddr]) -> Vec<IpAddr> {
    let mut ordered = ips.to_vec();
    let Some(&last) = previous.last() else {
        return ordered;
    };
    let same_family_uses = previous
        .iter()
        .filter(|ip| ip.is_ipv4() == last.is_ipv4())
        .count();
    let prefer_last = same_family_uses == 1;
    // A stable sort keeps the resolver's order within each key.
    ordered.sort_by_key(|ip| {
        let same_family = ip.is_ipv4() == last.is_ipv4();
        let not_preferred = !(prefer_last && *ip == last);
        (same_family, not_preferred)
    });
    ordered
}

/// The host has addresses of both families.
pub fn dual_stack(ips: &[IpAddr]) -> bool {
    ips.iter().any(IpAddr::is_ipv4) && ips.iter().any(IpAddr::is_ipv6)
}

/// The time the next address may take: an equal share of what is left of the budget for
/// the addresses left, but at least [`MIN_DIAL_SHARE`] while the budget lasts. Time an
/// address does not use (a refused connection) goes to the ones after it.
pub fn dial_share(remaining: Duration, addresses_left: usize) -> Duration {
    let left = u32::try_from(addresses_left.max(1)).unwrap_or(u32::MAX);
    (remaining / left).max(MIN_DIAL_SHARE.min(remaining))
}

/// What one host did for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostVerdict {
    /// Accepted (2xx at the end of data).
    Delivered(Reply),
    /// The remote refused the recipient or the transaction for good: stop here.
    Rejected(Reply),
    /// Temporary: try the next host; if none takes it, retry later.
    Deferred(Reply),
    /// This host can never take the message (its SIZE, no 8BITMIME or SMTPUTF8, no
    /// address, a TLS policy it cannot meet, a 5xx greeting): try the next host; the
    /// message fails only if every host says so.
    HostRefused(Reply),
}

impl HostVerdict {
    /// The reply behind the verdict.
    pub fn reply(&self) -> &Reply {
        match self {
            HostVerdict::Delivered(r)
            | HostVerdict::Rejected(r)
            | HostVerdict::Deferred(r)
            | HostVerdict::HostRefused(r) => r,
        }
    }
}

/// Reads a transaction outcome. `relax_policy` is set on the first attempt to a
/// dual-stack host: a 5xx with enhanced code 5.7.x (policy, often a block list entry
/// for our address of that family) is then temporary, so that the next attempt tries
/// the other family (SPEC §2).
pub fn verdict_of(outcome: RcptOutcome, relax_policy: bool) -> HostVerdict {
    match outcome {
        RcptOutcome::Delivered(reply) => HostVerdict::Delivered(reply),
        RcptOutcome::Transient(reply) => HostVerdict::Deferred(reply),
        RcptOutcome::Permanent(reply) if relax_policy && is_policy_rejection(&reply) => {
            HostVerdict::Deferred(reply)
        }
        RcptOutcome::Permanent(reply) => HostVerdict::Rejected(reply),
    }
}

fn is_policy_rejection(reply: &Reply) -> bool {
    reply.is_permanent()
        && reply
            .enhanced
            .is_some_and(|e| e.class == 5 && e.subject == 7)
}

/// Reads a failure that hit every recipient at this host. Temporary errors defer;
/// permanent ones (a message the host cannot take, a 5xx greeting or EHLO) refuse for
/// this host only. The reply keeps the remote's code when there is one and names the
/// remote in its text (the error's own text starts with the host and IP).
pub fn verdict_of_error(err: &TransportError) -> HostVerdict {
    let severity = err.severity();
    let code = match (err.reply(), severity) {
        (Some(remote), _) if remote.is_transient() || remote.is_permanent() => remote.code,
        (_, Severity::Temporary) => 451,
        (_, Severity::Permanent) => 554,
    };
    let reply = Reply::new(code, Some(err.status()), &err.to_string()).at(err.stage());
    match severity {
        Severity::Temporary => HostVerdict::Deferred(reply),
        Severity::Permanent => HostVerdict::HostRefused(reply),
    }
}

/// The reply for a recipient domain or host that DNS rules out (or cannot resolve now).
pub fn destination_reply(err: &DestinationError) -> Reply {
    let text = err.to_string();
    let (code, enhanced) = match err {
        // RFC 7505 §3 and RFC 7504 §3: a null MX fails with 556 and 5.1.10.
        DestinationError::NullMx { .. } => (556, EnhancedCode::new(5, 1, 10)),
        // RFC 3463 §3.2: X.1.2 bad destination system address.
        DestinationError::InvalidDomain { .. }
        | DestinationError::NoSuchDomain { .. }
        | DestinationError::NoAddresses { .. } => (550, EnhancedCode::new(5, 1, 2)),
        // RFC 3463 §3.5: X.4.3 directory (DNS) server failure.
        DestinationError::CnameLoop { .. }
        | DestinationError::CnameChainTooLong { .. }
        | DestinationError::Dns { .. } => match err.severity() {
            Severity::Temporary => (451, EnhancedCode::new(4, 4, 3)),
            Severity::Permanent => (550, EnhancedCode::new(5, 1, 2)),
        },
    };
    Reply::new(code, Some(enhanced), &text)
}

/// The verdict for a host that the TLS policy rules out (see [`SkipReason`]); `detail`
/// goes into the reply after the reason.
pub fn skip_verdict(reason: SkipReason, host: &str, detail: &str) -> HostVerdict {
    let reply = reason.reply(host, detail);
    match reason.severity() {
        Severity::Temporary => HostVerdict::Deferred(reply),
        Severity::Permanent => HostVerdict::HostRefused(reply),
    }
}

/// The verdict for a recipient domain that DNS rules out, or for one host of it.
pub fn destination_verdict(err: &DestinationError) -> HostVerdict {
    let reply = destination_reply(err);
    match err.severity() {
        Severity::Temporary => HostVerdict::Deferred(reply),
        Severity::Permanent => HostVerdict::HostRefused(reply),
    }
}

/// The remote MTA a result came from: "host [ip]" in DSNs (RFC 3464 Remote-MTA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMta {
    /// The MX host as displayed (a name, or an address literal).
    pub host: String,
    /// The address connected to, when a connection was made.
    pub ip: Option<IpAddr>,
    /// TLS of that session.
    pub tls: TlsInfo,
    /// The policies that asked for TLS at this host.
    pub sources: TlsSources,
}

impl RemoteMta {
    /// The TLS mode with the policies behind it, e.g. "verified+dane" (the `tlsmode`
    /// metric label and the attempt's `tls`).
    pub fn tls_mode(&self) -> String {
        self.sources.label(self.tls.mode())
    }
}

impl fmt::Display for RemoteMta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{} [{ip}]", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// What the hosts tried so far did for each recipient.
#[derive(Debug, Clone, Default)]
struct Slot {
    done: Option<(RcptOutcome, Option<RemoteMta>)>,
    deferred: Option<(Reply, Option<RemoteMta>)>,
    refused: Option<(Reply, Option<RemoteMta>)>,
}

/// Adds up the verdicts of every host for every recipient of one attempt.
#[derive(Debug, Clone)]
pub struct Tally {
    slots: Vec<Slot>,
}

impl Tally {
    /// A tally for `n` recipients, none decided.
    pub fn new(n: usize) -> Self {
        Tally {
            slots: vec![Slot::default(); n],
        }
    }

    /// Recipients still looking for a host (no delivery and no final rejection yet).
    pub fn pending(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].done.is_none())
            .collect()
    }

    /// Records what one host did for recipient `index`.
    pub fn record(&mut self, index: usize, verdict: HostVerdict, remote: Option<RemoteMta>) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.done.is_some() {
            return;
        }
        match verdict {
            HostVerdict::Delivered(r) => slot.done = Some((RcptOutcome::Delivered(r), remote)),
            HostVerdict::Rejected(r) => slot.done = Some((RcptOutcome::Permanent(r), remote)),
            HostVerdict::Deferred(r) => slot.deferred = Some((r, remote)),
            HostVerdict::HostRefused(r) => slot.refused = Some((r, remote)),
        }
    }

    /// The outcome of the attempt per recipient: delivered or rejected where a host said
    /// so; else temporary if any host failed temporarily (a later attempt may succeed);
    /// else permanent, since every host refused.
    pub fn finish(self) -> Vec<(RcptOutcome, Option<RemoteMta>)> {
        self.slots
            .into_iter()
            .map(|slot| match (slot.done, slot.deferred, slot.refused) {
                (Some(done), _, _) => done,
                (None, Some((reply, remote)), _) => (RcptOutcome::Transient(reply), remote),
                (None, None, Some((reply, remote))) => (RcptOutcome::Permanent(reply), remote),
                (None, None, None) => (
                    RcptOutcome::Transient(Reply::new(
                        451,
                        Some(EnhancedCode::new(4, 4, 0)),
                        "no mail exchanger was tried",
                    )),
                    None,
                ),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::AddressFamilies;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn reply(code: u16, e: Option<(u8, u16, u16)>) -> Reply {
        Reply::new(code, e.map(|(c, s, d)| EnhancedCode::new(c, s, d)), "x")
    }

    #[test]
    fn direct_order_ips_alternates_families() {
        let v6a = ip("2001:db8::1");
        let v6b = ip("2001:db8::2");
        let v4a = ip("192.0.2.1");
        let v4b = ip("192.0.2.2");
        let dns = [v6a, v6b, v4a, v4b];
        let cases: &[(&[IpAddr], &[IpAddr])] = &[
            // First attempt: the resolver's order.
            (&[], &[v6a, v6b, v4a, v4b]),
            // Last time IPv6: IPv4 first.
            (&[v6a], &[v4a, v4b, v6a, v6b]),
            // Last time IPv4 (b, first use of v4): IPv6 first; v4b before v4a.
            (&[v6a, v4b], &[v6a, v6b, v4b, v4a]),
            // v6 used twice: no preference within v6, other family first.
            (&[v6b, v4a, v6b], &[v4a, v4b, v6a, v6b]),
            // Once in v6 (b): v4 first, then v6b before v6a.
            (&[v4a, v6b], &[v4a, v4b, v6b, v6a]),
        ];
        for (previous, want) in cases {
            assert_eq!(order_ips(&dns, previous), *want, "previous {previous:?}");
        }
        // A single-family host keeps its order whatever happened before.
        assert_eq!(order_ips(&[v4a, v4b], &[v6a]), vec![v4a, v4b]);
        assert!(dual_stack(&dns));
        assert!(!dual_stack(&[v4a, v4b]));
        assert!(!dual_stack(&[]));
    }

    #[test]
    fn direct_dial_share_of_budget() {
        let s = Duration::from_secs;
        assert_eq!(dial_share(s(30), 3), s(10));
        assert_eq!(dial_share(s(30), 0), s(30));
        // Many addresses: at least a second each while the budget lasts.
        assert_eq!(dial_share(s(30), 100), s(1));
        assert_eq!(
            dial_share(Duration::from_millis(300), 5),
            Duration::from_millis(300)
        );
        assert_eq!(dial_share(Duration::ZERO, 2), Duration::ZERO);
    }

    #[test]
    fn direct_ports() {
        let overrides: BTreeMap<String, u16> = [("mx1.test".to_string(), 2525)].into();
        assert_eq!(
            port_for(&Host::Name("mx1.test".into()), 25, &overrides),
            2525
        );
        assert_eq!(port_for(&Host::Name("mx2.test".into()), 25, &overrides), 25);
        assert_eq!(port_for(&Host::Ip(ip("192.0.2.1")), 26, &overrides), 26);
    }

    #[test]
    fn direct_verdicts_of_replies() {
        let policy = reply(550, Some((5, 7, 1)));
        let unknown = reply(550, Some((5, 1, 1)));
        let cases = [
            (RcptOutcome::Delivered(reply(250, None)), false, "delivered"),
            (RcptOutcome::Transient(reply(451, None)), false, "deferred"),
            (RcptOutcome::Permanent(unknown.clone()), false, "rejected"),
            (RcptOutcome::Permanent(unknown), true, "rejected"),
            (RcptOutcome::Permanent(policy.clone()), false, "rejected"),
            // First attempt at a dual-stack host: 5.7.x waits for the other family.
            (RcptOutcome::Permanent(policy), true, "deferred"),
            (RcptOutcome::Permanent(reply(554, None)), true, "rejected"),
        ];
        for (outcome, relax, want) in cases {
            let got = match verdict_of(outcome.clone(), relax) {
                HostVerdict::Delivered(_) => "delivered",
                HostVerdict::Rejected(_) => "rejected",
                HostVerdict::Deferred(_) => "deferred",
                HostVerdict::HostRefused(_) => "refused",
            };
            assert_eq!(got, want, "{outcome:?} relax={relax}");
        }
    }

    #[test]
    fn direct_verdicts_of_errors() {
        let host = || "mx.test [192.0.2.1]".to_string();
        let refused = TransportError::Connect {
            host: host(),
            port: 25,
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        };
        match verdict_of_error(&refused) {
            HostVerdict::Deferred(r) => {
                assert_eq!(r.code, 451);
                assert_eq!(r.enhanced, Some(EnhancedCode::new(4, 4, 1)));
                assert!(r.text().contains("mx.test [192.0.2.1]"), "{r}");
            }
            other => panic!("{other:?}"),
        }
        let too_big = TransportError::MessageTooLarge {
            host: host(),
            size: 10,
            limit: 5,
        };
        match verdict_of_error(&too_big) {
            HostVerdict::HostRefused(r) => {
                assert_eq!(r.code, 554);
                assert_eq!(r.enhanced, Some(EnhancedCode::new(5, 3, 4)));
            }
            other => panic!("{other:?}"),
        }
        let greeting = TransportError::GreetingRejected {
            host: host(),
            reply: reply(554, Some((5, 3, 2))),
        };
        match verdict_of_error(&greeting) {
            HostVerdict::HostRefused(r) => assert_eq!(r.code, 554),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn direct_destination_replies() {
        let d = || "dst.test".to_string();
        let cases = [
            (
                DestinationError::NullMx {
                    domain: d(),
                    expanded: d(),
                },
                "556 5.1.10",
                Severity::Permanent,
            ),
            (
                DestinationError::NoSuchDomain {
                    domain: d(),
                    name: d(),
                },
                "550 5.1.2",
                Severity::Permanent,
            ),
            (
                DestinationError::CnameLoop {
                    domain: d(),
                    name: d(),
                },
                "451 4.4.3",
                Severity::Temporary,
            ),
            (
                DestinationError::NoAddresses {
                    host: d(),
                    families: AddressFamilies::BOTH,
                },
                "550 5.1.2",
                Severity::Permanent,
            ),
        ];
        for (err, prefix, severity) in cases {
            let r = destination_reply(&err);
            assert!(r.to_string().starts_with(prefix), "{r}");
            assert!(r.text().contains("dst.test"), "{r}");
            let verdict = destination_verdict(&err);
            let want = match severity {
                Severity::Temporary => matches!(verdict, HostVerdict::Deferred(_)),
                Severity::Permanent => matches!(verdict, HostVerdict::HostRefused(_)),
            };
            assert!(want, "{err}: {verdict:?}");
        }
    }

    #[test]
    fn direct_tally_adds_up_hosts() {
        let remote = |h: &str| {
            Some(RemoteMta {
                host: h.into(),
                ip: Some(ip("192.0.2.1")),
                tls: TlsInfo::None,
                sources: TlsSources::default(),
            })
        };
        let mut t = Tally::new(4);
        // Host 1: rcpt 0 deferred, 1 rejected, 2 refused by the host, 3 deferred.
        t.record(0, HostVerdict::Deferred(reply(451, None)), remote("mx1"));
        t.record(1, HostVerdict::Rejected(reply(550, None)), remote("mx1"));
        t.record(2, HostVerdict::HostRefused(reply(554, None)), remote("mx1"));
        t.record(3, HostVerdict::Deferred(reply(451, None)), remote("mx1"));
        assert_eq!(t.pending(), vec![0, 2, 3]);
        // Host 2: rcpt 0 delivered, 2 refused again, 3 refused (host 1 deferred it).
        t.record(0, HostVerdict::Delivered(reply(250, None)), remote("mx2"));
        t.record(1, HostVerdict::Delivered(reply(250, None)), remote("mx2"));
        t.record(2, HostVerdict::HostRefused(reply(552, None)), remote("mx2"));
        t.record(3, HostVerdict::HostRefused(reply(552, None)), remote("mx2"));
        assert_eq!(t.pending(), vec![2, 3]);
        let out = t.finish();
        assert!(matches!(&out[0].0, RcptOutcome::Delivered(_)));
        assert_eq!(
            out[0].1.as_ref().map(|r| r.to_string()).as_deref(),
            Some("mx2 [192.0.2.1]")
        );
        // Rejected stays rejected: a later host does not overwrite a final answer.
        assert!(matches!(&out[1].0, RcptOutcome::Permanent(r) if r.code == 550));
        // Every host refused: permanent.
        assert!(matches!(&out[2].0, RcptOutcome::Permanent(r) if r.code == 552));
        // One host was only temporarily unavailable: try again later.
        assert!(matches!(&out[3].0, RcptOutcome::Transient(r) if r.code == 451));
        assert!(matches!(
            &Tally::new(1).finish()[0].0,
            RcptOutcome::Transient(_)
        ));
    }
}
