//! MTA-STS tests against the in-process DNS server: the cache with a fake fetcher, and
//! the real HTTPS fetcher against a local HTTPS server with a test CA.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::dns::{DnssecMode, HickoryConfig, HickoryResolver, Resolver};
use crate::testkit::{Rcode, TestDns};
use crate::tls::{provider, TlsRoots};

const ENFORCE: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n";
const TESTING: &str = "version: STSv1\nmode: testing\nmx: mx2.example.com\nmax_age: 604800\n";

fn resolver(dns: &TestDns) -> Arc<dyn Resolver> {
    Arc::new(
        HickoryResolver::new(HickoryConfig {
            nameservers: vec![dns.addr()],
            mode: DnssecMode::Plain,
            timeout: Duration::from_secs(2),
            cache_size: 0,
        })
        .unwrap(),
    )
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

/// What the fake fetcher answers for a domain.
#[derive(Clone)]
enum Serve {
    Policy(&'static str),
    NotFound,
    Broken,
}

#[derive(Default)]
struct FakeFetcher {
    serve: Mutex<HashMap<String, Serve>>,
    calls: AtomicUsize,
}

impl FakeFetcher {
    fn set(&self, domain: &str, serve: Serve) {
        self.serve.lock().unwrap().insert(domain.into(), serve);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl PolicyFetcher for FakeFetcher {
    fn fetch<'a>(&'a self, domain: &'a str) -> FetchFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let serve = self.serve.lock().unwrap().get(domain).cloned();
        let url = policy_url(domain, 443);
        Box::pin(async move {
            match serve {
                Some(Serve::Policy(text)) => Ok(text.to_string()),
                Some(Serve::NotFound) | None => Err(FetchError::NotFound { url }),
                Some(Serve::Broken) => Err(FetchError::Status { url, status: 500 }),
            }
        })
    }
}

struct Setup {
    dns: TestDns,
    fetcher: Arc<FakeFetcher>,
    store: Arc<MemoryStore>,
    cache: PolicyCache,
}

async fn setup() -> Setup {
    let dns = TestDns::start().await.unwrap();
    let fetcher = Arc::new(FakeFetcher::default());
    let store = Arc::new(MemoryStore::new());
    let cache = PolicyCache::new(resolver(&dns), fetcher.clone(), store.clone());
    Setup {
        dns,
        fetcher,
        store,
        cache,
    }
}

#[tokio::test]
async fn mtasts_cache_fetches_once_then_uses_the_cache() {
    let s = setup().await;
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=one");
    s.dns.add_txt("_mta-sts.example.com", "v=spf1 -all");
    s.fetcher.set("example.com", Serve::Policy(ENFORCE));

    let active = s
        .cache
        .get_at("Example.COM.", at(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.policy.mode, Mode::Enforce);
    assert_eq!(active.record_id, "one");
    assert!(active.fresh);
    assert!(active.policy.matches("mx.example.com"));
    assert!(active.policy.matches("mx1.example.net"));
    assert!(!active.policy.matches("a.b.example.net"));
    assert_eq!(s.fetcher.calls(), 1);

    let again = s
        .cache
        .get_at("example.com", at(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, active);
    assert_eq!(s.fetcher.calls(), 1, "same id: no refetch");
    let entry = s.store.get("example.com").await.unwrap().unwrap();
    assert_eq!(entry.expires, 1_700_000_000 + 86400);
}

#[tokio::test]
async fn mtasts_cache_no_record_no_policy() {
    let s = setup().await;
    s.fetcher.set("example.com", Serve::Policy(ENFORCE));
    // Absent, several records, an invalid record: no MTA-STS, nothing fetched or cached.
    assert_eq!(s.cache.get_at("example.com", at(0)).await.unwrap(), None);
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=one");
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=two");
    assert_eq!(s.cache.get_at("example.com", at(0)).await.unwrap(), None);
    s.dns.remove("_mta-sts.example.com");
    s.dns
        .add_txt("_mta-sts.example.com", "v=STSv1; id=not-alnum");
    assert_eq!(s.cache.get_at("example.com", at(0)).await.unwrap(), None);
    assert_eq!(s.fetcher.calls(), 0);
    assert!(s.store.list().await.unwrap().is_empty());
}

/// RFC 8461 §4: the policy domain is the recipient domain as given, not its CNAME target.
#[tokio::test]
async fn mtasts_cache_no_cname_following_for_the_policy_domain() {
    let s = setup().await;
    s.dns.add_cname("alias.example", "target.example");
    s.dns.add_txt("_mta-sts.target.example", "v=STSv1; id=one");
    s.fetcher.set("target.example", Serve::Policy(ENFORCE));
    s.fetcher.set("alias.example", Serve::Policy(ENFORCE));
    assert_eq!(s.cache.get_at("alias.example", at(0)).await.unwrap(), None);
    assert_eq!(s.fetcher.calls(), 0);
    assert_eq!(s.dns.queries("_mta-sts.target.example"), 0);
}

#[tokio::test]
async fn mtasts_cache_id_change_refetches() {
    let s = setup().await;
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=one");
    s.fetcher.set("example.com", Serve::Policy(ENFORCE));
    let first = s.cache.get_at("example.com", at(0)).await.unwrap().unwrap();
    assert_eq!(first.policy.mode, Mode::Enforce);

    s.dns.remove("_mta-sts.example.com");
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=two");
    s.fetcher.set("example.com", Serve::Policy(TESTING));
    let second = s
        .cache
        .get_at("example.com", at(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.policy.mode, Mode::Testing);
    assert_eq!(second.record_id, "two");
    assert!(second.fresh);
    assert_eq!(s.fetcher.calls(), 2);
    let entry = s.store.get("example.com").await.unwrap().unwrap();
    assert_eq!(entry.expires, 1_700_000_100 + 604800);
}

#[tokio::test]
async fn mtasts_cache_failed_refetch_keeps_the_policy() {
    let s = setup().await;
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=one");
    s.fetcher.set("example.com", Serve::Policy(ENFORCE));
    s.cache.get_at("example.com", at(0)).await.unwrap().unwrap();

    // A new id, but the policy server is broken: the cached policy stays in force.
    s.dns.remove("_mta-sts.example.com");
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=two");
    s.fetcher.set("example.com", Serve::Broken);
    let kept = s
        .cache
        .get_at("example.com", at(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.policy.mode, kept.record_id.as_str(), kept.fresh),
        (Mode::Enforce, "one", false)
    );
    assert_eq!(s.fetcher.calls(), 2);
    // Within the back-off: no new fetch.
    let kept = s
        .cache
        .get_at("example.com", at(200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.record_id, "one");
    assert_eq!(s.fetcher.calls(), 2);
    // A 404 after the back-off is a failure too: still the cached policy.
    s.fetcher.set("example.com", Serve::NotFound);
    let kept = s
        .cache
        .get_at("example.com", at(100 + 301))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.record_id, "one");
    assert_eq!(s.fetcher.calls(), 3);

    // The record disappears, or DNS fails: the cached policy still applies until expiry.
    s.dns.remove("_mta-sts.example.com");
    let kept = s
        .cache
        .get_at("example.com", at(5000))
        .await
        .unwrap()
        .unwrap();
    assert!(!kept.fresh);
    s.dns.set_rcode("_mta-sts.example.com", Rcode::ServFail);
    let kept = s
        .cache
        .get_at("example.com", at(6000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.policy.mode, Mode::Enforce);

    // Expired, and DNS still failing: no decision possible.
    let err = s
        .cache
        .get_at("example.com", at(86400 + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, PolicyLookupError::Dns { .. }), "{err}");
}

#[tokio::test]
async fn mtasts_cache_404_backs_off() {
    let s = setup().await;
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=one");
    s.fetcher.set("example.com", Serve::NotFound);
    assert_eq!(s.cache.get_at("example.com", at(0)).await.unwrap(), None);
    assert_eq!(s.fetcher.calls(), 1);
    let entry = s.store.get("example.com").await.unwrap().unwrap();
    assert!(entry.is_backoff());
    assert_eq!((entry.failures, entry.expires), (1, 1_700_000_000 + 300));

    // Within 5 minutes: no MTA-STS, no fetch.
    assert_eq!(s.cache.get_at("example.com", at(299)).await.unwrap(), None);
    assert_eq!(s.fetcher.calls(), 1);
    // After it: fetched again; a second failure backs off 10 minutes.
    assert_eq!(s.cache.get_at("example.com", at(300)).await.unwrap(), None);
    assert_eq!(s.fetcher.calls(), 2);
    let entry = s.store.get("example.com").await.unwrap().unwrap();
    assert_eq!(
        (entry.failures, entry.expires),
        (2, 1_700_000_000 + 300 + 600)
    );
    // The back-off doubles up to an hour.
    let mut now = 900;
    for expected in [1200, 2400, 3600, 3600] {
        s.cache.get_at("example.com", at(now)).await.unwrap();
        let entry = s.store.get("example.com").await.unwrap().unwrap();
        assert_eq!(entry.expires - (1_700_000_000 + now), expected);
        now += expected;
    }
    // The server comes back: the policy applies, the failures are forgotten.
    s.fetcher.set("example.com", Serve::Policy(ENFORCE));
    let active = s
        .cache
        .get_at("example.com", at(now))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.policy.mode, Mode::Enforce);
    assert_eq!(
        s.store.get("example.com").await.unwrap().unwrap().failures,
        0
    );
}

#[tokio::test]
async fn mtasts_cache_expired_policies_are_refetched() {
    let s = setup().await;
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=one");
    s.fetcher.set("example.com", Serve::Policy(ENFORCE));
    s.cache.get_at("example.com", at(0)).await.unwrap().unwrap();
    s.cache
        .get_at("example.com", at(86399))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.fetcher.calls(), 1);
    s.cache
        .get_at("example.com", at(86400))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.fetcher.calls(), 2);

    // Expired, and the domain left MTA-STS: the entry goes.
    s.dns.remove("_mta-sts.example.com");
    assert_eq!(
        s.cache.get_at("example.com", at(3 * 86400)).await.unwrap(),
        None
    );
    assert!(s.store.get("example.com").await.unwrap().is_none());
}

#[tokio::test]
async fn mtasts_cache_background_refresh() {
    let s = setup().await;
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=one");
    s.dns.add_txt("_mta-sts.example.org", "v=STSv1; id=one");
    s.dns.add_txt("_mta-sts.down.example", "v=STSv1; id=one");
    s.fetcher.set("example.com", Serve::Policy(TESTING));
    s.fetcher.set("example.org", Serve::Policy(ENFORCE));
    s.cache.get_at("example.com", at(0)).await.unwrap().unwrap();
    s.cache.get_at("example.org", at(0)).await.unwrap().unwrap();
    s.cache.get_at("down.example", at(0)).await.unwrap();

    assert!(s.cache.refresh_due(at(3600)).await.is_empty());
    // example.org's max_age is one day: refreshed after half of it, like example.com
    // after 12 hours; back-off entries never.
    let mut due = s.cache.refresh_due(at(12 * 3600)).await;
    due.sort();
    assert_eq!(due, ["example.com", "example.org"]);

    // Same id: confirmed, expiry moved forward.
    assert_eq!(
        s.cache.refresh("example.com", at(12 * 3600)).await,
        RefreshOutcome::Confirmed
    );
    let entry = s.store.get("example.com").await.unwrap().unwrap();
    assert_eq!(entry.expires, 1_700_000_000 + 12 * 3600 + 604800);
    // New id, fetch fails: kept, and not due again until the back-off ends.
    s.dns.remove("_mta-sts.example.org");
    s.dns.add_txt("_mta-sts.example.org", "v=STSv1; id=two");
    s.fetcher.set("example.org", Serve::Broken);
    let outcome = s.cache.refresh("example.org", at(12 * 3600)).await;
    assert!(
        matches!(outcome, RefreshOutcome::Kept { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        s.store.get("example.org").await.unwrap().unwrap().record_id,
        "one"
    );
    assert!(s.cache.refresh_due(at(12 * 3600 + 60)).await.is_empty());
    // Fixed: updated.
    s.fetcher.set("example.org", Serve::Policy(TESTING));
    let done = s.cache.refresh_all_due(at(12 * 3600 + 300)).await;
    assert_eq!(done, [("example.org".to_string(), RefreshOutcome::Updated)]);
    let entry = s.store.get("example.org").await.unwrap().unwrap();
    assert_eq!(
        (entry.record_id.as_str(), entry.policy.unwrap().mode),
        ("two", Mode::Testing)
    );
    assert_eq!(
        s.cache.refresh("nowhere.example", at(0)).await,
        RefreshOutcome::Skipped
    );
    assert_eq!(
        s.cache.refresh("down.example", at(0)).await,
        RefreshOutcome::Skipped
    );

    // Unused for 180 days (and long expired back-off entries): forgotten.
    assert_eq!(
        s.cache.prune(at(13 * 3600)).await,
        1,
        "down.example's back-off"
    );
    assert_eq!(s.cache.prune(at(181 * 86400)).await, 2);
    assert!(s.store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn mtasts_cache_persists_in_a_file() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mtasts.json");
    s.dns.add_txt("_mta-sts.example.com", "v=STSv1; id=one");
    s.fetcher.set("example.com", Serve::Policy(ENFORCE));
    let store = Arc::new(JsonFileStore::open(&path).unwrap());
    let cache = PolicyCache::new(resolver(&s.dns), s.fetcher.clone(), store);
    cache.get_at("example.com", at(0)).await.unwrap().unwrap();
    assert_eq!(s.fetcher.calls(), 1);

    // A restart: the policy comes from the file, even with the policy server gone.
    s.fetcher.set("example.com", Serve::Broken);
    let store = Arc::new(JsonFileStore::open(&path).unwrap());
    let cache = PolicyCache::new(resolver(&s.dns), s.fetcher.clone(), store);
    let active = cache.get_at("example.com", at(60)).await.unwrap().unwrap();
    assert_eq!(active.policy.mode, Mode::Enforce);
    assert_eq!(s.fetcher.calls(), 1);
}

// ---- The real HTTPS fetcher ---------------------------------------------------------

struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn server_config(&self, name: &str) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), self.issuer.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        Arc::new(config)
    }

    fn roots(&self, dir: &tempfile::TempDir) -> TlsRoots {
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, self.issuer.pem()).unwrap();
        TlsRoots::load(Some(&path)).unwrap()
    }
}

/// An HTTP/1.1 server over TLS that answers every request with the same bytes (or
/// never, when `None`) and records the request heads.
struct HttpsServer {
    addr: std::net::SocketAddr,
    response: Arc<Mutex<Option<Vec<u8>>>>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl HttpsServer {
    async fn start(config: Arc<ServerConfig>) -> HttpsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (resp, seen) = (response.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, resp, seen) = (acceptor.clone(), resp.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let bytes = resp.lock().unwrap().clone();
                    match bytes {
                        Some(bytes) => {
                            let _ = tls.write_all(&bytes).await;
                            let _ = tls.shutdown().await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        HttpsServer {
            addr,
            response,
            heads,
        }
    }

    fn respond(&self, status: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut bytes = format!("HTTP/1.1 {status}\r\n").into_bytes();
        for (name, value) in headers {
            bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let chunked = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
        if chunked {
            bytes.extend_from_slice(format!("\r\n{:x}\r\n", body.len()).as_bytes());
            bytes.extend_from_slice(body);
            bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        } else {
            bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            bytes.extend_from_slice(body);
        }
        *self.response.lock().unwrap() = Some(bytes);
    }

    fn hang(&self) {
        *self.response.lock().unwrap() = None;
    }
}

struct HttpsSetup {
    dns: TestDns,
    server: HttpsServer,
    fetcher: HttpsFetcher,
    _dir: tempfile::TempDir,
}

async fn https_setup() -> HttpsSetup {
    let dns = TestDns::start().await.unwrap();
    dns.add_a("mta-sts.example.com", "127.0.0.1".parse().unwrap());
    let ca = TestCa::new();
    let server = HttpsServer::start(ca.server_config("mta-sts.example.com")).await;
    let dir = tempfile::tempdir().unwrap();
    let fetcher = HttpsFetcher::new(resolver(&dns), &ca.roots(&dir))
        .with_port(server.addr.port())
        .with_timeout(Duration::from_secs(5));
    HttpsSetup {
        dns,
        server,
        fetcher,
        _dir: dir,
    }
}

#[tokio::test]
async fn mtasts_https_fetch_and_refusals() {
    let t = https_setup().await;
    t.server.respond(
        "200 OK",
        &[("Content-Type", "text/plain; charset=utf-8")],
        ENFORCE.as_bytes(),
    );
    let body = t.fetcher.fetch("example.com").await.unwrap();
    assert_eq!(body, ENFORCE);
    let head = t.server.heads.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n"),
        "{head}"
    );
    let host = format!("host: mta-sts.example.com:{}\r\n", t.server.addr.port());
    assert!(head.to_lowercase().contains(&host), "{head}");

    // Chunked bodies are fine too.
    t.server.respond(
        "200 OK",
        &[
            ("Content-Type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
        ],
        ENFORCE.as_bytes(),
    );
    assert_eq!(t.fetcher.fetch("example.com").await.unwrap(), ENFORCE);

    // RFC 8461 §3.3: redirects are not followed.
    t.server.respond(
        "301 Moved Permanently",
        &[("Location", "https://elsewhere.example/policy")],
        b"",
    );
    let err = t.fetcher.fetch("example.com").await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Redirect { status: 301, location: Some(l), .. } if l == "https://elsewhere.example/policy"),
        "{err}"
    );
    assert_eq!(
        t.server.heads.lock().unwrap().len(),
        3,
        "only the one request"
    );

    t.server
        .respond("404 Not Found", &[("Content-Type", "text/plain")], b"nope");
    let err = t.fetcher.fetch("example.com").await.unwrap_err();
    assert!(
        matches!(err, FetchError::NotFound { .. }) && err.is_no_policy(),
        "{err}"
    );

    t.server.respond(
        "500 Oops",
        &[("Content-Type", "text/plain")],
        ENFORCE.as_bytes(),
    );
    let err = t.fetcher.fetch("example.com").await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 500, .. }),
        "{err}"
    );

    t.server.respond(
        "200 OK",
        &[("Content-Type", "text/html")],
        ENFORCE.as_bytes(),
    );
    let err = t.fetcher.fetch("example.com").await.unwrap_err();
    assert!(matches!(err, FetchError::ContentType { .. }), "{err}");

    // Oversize: declared by Content-Length, or discovered while reading a chunked body.
    let big = format!("{ENFORCE}{}", "x: y\n".repeat(20_000));
    t.server
        .respond("200 OK", &[("Content-Type", "text/plain")], big.as_bytes());
    let err = t.fetcher.fetch("example.com").await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 65536, .. }),
        "{err}"
    );
    t.server.respond(
        "200 OK",
        &[
            ("Content-Type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
        ],
        big.as_bytes(),
    );
    let err = t.fetcher.fetch("example.com").await.unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");

    // No answer in time.
    t.server.hang();
    let fetcher = t.fetcher.clone().with_timeout(Duration::from_millis(500));
    let err = fetcher.fetch("example.com").await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");

    // No policy host at all.
    let err = t.fetcher.fetch("example.org").await.unwrap_err();
    assert!(
        matches!(err, FetchError::NoPolicyHost { .. }) && err.is_no_policy(),
        "{err}"
    );
    drop(t.dns);
}

