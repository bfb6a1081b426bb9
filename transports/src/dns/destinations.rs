//! Where mail for a recipient domain goes, as pure logic over a [`Resolver`] (no sockets).
//!
//! [`gather_destinations`] follows the recipient domain's CNAMEs (at most
//! [`MAX_CNAME_HOPS`], loops detected), looks up its MX records and returns the hosts in
//! preference order, random within equal preference, with the DNSSEC authenticity of the
//! original and of the expanded next hop (as mox's `GatherDestinations` does; DANE needs
//! both). A null MX, or a domain that does not exist, fails permanently; a domain without
//! MX records is its own only host (the implicit MX); server failures and timeouts fail
//! temporarily. An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) needs no lookup.
//!
//! [`resolve_host`] turns one host into addresses: CNAMEs followed the same way, then A
//! and/or AAAA; the result is authentic only if every step was.
//!
//! [`DestinationError::severity`] is the one place that says which outcomes are permanent.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::seq::SliceRandom;

use super::{normalize_name, DnsError, ErrorClass, Resolver};
use crate::outcome::Severity;

/// How many CNAMEs are followed before giving up (temporarily).
pub const MAX_CNAME_HOPS: usize = 8;

/// A host to deliver to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A host name, lowercase without trailing dot.
    Name(String),
    /// An address from an address literal: no DNS involved.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[IPv6:{ip}]"),
        }
    }
}

/// One MX host with its preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The host.
    pub host: Host,
    /// Its MX preference (0 for an implicit MX or an address literal).
    pub preference: u16,
}

/// The next hops for one recipient domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    /// The recipient domain as given (normalized).
    pub original_domain: String,
    /// The domain after following CNAMEs (the original when there were none).
    pub expanded_domain: String,
    /// The lookups about the original domain (its CNAME, or its MX) were DNSSEC-secure.
    pub authentic_original: bool,
    /// Every lookup on the way to the MX records was DNSSEC-secure.
    pub authentic_expanded: bool,
    /// Hosts in delivery order: preference ascending, random within equal preference.
    pub hosts: Vec<MxHost>,
    /// No MX records: the domain itself is the only host (RFC 5321 §5.1), or an address literal.
    pub implicit: bool,
}

/// Which address families to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFamilies {
    /// A records.
    pub v4: bool,
    /// AAAA records.
    pub v6: bool,
}

impl AddressFamilies {
    /// Both families.
    pub const BOTH: AddressFamilies = AddressFamilies { v4: true, v6: true };
}

impl fmt::Display for AddressFamilies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.v4, self.v6) {
            (true, true) => "IPv4 or IPv6",
            (true, false) => "IPv4",
            (false, true) => "IPv6",
            (false, false) => "any (both families disabled)",
        })
    }
}

/// The addresses of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddrs {
    /// AAAA answers, then A answers, each in the order received.
    pub ips: Vec<IpAddr>,
    /// Every step (CNAMEs and the address answers used) was DNSSEC-secure.
    pub authentic: bool,
    /// The host name after following CNAMEs.
    pub expanded_name: String,
}

/// Why no destination (or no address) could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// The domain is not a usable domain name or address literal.
    #[error("recipient domain {domain:?} is invalid: {reason}")]
    InvalidDomain {
        /// As given.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The domain publishes a null MX: it accepts no mail (RFC 7505 §3).
    #[error("{domain} does not accept mail (null MX at {expanded})")]
    NullMx {
        /// The recipient domain.
        domain: String,
        /// Where the null MX was found (after CNAMEs).
        expanded: String,
    },
    /// The domain (or the end of its CNAME chain) does not exist.
    #[error("{domain} does not exist (NXDOMAIN for {name})")]
    NoSuchDomain {
        /// The recipient domain or host.
        domain: String,
        /// The name that got NXDOMAIN.
        name: String,
    },
    /// The CNAMEs come back to a name already seen.
    #[error("CNAME loop at {name} while resolving {domain}")]
    CnameLoop {
        /// The domain or host being resolved.
        domain: String,
        /// The name seen twice.
        name: String,
    },
    /// More than [`MAX_CNAME_HOPS`] CNAMEs.
    #[error("more than {MAX_CNAME_HOPS} CNAMEs while resolving {domain} (last {name})")]
    CnameChainTooLong {
        /// The domain or host being resolved.
        domain: String,
        /// The last name reached.
        name: String,
    },
    /// A host has no addresses of the wanted families.
    #[error("host {host} has no {families} address")]
    NoAddresses {
        /// The host (after CNAMEs).
        host: String,
        /// The families asked for.
        families: AddressFamilies,
    },
    /// A lookup failed without a definite answer.
    #[error("resolving {domain}: {source}")]
    Dns {
        /// The domain or host being resolved.
        domain: String,
        /// The failed lookup.
        #[source]
        source: DnsError,
    },
}

