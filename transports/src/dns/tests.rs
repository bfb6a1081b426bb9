//! Tests of the DNS layer against the in-process test server ([`crate::testkit::TestDns`]):
//! the hickory resolver in each mode, then destinations and host resolution on top of it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::*;
use crate::outcome::Severity;
use crate::testkit::{Rcode, TestDns};

async fn server() -> TestDns {
    TestDns::start().await.expect("start test DNS server")
}

fn resolver_for(servers: &[&TestDns], mode: DnssecMode) -> HickoryResolver {
    HickoryResolver::new(HickoryConfig {
        nameservers: servers.iter().map(|s| s.addr()).collect(),
        mode,
        timeout: Duration::from_secs(5),
        cache_size: 0,
    })
    .expect("resolver")
}

fn resolver(dns: &TestDns, mode: DnssecMode) -> HickoryResolver {
    resolver_for(&[dns], mode)
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[tokio::test]
async fn dns_answers_each_record_type() {
    let dns = server().await;
    dns.add_a("host.example.org", v4("192.0.2.1"));
    dns.add_a("host.example.org", v4("192.0.2.2"));
    dns.add_aaaa("host.example.org", v6("2001:db8::1"));
    dns.add_mx("example.org", 10, "mx.example.org");
    dns.add_tlsa("_25._tcp.mx.example.org", 3, 1, 1, &[0xab; 32]);
    dns.add_ptr("192.0.2.1".parse().unwrap(), "host.example.org");
    dns.add_zone_text(
        "; MTA-STS and SPF\n\
         _mta-sts.example.org. 300 IN TXT \"v=STSv1; \" \"id=20240101\"\n\
         example.org. TXT \"v=spf1 -all\"\n",
    )
    .unwrap();
    let r = resolver(&dns, DnssecMode::Plain);

    let a = r.lookup_a("Host.Example.org.").await.unwrap();
    assert_eq!(a.records, [v4("192.0.2.1"), v4("192.0.2.2")]);
    assert!(!a.authentic);
    let aaaa = r.lookup_aaaa("host.example.org").await.unwrap();
    assert_eq!(aaaa.records, [v6("2001:db8::1")]);
    let mx = r.lookup_mx("example.org").await.unwrap();
    assert_eq!(
        mx.records,
        [Mx {
            preference: 10,
            exchange: "mx.example.org".into()
        }]
    );
    let sts = r.lookup_txt("_mta-sts.example.org").await.unwrap();
    assert_eq!(sts.records, ["v=STSv1; id=20240101"]);
    let spf = r.lookup_txt("example.org").await.unwrap();
    assert_eq!(spf.records, ["v=spf1 -all"]);
    let tlsa = r.lookup_tlsa("_25._tcp.mx.example.org").await.unwrap();
    assert_eq!(
        tlsa.records,
        [Tlsa {
            usage: 3,
            selector: 1,
            matching_type: 1,
            data: vec![0xab; 32]
        }]
    );
    let ptr = r.lookup_ptr("192.0.2.1".parse().unwrap()).await.unwrap();
    assert_eq!(ptr.records, ["host.example.org"]);
    assert_eq!(dns.queries("host.example.org"), 2);
}

#[tokio::test]
async fn dns_negative_answers_are_distinguished() {
    let dns = server().await;
    dns.add_a("a.b.example.org", v4("192.0.2.1"));
    dns.add_a("broken.example.org", v4("192.0.2.1"));
    dns.set_rcode("broken.example.org", Rcode::ServFail);
    dns.set_rcode("refused.example.org", Rcode::Refused);
    dns.set_drop("slow.example.org");
    let r = HickoryResolver::new(HickoryConfig {
        nameservers: vec![dns.addr()],
        timeout: Duration::from_secs(1),
        cache_size: 0,
        ..HickoryConfig::default()
    })
    .unwrap();

    let err = r.lookup_a("nx.example.org").await.unwrap_err();
    assert!(
        matches!(
            err,
            DnsError::NxDomain {
                authentic: false,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!((err.name(), err.qtype()), ("nx.example.org", QueryType::A));
    assert_eq!(err.class(), ErrorClass::NotFound);

    let err = r.lookup_mx("a.b.example.org").await.unwrap_err();
    assert!(matches!(err, DnsError::NoData { .. }), "{err}");
    // An empty non-terminal exists: NODATA, not NXDOMAIN (RFC 8020).
    let err = r.lookup_a("b.example.org").await.unwrap_err();
    assert!(matches!(err, DnsError::NoData { .. }), "{err}");

    let err = r.lookup_a("broken.example.org").await.unwrap_err();
    assert!(matches!(err, DnsError::ServFail { .. }), "{err}");
    assert!(err.is_temporary());

    let err = r.lookup_a("refused.example.org").await.unwrap_err();
    assert!(matches!(err, DnsError::Other { .. }), "{err}");
    assert!(err.to_string().contains("Refused"), "{err}");

    let err = r.lookup_a("slow.example.org").await.unwrap_err();
    assert!(matches!(err, DnsError::Timeout { .. }), "{err}");
    assert!(dns.queries("slow.example.org") >= 1);
}

#[tokio::test]
async fn dns_trust_ad_reports_the_ad_bit() {
    let dns = server().await;
    dns.add_a("signed.example", v4("192.0.2.1"));
    dns.add_a("unsigned.example", v4("192.0.2.2"));
    dns.set_authentic("signed.example", true);
    dns.set_authentic("nx.signed.example", true);
    let trust = resolver(&dns, DnssecMode::TrustAd);
    let plain = resolver(&dns, DnssecMode::Plain);

    assert!(trust.lookup_a("signed.example").await.unwrap().authentic);
    assert!(!trust.lookup_a("unsigned.example").await.unwrap().authentic);
    // Negative answers carry the bit too.
    let nodata = trust.lookup_mx("signed.example").await.unwrap_err();
    assert!(
        matches!(
            nodata,
            DnsError::NoData {
                authentic: true,
                ..
            }
        ),
        "{nodata}"
    );
    let nx = trust.lookup_a("nx.signed.example").await.unwrap_err();
    assert!(
        matches!(
            nx,
            DnsError::NxDomain {
                authentic: true,
                ..
            }
        ),
        "{nx}"
    );
    let nx = trust.lookup_a("nx.unsigned.example").await.unwrap_err();
    assert!(
        matches!(
            nx,
            DnsError::NxDomain {
                authentic: false,
                ..
            }
        ),
        "{nx}"
    );
    // Plain mode never trusts it.
    assert!(!plain.lookup_a("signed.example").await.unwrap().authentic);
    let nodata = plain.lookup_mx("signed.example").await.unwrap_err();
    assert!(!nodata.authentic());
}

#[tokio::test]
async fn dns_truncated_udp_answer_is_retried_over_tcp() {
    let dns = server().await;
    dns.add_mx("big.example", 10, "mx.big.example");
    dns.set_truncate("big.example");
    let r = resolver(&dns, DnssecMode::Plain);
    let mx = r.lookup_mx("big.example").await.unwrap();
    assert_eq!(mx.records[0].exchange, "mx.big.example");
    assert_eq!(dns.queries("big.example"), 2, "one UDP and one TCP query");
}

#[tokio::test]
async fn dns_next_nameserver_after_servfail() {
    let failing = server().await;
    let good = server().await;
    failing.set_rcode("example.net", Rcode::ServFail);
    good.add_mx("example.net", 5, "mx.example.net");
    let r = resolver_for(&[&failing, &good], DnssecMode::Plain);
    let mx = r.lookup_mx("example.net").await.unwrap();
    assert_eq!(mx.records[0].preference, 5);
    assert_eq!(failing.queries("example.net"), 1);
    assert_eq!(good.queries("example.net"), 1);
}

#[tokio::test]
async fn dns_cache_keeps_answers_and_negatives() {
    let dns = server().await;
    dns.add_a("cached.example", v4("192.0.2.9"));
    let r = HickoryResolver::new(HickoryConfig {
        nameservers: vec![dns.addr()],
        ..HickoryConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        assert_eq!(r.lookup_a("cached.example").await.unwrap().records.len(), 1);
        assert!(r.lookup_a("nx.cached.example").await.is_err());
    }
    assert_eq!(dns.queries("cached.example"), 1);
    // Without an SOA there is no negative TTL: negatives are asked again.
    assert_eq!(dns.queries("nx.cached.example"), 3);
}

async fn signed_setup() -> (TestDns, HickoryResolver, tempfile::TempDir) {
    let dns = TestDns::signed().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("root.key");
    std::fs::write(&anchor, dns.trust_anchor().unwrap()).unwrap();
    let r = resolver(
        &dns,
        DnssecMode::Validate {
            trust_anchor: Some(anchor),
        },
    );
    (dns, r, dir)
}

#[tokio::test]
async fn dns_validate_secure_bogus_and_insecure() {
    let (dns, r, _dir) = signed_setup().await;
    dns.add_mx("secure", 10, "mx.secure");
    dns.add_a("mx.secure", v4("192.0.2.25"));
    dns.add_a("bogus", v4("192.0.2.66"));
    dns.set_bogus("bogus", true);
    dns.add_insecure_zone("plain");
    dns.add_a("mx.plain", v4("192.0.2.80"));

    let mx = r.lookup_mx("secure").await.unwrap();
    assert!(mx.authentic);
    let a = r.lookup_a("mx.secure").await.unwrap();
    assert_eq!(
        (a.records.as_slice(), a.authentic),
        (&[v4("192.0.2.25")][..], true)
    );

    let err = r.lookup_a("bogus").await.unwrap_err();
    assert!(matches!(err, DnsError::Bogus { .. }), "{err}");
    assert!(err.is_temporary());

    let insecure = r.lookup_a("mx.plain").await.unwrap();
    assert!(!insecure.authentic);
    assert_eq!(insecure.records, [v4("192.0.2.80")]);
}

#[tokio::test]
async fn dns_validate_needs_the_right_trust_anchor() {
    let dns = TestDns::signed().await.unwrap();
    let other = TestDns::signed().await.unwrap();
    dns.add_a("secure", v4("192.0.2.1"));
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("other.key");
    std::fs::write(&anchor, other.trust_anchor().unwrap()).unwrap();
    let r = resolver(
        &dns,
        DnssecMode::Validate {
            trust_anchor: Some(anchor),
        },
    );
    // Signed, but by a key that this resolver does not trust: bogus, not insecure.
    let err = r.lookup_a("secure").await.unwrap_err();
    assert!(matches!(err, DnsError::Bogus { .. }), "{err}");
    // The unsigned server has no anchor to give.
    assert!(server().await.trust_anchor().is_none());
}

#[tokio::test]
async fn dns_validate_negative_answers() {
    let (dns, r, _dir) = signed_setup().await;
    dns.add_a("secure", v4("192.0.2.1"));
    dns.add_insecure_zone("plain");
    dns.add_a("host.plain", v4("192.0.2.2"));

    let nodata = r.lookup_mx("secure").await.unwrap_err();
    assert!(
        matches!(
            nodata,
            DnsError::NoData {
                authentic: true,
                ..
            }
        ),
        "{nodata}"
    );
    let nx = r.lookup_a("missing").await.unwrap_err();
    assert!(
        matches!(
            nx,
            DnsError::NxDomain {
                authentic: true,
                ..
            }
        ),
        "{nx}"
    );
    let nx = r.lookup_a("missing.plain").await.unwrap_err();
    assert!(
        matches!(
            nx,
            DnsError::NxDomain {
                authentic: false,
                ..
            }
        ),
        "{nx}"
    );
    let nodata = r.lookup_tlsa("host.plain").await.unwrap_err();
    assert!(
        matches!(
            nodata,
            DnsError::NoData {
                authentic: false,
                ..
            }
        ),
        "{nodata}"
    );
}

#[tokio::test]
async fn dns_destinations_in_preference_order() {
    let dns = server().await;
    dns.add_mx("example.com", 20, "backup.example.com");
    dns.add_mx("example.com", 10, "Primary.example.com.");
    // Delivery code holds the resolver as a trait object.
    let r: std::sync::Arc<dyn Resolver> = std::sync::Arc::new(resolver(&dns, DnssecMode::Plain));
    let d = gather_destinations(r.as_ref(), "Example.COM")
        .await
        .unwrap();
    let hosts: Vec<String> = d.hosts.iter().map(|h| h.host.to_string()).collect();
    assert_eq!(hosts, ["primary.example.com", "backup.example.com"]);
    assert_eq!(d.hosts[0].preference, 10);
    assert_eq!(d.original_domain, "example.com");
    assert_eq!(d.expanded_domain, "example.com");
    assert!(!d.implicit && !d.authentic_original && !d.authentic_expanded);
}

#[tokio::test]
async fn dns_destinations_randomize_equal_preference() {
    let dns = server().await;
    dns.add_mx("equal.example", 10, "a.equal.example");
    dns.add_mx("equal.example", 10, "b.equal.example");
    dns.add_mx("equal.example", 5, "first.equal.example");
    let r = HickoryResolver::new(HickoryConfig {
        nameservers: vec![dns.addr()],
        ..HickoryConfig::default()
    })
    .unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..64 {
        let d = gather_destinations(&r, "equal.example").await.unwrap();
        let hosts: Vec<String> = d.hosts.iter().map(|h| h.host.to_string()).collect();
        assert_eq!(hosts[0], "first.equal.example");
        seen.insert(hosts[1].clone());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both orders of equal-preference hosts");
}

#[tokio::test]
async fn dns_destinations_follow_cnames_with_authenticity() {
    let dns = server().await;
    dns.add_cname("alias.example", "step.example");
    dns.add_cname("step.example", "target.example");
    dns.add_mx("target.example", 10, "mx.target.example");
    dns.set_authentic("alias.example", true);
    dns.set_authentic("target.example", true);
    let r = resolver(&dns, DnssecMode::TrustAd);

    let d = gather_destinations(&r, "alias.example").await.unwrap();
    assert_eq!(d.original_domain, "alias.example");
    assert_eq!(d.expanded_domain, "target.example");
    assert_eq!(d.hosts[0].host, Host::Name("mx.target.example".into()));
    // The first step was secure; the middle one was not.
    assert!(d.authentic_original);
    assert!(!d.authentic_expanded);

    dns.set_authentic("step.example", true);
    let d = gather_destinations(&r, "alias.example").await.unwrap();
    assert!(d.authentic_original && d.authentic_expanded);
}

#[tokio::test]
async fn dns_destinations_failures_and_their_severity() {
    let dns = server().await;
    dns.add_cname("loop1.example", "loop2.example");
    dns.add_cname("loop2.example", "loop1.example");
    for i in 0..=MAX_CNAME_HOPS {
        dns.add_cname(&format!("c{i}.example"), &format!("c{}.example", i + 1));
    }
    dns.add_mx("nullmx.example", 0, ".");
    dns.add_mx("failing.example", 10, "mx.failing.example");
    dns.set_rcode("failing.example", Rcode::ServFail);
    let r = resolver(&dns, DnssecMode::Plain);

    let err = gather_destinations(&r, "loop1.example").await.unwrap_err();
    assert!(matches!(err, DestinationError::CnameLoop { .. }), "{err}");
    assert_eq!(err.severity(), Severity::Temporary);

    let err = gather_destinations(&r, "c0.example").await.unwrap_err();
    assert!(
        matches!(err, DestinationError::CnameChainTooLong { .. }),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Temporary);
    assert_eq!(dns.queries(&format!("c{MAX_CNAME_HOPS}.example")), 0);

    let err = gather_destinations(&r, "nullmx.example").await.unwrap_err();
    assert!(matches!(err, DestinationError::NullMx { .. }), "{err}");
    assert_eq!(err.severity(), Severity::Permanent);

    let err = gather_destinations(&r, "nx.example").await.unwrap_err();
    assert!(
        matches!(err, DestinationError::NoSuchDomain { .. }),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Permanent);

    let err = gather_destinations(&r, "failing.example")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            DestinationError::Dns {
                source: DnsError::ServFail { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Temporary);

    let err = gather_destinations(&r, "[300.1.1.1]").await.unwrap_err();
    assert_eq!(err.severity(), Severity::Permanent);
}

#[tokio::test]
async fn dns_destinations_implicit_mx_and_address_literals() {
    let dns = server().await;
    dns.add_a("nomx.example", v4("192.0.2.7"));
    dns.set_authentic("nomx.example", true);
    let r = resolver(&dns, DnssecMode::TrustAd);

    let d = gather_destinations(&r, "nomx.example").await.unwrap();
    assert!(d.implicit);
    assert_eq!(
        d.hosts,
        [MxHost {
            host: Host::Name("nomx.example".into()),
            preference: 0
        }]
    );
    assert!(d.authentic_original && d.authentic_expanded);

    let before = dns.total_queries();
    let d = gather_destinations(&r, "[192.0.2.1]").await.unwrap();
    assert_eq!(d.hosts[0].host, Host::Ip("192.0.2.1".parse().unwrap()));
    let d6 = gather_destinations(&r, "[IPv6:2001:db8::25]")
        .await
        .unwrap();
    assert_eq!(d6.hosts[0].host, Host::Ip("2001:db8::25".parse().unwrap()));
    let addrs = resolve_host(&r, &d6.hosts[0].host, AddressFamilies::BOTH)
        .await
        .unwrap();
    assert_eq!(addrs.ips, [IpAddr::from(v6("2001:db8::25"))]);
    assert_eq!(dns.total_queries(), before, "address literals need no DNS");
}

#[tokio::test]
async fn dns_resolve_host_follows_cnames_and_ands_authenticity() {
    let dns = server().await;
    dns.add_cname("mx.example", "real.example");
    dns.add_a("real.example", v4("192.0.2.10"));
    dns.add_aaaa("real.example", v6("2001:db8::10"));
    dns.set_authentic("mx.example", true);
    dns.set_authentic("real.example", true);
    let r = resolver(&dns, DnssecMode::TrustAd);
    let host = Host::Name("MX.example.".into());

    let addrs = resolve_host(&r, &host, AddressFamilies::BOTH)
        .await
        .unwrap();
    assert_eq!(addrs.expanded_name, "real.example");
    assert_eq!(
        addrs.ips,
        [
            IpAddr::from(v6("2001:db8::10")),
            IpAddr::from(v4("192.0.2.10"))
        ]
    );
    assert!(addrs.authentic);

    let only4 = AddressFamilies {
        v4: true,
        v6: false,
    };
    let addrs = resolve_host(&r, &host, only4).await.unwrap();
    assert_eq!(addrs.ips, [IpAddr::from(v4("192.0.2.10"))]);

    // One step not authentic: the whole answer is not.
    dns.set_authentic("mx.example", false);
    let addrs = resolve_host(&r, &host, AddressFamilies::BOTH)
        .await
        .unwrap();
    assert!(!addrs.authentic);
}

#[tokio::test]
async fn dns_resolve_host_failures() {
    let dns = server().await;
    dns.add_mx("v6less.example", 10, "mx.v6less.example");
    dns.add_a("v4only.example", v4("192.0.2.4"));
    dns.add_aaaa("half.example", v6("2001:db8::4"));
    dns.set_rcode("broken.example", Rcode::ServFail);
    let r = resolver(&dns, DnssecMode::Plain);
    let name = |n: &str| Host::Name(n.into());
    let only6 = AddressFamilies {
        v4: false,
        v6: true,
    };

    let err = resolve_host(&r, &name("v4only.example"), only6)
        .await
        .unwrap_err();
    assert!(matches!(err, DestinationError::NoAddresses { .. }), "{err}");
    assert_eq!(err.severity(), Severity::Permanent);

    let err = resolve_host(&r, &name("gone.example"), AddressFamilies::BOTH)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DestinationError::NoSuchDomain { .. }),
        "{err}"
    );

    let err = resolve_host(&r, &name("broken.example"), AddressFamilies::BOTH)
        .await
        .unwrap_err();
    assert_eq!(err.severity(), Severity::Temporary, "{err}");

    // One family missing is not an error when the other has addresses.
    let addrs = resolve_host(&r, &name("half.example"), AddressFamilies::BOTH)
        .await
        .unwrap();
    assert_eq!(addrs.ips, [IpAddr::from(v6("2001:db8::4"))]);
}
