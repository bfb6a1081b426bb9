//! The real [`Resolver`], on hickory's low-level client (hickory-net / hickory-proto).
//!
//! Every query goes to the configured nameservers in order (or those of
//! `/etc/resolv.conf`) over UDP, retried over TCP when the answer is truncated. The raw
//! response — positive, NODATA, NXDOMAIN or SERVFAIL, with its header — is then read
//! according to the [`DnssecMode`]:
//!
//! - [`DnssecMode::Plain`]: nothing is authentic.
//! - [`DnssecMode::TrustAd`]: queries go out with RD, AD and DO set (RFC 6840 §5.7,
//!   RFC 3225 §3) and an answer is authentic when the response has the AD bit. This trusts
//!   the configured resolver and the path to it, so it is meant for a validating resolver
//!   on localhost. hickory's high-level resolver cannot do this (it neither sets AD/DO nor
//!   keeps the header of negative answers), hence the low-level client.
//! - [`DnssecMode::Validate`]: hickory's `DnssecDnsHandle` validates in process from a
//!   trust anchor. Secure records are authentic, bogus ones an error
//!   ([`DnsError::Bogus`]), insecure ones not authentic; a negative answer is authentic
//!   when a secure NSEC/NSEC3 proof came with it.
//!
//! A per-query timeout bounds every lookup (validation included), and a small TTL cache
//! keeps answers and definite negatives.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, Stream};
use hickory_net::client::Client;
use hickory_net::dnssec::DnssecDnsHandle;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsHandle, DnsRequestSender, FirstAnswer};
use hickory_net::{DnsError as NetDnsError, NetError};
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::dnssec::{Proof, TrustAnchors};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, DnsResponse, Query, ResponseCode};
use hickory_proto::rr::{self, Name, RData, RecordType};

use super::cache::Cache;
use super::{
    normalize_name, Answer, DnsError, LookupFuture, LookupResult, Mx, QueryType, Record, Resolver,
    Tlsa,
};

/// Where resolv.conf lives.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How DNSSEC status is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnssecMode {
    /// No DNSSEC: every answer is inauthentic.
    Plain,
    /// Trust the AD bit of the configured (validating) resolvers.
    TrustAd,
    /// Validate in process; `None` uses the root zone's trust anchors.
    Validate {
        /// A file of DNSKEY records (zone-file syntax) to trust instead of the root's.
        trust_anchor: Option<PathBuf>,
    },
}

/// How to build a [`HickoryResolver`].
#[derive(Debug, Clone)]
pub struct HickoryConfig {
    /// Nameservers tried in order; empty means those of `/etc/resolv.conf` (port 53).
    pub nameservers: Vec<SocketAddr>,
    /// How answers become authentic.
    pub mode: DnssecMode,
    /// Bound on one lookup, all nameservers and DNSSEC validation included.
    pub timeout: Duration,
    /// Entries in the answer cache; 0 disables it.
    pub cache_size: usize,
}

impl Default for HickoryConfig {
    fn default() -> Self {
        HickoryConfig {
            nameservers: Vec::new(),
            mode: DnssecMode::Plain,
            timeout: Duration::from_secs(10),
            cache_size: 4096,
        }
    }
}

/// Why a resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    /// resolv.conf could not be read.
    #[error("reading {}: {source}", path.display())]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No nameserver configured anywhere.
    #[error("no nameservers: none configured and none in {}", path.display())]
    NoNameservers {
        /// The resolv.conf that was read.
        path: PathBuf,
    },
    /// The trust anchor file is unusable.
    #[error("DNSSEC trust anchor {}: {message}", path.display())]
    TrustAnchor {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A timeout of zero would fail every lookup.
    #[error("the DNS timeout must be greater than zero")]
    ZeroTimeout,
}

/// The hickory-based resolver. Cheap to share behind an `Arc`.
pub struct HickoryResolver {
    engine: Engine,
    servers: Arc<[SocketAddr]>,
    timeout: Duration,
    cache: Cache,
}