impl DestinationError {
    /// Whether to retry later; the one place deciding it (exhaustive, no catch-all).
    pub fn severity(&self) -> Severity {
        match self {
            DestinationError::InvalidDomain { .. } => Severity::Permanent,
            // RFC 7505 §4.2: a null MX means mail to the domain fails at once.
            DestinationError::NullMx { .. } => Severity::Permanent,
            // The domain does not exist: retrying cannot help (the reference retried 16 h).
            DestinationError::NoSuchDomain { .. } => Severity::Permanent,
            // Loops and long chains are usually a zone being edited: try again later.
            DestinationError::CnameLoop { .. } => Severity::Temporary,
            DestinationError::CnameChainTooLong { .. } => Severity::Temporary,
            // RFC 5321 §5.1: an MX host without addresses is unusable, "reported as an error".
            DestinationError::NoAddresses { .. } => Severity::Permanent,
            DestinationError::Dns { source, .. } => match source.class() {
                ErrorClass::NotFound => Severity::Permanent,
                ErrorClass::Temporary => Severity::Temporary,
            },
        }
    }

    /// Shorthand for `severity() == Temporary`.
    pub fn is_temporary(&self) -> bool {
        self.severity() == Severity::Temporary
    }
}

/// Parses an address literal (RFC 5321 §4.1.3): `Ok(None)` when `domain` is not one.
pub fn parse_address_literal(domain: &str) -> Result<Option<IpAddr>, DestinationError> {
    let Some(inner) = domain.strip_prefix('[') else {
        return Ok(None);
    };
    let invalid = |reason: &str| DestinationError::InvalidDomain {
        domain: domain.to_string(),
        reason: reason.to_string(),
    };
    let inner = inner
        .strip_suffix(']')
        .ok_or_else(|| invalid("address literal without closing bracket"))?;
    let ip = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..]
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| invalid("bad IPv6 address literal"))?,
        _ => inner
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| invalid("bad IPv4 address literal (only IPv4 and IPv6: are supported)"))?,
    };
    Ok(Some(ip))
}

/// The result of following CNAMEs from a name.
struct Expanded {
    name: String,
    /// The first lookup (about the name as given) was secure.
    authentic_first: bool,
    /// Every lookup was secure.
    authentic_all: bool,
    /// How many CNAMEs were followed.
    steps: usize,
}

/// Follows CNAMEs one step at a time, bounded and loop-safe.
async fn expand_cnames(resolver: &dyn Resolver, start: &str) -> Result<Expanded, DestinationError> {
    let mut name = start.to_string();
    let mut seen = HashSet::new();
    let mut authentic_first = true;
    let mut authentic_all = true;
    for step in 0..=MAX_CNAME_HOPS {
        if !seen.insert(name.clone()) {
            return Err(DestinationError::CnameLoop {
                domain: start.to_string(),
                name,
            });
        }
        if step == MAX_CNAME_HOPS {
            return Err(DestinationError::CnameChainTooLong {
                domain: start.to_string(),
                name,
            });
        }
        let (authentic, target) = match resolver.lookup_cname(&name).await {
            Ok(answer) => (
                answer.authentic,
                answer
                    .records
                    .into_iter()
                    .next()
                    .map(|t| normalize_name(&t)),
            ),
            Err(e) => match e.class() {
                ErrorClass::NotFound => (e.authentic(), None),
                ErrorClass::Temporary => {
                    return Err(DestinationError::Dns {
                        domain: start.to_string(),
                        source: e,
                    })
                }
            },
        };
        if step == 0 {
            authentic_first = authentic;
        }
        authentic_all &= authentic;
        match target {
            Some(target) if target != name => name = target,
            _ => {
                return Ok(Expanded {
                    name,
                    authentic_first,
                    authentic_all,
                    steps: step,
                })
            }
        }
    }
    // The loop returns at step == MAX_CNAME_HOPS at the latest.
    Err(DestinationError::CnameChainTooLong {
        domain: start.to_string(),
        name,
    })
}

