//! Direct delivery against the in-process DNS server and small scripted SMTP servers on
//! 127.0.0.1. A mapping [`Dialer`] sends every address to a local server, so hosts can
//! have any addresses (IPv4 and IPv6 documentation ranges) and the test sees which one
//! was dialed. The TLS policy paths that need no real TLS (skips, refusals, MTA-STS
//! lookups) are in [`policy`]; the verified-TLS scenarios run in the gateway's
//! integration tests (`tests/it/dane.rs`, `mtasts.rs`, `requiretls.rs`).

mod policy;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::dns::{DnssecMode, HickoryConfig, HickoryResolver};
use crate::message::OutboundRcpt;
use crate::testkit::TestDns;

/// How a scripted server behaves.
#[derive(Clone, Default)]
struct Script {
    /// Extra EHLO keywords (e.g. "SIZE 10", "LIMITS RCPTMAX=2", "STARTTLS").
    caps: Vec<&'static str>,
    /// Reply to STARTTLS with 220, then close (a broken TLS server).
    broken_tls: bool,
    /// Reply to every RCPT with this line instead of 250.
    rcpt_reply: Option<&'static str>,
    /// Accept at most this many RCPTs per transaction, then 452.
    rcpts_per_txn: Option<usize>,
}

#[derive(Default)]
struct Seen {
    connections: usize,
    /// Recipients per accepted transaction.
    transactions: Vec<Vec<String>>,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                shared.lock().unwrap().connections += 1;
                tokio::spawn(serve(stream, script.clone(), shared.clone()));
            }
        });
        Server { addr, seen, task }
    }

    fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }

    fn transactions(&self) -> Vec<Vec<String>> {
        self.seen.lock().unwrap().transactions.clone()
    }
}

async fn serve(stream: tokio::net::TcpStream, script: Script, seen: Arc<Mutex<Seen>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let _ = write.write_all(b"220 test ESMTP\r\n").await;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => {
                let mut r = String::from("250-test\r\n");
                for cap in &script.caps {
                    r.push_str(&format!("250-{cap}\r\n"));
                }
                r.push_str("250 ENHANCEDSTATUSCODES\r\n");
                r
            }
            "STARTTLS" if script.broken_tls => {
                // Wait for the ClientHello, answer with garbage and hang up.
                let _ = write.write_all(b"220 2.0.0 go ahead\r\n").await;
                let mut hello = [0u8; 16];
                let _ = tokio::io::AsyncReadExt::read(&mut lines, &mut hello).await;
                let _ = write.write_all(b"this is not a TLS server hello\r\n").await;
                return;
            }
            "MAIL" => {
                rcpts.clear();
                "250 2.1.0 ok\r\n".into()
            }
            "RCPT" => {
                let addr = cmd
                    .split_once('<')
                    .and_then(|(_, r)| r.split_once('>'))
                    .map(|(a, _)| a.to_string())
                    .unwrap_or_default();
                if let Some(r) = script.rcpt_reply {
                    format!("{r}\r\n")
                } else if script.rcpts_per_txn.is_some_and(|max| rcpts.len() >= max) {
                    "452 4.5.3 too many recipients\r\n".into()
                } else {
                    rcpts.push(addr);
                    "250 2.1.5 ok\r\n".into()
                }
            }
            "DATA" if rcpts.is_empty() => "554 5.5.1 no recipients\r\n".into(),
            "DATA" => {
                let _ = write.write_all(b"354 go\r\n").await;
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                seen.lock()
                    .unwrap()
                    .transactions
                    .push(std::mem::take(&mut rcpts));
                "250 2.0.0 queued\r\n".into()
            }
            "RSET" => {
                rcpts.clear();
                "250 2.0.0 ok\r\n".into()
            }
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                return;
            }
            _ => "500 5.5.2 what\r\n".into(),
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Sends every dial to the server registered for its IP, and logs the dialed addresses.
#[derive(Default)]
struct MapDialer {
    routes: Mutex<HashMap<IpAddr, SocketAddr>>,
    dialed: Mutex<Vec<SocketAddr>>,
}

impl MapDialer {
    fn route(&self, ip: &str, to: SocketAddr) {
        self.routes.lock().unwrap().insert(ip.parse().unwrap(), to);
    }

