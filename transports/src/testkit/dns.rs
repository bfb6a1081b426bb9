//! A scriptable in-process DNS server for tests, on hickory-server, listening on
//! 127.0.0.1 (UDP and TCP, one ephemeral port).
//!
//! It answers like a recursive resolver that knows only its own data: CNAMEs are chased
//! inside the answer, a name with no records of the asked type is NODATA, an unknown name
//! (not even an empty non-terminal) is NXDOMAIN. Per name, tests can set the AD bit
//! ([`TestDns::set_authentic`], for `TrustAd` mode), force a response code, drop queries
//! (the client times out), or force truncation over UDP (the client retries over TCP), and
//! count queries.
//!
//! [`TestDns::signed`] serves a DNSSEC-signed root zone (one Ed25519 key, RRSIGs made on
//! the fly for queries with DO, NSEC denials), with [`TestDns::trust_anchor`] for
//! `Validate` mode, [`TestDns::add_insecure_zone`] for unsigned delegations and
//! [`TestDns::set_bogus`] to break a name's signatures.
//!
//! Names given to the helpers are test input: an invalid one panics with a message.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, MX, NS, PTR, SOA, TLSA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::dnssec::{covering_index, nsec_at, ChainName, ZoneKey};
use crate::dns::reverse_name;

/// How many CNAMEs the server chases inside one answer.
const MAX_CHASE: usize = 16;

/// A response code to force for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// SERVFAIL.
    ServFail,
    /// NXDOMAIN (even if the name has records).
    NxDomain,
    /// REFUSED.
    Refused,
}

/// A zone-text line that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("zone text line {line}: {message}")]
pub struct ZoneTextError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Rcode(Rcode),
    Drop,
    Truncate,
}

struct State {
    records: BTreeMap<Name, BTreeMap<RecordType, Vec<RData>>>,
    ttl: u32,
    authentic: HashSet<Name>,
    faults: HashMap<Name, Fault>,
    queries: HashMap<Name, usize>,
    total: usize,
    key: Option<ZoneKey>,
    bogus: HashSet<Name>,
    insecure_cuts: BTreeSet<Name>,
}

/// The server; dropping it stops it.
pub struct TestDns {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Server<Handler>,
}

impl TestDns {
    /// An unsigned server on 127.0.0.1 with no data.
    pub async fn start() -> io::Result<TestDns> {
        Self::launch(None).await
    }

    /// A server whose root zone is DNSSEC-signed (see [`TestDns::trust_anchor`]).
    pub async fn signed() -> io::Result<TestDns> {
        let key = ZoneKey::generate().map_err(io::Error::other)?;
        Self::launch(Some(key)).await
    }

