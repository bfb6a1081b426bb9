//! DANE tests: record matching and the verifier on rcgen certificates, real TLS
//! handshakes through rustls, and policy lookups against the in-process DNS server.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::dns::Tlsa;
use crate::tls::{provider, TlsRoots};

fn tlsa(usage: u8, selector: u8, matching: u8, data: impl Into<Vec<u8>>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching_type: matching,
        data: data.into(),
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn sha512(data: &[u8]) -> Vec<u8> {
    Sha512::digest(data).to_vec()
}

/// A test CA and certificates it issues.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "relaygate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// An end-entity certificate for `names`, valid now (or expired in 2020).
    fn issue(&self, names: &[&str], expired: bool) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), key)
    }
}

fn self_signed(names: &[&str], expired: bool) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), key)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

fn verify(
    records: &[Tlsa],
    reference: &[&str],
    ee: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
) -> Result<Tlsa, DaneError> {
    let verifier = DaneVerifier::new(records, &names(reference)).unwrap();
    verifier.verify_chain(ee, chain, UnixTime::now())
}

#[test]
fn dane_spki_extraction_matches_rcgen() {
    let (cert, key) = self_signed(&["mx.example.org"], false);
    assert_eq!(spki_of(&cert).unwrap(), key.subject_public_key_info());
    assert_eq!(spki_of(&CertificateDer::from(vec![0x30, 0x00])), None);
}

#[test]
fn dane_ee_matching_table() {
    let (cert, key) = self_signed(&["mx.example.org"], false);
    let spki = key.subject_public_key_info();
    let der = cert.as_ref().to_vec();
    let table = [
        (tlsa(3, 1, 1, sha256(&spki)), true),
        (tlsa(3, 0, 1, sha256(&der)), true),
        (tlsa(3, 1, 2, sha512(&spki)), true),
        (tlsa(3, 0, 2, sha512(&der)), true),
        (tlsa(3, 1, 0, spki.clone()), true),
        (tlsa(3, 0, 0, der.clone()), true),
        // Wrong digest, or the right digest under the wrong selector / matching type.
        (tlsa(3, 1, 1, [0xab; 32]), false),
        (tlsa(3, 0, 1, sha256(&spki)), false),
        (tlsa(3, 1, 2, [0xab; 64]), false),
        (tlsa(3, 1, 0, der.clone()), false),
    ];
    for (record, ok) in table {
        assert_eq!(record_matches(&record, &cert), ok, "{record:?}");
        let result = verify(std::slice::from_ref(&record), &[], &cert, &[]);
        if ok {
            assert_eq!(result.unwrap(), record);
        } else {
            assert_eq!(result.unwrap_err(), DaneError::NoMatch { records: 1 });
        }
    }
}

/// RFC 7672 §3.1.1: DANE-EE ignores names and dates.
#[test]
fn dane_ee_ignores_names_and_expiry() {
    let (cert, key) = self_signed(&["unrelated.example"], true);
    let record = tlsa(3, 1, 1, sha256(&key.subject_public_key_info()));
    assert_eq!(
        verify(
            std::slice::from_ref(&record),
            &["mx.example.org"],
            &cert,
            &[]
        )
        .unwrap(),
        record
    );
}

#[test]
fn dane_ta_on_the_issuing_ca() {
    let ca = Ca::new();
    let ca_spki = spki_of(&ca.der()).unwrap();
    let (ee, _) = ca.issue(&["mx.example.org"], false);
    let chain = [ca.der()];
    let reference = ["mx.example.org", "example.org"];

    for record in [
        tlsa(2, 1, 1, sha256(&ca_spki)),
        tlsa(2, 0, 1, sha256(ca.der().as_ref())),
        tlsa(2, 1, 2, sha512(&ca_spki)),
        tlsa(2, 0, 0, ca.der().as_ref().to_vec()),
    ] {
        assert_eq!(
            verify(std::slice::from_ref(&record), &reference, &ee, &chain).unwrap(),
            record
        );
    }

    // The anchor must be in the chain the server sent...
    let record = tlsa(2, 1, 1, sha256(&ca_spki));
    assert_eq!(
        verify(std::slice::from_ref(&record), &reference, &ee, &[]).unwrap_err(),
        DaneError::NoMatch { records: 1 }
    );
    // ... unless the record carries the whole key (2 1 0).
    let full = tlsa(2, 1, 0, ca_spki.clone());
    assert_eq!(
        verify(std::slice::from_ref(&full), &reference, &ee, &[]).unwrap(),
        full
    );
    // A DANE-TA record matching the end-entity certificate itself is no anchor.
    let (self_signed_ee, key) = self_signed(&["mx.example.org"], false);
    let on_ee = tlsa(2, 1, 1, sha256(&key.subject_public_key_info()));
    assert!(verify(&[on_ee], &reference, &self_signed_ee, &[]).is_err());
}

