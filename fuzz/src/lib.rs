//! The bodies of relaygate's fuzz targets: one function per parser that reads bytes from
//! a client or a remote server. Each `fuzz_targets/<name>.rs` calls the function of the
//! same name, and `tests/fuzz_corpora.rs` (stable, part of `cargo test`) includes this
//! file with `#[path]` and replays every corpus file through the same functions. So this
//! file names crates only by their external paths (`relaygate`, `relaygate_transports`,
//! ...), never `crate::`.
//!
//! Every target must run thousands of executions per second: nothing here may run PBKDF2
//! per input. SCRAM servers get verifiers computed once; PLAIN/LOGIN check against a
//! verifier with one iteration; the SCRAM client gets a pre-filled `SaltedCache` and is
//! handed only server-first messages that hit it (see [`sasl_client`]).
//!
//! Besides "no panic", a few invariants whose failure would be a bug are asserted: DATA
//! reception does not depend on how the input is split and survives the outbound
//! dot-stuffing unchanged (no SMTP smuggling), a finished SASL exchange never succeeds
//! again and unknown users never succeed, a decoded spool record's body lies inside the
//! record, an MTA-STS policy survives its JSON cache round trip.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// Splits input into chunks of pseudo-random sizes (1..=97 bytes) derived from `seed`,
/// or one chunk when `seed` is 0: parsers that take bytes as they arrive from a socket
/// must not care where the reads end.
struct Chunks<'a> {
    data: &'a [u8],
    state: u32,
}

