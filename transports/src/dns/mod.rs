//! The DNS layer: a small resolver trait whose every answer says whether it is
//! DNSSEC-authentic, the errors that keep NXDOMAIN, NODATA, SERVFAIL and timeouts apart,
//! and the delivery logic built on it.
//!
//! # The pieces
//!
//! - [`Resolver`] — one required method, [`Resolver::lookup`], answering a single query
//!   with [`Record`]s; typed helpers (`lookup_mx`, `lookup_a`, …) are provided on top. It is
//!   object-safe, so delivery code holds an `Arc<dyn Resolver>` and tests inject their own.
//! - [`Answer`] — the records plus `authentic`: true only when the answer was DNSSEC-secure
//!   (the AD bit of a trusted validating resolver, or our own validation).
//! - [`DnsError`] — what went wrong, with the name and type queried; [`DnsError::class`] is
//!   the one place that says "the name or records do not exist" versus "try again later".
//! - [`hickory`] — the real resolver on hickory (plain, trust-AD, or validating mode).
//! - [`destinations`] — pure logic over `&dyn Resolver`: recipient domain → MX hosts
//!   (CNAMEs, null MX, implicit MX, IP literals) and host → IP addresses.
//!
//! Names are ASCII (A-labels; IDNA conversion is the caller's job). They are accepted with
//! or without the trailing dot and returned lowercase without it.

pub mod destinations;
pub mod hickory;

mod cache;
#[cfg(all(test, feature = "testkit"))]
mod tests;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;

pub use destinations::{
    gather_destinations, resolve_host, AddressFamilies, DestinationError, Destinations, Host,
    HostAddrs, MxHost, MAX_CNAME_HOPS,
};
pub use hickory::{DnsSetupError, DnssecMode, HickoryConfig, HickoryResolver};

/// The record types relaygate asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// Mail exchangers (RFC 5321 §5.1).
    Mx,
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
    /// One alias step (the resolver does not chase it).
    Cname,
    /// Text records (MTA-STS, SPF).
    Txt,
    /// DANE certificate associations (RFC 6698).
    Tlsa,
    /// Reverse DNS.
    Ptr,
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryType::Mx => "MX",
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
            QueryType::Cname => "CNAME",
            QueryType::Txt => "TXT",
            QueryType::Tlsa => "TLSA",
            QueryType::Ptr => "PTR",
        })
    }
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mx {
    /// Lower is preferred.
    pub preference: u16,
    /// The exchange host, lowercase without trailing dot; `""` is the root (null MX, RFC 7505).
    pub exchange: String,
}

/// One TLSA record with its raw fields (RFC 6698 §2.1); DANE decides what is usable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tlsa {
    /// Certificate usage (2 = DANE-TA, 3 = DANE-EE, …).
    pub usage: u8,
    /// 0 = full certificate, 1 = SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 = exact, 1 = SHA-256, 2 = SHA-512.
    pub matching_type: u8,
    /// The association data.
    pub data: Vec<u8>,
}

/// A record from an answer, already decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// MX.
    Mx(Mx),
    /// A.
    A(Ipv4Addr),
    /// AAAA.
    Aaaa(Ipv6Addr),
    /// CNAME target, lowercase without trailing dot.
    Cname(String),
    /// TXT, its character-strings concatenated (RFC 7208 §3.3, RFC 8461 §3.1).
    Txt(String),
    /// TLSA.
    Tlsa(Tlsa),
    /// PTR target, lowercase without trailing dot.
    Ptr(String),
}

impl Record {
    /// The type of this record.
    pub fn query_type(&self) -> QueryType {
        match self {
            Record::Mx(_) => QueryType::Mx,
            Record::A(_) => QueryType::A,
            Record::Aaaa(_) => QueryType::Aaaa,
            Record::Cname(_) => QueryType::Cname,
            Record::Txt(_) => QueryType::Txt,
            Record::Tlsa(_) => QueryType::Tlsa,
            Record::Ptr(_) => QueryType::Ptr,
        }
    }
}

/// A successful answer: at least one record, and whether it was DNSSEC-secure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// True only for DNSSEC-secure answers.
    pub authentic: bool,
    /// The records of the queried type (never empty: no records is [`DnsError::NoData`]).
    pub records: Vec<T>,
}

/// How a [`DnsError`] reads for whoever asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The name (NXDOMAIN) or the records (NODATA) do not exist: a definite answer.
    NotFound,
    /// No definite answer (server failure, timeout, bogus DNSSEC, network trouble): retry later.
    Temporary,
}