    fn dialed(&self) -> Vec<IpAddr> {
        self.dialed.lock().unwrap().iter().map(|a| a.ip()).collect()
    }
}

impl Dialer for MapDialer {
    fn dial(&self, addr: SocketAddr) -> DialFuture<'_> {
        self.dialed.lock().unwrap().push(addr);
        let to = self.routes.lock().unwrap().get(&addr.ip()).copied();
        Box::pin(async move {
            let to = to.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no route")
            })?;
            TcpDialer.dial(to).await
        })
    }
}

struct Lab {
    dns: TestDns,
    dialer: Arc<MapDialer>,
    transport: DirectTransport,
}

async fn lab(configure: impl FnOnce(&mut DirectConfig)) -> Lab {
    lab_in(DnssecMode::Plain, configure).await
}

/// A lab whose resolver runs in `mode` (`TrustAd` for the DANE tests).
async fn lab_in(mode: DnssecMode, configure: impl FnOnce(&mut DirectConfig)) -> Lab {
    let dns = TestDns::start().await.unwrap();
    let resolver = HickoryResolver::new(HickoryConfig {
        nameservers: vec![dns.addr()],
        mode,
        timeout: Duration::from_secs(5),
        cache_size: 0,
    })
    .unwrap();
    let dialer = Arc::new(MapDialer::default());
    let mut config = DirectConfig::new("gw.test");
    config.timeouts = Timeouts::uniform(Duration::from_secs(10));
    config.dial_budget = Duration::from_secs(5);
    configure(&mut config);
    let transport = DirectTransport::new(config, Arc::new(resolver), dialer.clone());
    Lab {
        dns,
        dialer,
        transport,
    }
}

fn message(rcpts: &[&str]) -> OutboundMessage {
    OutboundMessage {
        mail_from: "sender@src.test".into(),
        rcpts: rcpts.iter().map(|r| OutboundRcpt::new(*r)).collect(),
        body: Arc::from(&b"Subject: t\r\n\r\nhello\r\n"[..]),
        params: Default::default(),
    }
}

fn request(rcpts: &[&str], attempt: u32, dialed: DialedIps) -> DirectRequest {
    DirectRequest {
        domain: "dst.test".into(),
        message: message(rcpts),
        attempt,
        dialed,
        tls_required_no: false,
    }
}

fn codes(result: &DirectResult) -> Vec<String> {
    result
        .rcpts
        .iter()
        .map(|r| match &r.outcome {
            RcptOutcome::Delivered(_) => "delivered".to_string(),
            RcptOutcome::Transient(reply) => format!("transient {reply}"),
            RcptOutcome::Permanent(reply) => format!("permanent {reply}"),
        })
        .collect()
}