impl<'a> Chunks<'a> {
    fn new(data: &'a [u8], seed: u8) -> Self {
        Chunks {
            data,
            state: u32::from(seed),
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.data.is_empty() {
            return None;
        }
        let n = if self.state == 0 {
            self.data.len()
        } else {
            self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            1 + (self.state >> 16) as usize % 97
        };
        let (chunk, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        Some(chunk)
    }
}

/// Lines split on LF with one trailing CR removed, as the SMTP line readers do.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

// ---------------------------------------------------------------------------------------
// Submission server: command lines, DATA.

/// `src/submission/proto.rs`: one command line per input line (MAIL/RCPT parameters,
/// xtext, AUTH, ...), and the error replies built for refused lines. The domains of
/// accepted addresses go where the queue and direct delivery take them: route domain
/// normalization (IDNA) and address literals.
pub fn submission_command(data: &[u8]) {
    use relaygate::address::xtext_decode;
    use relaygate::submission::proto::{parse_command, Command};
    for line in lines(data) {
        match parse_command(line) {
            Ok(command) => {
                if let Command::Mail { from: address, .. } | Command::Rcpt { to: address, .. } =
                    &command
                {
                    let _ = relaygate::address::address_domain(address);
                    if let Some((_, domain)) = address.rsplit_once('@') {
                        let _ = relaygate::address::normalize_domain(domain);
                        let _ =
                            relaygate_transports::dns::destinations::parse_address_literal(domain);
                    }
                }
                let _ = format!("{command:?}");
            }
            Err(error) => {
                let wire = error.0.to_wire();
                assert!(wire.ends_with("\r\n") && !wire[..wire.len() - 2].contains('\n'));
                let _ = error.0.summary();
            }
        }
        if let Ok(text) = std::str::from_utf8(line) {
            let _ = xtext_decode(text);
        }
    }
}

/// `src/submission/data.rs`: the DATA receiver fed in chunks of random sizes. First byte:
/// size limit (low 2 bits) and chunking seed (high 6 bits).
pub fn submission_data(data: &[u8]) {
    use relaygate::submission::data::{DataReceiver, Feed};
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let max = match control & 3 {
        0 => 1 << 20,
        1 => 0,
        2 => 16,
        _ => 200,
    };
    let receive = |seed: u8| {
        let mut receiver = DataReceiver::new(max);
        let mut end = None;
        let mut pos = 0;
        for chunk in Chunks::new(input, seed) {
            match receiver.feed(chunk) {
                Feed::NeedMore => pos += chunk.len(),
                Feed::Done { consumed } => {
                    assert!((1..=chunk.len()).contains(&consumed));
                    end = Some(pos + consumed);
                    break;
                }
            }
        }
        (end, receiver.finish())
    };
    let (end, received) = receive(control >> 2);
    if received.overflow {
        assert!(received.body.is_empty() && received.size > max);
    } else {
        assert_eq!(received.body.len(), received.size);
    }
    // Where the reads end changes nothing.
    let (whole_end, whole) = receive(0);
    assert_eq!(end, whole_end);
    assert_eq!(received.body, whole.body);
    assert_eq!(
        (received.size, received.overflow, received.eight_bit),
        (whole.size, whole.overflow, whole.eight_bit)
    );
    // The content we accepted, dot-stuffed by the outbound side, reaches the next hop
    // as the same content with its end exactly at our end of data.
    if end.is_some() && !received.overflow {
        let wire = relaygate_transports::command::dot_stuff(&received.body);
        let mut next_hop = DataReceiver::new(usize::MAX);
        assert_eq!(
            next_hop.feed(&wire),
            Feed::Done {
                consumed: wire.len()
            }
        );
        assert_eq!(next_hop.finish().body, received.body);
    }
}

/// `src/message.rs` and `src/dsn.rs`: a submitted message (everything after the first
/// line) gets its trace and missing header fields, and a DSN quotes its headers and the
/// remote's reply (the first line) as diagnostic and status code.
pub fn message(data: &[u8]) {
    use relaygate::dsn::{build, status_of, Action, DsnInput, DsnRecipient};
    use relaygate::message::{field_value, has_field, header_section, prepare, TraceInfo};
    use relaygate::model::{MailParams, Overrides, RcptState, Recipient, StoredMessage};
    let (first, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let reply = String::from_utf8_lossy(first);
    let headers = header_section(body);
    for name in ["Date", "Message-ID", "Subject", "TLS-Required", "From"] {
        let _ = (has_field(headers, name), field_value(headers, name));
    }
    let trace = TraceInfo {
        hostname: "gw.example",
        helo: &reply,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        protocol: "ESMTPSA",
        tls: Some("TLSv1.3"),
        id: 7,
        single_rcpt: Some(&reply),
        now_ms: 1_798_761_600_000,
    };
    let prepared = prepare(body, &trace);
    assert!(prepared.ends_with(body));
    let recipient = Recipient {
        address: "c@d.example".into(),
        notify: Some("FAILURE,DELAY".into()),
        orcpt: Some("rfc822;c@d.example".into()),
        state: RcptState::Failed { at: 1 },
        attempts: 3,
        last: None,
        history: Vec::new(),
        delayed_dsn_sent: false,
    };
    let original = StoredMessage {
        id: 7,
        received_at: 1_798_761_600_000,
        mail_from: "a@b.example".into(),
        params: MailParams::default(),
        account: Some("app".into()),
        client: None,
        size: body.len() as u64,
        overrides: Overrides::default(),
        rcpts: vec![recipient],
        dkim: None,
    };
    let rcpts = [DsnRecipient {
        address: "c@d.example".into(),
        orcpt: Some("rfc822;c@d.example".into()),
        diagnostic: reply.to_string(),
        remote_reply: true,
        status: Some([5, 1, 1]),
        code: Some(550),
        remote_mta: Some("mx.d.example [192.0.2.2]".into()),
        remote_host: Some("mx.d.example".into()),
        last_attempt_ms: 1_798_761_600_000,
        will_retry_until_ms: Some(1_799_000_000_000),
    }];
    for action in [Action::Failed, Action::Delayed] {
        let _ = status_of(&rcpts[0], action);
        let dsn = build(&DsnInput {
            hostname: "gw.example",
            original: &original,
            body,
            action,
            rcpts: &rcpts,
            now_ms: 1_798_761_600_000,
            dsn_id: 8,
        });
        assert!(!dsn.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// SMTP client: replies and EHLO.

/// `transports/src/reply.rs` and `ehlo.rs`: server bytes in chunks of random sizes (first
/// byte: chunking seed), every reply turned into capabilities and classified, `334`
/// texts base64-decoded as the AUTH client does.
pub fn smtp_reply(data: &[u8]) {
    use relaygate_transports::{classify, Capabilities, ReplyParser};
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mut parser = ReplyParser::new();
    'feed: for chunk in Chunks::new(input, seed) {
        parser.push(chunk);
        loop {
            match parser.next_reply() {
                Ok(Some(reply)) => {
                    assert!((200..600).contains(&reply.code));
                    let caps = Capabilities::from_ehlo_reply(&reply);
                    let _ = caps.size_limit();
                    let _ = classify(&reply);
                    let _ = (reply.to_string(), reply.text());
                    if let Some(enhanced) = reply.enhanced {
                        let _ = enhanced.to_string();
                    }
                    if reply.code == 334 {
                        let _ = B64.decode(reply.lines.concat().trim());
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = error.to_string();
                    break 'feed;
                }
            }
        }
    }
    let _ = parser.has_buffered();
}

// ---------------------------------------------------------------------------------------
// SASL.

/// One RFC SCRAM example exchange (user "user", password "pencil").
struct ScramVector {
    client_nonce: &'static str,
    server_nonce_suffix: &'static str,
    salt: &'static str,
}

/// RFC 5802 §5 (SCRAM-SHA-1).
const RFC5802: ScramVector = ScramVector {
    client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
    server_nonce_suffix: "3rfcNHYJY1ZVvWVs7j",
    salt: "QSXCR+Q6sek8bf92",
};

/// RFC 7677 §3 (SCRAM-SHA-256).
const RFC7677: ScramVector = ScramVector {
    client_nonce: "rOprNGfwEbeRWgbNEkqO",
    server_nonce_suffix: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
};

const VECTOR_ITERATIONS: u32 = 4096;

fn vector(hash: relaygate_transports::sasl::ScramHash) -> &'static ScramVector {
    match hash {
        relaygate_transports::sasl::ScramHash::Sha1 => &RFC5802,
        relaygate_transports::sasl::ScramHash::Sha256 => &RFC7677,
    }
}

fn salt_of(v: &ScramVector) -> Vec<u8> {
    B64.decode(v.salt).expect("RFC salt is base64")
}

/// The mechanism named by a control byte (all seven, strongest first).
fn mechanism_of(control: u8) -> relaygate_transports::sasl::Mechanism {
    use relaygate_transports::sasl::Mechanism;
    Mechanism::ALL[usize::from(control) % Mechanism::ALL.len()]
}

/// Most client or server messages fed in one exchange (real ones need at most three).
const MAX_MESSAGES: usize = 8;

/// A store that knows every user name, with password "pencil" behind a one-iteration
/// verifier: PLAIN and LOGIN then never reach the (PBKDF2-priced) decoy.
struct EveryUser(relaygate_transports::sasl::StoredCredentials);

impl relaygate_transports::sasl::CredentialStore for EveryUser {
    fn lookup(&self, _username: &str) -> Option<relaygate_transports::sasl::StoredCredentials> {
        Some(self.0.clone())
    }
}

struct ServerFixture {
    /// Only "user" (RFC vector verifiers, CRAM-MD5 secret of "pencil"); anyone else runs
    /// the decoy exchange, which costs HMACs only for SCRAM and CRAM-MD5.
    only_user: Arc<dyn relaygate_transports::sasl::CredentialStore>,
    everyone: Arc<dyn relaygate_transports::sasl::CredentialStore>,
    settings: Arc<relaygate_transports::sasl::ServerSettings>,
}

fn server_fixture() -> &'static ServerFixture {
    use relaygate_transports::sasl::{
        CramMd5Secret, ScramHash, ScramVerifier, ServerSettings, StoredCredentials,
    };
    static FIXTURE: OnceLock<ServerFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // PBKDF2 once per process, not per input.
        let verifier = |hash: ScramHash, iterations: u32| {
            let salt = salt_of(vector(hash));
            let salted = hash.hi(b"pencil", &salt, iterations);
            ScramVerifier::from_salted_password(hash, &salted, &salt, iterations)
        };
        let user = StoredCredentials {
            scram_sha256: Some(verifier(ScramHash::Sha256, VECTOR_ITERATIONS)),
            scram_sha1: Some(verifier(ScramHash::Sha1, VECTOR_ITERATIONS)),
            cram_md5: Some(CramMd5Secret::from_password(b"pencil")),
        };
        let cheap = StoredCredentials {
            scram_sha256: Some(verifier(ScramHash::Sha256, 1)),
            scram_sha1: Some(verifier(ScramHash::Sha1, 1)),
            cram_md5: Some(CramMd5Secret::from_password(b"pencil")),
        };
        ServerFixture {
            only_user: Arc::new(HashMap::from([("user".to_string(), user)])),
            everyone: Arc::new(EveryUser(cheap)),
            settings: Arc::new(ServerSettings::new("mx.example", [7; 32])),
        }
    })
}

/// `transports/src/sasl/` server side, as the submission listener drives it: SCRAM
/// client-first/client-final, CRAM-MD5, PLAIN, LOGIN. First byte: mechanism (mod 7),
/// 0x08 TLS exporter present, 0x10 -PLUS advertised, 0x20 messages are base64 lines
/// decoded by `submission::auth::decode`, 0x40 the first message is the AUTH initial
/// response. Then one client message per line.
pub fn sasl_server(data: &[u8]) {
    use relaygate_transports::sasl::{
        new_server, ScramServer, ServerChannel, ServerMechanism, ServerStep,
    };
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mechanism = mechanism_of(control);
    let channel = ServerChannel {
        tls_exporter: (control & 0x08 != 0).then(|| vec![0x42; 32]),
        plus_advertised: control & 0x10 != 0,
    };
    let base64_lines = control & 0x20 != 0;
    let fx = server_fixture();
    let store = if mechanism.sends_plaintext_password() {
        &fx.everyone
    } else {
        &fx.only_user
    };
    let mut server: Box<dyn ServerMechanism> = match mechanism.scram_hash() {
        Some(hash) => Box::new(
            ScramServer::new(
                hash,
                mechanism.is_plus(),
                Arc::clone(store),
                Arc::clone(&fx.settings),
                channel,
            )
            .with_nonce_suffix(vector(hash).server_nonce_suffix),
        ),
        None => new_server(
            mechanism,
            Arc::clone(store),
            Arc::clone(&fx.settings),
            &channel,
        ),
    };
    let mut messages = lines(rest).take(MAX_MESSAGES).map_while(|line| {
        if !base64_lines {
            return Some(line.to_vec());
        }
        // As the session does: "*" cancels, undecodable ends the exchange with 501.
        let text = String::from_utf8_lossy(line);
        if text.trim() == "*" {
            return None;
        }
        relaygate::submission::auth::decode(&text)
    });
    let initial = if control & 0x40 != 0 {
        match messages.next() {
            Some(message) => Some(message),
            None => return,
        }
    } else {
        None
    };
    let mut step = server.start(initial.as_deref());
    for message in messages {
        match step {
            ServerStep::Challenge(_) => step = server.step(&message),
            ServerStep::Success(_) | ServerStep::Failure(_) => {
                let again = server.step(&message);
                assert!(
                    matches!(again, ServerStep::Failure(_)),
                    "{mechanism}: a finished exchange went on: {again:?}"
                );
                return;
            }
        }
    }
    match step {
        ServerStep::Success(who) => {
            assert_eq!(who.mechanism, mechanism);
            if !mechanism.sends_plaintext_password() {
                assert_eq!(who.username, "user", "{mechanism}: an unknown user got in");
            }
        }
        ServerStep::Failure(why) => {
            let _ = (why.to_string(), why.scram_error());
        }
        ServerStep::Challenge(_) => {}
    }
}

struct ClientFixture {
    cache: Arc<relaygate_transports::sasl::SaltedCache>,
    /// Raw salts whose SaltedPassword (at 4096 iterations, both hashes) is cached.
    salts: Vec<Vec<u8>>,
    /// Cache misses after filling it: any further miss means PBKDF2 ran for an input.
    misses: u64,
}

fn client_fixture() -> &'static ClientFixture {
    use relaygate_transports::sasl::{SaltedCache, ScramHash};
    static FIXTURE: OnceLock<ClientFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let cache = Arc::new(SaltedCache::default());
        let salts = vec![salt_of(&RFC5802), salt_of(&RFC7677)];
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            for salt in &salts {
                cache.salted_password(hash, "pencil", salt, VECTOR_ITERATIONS);
            }
        }
        let misses = cache.stats().misses;
        ClientFixture {
            cache,
            salts,
            misses,
        }
    })
}