enum Engine {
    Plain(Upstream),
    TrustAd(Upstream),
    Validate(DnssecDnsHandle<Upstream>),
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.engine {
            Engine::Plain(_) => "plain",
            Engine::TrustAd(_) => "trust-ad",
            Engine::Validate(_) => "validate",
        };
        f.debug_struct("HickoryResolver")
            .field("servers", &self.servers)
            .field("mode", &mode)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HickoryResolver {
    /// Builds the resolver (reads resolv.conf and the trust anchor file now; no I/O later
    /// except queries). Queries need a tokio runtime.
    pub fn new(config: HickoryConfig) -> Result<Self, DnsSetupError> {
        if config.timeout.is_zero() {
            return Err(DnsSetupError::ZeroTimeout);
        }
        let servers: Arc<[SocketAddr]> = if config.nameservers.is_empty() {
            let path = PathBuf::from(RESOLV_CONF);
            let text =
                std::fs::read_to_string(&path).map_err(|source| DnsSetupError::ResolvConf {
                    path: path.clone(),
                    source,
                })?;
            let servers = parse_resolv_conf(&text);
            if servers.is_empty() {
                return Err(DnsSetupError::NoNameservers { path });
            }
            servers.into()
        } else {
            config.nameservers.into()
        };
        // Each server gets an equal share of the budget, but not a uselessly small one.
        let count = u32::try_from(servers.len()).unwrap_or(u32::MAX);
        let per_try = (config.timeout / count).max(Duration::from_millis(500));
        let upstream = Upstream {
            servers: servers.clone(),
            per_try,
        };
        let engine = match config.mode {
            DnssecMode::Plain => Engine::Plain(upstream),
            DnssecMode::TrustAd => Engine::TrustAd(upstream),
            DnssecMode::Validate { trust_anchor } => {
                let anchors = match trust_anchor {
                    Some(path) => load_trust_anchor(&path)?,
                    None => TrustAnchors::default(),
                };
                Engine::Validate(DnssecDnsHandle::with_trust_anchor(
                    upstream,
                    Arc::new(anchors),
                ))
            }
        };
        Ok(HickoryResolver {
            engine,
            servers,
            timeout: config.timeout,
            cache: Cache::new(config.cache_size),
        })
    }

    /// The nameservers in use.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.servers
    }

    async fn query(&self, name: &str, qtype: QueryType) -> (LookupResult<Record>, u32) {
        let other = |message: String| DnsError::Other {
            name: name.to_string(),
            qtype,
            message,
        };
        let fqdn = match Name::from_ascii(if name.is_empty() { "." } else { name }) {
            Ok(mut fqdn) => {
                fqdn.set_fqdn(true);
                fqdn
            }
            Err(e) => return (Err(other(format!("invalid name: {e}"))), 0),
        };
        let query = Query::query(fqdn, record_type(qtype));
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        let (result, source) = match &self.engine {
            Engine::Plain(upstream) => {
                let request = DnsRequest::from_query(query, options);
                (
                    upstream.send(request).first_answer().await,
                    Authenticity::None,
                )
            }
            Engine::TrustAd(upstream) => {
                // RFC 3225 §3: DO asks for DNSSEC data; RFC 6840 §5.7: AD in a query asks
                // for the AD bit in the response.
                options.edns_set_dnssec_ok = true;
                let mut request = DnsRequest::from_query(query, options);
                request.metadata.authentic_data = true;
                (
                    upstream.send(request).first_answer().await,
                    Authenticity::AdBit,
                )
            }
            Engine::Validate(handle) => (
                handle.lookup(query, options).first_answer().await,
                Authenticity::Proofs,
            ),
        };
        match result {
            Ok(response) => interpret(name, qtype, &response, source),
            Err(e) => (Err(map_net_error(name, qtype, e)), 0),
        }
    }
}

impl Resolver for HickoryResolver {
    fn lookup<'a>(&'a self, name: &'a str, qtype: QueryType) -> LookupFuture<'a, Record> {
        Box::pin(async move {
            let name = normalize_name(name);
            if let Some(hit) = self.cache.get(&name, qtype) {
                return hit;
            }
            let (result, ttl) =
                match tokio::time::timeout(self.timeout, self.query(&name, qtype)).await {
                    Ok(done) => done,
                    Err(_) => (
                        Err(DnsError::Timeout {
                            name: name.clone(),
                            qtype,
                        }),
                        0,
                    ),
                };
            self.cache.put(&name, qtype, &result, ttl);
            result
        })
    }
}

/// Where `authentic` comes from.
#[derive(Clone, Copy)]
enum Authenticity {
    None,
    AdBit,
    Proofs,
}

fn record_type(qtype: QueryType) -> RecordType {
    match qtype {
        QueryType::Mx => RecordType::MX,
        QueryType::A => RecordType::A,
        QueryType::Aaaa => RecordType::AAAA,
        QueryType::Cname => RecordType::CNAME,
        QueryType::Txt => RecordType::TXT,
        QueryType::Tlsa => RecordType::TLSA,
        QueryType::Ptr => RecordType::PTR,
    }
}