/// A failed lookup, with the name and type that were asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist.
    #[error("DNS {qtype} lookup of {name}: no such domain (NXDOMAIN{})", secure(*authentic))]
    NxDomain {
        /// Name queried.
        name: String,
        /// Type queried.
        qtype: QueryType,
        /// The denial was DNSSEC-secure.
        authentic: bool,
    },
    /// The name exists but has no records of this type.
    #[error("DNS {qtype} lookup of {name}: no {qtype} records (NODATA{})", secure(*authentic))]
    NoData {
        /// Name queried.
        name: String,
        /// Type queried.
        qtype: QueryType,
        /// The denial was DNSSEC-secure.
        authentic: bool,
    },
    /// The server answered SERVFAIL.
    #[error("DNS {qtype} lookup of {name}: server failure (SERVFAIL)")]
    ServFail {
        /// Name queried.
        name: String,
        /// Type queried.
        qtype: QueryType,
    },
    /// No answer in time.
    #[error("DNS {qtype} lookup of {name}: timed out")]
    Timeout {
        /// Name queried.
        name: String,
        /// Type queried.
        qtype: QueryType,
    },
    /// In-process DNSSEC validation failed (RFC 4033 §5: bogus data).
    #[error("DNS {qtype} lookup of {name}: DNSSEC validation failed (bogus): {reason}")]
    Bogus {
        /// Name queried.
        name: String,
        /// Type queried.
        qtype: QueryType,
        /// What the validator said.
        reason: String,
    },
    /// Anything else (REFUSED, network errors, malformed names or responses).
    #[error("DNS {qtype} lookup of {name}: {message}")]
    Other {
        /// Name queried.
        name: String,
        /// Type queried.
        qtype: QueryType,
        /// What happened.
        message: String,
    },
}

fn secure(authentic: bool) -> &'static str {
    if authentic {
        ", DNSSEC-secure"
    } else {
        ""
    }
}

impl DnsError {
    /// The one classification of DNS failures (exhaustive: a new variant forces a decision).
    pub fn class(&self) -> ErrorClass {
        match self {
            DnsError::NxDomain { .. } | DnsError::NoData { .. } => ErrorClass::NotFound,
            DnsError::ServFail { .. }
            | DnsError::Timeout { .. }
            | DnsError::Bogus { .. }
            | DnsError::Other { .. } => ErrorClass::Temporary,
        }
    }

    /// NXDOMAIN or NODATA.
    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }

    /// Worth retrying later.
    pub fn is_temporary(&self) -> bool {
        self.class() == ErrorClass::Temporary
    }

    /// Whether a negative answer was DNSSEC-secure (false for every other error).
    pub fn authentic(&self) -> bool {
        match self {
            DnsError::NxDomain { authentic, .. } | DnsError::NoData { authentic, .. } => *authentic,
            DnsError::ServFail { .. }
            | DnsError::Timeout { .. }
            | DnsError::Bogus { .. }
            | DnsError::Other { .. } => false,
        }
    }

    /// The name that was queried.
    pub fn name(&self) -> &str {
        match self {
            DnsError::NxDomain { name, .. }
            | DnsError::NoData { name, .. }
            | DnsError::ServFail { name, .. }
            | DnsError::Timeout { name, .. }
            | DnsError::Bogus { name, .. }
            | DnsError::Other { name, .. } => name,
        }
    }

    /// The type that was queried.
    pub fn qtype(&self) -> QueryType {
        match self {
            DnsError::NxDomain { qtype, .. }
            | DnsError::NoData { qtype, .. }
            | DnsError::ServFail { qtype, .. }
            | DnsError::Timeout { qtype, .. }
            | DnsError::Bogus { qtype, .. }
            | DnsError::Other { qtype, .. } => *qtype,
        }
    }
}

/// The result of one lookup.
pub type LookupResult<T> = Result<Answer<T>, DnsError>;

/// A boxed lookup future borrowing the resolver and the name.
pub type LookupFuture<'a, T> = Pin<Box<dyn Future<Output = LookupResult<T>> + Send + 'a>>;

/// A DNS resolver whose answers carry their DNSSEC status.
///
/// Implementors write [`Resolver::lookup`]; the typed helpers are provided. An `Ok` answer
/// holds at least one record of the queried type (a CNAME lookup: exactly the one alias
/// step, never chased); "no records" is [`DnsError::NoData`].
pub trait Resolver: Send + Sync {
    /// Asks one question.
    fn lookup<'a>(&'a self, name: &'a str, qtype: QueryType) -> LookupFuture<'a, Record>;