/// The hosts to try for a recipient domain (or address literal), in order.
pub async fn gather_destinations(
    resolver: &dyn Resolver,
    domain: &str,
) -> Result<Destinations, DestinationError> {
    if let Some(ip) = parse_address_literal(domain)? {
        return Ok(Destinations {
            original_domain: domain.to_string(),
            expanded_domain: domain.to_string(),
            authentic_original: false,
            authentic_expanded: false,
            hosts: vec![MxHost {
                host: Host::Ip(ip),
                preference: 0,
            }],
            implicit: true,
        });
    }
    let original = normalize_name(domain);
    if original.is_empty() {
        return Err(DestinationError::InvalidDomain {
            domain: domain.to_string(),
            reason: "empty domain".into(),
        });
    }

    let expanded = expand_cnames(resolver, &original).await?;
    let mut authentic_original = expanded.authentic_first;
    let mut authentic_expanded = expanded.authentic_all;
    let name = expanded.name;

    let result = resolver.lookup_mx(&name).await;
    let mx_authentic = match &result {
        Ok(answer) => answer.authentic,
        Err(e) => e.authentic(),
    };
    if expanded.steps == 0 {
        authentic_original &= mx_authentic;
    }
    authentic_expanded &= mx_authentic;
    let destinations = |hosts, implicit| Destinations {
        original_domain: original.clone(),
        expanded_domain: name.clone(),
        authentic_original,
        authentic_expanded,
        hosts,
        implicit,
    };

    let records = match result {
        Ok(answer) => answer.records,
        Err(DnsError::NoData { .. }) => {
            // RFC 5321 §5.1: no MX records, the domain itself is the implicit MX.
            let host = MxHost {
                host: Host::Name(name.clone()),
                preference: 0,
            };
            return Ok(destinations(vec![host], true));
        }
        Err(DnsError::NxDomain { .. }) => {
            return Err(DestinationError::NoSuchDomain {
                domain: original.clone(),
                name: name.clone(),
            })
        }
        Err(
            e @ (DnsError::ServFail { .. }
            | DnsError::Timeout { .. }
            | DnsError::Bogus { .. }
            | DnsError::Other { .. }),
        ) => {
            return Err(DestinationError::Dns {
                domain: original.clone(),
                source: e,
            })
        }
    };

    // RFC 7505 §3: a single MX whose exchange is the root is a null MX.
    if records.len() == 1 && records[0].exchange.is_empty() {
        return Err(DestinationError::NullMx {
            domain: original.clone(),
            expanded: name.clone(),
        });
    }
    let mut hosts: Vec<MxHost> = records
        .into_iter()
        // A root exchange among other MX records is not a usable host (RFC 7505 §3).
        .filter(|mx| !mx.exchange.is_empty())
        .map(|mx| MxHost {
            host: Host::Name(normalize_name(&mx.exchange)),
            preference: mx.preference,
        })
        .collect();
    order_by_preference(&mut hosts, &mut rand::rng());
    Ok(destinations(hosts, false))
}

/// RFC 5321 §5.1: lowest preference first; hosts of equal preference in random order.
pub fn order_by_preference<R: rand::Rng + ?Sized>(hosts: &mut [MxHost], rng: &mut R) {
    hosts.shuffle(rng);
    // A stable sort keeps the shuffled order within each preference.
    hosts.sort_by_key(|h| h.preference);
}