#[test]
fn dane_ta_checks_names() {
    let ca = Ca::new();
    let record = tlsa(2, 1, 1, sha256(&spki_of(&ca.der()).unwrap()));
    let chain = [ca.der()];

    let (wrong, _) = ca.issue(&["other.example.net"], false);
    let err = verify(
        std::slice::from_ref(&record),
        &["mx.example.org", "example.org"],
        &wrong,
        &chain,
    )
    .unwrap_err();
    assert!(matches!(err, DaneError::NameMismatch { .. }), "{err}");
    assert!(err.to_string().contains("mx.example.org"), "{err}");

    // Any of the (up to four) reference identifiers will do, wildcards included.
    let (next_hop, _) = ca.issue(&["example.org"], false);
    assert!(verify(
        std::slice::from_ref(&record),
        &["mx.example.org", "example.org"],
        &next_hop,
        &chain
    )
    .is_ok());
    let (wildcard, _) = ca.issue(&["*.example.org"], false);
    assert!(verify(
        std::slice::from_ref(&record),
        &["mx.example.org"],
        &wildcard,
        &chain
    )
    .is_ok());
}

#[test]
fn dane_ta_checks_validity_and_signatures() {
    let ca = Ca::new();
    let record = tlsa(2, 1, 1, sha256(&spki_of(&ca.der()).unwrap()));
    let (expired, _) = ca.issue(&["mx.example.org"], true);
    let err = verify(
        std::slice::from_ref(&record),
        &["mx.example.org"],
        &expired,
        &[ca.der()],
    )
    .unwrap_err();
    assert!(matches!(err, DaneError::TrustAnchorChain { .. }), "{err}");
    assert!(err.to_string().contains("Expired"), "{err}");

    // Issued by another CA, but the server sends our anchor along: no path.
    let other = Ca::new();
    let (foreign, _) = other.issue(&["mx.example.org"], false);
    let err = verify(
        std::slice::from_ref(&record),
        &["mx.example.org"],
        &foreign,
        &[ca.der()],
    )
    .unwrap_err();
    assert!(matches!(err, DaneError::TrustAnchorChain { .. }), "{err}");
}

#[test]
fn dane_tries_every_record() {
    let ca = Ca::new();
    let (ee, key) = ca.issue(&["mx.example.org"], false);
    let records = [
        tlsa(3, 1, 1, [0x11; 32]),
        tlsa(2, 1, 1, [0x22; 32]),
        tlsa(3, 1, 1, sha256(&key.subject_public_key_info())),
    ];
    assert_eq!(
        verify(&records, &["mx.example.org"], &ee, &[ca.der()]).unwrap(),
        records[2]
    );
}

// ---- Real handshakes through rustls -------------------------------------------------

/// Serves one TLS handshake with this certificate chain and key; the key may belong to
/// another certificate (a peer that cannot sign for the certificate it shows).
async fn tls_server(
    chain: Vec<CertificateDer<'static>>,
    key: &KeyPair,
    tls12_only: bool,
) -> std::net::SocketAddr {
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let certified = Arc::new(CertifiedKey::new(chain, signing));
    let builder = if tls12_only {
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
    } else {
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
    };
    let config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(certified)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.write_all(b"220 ok\r\n").await;
            let _ = tls.shutdown().await;
        }
    });
    addr
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

async fn handshake(
    addr: std::net::SocketAddr,
    verifier: &Arc<DaneVerifier>,
) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(verifier.client_config());
    let name = ServerName::try_from("mx.example.org").unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(std::io::Error::other)??;
    let mut text = String::new();
    tls.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test]
async fn dane_handshake_ee_match_and_mismatch() {
    for tls12_only in [false, true] {
        let (cert, key) = self_signed(&["mx.example.org"], false);
        let good = tlsa(3, 1, 1, sha256(&key.subject_public_key_info()));
        let verifier = Arc::new(DaneVerifier::new(std::slice::from_ref(&good), &[]).unwrap());
        let addr = tls_server(vec![cert.clone()], &key, tls12_only).await;
        assert_eq!(handshake(addr, &verifier).await.unwrap(), "220 ok\r\n");
        assert_eq!(verifier.matched(), Some(good));

        let wrong = tlsa(3, 1, 1, [0xab; 32]);
        let verifier = Arc::new(DaneVerifier::new(&[wrong], &[]).unwrap());
        let addr = tls_server(vec![cert], &key, tls12_only).await;
        let err = handshake(addr, &verifier).await.unwrap_err();
        assert!(err.to_string().contains("NoMatch"), "{err}");
        assert_eq!(verifier.matched(), None);
    }
}