/// Reads a raw response: the records, their authenticity and a TTL for the cache.
fn interpret(
    name: &str,
    qtype: QueryType,
    response: &DnsResponse,
    source: Authenticity,
) -> (LookupResult<Record>, u32) {
    let negative_authentic = match source {
        Authenticity::None => false,
        Authenticity::AdBit => response.metadata.authentic_data,
        // A secure NSEC/NSEC3 proof survived validation (bogus proofs are errors).
        Authenticity::Proofs => response.authorities.iter().any(|r| {
            matches!(
                r.data,
                RData::DNSSEC(DNSSECRData::NSEC(_)) | RData::DNSSEC(DNSSECRData::NSEC3(_))
            ) && r.proof == Proof::Secure
        }),
    };
    let negative_ttl = response.negative_ttl().unwrap_or(0);
    match response.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            let err = DnsError::NxDomain {
                name: name.to_string(),
                qtype,
                authentic: negative_authentic,
            };
            return (Err(err), negative_ttl);
        }
        ResponseCode::ServFail => {
            let err = DnsError::ServFail {
                name: name.to_string(),
                qtype,
            };
            return (Err(err), 0);
        }
        code => {
            let err = DnsError::Other {
                name: name.to_string(),
                qtype,
                message: format!("server answered {code}"),
            };
            return (Err(err), 0);
        }
    }

    let wanted = record_type(qtype);
    // The records an answer rests on: those of the type asked, and the CNAMEs leading there.
    let relevant: Vec<&rr::Record> = response
        .answers
        .iter()
        .filter(|r| r.record_type() == wanted || r.record_type() == RecordType::CNAME)
        .collect();
    let authentic = match source {
        Authenticity::None => false,
        Authenticity::AdBit => response.metadata.authentic_data,
        Authenticity::Proofs => {
            if let Some(bad) = relevant.iter().find(|r| r.proof == Proof::Bogus) {
                let err = DnsError::Bogus {
                    name: name.to_string(),
                    qtype,
                    reason: format!("{} {} did not validate", bad.name, bad.record_type()),
                };
                return (Err(err), 0);
            }
            !relevant.is_empty() && relevant.iter().all(|r| r.proof == Proof::Secure)
        }
    };
    let mut ttl = u32::MAX;
    let records: Vec<Record> = relevant
        .iter()
        .filter(|r| r.record_type() == wanted)
        .filter_map(|r| {
            ttl = ttl.min(r.ttl);
            convert(&r.data)
        })
        .collect();
    if records.is_empty() {
        let err = DnsError::NoData {
            name: name.to_string(),
            qtype,
            authentic: negative_authentic,
        };
        return (Err(err), negative_ttl);
    }
    (Ok(Answer { authentic, records }), ttl)
}

fn convert(data: &RData) -> Option<Record> {
    Some(match data {
        RData::A(a) => Record::A(a.0),
        RData::AAAA(aaaa) => Record::Aaaa(aaaa.0),
        RData::MX(mx) => Record::Mx(Mx {
            preference: mx.preference,
            exchange: normalize_name(&mx.exchange.to_ascii()),
        }),
        RData::CNAME(cname) => Record::Cname(normalize_name(&cname.0.to_ascii())),
        RData::PTR(ptr) => Record::Ptr(normalize_name(&ptr.0.to_ascii())),
        RData::TXT(txt) => {
            let bytes: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            Record::Txt(String::from_utf8_lossy(&bytes).into_owned())
        }
        RData::TLSA(tlsa) => Record::Tlsa(Tlsa {
            usage: u8::from(tlsa.cert_usage),
            selector: u8::from(tlsa.selector),
            matching_type: u8::from(tlsa.matching),
            data: tlsa.cert_data.clone(),
        }),
        _ => return None,
    })
}

fn map_net_error(name: &str, qtype: QueryType, error: NetError) -> DnsError {
    let name = name.to_string();
    match error {
        NetError::Timeout => DnsError::Timeout { name, qtype },
        NetError::Dns(NetDnsError::ResponseCode(ResponseCode::ServFail)) => {
            DnsError::ServFail { name, qtype }
        }
        NetError::Dns(NetDnsError::Nsec {
            proof, response, ..
        }) => {
            if proof == Proof::Secure || proof == Proof::Insecure {
                // Not a bogus denial, just not a secure one.
                match response.metadata.response_code {
                    ResponseCode::NXDomain => DnsError::NxDomain {
                        name,
                        qtype,
                        authentic: false,
                    },
                    _ => DnsError::NoData {
                        name,
                        qtype,
                        authentic: false,
                    },
                }
            } else {
                DnsError::Bogus {
                    name,
                    qtype,
                    reason: format!("denial of existence is {proof}"),
                }
            }
        }
        NetError::Dns(NetDnsError::NoRecordsFound(no_records)) => match no_records.response_code {
            ResponseCode::NXDomain => DnsError::NxDomain {
                name,
                qtype,
                authentic: false,
            },
            _ => DnsError::NoData {
                name,
                qtype,
                authentic: false,
            },
        },
        other => DnsError::Other {
            name,
            qtype,
            message: other.to_string(),
        },
    }
}