/// Whether the SCRAM client would run PBKDF2 for this server-first (its salt and count
/// are valid) with a salt or count that is not cached. Such messages are not fed: the
/// syntax checks before PBKDF2 are still reached by every other input.
fn server_first_is_costly(message: &[u8], cached_salts: &[Vec<u8>]) -> bool {
    use relaygate_transports::sasl::{MAX_ITERATIONS, MIN_ITERATIONS};
    let Ok(text) = std::str::from_utf8(message) else {
        return false;
    };
    let mut parts = text.split(',').skip(1);
    let (Some(salt), Some(count)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Some(salt), Some(count)) = (salt.strip_prefix("s="), count.strip_prefix("i=")) else {
        return false;
    };
    let Ok(salt) = B64.decode(salt) else {
        return false;
    };
    if salt.is_empty() || count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let count = count.parse::<u32>().unwrap_or(u32::MAX);
    (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&count)
        && !(count == VECTOR_ITERATIONS && cached_salts.contains(&salt))
}

/// `transports/src/sasl/` client side, as the SMTP client drives it against a smarthost:
/// SCRAM server-first/server-final, CRAM-MD5 challenges, LOGIN prompts, PLAIN. First
/// byte: mechanism (mod 7), 0x08 challenges are `334` texts to base64-decode, 0x10 the
/// initial response is sent, 0x20 gs2 flag `y` (non-PLUS SCRAM), 0x40 the last line
/// comes as additional data with `235`. Then one server challenge per line.
pub fn sasl_client(data: &[u8]) {
    use relaygate_transports::sasl::{new_client, ChannelBinding, ClientMechanism, ScramClient};
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mechanism = mechanism_of(control);
    let binding = if mechanism.is_plus() {
        ChannelBinding::TlsExporter(vec![0x42; 32])
    } else if control & 0x20 != 0 && mechanism.scram_hash().is_some() {
        ChannelBinding::ServerLacksSupport
    } else {
        ChannelBinding::None
    };
    let fx = client_fixture();
    let mut client: Box<dyn ClientMechanism> = match mechanism.scram_hash() {
        Some(hash) => Box::new(
            ScramClient::with_client_nonce(
                hash,
                "user",
                "pencil",
                binding,
                Some(Arc::clone(&fx.cache)),
                vector(hash).client_nonce.to_string(),
            )
            .expect("valid SCRAM client"),
        ),
        None => new_client(mechanism, "user", "pencil", binding, None).expect("valid client"),
    };
    let mut challenges: Vec<Vec<u8>> = Vec::new();
    for line in lines(rest).take(MAX_MESSAGES) {
        if control & 0x08 == 0 {
            challenges.push(line.to_vec());
            continue;
        }
        // As the session does with "334 <text>": undecodable cancels the exchange.
        match B64.decode(String::from_utf8_lossy(line).trim()) {
            Ok(challenge) => challenges.push(challenge),
            Err(_) => break,
        }
    }
    let additional = if control & 0x40 != 0 {
        challenges.pop()
    } else {
        None
    };
    let scram = mechanism.scram_hash().is_some();
    let mut sent_first = control & 0x10 != 0;
    if sent_first {
        let _ = client.initial();
    }
    let mut awaiting_server_first = scram && sent_first;
    for challenge in &challenges {
        if awaiting_server_first && server_first_is_costly(challenge, &fx.salts) {
            return;
        }
        let result = client.step(challenge);
        if awaiting_server_first {
            awaiting_server_first = false;
        } else if !sent_first && result.is_ok() {
            sent_first = true;
            awaiting_server_first = scram;
        }
        match result {
            Ok(step) => {
                let _ = step.response().len();
            }
            Err(error) => {
                let _ = error.to_string();
            }
        }
    }
    let _ = client.finish(additional.as_deref());
    assert_eq!(
        fx.cache.stats().misses,
        fx.misses,
        "PBKDF2 ran for a fuzz input: server_first_is_costly is out of date"
    );
}