#[tokio::test]
async fn mtasts_https_requires_pkix() {
    let t = https_setup().await;
    t.server.respond(
        "200 OK",
        &[("Content-Type", "text/plain")],
        ENFORCE.as_bytes(),
    );

    // The server's CA is not among these roots.
    let untrusted = HttpsFetcher::new(resolver(&t.dns), &TlsRoots::load(None).unwrap())
        .with_port(t.server.addr.port());
    let err = untrusted.fetch("example.com").await.unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err}");

    // A trusted certificate, but for another name.
    t.dns
        .add_a("mta-sts.example.net", "127.0.0.1".parse().unwrap());
    let err = t.fetcher.fetch("example.net").await.unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

/// The whole path: TXT record, HTTPS fetch, cache.
#[tokio::test]
async fn mtasts_cache_with_the_https_fetcher() {
    let t = https_setup().await;
    t.dns
        .add_txt("_mta-sts.example.com", "v=STSv1; id=20240101");
    t.server.respond(
        "200 OK",
        &[("Content-Type", "text/plain")],
        ENFORCE.as_bytes(),
    );
    let cache = PolicyCache::new(
        resolver(&t.dns),
        Arc::new(t.fetcher.clone()),
        Arc::new(MemoryStore::new()),
    );
    let active = cache.get("example.com").await.unwrap().unwrap();
    assert_eq!(active.policy.mode, Mode::Enforce);
    assert!(mx_matches(&active.policy, "mx.example.com"));

    // A policy host whose certificate is for another name: no policy (back-off).
    t.dns.add_txt("_mta-sts.example.net", "v=STSv1; id=1");
    t.dns
        .add_a("mta-sts.example.net", "127.0.0.1".parse().unwrap());
    assert_eq!(cache.get("example.net").await.unwrap(), None);
}