/// The nameservers of a resolv.conf (`nameserver` lines; port 53).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            // Drop an IPv6 zone ("fe80::1%eth0"): std cannot parse it.
            let addr = addr.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

fn load_trust_anchor(path: &Path) -> Result<TrustAnchors, DnsSetupError> {
    let error = |message: String| DnsSetupError::TrustAnchor {
        path: path.to_path_buf(),
        message,
    };
    let anchors = TrustAnchors::from_file(path).map_err(|e| error(e.to_string()))?;
    if anchors.is_empty() {
        return Err(error("no DNSKEY records".into()));
    }
    Ok(anchors)
}

/// The configured nameservers as a hickory [`DnsHandle`] that hands back raw responses,
/// whatever their response code (only SERVFAIL/REFUSED from every server becomes an error).
#[derive(Clone)]
struct Upstream {
    servers: Arc<[SocketAddr]>,
    per_try: Duration,
}

impl Upstream {
    async fn exchange(self, request: DnsRequest) -> Result<DnsResponse, NetError> {
        let mut last: Result<DnsResponse, NetError> = Err(NetError::NoConnections);
        for server in self.servers.iter() {
            match self.exchange_one(*server, request.clone()).await {
                Ok(response)
                    if matches!(
                        response.metadata.response_code,
                        ResponseCode::ServFail | ResponseCode::Refused
                    ) =>
                {
                    // Another server may do better.
                    last = Ok(response);
                }
                Ok(response) => return Ok(response),
                Err(e) => last = Err(e),
            }
        }
        match last {
            Ok(response) => Err(NetDnsError::ResponseCode(response.metadata.response_code).into()),
            Err(e) => Err(e),
        }
    }

    async fn exchange_one(
        &self,
        server: SocketAddr,
        request: DnsRequest,
    ) -> Result<DnsResponse, NetError> {
        let mut udp = UdpClientStream::builder(server, TokioRuntimeProvider::new())
            .with_timeout(Some(self.per_try))
            .build();
        let response = udp.send_message(request.clone()).first_answer().await?;
        if !response.metadata.truncation {
            return Ok(response);
        }
        // RFC 7766 §5 (and RFC 1035 §4.2.1): a truncated UDP answer is asked again over TCP.
        let (connect, sender) = TcpClientStream::new(
            server,
            None,
            Some(self.per_try),
            TokioRuntimeProvider::new(),
        );
        let stream = connect.await?;
        let (client, background) =
            Client::<TokioRuntimeProvider>::with_timeout(stream, sender, self.per_try);
        let task = tokio::spawn(background);
        let result = client.send(request).first_answer().await;
        task.abort();
        result
    }
}

impl DnsHandle for Upstream {
    type Response = Pin<Box<dyn Stream<Item = Result<DnsResponse, NetError>> + Send>>;
    type Runtime = TokioRuntimeProvider;

    fn send(&self, request: DnsRequest) -> Self::Response {
        Box::pin(stream::once(self.clone().exchange(request)))
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn dns_resolv_conf_parsing() {
        let text = "# comment\nsearch example.org\nnameserver 192.0.2.53\n\
                    nameserver fe80::1%eth0\nnameserver   2001:db8::53 \nnameserver bogus\n";
        let servers: Vec<String> = parse_resolv_conf(text)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            servers,
            ["192.0.2.53:53", "[fe80::1]:53", "[2001:db8::53]:53"]
        );
    }

    #[test]
    fn dns_setup_errors() {
        let config = HickoryConfig {
            timeout: Duration::ZERO,
            ..HickoryConfig::default()
        };
        assert!(matches!(
            HickoryResolver::new(config),
            Err(DnsSetupError::ZeroTimeout)
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor");
        std::fs::write(&path, "").unwrap();
        let config = HickoryConfig {
            nameservers: vec!["127.0.0.1:53".parse().unwrap()],
            mode: DnssecMode::Validate {
                trust_anchor: Some(path),
            },
            ..HickoryConfig::default()
        };
        let err = HickoryResolver::new(config).unwrap_err();
        assert!(err.to_string().contains("no DNSKEY records"), "{err}");
    }
}