// ---------------------------------------------------------------------------------------
// SOCKS5, MTA-STS, DANE.

/// The proxy's side of a SOCKS5 handshake, played from memory: reads hand out the fuzz
/// bytes in the chunks of [`Chunks`] (a chunk may be cut short by a smaller read
/// buffer), writes are recorded. It never blocks, so one poll finishes the handshake.
struct ProxyBytes<'a> {
    chunks: Chunks<'a>,
    pending: &'a [u8],
    sent: Vec<u8>,
}

impl tokio::io::AsyncRead for ProxyBytes<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pending.is_empty() {
            self.pending = self.chunks.next().unwrap_or(&[]);
        }
        let n = self.pending.len().min(buf.remaining());
        let (now, later) = self.pending.split_at(n);
        buf.put_slice(now);
        self.pending = later;
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for ProxyBytes<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.sent.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// `transports/src/socks/`: the SOCKS5 handshake the tunnel runs (tokio-socks behind our
/// guard) against a proxy whose bytes are the input: method choice, username/password
/// status, CONNECT reply and bound address. First byte: bit 0 = we have credentials,
/// the other bits seed the read chunking. Asserted: we offer username/password only
/// when we have credentials and "no authentication" only when we have none, and a
/// tunnel is only made, and CONNECT only sent, after the proxy chose what we offered.
pub fn socks_reply(data: &[u8]) {
    use relaygate_transports::socks::{handshake, SocksFailure};
    use relaygate_transports::Secret;
    use std::future::Future as _;
    use std::task::{Context, Poll, Waker};

    let Some((&control, replies)) = data.split_first() else {
        return;
    };
    let with_credentials = control & 1 != 0;
    let credentials = with_credentials.then(|| ("relay".to_string(), Secret::new("pa55")));
    let (greeting, login, method): (&[u8], &[u8], u8) = if with_credentials {
        (&[5, 1, 2], b"\x01\x05relay\x04pa55", 2)
    } else {
        (&[5, 1, 0], b"", 0)
    };
    let connect: &[u8] = &[5, 1, 0, 1, 192, 0, 2, 1, 0, 25];
    let mut proxy = ProxyBytes {
        chunks: Chunks::new(replies, control >> 1),
        pending: &[],
        sent: Vec::new(),
    };
    let target = std::net::SocketAddr::from(([192, 0, 2, 1], 25));
    let result = {
        let mut future = std::pin::pin!(handshake(&mut proxy, target, credentials.as_ref()));
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => result.map(drop),
            Poll::Pending => panic!("the handshake waits on a proxy that never blocks"),
        }
    };
    assert!(
        proxy.sent.starts_with(greeting),
        "we offered {:02x?}",
        proxy.sent
    );
    let chose_ours = replies.get(..2) == Some(&[5, method][..]);
    if proxy.sent.len() > greeting.len() {
        assert!(
            chose_ours,
            "we went on after the proxy chose {replies:02x?}"
        );
    }
    match result {
        Ok(()) => {
            assert!(
                chose_ours,
                "a tunnel although the proxy chose {replies:02x?}"
            );
            assert_eq!(proxy.sent, [greeting, login, connect].concat());
        }
        Err(SocksFailure::MethodNotOffered { chosen, .. }) => assert_ne!(chosen, method),
        Err(failure) => {
            let _ = failure.to_string();
        }
    }
}