#[tokio::test]
async fn dane_handshake_ta_chain() {
    let ca = Ca::new();
    let (ee, key) = ca.issue(&["mx.example.org"], false);
    let record = tlsa(2, 1, 1, sha256(&spki_of(&ca.der()).unwrap()));
    let reference = names(&["mx.example.org", "example.org"]);
    let verifier = Arc::new(DaneVerifier::new(std::slice::from_ref(&record), &reference).unwrap());
    let addr = tls_server(vec![ee.clone(), ca.der()], &key, false).await;
    assert_eq!(handshake(addr, &verifier).await.unwrap(), "220 ok\r\n");
    assert_eq!(verifier.matched(), Some(record.clone()));

    // The same chain, but the names the client accepts do not include the certificate's.
    let verifier = Arc::new(DaneVerifier::new(&[record], &names(&["other.example"])).unwrap());
    let addr = tls_server(vec![ee, ca.der()], &key, false).await;
    let err = handshake(addr, &verifier).await.unwrap_err();
    assert!(err.to_string().contains("NameMismatch"), "{err}");
}

/// The certificate matches the record, but the server signs with another key: the
/// handshake signature check (delegated to rustls/ring) must refuse it.
#[tokio::test]
async fn dane_handshake_refuses_a_bad_signature() {
    for tls12_only in [false, true] {
        let (cert, key) = self_signed(&["mx.example.org"], false);
        let impostor = KeyPair::generate().unwrap();
        let record = tlsa(3, 0, 1, sha256(cert.as_ref()));
        let verifier = Arc::new(DaneVerifier::new(std::slice::from_ref(&record), &[]).unwrap());
        // The certificate alone passes the DANE check...
        assert_eq!(
            verifier.verify_chain(&cert, &[], UnixTime::now()).unwrap(),
            record
        );
        drop(key);
        // ...but the peer cannot prove it holds the certificate's key.
        let addr = tls_server(vec![cert], &impostor, tls12_only).await;
        let err = handshake(addr, &verifier).await.unwrap_err();
        let text = err.to_string().to_lowercase();
        assert!(text.contains("signature"), "tls12_only={tls12_only}: {err}");
    }
}

