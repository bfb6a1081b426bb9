//! The TLS policy paths of direct delivery that need no working TLS: TLSA lookup
//! failures, DANE or MTA-STS hosts without STARTTLS, MTA-STS host filtering and policy
//! lookup failures, and what `TLS-Required: No` relaxes (and counts). The resolver
//! trusts the AD bit, which the test DNS server sets per name.

use super::*;
use crate::mtasts::{policy_url, FetchError, FetchFuture, MemoryStore, PolicyCache, PolicyFetcher};
use crate::testkit::Rcode;
use crate::tls::TlsRoots;

const MX1: &str = "192.0.2.1";
const MX2: &str = "192.0.2.2";
/// The TLSA owner of mx1.dst.test for `direct.port` 25.
const TLSA1: &str = "_25._tcp.mx1.dst.test";

/// Serves one policy text for every domain (or 404 when `None`).
struct FixedFetcher(Option<&'static str>);

impl PolicyFetcher for FixedFetcher {
    fn fetch<'a>(&'a self, domain: &'a str) -> FetchFuture<'a> {
        let url = policy_url(domain, 443);
        let text = self.0;
        Box::pin(async move { text.map(str::to_string).ok_or(FetchError::NotFound { url }) })
    }
}

/// A TrustAd lab where dst.test has mx1 (preference 10) and mx2 (20), both routed to
/// `server`, and every name on the way to mx1's address is authentic.
async fn dane_lab(server: &Server) -> Lab {
    let lab = lab_in(DnssecMode::TrustAd, |_| {}).await;
    lab.dns.add_mx("dst.test", 10, "mx1.dst.test");
    lab.dns.add_a("mx1.dst.test", MX1.parse().unwrap());
    for name in ["dst.test", "mx1.dst.test"] {
        lab.dns.set_authentic(name, true);
    }
    lab.dialer.route(MX1, server.addr);
    lab
}

/// Adds MTA-STS to the lab's transport: `policy` served for every domain.
fn with_mtasts(lab: Lab, policy: Option<&'static str>) -> Lab {
    let resolver = HickoryResolver::new(HickoryConfig {
        nameservers: vec![lab.dns.addr()],
        mode: DnssecMode::Plain,
        timeout: Duration::from_secs(5),
        cache_size: 0,
    })
    .unwrap();
    let cache = PolicyCache::new(
        Arc::new(resolver),
        Arc::new(FixedFetcher(policy)),
        Arc::new(MemoryStore::new()),
    );
    lab.dns.add_txt("_mta-sts.dst.test", "v=STSv1; id=1");
    Lab {
        transport: lab
            .transport
            .with_mtasts(Arc::new(cache), TlsRoots::load(None).unwrap()),
        ..lab
    }
}

fn relaxed(mut req: DirectRequest) -> DirectRequest {
    req.tls_required_no = true;
    req
}

#[tokio::test]
async fn direct_tlsa_lookup_failure_skips_the_host_unless_tls_required_no() {
    let server = Server::start(Script::default()).await;
    let lab = dane_lab(&server).await;
    lab.dns.set_rcode(TLSA1, Rcode::ServFail);
    let req = request(&["a@dst.test"], 1, DialedIps::new());
    let result = lab.transport.deliver(&req).await;
    let got = codes(&result);
    assert!(got[0].starts_with("transient 451 4.4.3"), "{got:?}");
    assert!(got[0].contains("TLSA"), "{got:?}");
    // RFC 7672 §2.2: no "no DANE" downgrade, so no connection at all.
    assert!(lab.dialer.dialed().is_empty());
    let host = &result.hosts[0];
    assert_eq!(host.dane, Some(DaneHost::LookupFailed));
    assert_eq!(host.skip_reason, Some(SkipReason::TlsaLookup));
    assert!(host.authentic && host.looked_up);

    // TLS-Required: No: delivered (opportunistically), and counted.
    let result = lab.transport.deliver(&relaxed(req)).await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(result.ignored().collect::<Vec<_>>(), vec![Ignored::BadTlsa]);
}

#[tokio::test]
async fn direct_dane_without_starttls_is_not_delivered_in_plaintext() {
    let server = Server::start(Script::default()).await;
    let lab = dane_lab(&server).await;
    // Usable (3 1 1) and, in the second round, only unusable (1 1 1) records.
    for (usage, want) in [(3, DaneHost::Verify), (1, DaneHost::Unverified)] {
        lab.dns.remove(TLSA1);
        lab.dns.add_tlsa(TLSA1, usage, 1, 1, &[7; 32]);
        lab.dns.set_authentic(TLSA1, true);
        let before = server.connections();
        let result = lab
            .transport
            .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
            .await;
        let got = codes(&result);
        assert!(got[0].starts_with("transient"), "{got:?}");
        assert!(got[0].contains("STARTTLS"), "{got:?}");
        assert_eq!(result.hosts[0].dane, Some(want));
        assert_eq!(result.plaintext_fallbacks(), 0);
        assert_eq!(server.connections(), before + 1, "one session, no retry");
        assert!(server.transactions().is_empty());
    }

    // TLS-Required: No: the plaintext retry is allowed, and counted.
    let result = lab
        .transport
        .deliver(&relaxed(request(&["a@dst.test"], 1, DialedIps::new())))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(result.plaintext_fallbacks(), 1);
    assert_eq!(result.ignored().collect::<Vec<_>>(), vec![Ignored::BadTls]);
    assert_eq!(result.hosts[0].sessions[0].policy, "tls-required-no");
}

#[tokio::test]
async fn direct_inauthentic_tlsa_is_ignored() {
    let server = Server::start(Script::default()).await;
    let lab = dane_lab(&server).await;
    lab.dns.add_tlsa(TLSA1, 3, 1, 1, &[7; 32]);
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(result.hosts[0].dane, Some(DaneHost::NotApplicable));
    assert_eq!(result.hosts[0].policy, Some("opportunistic"));

    // Not authentic on the way to the host: not even looked up.
    lab.dns.set_authentic("mx1.dst.test", false);
    let queries = lab.dns.queries(TLSA1);
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(result.hosts[0].dane, None);
    assert_eq!(lab.dns.queries(TLSA1), queries);
}

#[tokio::test]
async fn direct_requiretls_needs_usable_dane() {
    let server = Server::start(Script::default()).await;
    let lab = dane_lab(&server).await;
    // Only unusable records: not enough for REQUIRETLS (RFC 8689 §4.2.1).
    lab.dns.add_tlsa(TLSA1, 0, 1, 1, &[7; 32]);
    lab.dns.set_authentic(TLSA1, true);
    let mut req = request(&["a@dst.test"], 1, DialedIps::new());
    req.message.params.requiretls = true;
    // TLS-Required: No is ignored next to REQUIRETLS (RFC 8689 §5).
    req.tls_required_no = true;
    let result = lab.transport.deliver(&req).await;
    let got = codes(&result);
    assert!(got[0].starts_with("permanent 554 5.7.30"), "{got:?}");
    assert!(lab.dialer.dialed().is_empty());
    assert_eq!(
        result.hosts[0].skip_reason,
        Some(SkipReason::RequireTlsNoPolicy)
    );
    assert_eq!(result.ignored().count(), 0);
}

const ENFORCE_MX2: &str = "version: STSv1\nmode: enforce\nmx: mx2.dst.test\nmax_age: 86400\n";
const TESTING_MX2: &str = "version: STSv1\nmode: testing\nmx: mx2.dst.test\nmax_age: 86400\n";

/// dst.test with mx1 (preferred) and mx2, both plain servers, in Plain DNS mode.
async fn two_mx_lab(server: &Server, policy: Option<&'static str>) -> Lab {
    let lab = with_mtasts(lab(|_| {}).await, policy);
    lab.dns.add_mx("dst.test", 10, "mx1.dst.test");
    lab.dns.add_mx("dst.test", 20, "mx2.dst.test");
    lab.dns.add_a("mx1.dst.test", MX1.parse().unwrap());
    lab.dns.add_a("mx2.dst.test", MX2.parse().unwrap());
    lab.dialer.route(MX1, server.addr);
    lab.dialer.route(MX2, server.addr);
    lab
}

#[tokio::test]
async fn direct_mtasts_enforce_skips_unlisted_hosts_and_requires_tls() {
    let server = Server::start(Script::default()).await;
    let lab = two_mx_lab(&server, Some(ENFORCE_MX2)).await;
    let req = request(&["a@dst.test"], 1, DialedIps::new());
    let result = lab.transport.deliver(&req).await;
    assert_eq!(result.mtasts, Some(Mode::Enforce));
    // mx1 is not listed: not even resolved. mx2 is, but offers no STARTTLS.
    let mx1 = &result.hosts[0];
    assert_eq!(mx1.skip_reason, Some(SkipReason::MtaStsMx));
    assert!(mx1.mtasts_mismatch && !mx1.looked_up);
    assert_eq!(result.hosts[1].policy, Some("required-verified"));
    assert_eq!(lab.dialer.dialed(), vec![MX2.parse::<IpAddr>().unwrap()]);
    let got = codes(&result);
    assert!(got[0].starts_with("transient"), "{got:?}");
    assert!(server.transactions().is_empty());

    // TLS-Required: No: mx1 is used after all (counted).
    let result = lab.transport.deliver(&relaxed(req)).await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(
        result.ignored().collect::<Vec<_>>(),
        vec![Ignored::MtaStsMx]
    );
    assert_eq!(result.hosts.len(), 1);
}

#[tokio::test]
async fn direct_mtasts_testing_and_missing_policies_deliver() {
    let server = Server::start(Script::default()).await;
    let lab = two_mx_lab(&server, Some(TESTING_MX2)).await;
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(result.mtasts, Some(Mode::Testing));
    assert!(result.hosts[0].mtasts_mismatch);
    assert_eq!(result.hosts[0].policy, Some("opportunistic"));

    // A policy that cannot be fetched (404): no MTA-STS.
    let server = Server::start(Script::default()).await;
    let lab = two_mx_lab(&server, None).await;
    let result = lab
        .transport
        .deliver(&request(&["a@dst.test"], 1, DialedIps::new()))
        .await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(result.mtasts, None);
    assert!(!result.hosts[0].mtasts_mismatch);
}

#[tokio::test]
async fn direct_mtasts_lookup_failure_waits_unless_tls_required_no() {
    let server = Server::start(Script::default()).await;
    let lab = two_mx_lab(&server, Some(ENFORCE_MX2)).await;
    lab.dns.set_rcode("_mta-sts.dst.test", Rcode::ServFail);
    let req = request(&["a@dst.test"], 1, DialedIps::new());
    let result = lab.transport.deliver(&req).await;
    let got = codes(&result);
    assert!(got[0].starts_with("transient 451 4.4.3"), "{got:?}");
    assert!(got[0].contains("MTA-STS"), "{got:?}");
    assert!(result.hosts.is_empty());
    assert!(lab.dialer.dialed().is_empty());

    let result = lab.transport.deliver(&relaxed(req)).await;
    assert_eq!(codes(&result), vec!["delivered"]);
    assert_eq!(
        result.ignored().collect::<Vec<_>>(),
        vec![Ignored::MtaStsPolicy]
    );
}