/// The addresses of a host: CNAMEs followed (bounded), then A and/or AAAA.
///
/// An address literal host resolves to itself without lookups (not authentic). When one
/// family has addresses and the other fails, the addresses found are returned and the
/// failure is ignored; when none are found, a temporary failure wins over "no such host".
pub async fn resolve_host(
    resolver: &dyn Resolver,
    host: &Host,
    families: AddressFamilies,
) -> Result<HostAddrs, DestinationError> {
    let name = match host {
        Host::Ip(ip) => {
            return Ok(HostAddrs {
                ips: vec![*ip],
                authentic: false,
                expanded_name: host.to_string(),
            })
        }
        Host::Name(name) => normalize_name(name),
    };
    let expanded = expand_cnames(resolver, &name).await?;
    let mut authentic = expanded.authentic_all;
    let target = expanded.name;

    let v6 = if families.v6 {
        Some(resolver.lookup_aaaa(&target).await)
    } else {
        None
    };
    let v4 = if families.v4 {
        Some(resolver.lookup_a(&target).await)
    } else {
        None
    };

    let mut ips = Vec::new();
    let mut temporary: Option<DnsError> = None;
    let mut nxdomain = false;
    if let Some(result) = v6 {
        match result {
            Ok(answer) => {
                authentic &= answer.authentic;
                ips.extend(answer.records.into_iter().map(IpAddr::V6));
            }
            Err(e) => note_failure(e, &mut temporary, &mut nxdomain),
        }
    }
    if let Some(result) = v4 {
        match result {
            Ok(answer) => {
                authentic &= answer.authentic;
                ips.extend(answer.records.into_iter().map(IpAddr::V4));
            }
            Err(e) => note_failure(e, &mut temporary, &mut nxdomain),
        }
    }
    if !ips.is_empty() {
        return Ok(HostAddrs {
            ips,
            authentic,
            expanded_name: target,
        });
    }
    if let Some(source) = temporary {
        return Err(DestinationError::Dns {
            domain: name,
            source,
        });
    }
    if nxdomain {
        return Err(DestinationError::NoSuchDomain {
            domain: name,
            name: target,
        });
    }
    Err(DestinationError::NoAddresses {
        host: target,
        families,
    })
}

fn note_failure(e: DnsError, temporary: &mut Option<DnsError>, nxdomain: &mut bool) {
    match e.class() {
        ErrorClass::Temporary => {
            temporary.get_or_insert(e);
        }
        ErrorClass::NotFound => *nxdomain |= matches!(e, DnsError::NxDomain { .. }),
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn dns_address_literals() {
        assert_eq!(parse_address_literal("example.org").unwrap(), None);
        assert_eq!(
            parse_address_literal("[192.0.2.1]").unwrap(),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_address_literal("[ipv6:2001:db8::1]").unwrap(),
            Some("2001:db8::1".parse().unwrap())
        );
        for bad in [
            "[192.0.2.1",
            "[2001:db8::1]",
            "[IPv6:192.0.2.1]",
            "[x-tag:foo]",
        ] {
            let err = parse_address_literal(bad).unwrap_err();
            assert_eq!(err.severity(), Severity::Permanent, "{bad}");
        }
    }

    #[test]
    fn dns_host_display() {
        assert_eq!(
            Host::Ip("192.0.2.1".parse().unwrap()).to_string(),
            "[192.0.2.1]"
        );
        assert_eq!(
            Host::Ip("2001:db8::1".parse().unwrap()).to_string(),
            "[IPv6:2001:db8::1]"
        );
    }

    #[test]
    fn dns_preference_order_is_stable_across_preferences() {
        let mx = |name: &str, preference| MxHost {
            host: Host::Name(name.into()),
            preference,
        };
        let mut rng = rand::rng();
        for _ in 0..20 {
            let mut hosts = vec![mx("c", 20), mx("a", 10), mx("b", 10), mx("d", 30)];
            order_by_preference(&mut hosts, &mut rng);
            let prefs: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, [10, 10, 20, 30]);
        }
    }
}