/// DANE and MTA-STS `enforce` on one host: both checks must pass.
#[tokio::test]
async fn dane_handshake_with_pkix_too() {
    let ca = Ca::new();
    let (ee, key) = ca.issue(&["mx.example.org"], false);
    let record = tlsa(3, 1, 1, sha256(&key.subject_public_key_info()));

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let trusted = TlsRoots::load(Some(&ca_file)).unwrap();
    let verifier = DaneVerifier::new(std::slice::from_ref(&record), &[])
        .unwrap()
        .require_pkix(&trusted, "mx.example.org")
        .unwrap();
    let addr = tls_server(vec![ee.clone(), ca.der()], &key, false).await;
    assert!(handshake(addr, &Arc::new(verifier)).await.is_ok());

    // DANE matches, but the CA is not trusted for PKIX: refused.
    let untrusted = TlsRoots::load(None).unwrap();
    let verifier = DaneVerifier::new(&[record], &[])
        .unwrap()
        .require_pkix(&untrusted, "mx.example.org")
        .unwrap();
    let addr = tls_server(vec![ee, ca.der()], &key, false).await;
    let err = handshake(addr, &Arc::new(verifier)).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

// ---- Policy lookups against the in-process DNS server ------------------------------

#[cfg(feature = "testkit")]
mod lookups {
    use super::*;
    use crate::dns::{DnssecMode, HickoryConfig, HickoryResolver};
    use crate::testkit::{Rcode, TestDns};

    fn resolver(dns: &TestDns, mode: DnssecMode) -> HickoryResolver {
        HickoryResolver::new(HickoryConfig {
            nameservers: vec![dns.addr()],
            mode,
            timeout: Duration::from_secs(2),
            cache_size: 0,
        })
        .unwrap()
    }

    const OWNER: &str = "_25._tcp.mx.example.org";

    #[tokio::test]
    async fn dane_lookup_table() {
        let dns = TestDns::start().await.unwrap();
        let r = resolver(&dns, DnssecMode::TrustAd);
        dns.add_a("mx.example.org", "127.0.0.1".parse().unwrap());

        // Usable record, authentic: verify.
        dns.add_tlsa(OWNER, 3, 1, 1, &[0xab; 32]);
        dns.set_authentic(OWNER, true);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", None, 25).await;
        assert_eq!(
            policy,
            DanePolicy::Verify {
                base_domain: "mx.example.org".into(),
                records: vec![tlsa(3, 1, 1, [0xab; 32])],
            }
        );

        // The same records without the AD bit: not applicable.
        dns.set_authentic(OWNER, false);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", None, 25).await;
        assert_eq!(
            policy,
            DanePolicy::NotApplicable {
                reason: NotApplicableReason::Insecure
            }
        );

        // Only unusable records: STARTTLS required, unverified.
        dns.remove(OWNER);
        dns.add_tlsa(OWNER, 1, 1, 1, &[0xab; 32]);
        dns.add_tlsa(OWNER, 3, 5, 1, &[0xab; 32]);
        dns.add_tlsa(OWNER, 3, 1, 7, &[0xab; 32]);
        dns.set_authentic(OWNER, true);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", None, 25).await;
        assert_eq!(
            policy,
            DanePolicy::RequireTlsUnverified {
                base_domain: "mx.example.org".into()
            }
        );

        // Secure denial: no DANE.
        dns.remove(OWNER);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", None, 25).await;
        assert_eq!(
            policy,
            DanePolicy::NotApplicable {
                reason: NotApplicableReason::NoRecords
            }
        );

        // SERVFAIL and a dropped query (timeout): the host fails temporarily.
        dns.set_rcode(OWNER, Rcode::ServFail);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", None, 25).await;
        assert!(
            matches!(&policy, DanePolicy::TemporaryFailure { error } if error.is_temporary()),
            "{policy:?}"
        );
        dns.set_drop(OWNER);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", None, 25).await;
        assert!(
            matches!(policy, DanePolicy::TemporaryFailure { .. }),
            "{policy:?}"
        );
    }

    #[tokio::test]
    async fn dane_lookup_expanded_name_first() {
        let dns = TestDns::start().await.unwrap();
        let r = resolver(&dns, DnssecMode::TrustAd);
        let expanded = "_25._tcp.real.example.net";
        dns.add_tlsa(expanded, 3, 1, 1, &[0x01; 32]);
        dns.set_authentic(expanded, true);
        dns.add_tlsa(OWNER, 3, 1, 1, &[0x02; 32]);
        dns.set_authentic(OWNER, true);

        let policy = lookup_tlsa_policy(&r, "mx.example.org", Some("real.example.net"), 25).await;
        assert_eq!(
            policy,
            DanePolicy::Verify {
                base_domain: "real.example.net".into(),
                records: vec![tlsa(3, 1, 1, [0x01; 32])],
            }
        );

        // Insecure at the expanded name: the original name's records.
        dns.set_authentic(expanded, false);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", Some("real.example.net"), 25).await;
        assert!(
            matches!(&policy, DanePolicy::Verify { base_domain, .. } if base_domain == "mx.example.org"),
            "{policy:?}"
        );

        // Nothing at the expanded name: the original name's records.
        dns.remove(expanded);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", Some("real.example.net"), 25).await;
        assert!(
            matches!(&policy, DanePolicy::Verify { base_domain, .. } if base_domain == "mx.example.org"),
            "{policy:?}"
        );

        // A failure at the expanded name fails the host; the original is not consulted.
        dns.set_rcode(expanded, Rcode::ServFail);
        let before = dns.queries(OWNER);
        let policy = lookup_tlsa_policy(&r, "mx.example.org", Some("real.example.net"), 25).await;
        assert!(
            matches!(policy, DanePolicy::TemporaryFailure { .. }),
            "{policy:?}"
        );
        assert_eq!(dns.queries(OWNER), before);
    }

    /// In-process DNSSEC validation: a signed TLSA answer verifies, a bogus one fails
    /// the host temporarily.
    #[tokio::test]
    async fn dane_lookup_validated_and_bogus() {
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
        let owner = "_25._tcp.mx.secure";
        dns.add_tlsa(owner, 3, 1, 1, &[0x33; 32]);
        let policy = lookup_tlsa_policy(&r, "mx.secure", None, 25).await;
        assert!(matches!(policy, DanePolicy::Verify { .. }), "{policy:?}");

        dns.set_bogus(owner, true);
        let policy = lookup_tlsa_policy(&r, "mx.secure", None, 25).await;
        assert!(
            matches!(
                &policy,
                DanePolicy::TemporaryFailure {
                    error: crate::dns::DnsError::Bogus { .. }
                }
            ),
            "{policy:?}"
        );

        // Port 2525 in the owner name (direct.port in labs).
        dns.add_tlsa("_2525._tcp.mx.secure", 3, 1, 1, &[0x44; 32]);
        let policy = lookup_tlsa_policy(&r, "mx.secure", None, 2525).await;
        assert!(
            matches!(&policy, DanePolicy::Verify { records, .. } if records[0].data == [0x44; 32]),
            "{policy:?}"
        );
    }
}