#[tokio::test]
async fn direct_rcptmax_and_452_open_new_transactions() {
    let server = Server::start(Script {
        caps: vec!["PIPELINING", "LIMITS RCPTMAX=2"],
        ..Default::default()
    })
    .await;
    let lab = lab(|_| {}).await;
    lab.dns.add_mx("dst.test", 10, "mx.dst.test");
    lab.dns.add_a("mx.dst.test", "192.0.2.10".parse().unwrap());
    lab.dialer.route("192.0.2.10", server.addr);
    let rcpts = [
        "a@dst.test",
        "b@dst.test",
        "c@dst.test",
        "d@dst.test",
        "e@dst.test",
    ];
    let result = lab
        .transport
        .deliver(&request(&rcpts, 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"; 5]);
    assert_eq!(
        server.connections(),
        1,
        "one connection for every transaction"
    );
    let sizes: Vec<usize> = server.transactions().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let remote = result.rcpts[0].remote.as_ref().map(ToString::to_string);
    assert_eq!(remote.as_deref(), Some("mx.dst.test [192.0.2.10]"));
    assert_eq!(
        result.dialed["mx.dst.test"],
        vec!["192.0.2.10".parse::<IpAddr>().unwrap()]
    );

    // A server that says 452 itself after 3 recipients (no LIMITS announced).
    let limited = Server::start(Script {
        rcpts_per_txn: Some(3),
        ..Default::default()
    })
    .await;
    lab.dialer.route("192.0.2.10", limited.addr);
    let result = lab
        .transport
        .deliver(&request(&rcpts, 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"; 5]);
    let sizes: Vec<usize> = limited.transactions().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 2]);
}

#[tokio::test]
async fn direct_size_refusal_is_per_host() {
    let small = Server::start(Script {
        caps: vec!["SIZE 10"],
        ..Default::default()
    })
    .await;
    let roomy = Server::start(Script::default()).await;
    let lab = lab(|_| {}).await;
    lab.dns.add_mx("dst.test", 10, "mx1.dst.test");
    lab.dns.add_mx("dst.test", 20, "mx2.dst.test");
    lab.dns.add_a("mx1.dst.test", "192.0.2.1".parse().unwrap());
    lab.dns.add_a("mx2.dst.test", "192.0.2.2".parse().unwrap());
    lab.dialer.route("192.0.2.1", small.addr);
    lab.dialer.route("192.0.2.2", roomy.addr);
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(roomy.transactions().len(), 1);

    // Every host too small: a permanent failure naming the size limit.
    lab.dialer.route("192.0.2.2", small.addr);
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    let got = codes(&result);
    assert!(got[0].starts_with("permanent 554 5.3.4"), "{got:?}");
    assert!(got[0].contains("mx2.dst.test [192.0.2.2]"), "{got:?}");
}

#[tokio::test]
async fn direct_dual_stack_alternates_and_relaxes_policy_rejections() {
    let blocked = Server::start(Script {
        rcpt_reply: Some("550 5.7.1 your address is listed"),
        ..Default::default()
    })
    .await;
    let lab = lab(|_| {}).await;
    lab.dns.add_mx("dst.test", 10, "mx.dst.test");
    lab.dns.add_a("mx.dst.test", "192.0.2.1".parse().unwrap());
    lab.dns
        .add_aaaa("mx.dst.test", "2001:db8::1".parse().unwrap());
    lab.dialer.route("192.0.2.1", blocked.addr);
    lab.dialer.route("2001:db8::1", blocked.addr);

    // Attempt 1: IPv6 (the resolver's order), 5.7.1 is only temporary.
    let first = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    let got = codes(&first);
    assert!(got[0].starts_with("transient 550 5.7.1"), "{got:?}");
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let v4: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(first.dialed["mx.dst.test"], vec![v6]);

    // Attempt 2 remembers IPv6 and starts with IPv4; now 5.7.1 is final.
    let second = lab
        .transport
        .deliver(&request(&["a@dst.test"], 2, first.dialed.clone()))
        .await;
    let got = codes(&second);
    assert!(got[0].starts_with("permanent 550 5.7.1"), "{got:?}");
    assert_eq!(lab.dialer.dialed(), vec![v6, v4]);

    // A single-stack host gets no such leniency, even on attempt 1.
    lab.dns.remove("mx.dst.test");
    lab.dns.add_a("mx.dst.test", "192.0.2.1".parse().unwrap());
    let single = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert!(codes(&single)[0].starts_with("permanent 550 5.7.1"));
}

#[tokio::test]
async fn direct_disabled_family_is_not_dialed() {
    let server = Server::start(Script::default()).await;
    let lab = lab(|c| {
        c.families = AddressFamilies {
            v4: true,
            v6: false,
        }
    })
    .await;
    lab.dns.add_mx("dst.test", 10, "mx.dst.test");
    lab.dns.add_a("mx.dst.test", "192.0.2.1".parse().unwrap());
    lab.dns
        .add_aaaa("mx.dst.test", "2001:db8::1".parse().unwrap());
    lab.dialer.route("192.0.2.1", server.addr);
    lab.dialer.route("2001:db8::1", server.addr);
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(
        lab.dialer.dialed(),
        vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn direct_unreachable_addresses_then_next_host() {
    let server = Server::start(Script::default()).await;
    let lab = lab(|_| {}).await;
    lab.dns.add_mx("dst.test", 10, "mx1.dst.test");
    lab.dns.add_mx("dst.test", 20, "mx2.dst.test");
    // mx1 has two addresses, neither reachable; mx2 works.
    lab.dns.add_a("mx1.dst.test", "192.0.2.1".parse().unwrap());
    lab.dns.add_a("mx1.dst.test", "192.0.2.2".parse().unwrap());
    lab.dns.add_a("mx2.dst.test", "192.0.2.3".parse().unwrap());
    lab.dialer.route("192.0.2.3", server.addr);
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(lab.dialer.dialed().len(), 3, "both mx1 addresses, then mx2");
    let results: Vec<&str> = result.connections().map(ConnectResult::label).collect();
    assert_eq!(results, vec!["error", "ok"]);
    // Only addresses that connected count as dialed.
    assert!(!result.dialed.contains_key("mx1.dst.test"));

    // Nothing reachable: temporary, naming the host and address.
    lab.dialer.routes.lock().unwrap().clear();
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    let got = codes(&result);
    assert!(
        got[0].starts_with("transient 451 4.4.1 mx2.dst.test"),
        "{got:?}"
    );
    assert!(got[0].contains("192.0.2.3"), "{got:?}");
}

#[tokio::test]
async fn direct_tls_failure_falls_back_to_plaintext_and_is_recorded() {
    let server = Server::start(Script {
        caps: vec!["STARTTLS", "REQUIRETLS"],
        broken_tls: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = TlsStatusStore::new(dir.path().join("tls-status"));
    let path = store.path_of("dst.test").unwrap();
    let mut lab = lab(|_| {}).await;
    lab.transport = lab.transport.with_tls_status(store);
    lab.dns.add_mx("dst.test", 10, "mx.dst.test");
    lab.dns.add_a("mx.dst.test", "192.0.2.1".parse().unwrap());
    lab.dialer.route("192.0.2.1", server.addr);
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(result.plaintext_fallbacks(), 1);
    assert_eq!(server.connections(), 2);
    assert_eq!(
        result.rcpts[0].remote.as_ref().map(|r| r.tls.mode()),
        Some("none")
    );
    let sessions = &result.hosts[0].sessions;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].policy, "opportunistic");
    assert_eq!(sessions[1].policy, "plaintext");

    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no TLS status at {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(text.contains("\"starttls\":true"), "{text}");
    assert!(text.contains("\"requiretls\":true"), "{text}");
    assert!(text.contains("\"tls\":\"none\""), "{text}");
    assert!(
        text.contains("\"tls_error\":\"mx.dst.test [192.0.2.1]"),
        "{text}"
    );
}

#[tokio::test]
async fn direct_requiretls_fails_without_dialing() {
    let lab = lab(|_| {}).await;
    lab.dns.add_mx("dst.test", 10, "mx1.dst.test");
    lab.dns.add_mx("dst.test", 20, "mx2.dst.test");
    lab.dns.add_a("mx1.dst.test", "192.0.2.1".parse().unwrap());
    lab.dns.add_a("mx2.dst.test", "192.0.2.2".parse().unwrap());
    let mut req = request(&["a@dst.test"], 1, DialedIps::new());
    req.message.params.requiretls = true;
    let result = lab.transport.deliver(&req).await;
    let got = codes(&result);
    assert!(got[0].starts_with("permanent 554 5.7.30"), "{got:?}");
    assert!(lab.dialer.dialed().is_empty());
    assert_eq!(result.hosts.len(), 2);
    assert!(result
        .hosts
        .iter()
        .all(|h| h.sessions.is_empty() && h.skip_reason == Some(SkipReason::RequireTlsNoPolicy)));
}

#[tokio::test]
async fn direct_destination_failures() {
    let lab = lab(|_| {}).await;
    lab.dns.add_mx("dst.test", 0, ".");
    let got = codes(
        &lab.transport
            .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
            .await,
    );
    assert!(got[0].starts_with("permanent 556 5.1.10"), "{got:?}");

    let mut req = request(&["a@nx.test"], 1, DialedIps::new());
    req.domain = "nx.test".into();
    lab.dns.add_a("other.test", "192.0.2.1".parse().unwrap());
    let got = codes(&lab.transport.deliver(&req).await);
    assert!(got[0].starts_with("permanent 550 5.1.2"), "{got:?}");

    lab.dns
        .set_rcode("nx.test", crate::testkit::Rcode::ServFail);
    let got = codes(&lab.transport.deliver(&req).await);
    assert!(got[0].starts_with("transient 451 4.4.3"), "{got:?}");
    assert!(lab.dialer.dialed().is_empty());
}