    /// MX records, in the order received (sorting is [`destinations`]' job).
    fn lookup_mx<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Mx> {
        typed(self, name, QueryType::Mx, |r| match r {
            Record::Mx(mx) => Some(mx),
            _ => None,
        })
    }

    /// A records.
    fn lookup_a<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Ipv4Addr> {
        typed(self, name, QueryType::A, |r| match r {
            Record::A(ip) => Some(ip),
            _ => None,
        })
    }

    /// AAAA records.
    fn lookup_aaaa<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Ipv6Addr> {
        typed(self, name, QueryType::Aaaa, |r| match r {
            Record::Aaaa(ip) => Some(ip),
            _ => None,
        })
    }

    /// The CNAME at `name` (one step; `records` has exactly one target).
    fn lookup_cname<'a>(&'a self, name: &'a str) -> LookupFuture<'a, String> {
        typed(self, name, QueryType::Cname, |r| match r {
            Record::Cname(target) => Some(target),
            _ => None,
        })
    }

    /// TXT records, each one's strings concatenated.
    fn lookup_txt<'a>(&'a self, name: &'a str) -> LookupFuture<'a, String> {
        typed(self, name, QueryType::Txt, |r| match r {
            Record::Txt(text) => Some(text),
            _ => None,
        })
    }

    /// TLSA records with their raw fields.
    fn lookup_tlsa<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Tlsa> {
        typed(self, name, QueryType::Tlsa, |r| match r {
            Record::Tlsa(tlsa) => Some(tlsa),
            _ => None,
        })
    }

    /// PTR records of an address (the `in-addr.arpa` / `ip6.arpa` name is built here).
    fn lookup_ptr(&self, ip: IpAddr) -> LookupFuture<'_, String> {
        Box::pin(async move {
            let name = reverse_name(ip);
            let answer = self.lookup(&name, QueryType::Ptr).await?;
            narrow(answer, &name, QueryType::Ptr, |r| match r {
                Record::Ptr(target) => Some(target),
                _ => None,
            })
        })
    }
}

fn typed<'a, R, T>(
    resolver: &'a R,
    name: &'a str,
    qtype: QueryType,
    pick: fn(Record) -> Option<T>,
) -> LookupFuture<'a, T>
where
    R: Resolver + ?Sized,
    T: Send + 'a,
{
    Box::pin(async move {
        let answer = resolver.lookup(name, qtype).await?;
        narrow(answer, name, qtype, pick)
    })
}

/// Keeps the records `pick` accepts; none left is NODATA with the answer's authenticity.
fn narrow<T>(
    answer: Answer<Record>,
    name: &str,
    qtype: QueryType,
    pick: fn(Record) -> Option<T>,
) -> LookupResult<T> {
    let mut records: Vec<T> = answer.records.into_iter().filter_map(pick).collect();
    if qtype == QueryType::Cname {
        // A name has at most one CNAME (RFC 1034 §3.6.2).
        records.truncate(1);
    }
    if records.is_empty() {
        return Err(DnsError::NoData {
            name: normalize_name(name),
            qtype,
            authentic: answer.authentic,
        });
    }
    Ok(Answer {
        authentic: answer.authentic,
        records,
    })
}

/// Lowercase, without the trailing dot: the form names take throughout this module.
pub fn normalize_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// The reverse-lookup name of an address (RFC 1035 §3.5, RFC 3596 §2.5), without trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn dns_reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.5".parse().unwrap()),
            "5.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn dns_normalize() {
        assert_eq!(normalize_name("MX.Example.ORG."), "mx.example.org");
        assert_eq!(normalize_name("example.org"), "example.org");
    }

    #[test]
    fn dns_error_classes() {
        let name = "example.org".to_string();
        let qtype = QueryType::Mx;
        let nx = DnsError::NxDomain {
            name: name.clone(),
            qtype,
            authentic: true,
        };
        assert!(nx.is_not_found() && nx.authentic());
        let servfail = DnsError::ServFail {
            name: name.clone(),
            qtype,
        };
        assert!(servfail.is_temporary() && !servfail.authentic());
        let bogus = DnsError::Bogus {
            name,
            qtype,
            reason: "x".into(),
        };
        assert_eq!(bogus.class(), ErrorClass::Temporary);
        assert_eq!(
            nx.to_string(),
            "DNS MX lookup of example.org: no such domain (NXDOMAIN, DNSSEC-secure)"
        );
    }
}