/// `transports/src/mtasts/`: the input as a policy file body (the fetch refuses
/// non-UTF-8) and as the TXT strings of `_mta-sts.<domain>`, one per line (the resolver
/// decodes TXT lossily). A parsed policy is matched against MX names and round-tripped
/// through its JSON cache form.
pub fn mtasts(data: &[u8]) {
    use relaygate_transports::mtasts::record::{is_sts_record, parse_record, select_record};
    use relaygate_transports::mtasts::{mx_matches, parse_policy, MxPattern, Policy};
    let txt = String::from_utf8_lossy(data);
    let txts: Vec<String> = txt.split('\n').map(str::to_string).collect();
    let _ = select_record("_mta-sts.example.com", &txts);
    for line in &txts {
        if is_sts_record(line) {
            let _ = parse_record(line);
        }
        let _ = MxPattern::parse(line.trim());
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = parse_policy(text) else {
        return;
    };
    let _ = policy.cache_lifetime();
    // A few patterns are enough: all of them against all would make the target quadratic.
    for pattern in policy.mx.iter().take(4) {
        let name = pattern.to_string();
        let host = name.replace('*', "mx");
        assert!(
            mx_matches(&policy, &host),
            "{pattern:?} does not match {host}"
        );
        let _ = mx_matches(&policy, &format!("a.{host}."));
        assert_eq!(MxPattern::parse(&name).as_ref(), Ok(pattern));
    }
    let json = serde_json::to_string(&policy).expect("a policy serializes");
    let back: Policy = serde_json::from_str(&json).expect("a cached policy reads back");
    assert_eq!(back, policy);
}

/// Reads length-prefixed pieces of a DANE input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// `transports/src/dane/`: TLSA records from the DNS and the certificate chain from the
/// TLS server. Layout: control byte (records = low bits mod 5, 0x80 insecure answer);
/// per record usage, selector, matching type, length, data; then certificates (DER), each
/// with a 2-byte big-endian length, the first being the end-entity one.
pub fn dane_tlsa(data: &[u8]) {
    use relaygate_transports::dane::{
        is_usable, policy_from_answer, record_matches, reference_names, spki_of, DanePolicy,
        DaneVerifier,
    };
    use relaygate_transports::dns::{Answer, Tlsa};
    use rustls_pki_types::{CertificateDer, UnixTime};
    let mut input = Reader(data);
    let Some(control) = input.u8() else { return };
    let mut records = Vec::new();
    for _ in 0..control % 5 {
        let (Some(usage), Some(selector), Some(matching_type), Some(len)) =
            (input.u8(), input.u8(), input.u8(), input.u8())
        else {
            return;
        };
        let Some(data) = input.take(usize::from(len)) else {
            return;
        };
        records.push(Tlsa {
            usage,
            selector,
            matching_type,
            data: data.to_vec(),
        });
    }
    let mut certs = Vec::new();
    while certs.len() < 4 {
        let Some(len) = input.u16() else { break };
        let Some(der) = input.take(len) else { break };
        certs.push(CertificateDer::from(der));
    }
    for cert in &certs {
        let _ = spki_of(cert);
        for record in &records {
            let _ = record_matches(record, cert);
        }
    }
    let usable = records.iter().filter(|r| is_usable(r)).count();
    let answer = Answer {
        authentic: control & 0x80 == 0,
        records,
    };
    let policy = policy_from_answer("MX.Example.COM.", Ok(answer));
    let _ = (policy.label(), policy.requires_tls());
    let DanePolicy::Verify {
        base_domain,
        records,
    } = policy
    else {
        return;
    };
    assert_eq!(records.len(), usable);
    let names = reference_names(&base_domain, "mx.example.com", "example.com", None);
    let verifier = DaneVerifier::new(&records, &names).expect("usable records");
    let Some((end_entity, intermediates)) = certs.split_first() else {
        return;
    };
    // 2027-01-01: inside the validity of the seed certificates.
    let now = UnixTime::since_unix_epoch(Duration::from_secs(1_798_761_600));
    match verifier.verify_chain(end_entity, intermediates, now) {
        Ok(record) => assert!(records.contains(&record)),
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Spool.

/// `src/spool/record.rs`: records decoded one after another as replay does, with each
/// message body sliced where the record says it is. First byte: 0 = raw segment bytes;
/// 1 = a kind byte and a payload, framed here with a valid header and CRC so the fuzzer
/// reaches the JSON decoding behind the checksum.
pub fn spool_record(data: &[u8]) {
    use relaygate::spool::record::{decode, Decoded, HEADER_LEN, MAGIC};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let segment = if mode & 1 == 0 {
        rest
    } else {
        let Some((&kind, payload)) = rest.split_first() else {
            return;
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind]);
        crc.update(payload);
        let len = u32::try_from(payload.len()).expect("fuzz inputs are small");
        let mut bytes = vec![MAGIC, kind];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&crc.finalize().to_le_bytes());
        bytes.extend_from_slice(payload);
        framed = bytes;
        framed.as_slice()
    };
    let mut pos = 0;
    while pos < segment.len() {
        let Ok((record, len)) = decode(&segment[pos..]) else {
            break;
        };
        assert!(len >= HEADER_LEN && len <= segment.len() - pos);
        if let Decoded::Message {
            body_offset,
            body_len,
            meta,
        } = &record
        {
            let body = &segment[pos..pos + len][*body_offset..*body_offset + *body_len];
            let _ = (body.len(), meta.rcpts.len());
        }
        pos += len;
    }
}