    async fn launch(key: Option<ZoneKey>) -> io::Result<TestDns> {
        let mut state = State {
            records: BTreeMap::new(),
            ttl: 60,
            authentic: HashSet::new(),
            faults: HashMap::new(),
            queries: HashMap::new(),
            total: 0,
            key: None,
            bogus: HashSet::new(),
            insecure_cuts: BTreeSet::new(),
        };
        if let Some(key) = key {
            let root = Name::root();
            let dnskey = RData::DNSSEC(DNSSECRData::DNSKEY(key.dnskey().clone()));
            state.add(&root, dnskey);
            state.add(&root, soa(&root));
            state.add(&root, RData::NS(NS(name("ns.root-servers.test"))));
            state.key = Some(key);
        }
        let state = Arc::new(Mutex::new(state));
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let mut server = Server::new(Handler {
            state: state.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        Ok(TestDns {
            state,
            addr,
            _server: server,
        })
    }

    /// Where to send queries (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a record (any type hickory knows).
    pub fn insert(&self, owner: &str, rdata: RData) {
        self.state().add(&name(owner), rdata);
    }

    /// Adds an A record.
    pub fn add_a(&self, owner: &str, ip: Ipv4Addr) {
        self.insert(owner, RData::A(ip.into()));
    }

    /// Adds an AAAA record.
    pub fn add_aaaa(&self, owner: &str, ip: Ipv6Addr) {
        self.insert(owner, RData::AAAA(ip.into()));
    }

    /// Adds an MX record; `exchange` "." makes a null MX.
    pub fn add_mx(&self, owner: &str, preference: u16, exchange: &str) {
        self.insert(owner, RData::MX(MX::new(preference, name(exchange))));
    }

    /// Adds a CNAME record.
    pub fn add_cname(&self, owner: &str, target: &str) {
        self.insert(owner, RData::CNAME(CNAME(name(target))));
    }

    /// Adds a TXT record: one string, or several of at most 255 bytes when it is longer
    /// (RFC 1035 §3.3; e.g. an RSA DKIM key record).
    pub fn add_txt(&self, owner: &str, text: &str) {
        let strings = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        self.insert(owner, RData::TXT(TXT::new(strings)));
    }

    /// Adds a TLSA record.
    pub fn add_tlsa(&self, owner: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) {
        let tlsa = TLSA::new(
            usage.into(),
            selector.into(),
            matching.into(),
            data.to_vec(),
        );
        self.insert(owner, RData::TLSA(tlsa));
    }

    /// Adds the PTR record of an address.
    pub fn add_ptr(&self, ip: IpAddr, target: &str) {
        self.insert(&reverse_name(ip), RData::PTR(PTR(name(target))));
    }

    /// Adds records in zone-file syntax, one per line: `owner [ttl] [IN] TYPE rdata`
    /// (absolute names; `;` starts a comment; the TTL is ignored).
    pub fn add_zone_text(&self, text: &str) -> Result<(), ZoneTextError> {
        let mut parsed = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let error = |message: String| ZoneTextError {
                line: index + 1,
                message,
            };
            let line = strip_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            let (owner, rest) = split_word(line);
            let owner = Name::from_ascii(owner).map_err(|e| error(e.to_string()))?;
            let (mut word, mut after) = split_word(rest);
            if word.parse::<u32>().is_ok() {
                (word, after) = split_word(after);
            }
            if word.eq_ignore_ascii_case("IN") {
                (word, after) = split_word(after);
            }
            let rtype = RecordType::from_str(&word.to_ascii_uppercase())
                .map_err(|e| error(format!("record type {word:?}: {e}")))?;
            let rdata = RData::try_from_str(rtype, after).map_err(|e| error(e.to_string()))?;
            parsed.push((fqdn(owner), rdata));
        }
        let mut state = self.state();
        for (owner, rdata) in parsed {
            state.add(&owner, rdata);
        }
        Ok(())
    }

    /// Removes every record of a name.
    pub fn remove(&self, owner: &str) {
        self.state().records.remove(&name(owner));
    }

    /// The TTL of records in answers (default 60).
    pub fn set_ttl(&self, ttl: u32) {
        self.state().ttl = ttl;
    }

    /// Answers about this name (as the query name or a CNAME step) carry the AD bit.
    pub fn set_authentic(&self, owner: &str, authentic: bool) {
        let owner = name(owner);
        let mut state = self.state();
        if authentic {
            state.authentic.insert(owner);
        } else {
            state.authentic.remove(&owner);
        }
    }

    /// Queries for this name get this response code and nothing else.
    pub fn set_rcode(&self, owner: &str, rcode: Rcode) {
        self.state().faults.insert(name(owner), Fault::Rcode(rcode));
    }

    /// Queries for this name are not answered.
    pub fn set_drop(&self, owner: &str) {
        self.state().faults.insert(name(owner), Fault::Drop);
    }

    /// UDP queries for this name get an empty truncated answer (TCP ones the full answer).
    pub fn set_truncate(&self, owner: &str) {
        self.state().faults.insert(name(owner), Fault::Truncate);
    }

    /// Undoes `set_rcode`, `set_drop` and `set_truncate`.
    pub fn clear_fault(&self, owner: &str) {
        self.state().faults.remove(&name(owner));
    }

    /// Signed server: the RRSIGs of this name's records are corrupted (bogus).
    pub fn set_bogus(&self, owner: &str, bogus: bool) {
        let owner = name(owner);
        let mut state = self.state();
        if bogus {
            state.bogus.insert(owner);
        } else {
            state.bogus.remove(&owner);
        }
    }

    /// Makes `zone` an unsigned zone: SOA and NS at its apex; on a signed server the root
    /// delegates it without DS, so everything at or below it validates as Insecure.
    pub fn add_insecure_zone(&self, zone: &str) {
        let zone = name(zone);
        let mut state = self.state();
        state.add(&zone, soa(&zone));
        state.add(&zone, RData::NS(NS(name("ns.root-servers.test"))));
        state.insecure_cuts.insert(zone);
    }

    /// Signed server: the trust anchor file content (the root DNSKEY) for `Validate` mode.
    pub fn trust_anchor(&self) -> Option<String> {
        self.state().key.as_ref().map(ZoneKey::trust_anchor_text)
    }

    /// Queries received for a name (any type, any transport).
    pub fn queries(&self, owner: &str) -> usize {
        let owner = name(owner);
        self.state().queries.get(&owner).copied().unwrap_or(0)
    }

    /// Queries received in all.
    pub fn total_queries(&self) -> usize {
        self.state().total
    }
}

/// Binds UDP and TCP on the same ephemeral loopback port.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port pair")))
}

/// The line up to a `;` that is not inside a quoted string.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(end) => (&s[..end], s[end..].trim_start()),
        None => (s, ""),
    }
}

fn fqdn(name: Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

/// Parses a test-supplied name; panics on invalid input (see the module comment).
fn name(text: &str) -> Name {
    match Name::from_ascii(text) {
        Ok(parsed) => fqdn(parsed),
        Err(e) => panic!("TestDns: invalid name {text:?}: {e}"),
    }
}

fn soa(zone: &Name) -> RData {
    let admin = zone
        .prepend_label("hostmaster")
        .unwrap_or_else(|_| zone.clone());
    RData::SOA(SOA::new(
        zone.clone(),
        admin,
        1,
        3600,
        600,
        86400,
        // Negative answers are cached at most this long (RFC 2308 §4).
        30,
    ))
}

/// One answer being built.
struct Reply {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    authentic: bool,
}

impl State {
    fn add(&mut self, owner: &Name, rdata: RData) {
        let rdatas = self
            .records
            .entry(owner.clone())
            .or_default()
            .entry(rdata.record_type())
            .or_default();
        if !rdatas.contains(&rdata) {
            rdatas.push(rdata);
        }
    }

    fn rrset(&self, owner: &Name, rtype: RecordType) -> Option<Vec<Record>> {
        let rdatas = self.records.get(owner)?.get(&rtype)?;
        let records: Vec<Record> = rdatas
            .iter()
            .map(|rdata| Record::from_rdata(owner.clone(), self.ttl, rdata.clone()))
            .collect();
        (!records.is_empty()).then_some(records)
    }

    /// The name has records or is an empty non-terminal above some.
    fn exists(&self, owner: &Name) -> bool {
        self.records.keys().any(|k| owner.zone_of(k))
    }

    /// The insecure zone containing `owner`, if any.
    fn cut_of(&self, owner: &Name) -> Option<&Name> {
        self.insecure_cuts.iter().find(|cut| cut.zone_of(owner))
    }

    fn signs(&self, owner: &Name) -> bool {
        self.key.is_some() && self.cut_of(owner).is_none()
    }

    /// Appends an RRset, with its RRSIG when signing.
    fn push(&self, section: &mut Vec<Record>, records: Vec<Record>, dnssec_ok: bool) {
        let signed = records.first().is_some_and(|r| self.signs(&r.name));
        self.push_as(section, records, dnssec_ok && signed);
    }

    /// Appends an RRset, signed if `sign` (NSECs at a cut are the parent's, always signed).
    fn push_as(&self, section: &mut Vec<Record>, records: Vec<Record>, sign: bool) {
        let Some(first) = records.first() else {
            return;
        };
        let signature = match (&self.key, sign) {
            (Some(key), true) => key.sign(&records, self.bogus.contains(&first.name)),
            _ => None,
        };
        section.extend(records);
        section.extend(signature);
    }

    /// The NSEC chain of the signed zone: every name outside the insecure zones, plus the
    /// cuts themselves with their parent-side types.
    fn nsec_chain(&self) -> Vec<ChainName> {
        self.records
            .iter()
            .filter_map(|(owner, types)| {
                let types: BTreeSet<RecordType> = match self.cut_of(owner) {
                    None => types.keys().copied().collect(),
                    Some(cut) if cut == owner => [RecordType::NS].into_iter().collect(),
                    Some(_) => return None,
                };
                Some(ChainName {
                    name: owner.clone(),
                    types,
                })
            })
            .collect()
    }

    fn push_nsec(
        &self,
        reply: &mut Reply,
        chain: &[ChainName],
        covered: &Name,
        seen: &mut Vec<usize>,
    ) {
        let Some(index) = covering_index(chain, covered) else {
            return;
        };
        if seen.contains(&index) {
            return;
        }
        seen.push(index);
        if let Some(nsec) = nsec_at(chain, index, self.ttl) {
            self.push_as(&mut reply.authorities, vec![nsec], true);
        }
    }

    /// Adds the authority section of a negative answer about `owner`.
    fn deny(&self, reply: &mut Reply, owner: &Name, dnssec_ok: bool) {
        let apex = match self.cut_of(owner) {
            Some(cut) => cut.clone(),
            None => Name::root(),
        };
        if let Some(soa) = self.rrset(&apex, RecordType::SOA) {
            self.push(&mut reply.authorities, soa, dnssec_ok);
        }
        if !(dnssec_ok && self.signs(owner)) {
            return;
        }
        // RFC 4035 §3.1.3: NODATA proves the type is absent at the name; NXDOMAIN proves
        // the name and the wildcard at its closest encloser are absent.
        let chain = self.nsec_chain();
        let mut seen = Vec::new();
        self.push_nsec(reply, &chain, owner, &mut seen);
        if reply.rcode == ResponseCode::NXDomain {
            let mut encloser = owner.base_name();
            while !encloser.is_root() && !self.exists(&encloser) {
                encloser = encloser.base_name();
            }
            if let Ok(wildcard) = encloser.prepend_label("*") {
                self.push_nsec(reply, &chain, &wildcard, &mut seen);
            }
        }
    }

    fn answer(&self, qname: &Name, qtype: RecordType, dnssec_ok: bool) -> Reply {
        let mut reply = Reply {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: Vec::new(),
            authentic: self.authentic.contains(qname),
        };
        // DS at an insecure cut: the parent's signed denial (RFC 4035 §3.1.4.1).
        if qtype == RecordType::DS && self.key.is_some() && self.insecure_cuts.contains(qname) {
            let root = Name::root();
            if let Some(soa) = self.rrset(&root, RecordType::SOA) {
                self.push(&mut reply.authorities, soa, dnssec_ok);
            }
            if dnssec_ok {
                let chain = self.nsec_chain();
                self.push_nsec(&mut reply, &chain, qname, &mut Vec::new());
            }
            return reply;
        }
        let mut current = qname.clone();
        for _ in 0..MAX_CHASE {
            if let Some(records) = self.rrset(&current, qtype) {
                self.push(&mut reply.answers, records, dnssec_ok);
                return reply;
            }
            if qtype != RecordType::CNAME {
                if let Some(records) = self.rrset(&current, RecordType::CNAME) {
                    let target = match records.first().map(|r| &r.data) {
                        Some(RData::CNAME(CNAME(target))) => fqdn(target.clone()),
                        _ => return reply,
                    };
                    self.push(&mut reply.answers, records, dnssec_ok);
                    reply.authentic &= self.authentic.contains(&target);
                    current = target;
                    continue;
                }
            }
            if !self.exists(&current) {
                reply.rcode = ResponseCode::NXDomain;
            }
            self.deny(&mut reply, &current, dnssec_ok);
            return reply;
        }
        // A CNAME loop (or a very long chain): SERVFAIL, as a recursive resolver gives.
        reply.rcode = ResponseCode::ServFail;
        reply
    }
}

/// The hickory-server request handler over the shared state.
struct Handler {
    state: Arc<Mutex<State>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let info = |metadata: Metadata| {
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        };
        let Ok(request_info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            let response =
                MessageResponseBuilder::from_message_request(request).build_no_records(metadata);
            return response_handle
                .send_response(response)
                .await
                .unwrap_or_else(|_| info(metadata));
        };
        let qname = fqdn(Name::from(request_info.query.name().clone()));
        let qtype = request_info.query.query_type();
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let udp = request.protocol() == Protocol::Udp;

        let reply = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.total += 1;
            *state.queries.entry(qname.clone()).or_default() += 1;
            match state.faults.get(&qname).copied() {
                Some(Fault::Drop) => return info(metadata),
                Some(Fault::Rcode(rcode)) => Err(match rcode {
                    Rcode::ServFail => ResponseCode::ServFail,
                    Rcode::NxDomain => ResponseCode::NXDomain,
                    Rcode::Refused => ResponseCode::Refused,
                }),
                Some(Fault::Truncate) if udp => Err(ResponseCode::NoError),
                Some(Fault::Truncate) | None => Ok(state.answer(&qname, qtype, dnssec_ok)),
            }
        };

        // RFC 6891 §6.1.1: answer EDNS with EDNS, echoing DO (RFC 3225 §3).
        let mut edns = Edns::new();
        edns.set_max_payload(4096).set_dnssec_ok(dnssec_ok);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if request.edns.is_some() {
            builder.edns(&edns);
        }
        let result = match reply {
            Ok(reply) => {
                metadata.response_code = reply.rcode;
                metadata.authentic_data = reply.authentic;
                let response = builder.build(
                    metadata,
                    reply.answers.iter(),
                    reply.authorities.iter(),
                    [],
                    [],
                );
                response_handle.send_response(response).await
            }
            Err(rcode) => {
                metadata.response_code = rcode;
                // Only the forced-truncation case gets here with NOERROR.
                metadata.truncation = rcode == ResponseCode::NoError;
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
        };
        result.unwrap_or_else(|_| info(metadata))
    }
}
