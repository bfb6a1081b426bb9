//! Smarthost delivery: TLS modes, certificate verification and the connection pool.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use relaygate_transports::{
    Delivery, RcptOutcome, Severity, SmarthostConfig, SmarthostTls, SmarthostTransport,
    TlsClientConfigs, TlsInfo, TlsRoots, TransportError,
};

use crate::{
    fake::{ehlo, greeting, rx, tx, FakeServer, FixedConnector, Step},
    pki::TestPki,
    session::{message, timeouts},
};

pub const HOST: &str = "smarthost.test";

pub fn config(tls: SmarthostTls) -> SmarthostConfig {
    SmarthostConfig {
        name: "provider".into(),
        host: HOST.into(),
        port: 587,
        more_hosts: Vec::new(),
        reply_rules: Default::default(),
        tls,
        verify_certificates: true,
        ehlo_name: "client.test".into(),
        timeouts: timeouts(),
        max_idle: 4,
        idle_timeout: Duration::from_secs(60),
        auth: None,
        auth_failure_holddown: Duration::ZERO,
    }
}

pub fn transport(
    server: &FakeServer,
    cfg: SmarthostConfig,
    roots: &TlsRoots,
) -> (SmarthostTransport, Arc<FixedConnector>) {
    let connector = FixedConnector::new(server.addr());
    let t = SmarthostTransport::new(cfg, &TlsClientConfigs::new(roots), connector.clone());
    (t, connector)
}

pub fn no_roots() -> TlsRoots {
    TlsRoots::load(None).unwrap()
}

/// A plain transaction for one recipient with body "x", pipelined.
pub fn txn() -> Vec<Step> {
    vec![
        rx("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n"),
        tx("250 ok\r\n250 ok\r\n354 go\r\n"),
        rx("x\r\n.\r\n"),
        tx("250 2.0.0 queued\r\n"),
    ]
}

/// A reused connection's first step: the RSET probe pipelined with the transaction.
fn probed_group() -> Step {
    rx("RSET\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
}

fn plain_session() -> Vec<Step> {
    let mut s = vec![greeting()];
    s.extend(ehlo(&["PIPELINING"]));
    s
}

pub fn delivered(d: &Delivery) -> bool {
    d.outcomes
        .iter()
        .all(|o| matches!(o, RcptOutcome::Delivered(_)))
}

fn tls13() -> TlsInfo {
    TlsInfo::Verified {
        version: "TLSv1.3".into(),
    }
}

#[tokio::test]
async fn starttls_discards_old_capabilities_and_verifies() {
    let pki = TestPki::new(HOST);
    let body = "é\r\n";
    let mut script = vec![greeting()];
    // Before TLS: SIZE too small for the message and no PIPELINING/8BITMIME. Had the
    // client kept this list (the reference design's bug), it would refuse the message.
    script.extend(ehlo(&["SIZE 3", "STARTTLS"]));
    script.extend([rx("STARTTLS\r\n"), tx("220 ready\r\n"), Step::Tls]);
    script.extend(ehlo(&["PIPELINING", "8BITMIME", "SIZE 1000"]));
    script.extend([
        rx(&format!(
            "MAIL FROM:<sender@example.org> SIZE={} BODY=8BITMIME\r\nRCPT TO:<a@x.test>\r\nDATA\r\n",
            body.len()
        )),
        tx("250 ok\r\n250 ok\r\n354 go\r\n"),
        rx(body),
        rx(".\r\n"),
        tx("250 ok\r\n"),
    ]);
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let (t, _) = transport(
        &server,
        config(SmarthostTls::StartTls { required: true }),
        &pki.roots(),
    );
    let mut msg = message(&["a@x.test"], body);
    msg.params.eight_bit = true;
    let d = t.deliver(&msg).await;
    server.finish().await.unwrap();
    let d = d.unwrap();
    assert!(delivered(&d), "{d:?}");
    assert_eq!(d.remote.tls, tls13());
    assert_eq!(d.remote.host, HOST);
    assert!(!d.remote.reused);
}

#[tokio::test]
async fn implicit_tls_verified() {
    let pki = TestPki::new(HOST);
    let mut script = vec![Step::Tls, greeting()];
    script.extend(ehlo(&["PIPELINING"]));
    script.extend(txn());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let (t, _) = transport(&server, config(SmarthostTls::Implicit), &pki.roots());
    let addr = server.addr();
    let d = t.deliver(&message(&["a@x.test"], "x")).await;
    server.finish().await.unwrap();
    let d = d.unwrap();
    assert!(delivered(&d));
    assert_eq!(d.remote.tls, tls13());
    assert_eq!(d.remote.addr, Some(addr));
}

#[tokio::test]
async fn untrusted_certificate_fails_unless_verification_is_off() {
    let pki = TestPki::new(HOST);
    let mut ok = vec![Step::Tls, greeting()];
    ok.extend(ehlo(&["PIPELINING"]));
    ok.extend(txn());
    // First connection: the client refuses the handshake. Second: verification is off.
    let server =
        FakeServer::start_with_tls(vec![vec![Step::Tls], ok], Some(pki.server_config.clone()))
            .await;
    // Only the public roots: the test CA is unknown.
    let (t, _) = transport(&server, config(SmarthostTls::Implicit), &no_roots());
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert_eq!(err.severity(), Severity::Temporary);

    let mut cfg = config(SmarthostTls::Implicit);
    cfg.verify_certificates = false;
    let (t, _) = transport(&server, cfg, &no_roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    let results = server.finish().await;
    assert!(delivered(&d));
    assert_eq!(
        d.remote.tls,
        TlsInfo::Unverified {
            version: "TLSv1.3".into()
        }
    );
    // The first connection's handshake failed on the server side too.
    let err = results.unwrap_err();
    assert!(
        err.contains("connection 0") && err.contains("TLS handshake"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_host_name_fails_verification() {
    let pki = TestPki::new("other.test");
    let server =
        FakeServer::start_with_tls(vec![vec![Step::Tls]], Some(pki.server_config.clone())).await;
    let (t, _) = transport(&server, config(SmarthostTls::Implicit), &pki.roots());
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    let _ = server.finish().await;
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
}

#[tokio::test]
async fn required_starttls_not_offered_fails_temporarily() {
    let server = FakeServer::start(vec![plain_session()]).await;
    let (t, _) = transport(
        &server,
        config(SmarthostTls::StartTls { required: true }),
        &no_roots(),
    );
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    server.finish().await.unwrap();
    assert!(
        matches!(err, TransportError::StartTlsUnavailable { .. }),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Temporary);
    assert_eq!(t.idle_count(), 0);
}

#[tokio::test]
async fn optional_starttls_falls_back_to_plaintext() {
    // Not offered at all, then offered but refused with 454.
    let mut first = plain_session();
    first.extend(txn());
    let mut second = vec![greeting()];
    second.extend(ehlo(&["PIPELINING", "STARTTLS"]));
    second.extend([rx("STARTTLS\r\n"), tx("454 4.7.0 TLS not available\r\n")]);
    second.extend(txn());
    let server = FakeServer::start(vec![first, second]).await;
    let mut cfg = config(SmarthostTls::StartTls { required: false });
    cfg.max_idle = 0;
    let (t, _) = transport(&server, cfg.clone(), &no_roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    assert_eq!(d.remote.tls, TlsInfo::None);
    let (t, _) = transport(&server, cfg, &no_roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    assert_eq!(d.remote.tls, TlsInfo::None);
    assert!(delivered(&d));
    server.finish().await.unwrap();
}

#[tokio::test]
async fn plaintext_mode_never_starttls() {
    let mut script = vec![greeting()];
    script.extend(ehlo(&["PIPELINING", "STARTTLS"]));
    script.extend(txn());
    let server = FakeServer::start(vec![script]).await;
    let (t, _) = transport(&server, config(SmarthostTls::None), &no_roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await;
    server.finish().await.unwrap();
    assert_eq!(d.unwrap().remote.tls, TlsInfo::None);
}

#[tokio::test]
async fn two_deliveries_share_one_connection() {
    let mut script = plain_session();
    script.extend(txn());
    script.extend([rx("RSET\r\n"), tx("250 ok\r\n")]);
    script.extend(txn());
    let server = FakeServer::start(vec![script]).await;
    let (t, connector) = transport(&server, config(SmarthostTls::None), &no_roots());
    let first = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    assert_eq!(t.idle_count(), 1);
    let second = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    server.finish().await.unwrap();
    assert!(!first.remote.reused);
    assert!(second.remote.reused && delivered(&second));
    assert_eq!(connector.connects.load(Ordering::SeqCst), 1);
}

/// The reuse probe goes out with the transaction: the server sees RSET, MAIL, RCPT and
/// DATA before it answers anything (a probe waiting for its reply first never gets one
/// here, and times out).
#[tokio::test]
async fn pooled_connection_probe_costs_no_round_trip() {
    let mut script = plain_session();
    script.extend(txn());
    script.extend([
        probed_group(),
        tx("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        rx("x\r\n.\r\n"),
        tx("250 2.0.0 queued\r\n"),
    ]);
    let server = FakeServer::start(vec![script]).await;
    let (t, connector) = transport(&server, config(SmarthostTls::None), &no_roots());
    t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    let second = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    server.finish().await.unwrap();
    assert!(second.remote.reused && delivered(&second));
    assert_eq!(connector.connects.load(Ordering::SeqCst), 1);
}

/// A pooled connection the server closed with 421 (its idle timeout) answers the
/// pipelined probe with that 421: the delivery goes to a fresh connection and the 421 is
/// nobody's outcome.
#[tokio::test]
async fn pooled_connection_refusing_the_pipelined_probe_is_replaced() {
    let mut first = plain_session();
    first.extend(txn());
    first.extend([
        probed_group(),
        tx("421 4.4.2 idle too long, closing\r\n"),
        Step::Close,
    ]);
    let mut second = plain_session();
    second.extend(txn());
    let server = FakeServer::start(vec![first, second]).await;
    let (t, connector) = transport(&server, config(SmarthostTls::None), &no_roots());
    t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    let d = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    server.finish().await.unwrap();
    assert!(delivered(&d) && !d.remote.reused, "{d:?}");
    assert_eq!(connector.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_pooled_connection_is_replaced() {
    let mut first = plain_session();
    first.extend(txn());
    first.push(Step::Close);
    let mut second = plain_session();
    second.extend(txn());
    let server = FakeServer::start(vec![first, second]).await;
    let (t, connector) = transport(&server, config(SmarthostTls::None), &no_roots());
    t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    let d = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    let accepts = server.accepts();
    server.finish().await.unwrap();
    assert!(delivered(&d) && !d.remote.reused);
    assert_eq!(accepts, 2);
    assert_eq!(connector.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn pooled_connection_dying_after_rset_is_retried_fresh() {
    let mut first = plain_session();
    first.extend(txn());
    first.extend([rx("RSET\r\n"), tx("250 ok\r\n"), Step::Close]);
    let mut second = plain_session();
    second.extend(txn());
    let server = FakeServer::start(vec![first, second]).await;
    let (t, connector) = transport(&server, config(SmarthostTls::None), &no_roots());
    t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    let d = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    server.finish().await.unwrap();
    assert!(delivered(&d) && !d.remote.reused);
    assert_eq!(connector.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn failed_transaction_is_reset_before_pooling() {
    let mut script = plain_session();
    script.extend([
        rx("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
        tx("250 ok\r\n250 ok\r\n550 5.1.1 b unknown\r\n354 go\r\n"),
        rx("x\r\n.\r\n"),
        tx("250 ok\r\n"),
        // Second message: RSET as reuse probe, MAIL refused, so RSET before pooling.
        rx("RSET\r\n"),
        tx("250 ok\r\n"),
        rx("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n"),
        tx("451 4.7.1 slow down\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n"),
        rx("RSET\r\n"),
        tx("250 ok\r\n"),
        // Third message: the reuse probe again.
        rx("RSET\r\n"),
        tx("250 ok\r\n"),
    ]);
    script.extend(txn());
    let server = FakeServer::start(vec![script]).await;
    let (t, _) = transport(&server, config(SmarthostTls::None), &no_roots());
    let d = t
        .deliver(&message(&["a@x.test", "b@x.test"], "x"))
        .await
        .unwrap();
    assert!(matches!(d.outcomes[0], RcptOutcome::Delivered(_)));
    assert!(matches!(&d.outcomes[1], RcptOutcome::Permanent(r) if r.code == 550));
    let d = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    assert!(matches!(&d.outcomes[0], RcptOutcome::Transient(r) if r.code == 451));
    assert_eq!(t.idle_count(), 1);
    let d = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    server.finish().await.unwrap();
    assert!(delivered(&d) && d.remote.reused);
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout() {
    let mut script = plain_session();
    script.extend(txn());
    script.extend([rx("QUIT\r\n"), tx("221 bye\r\n")]);
    let server = FakeServer::start(vec![script]).await;
    let mut cfg = config(SmarthostTls::None);
    cfg.idle_timeout = Duration::from_millis(100);
    let (t, _) = transport(&server, cfg, &no_roots());
    t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    // The reaper sends QUIT; the script finishing proves it.
    server.finish().await.unwrap();
    assert_eq!(t.idle_count(), 0);
}

#[tokio::test]
async fn concurrent_deliveries() {
    let mut script = plain_session();
    script.extend(txn());
    let server = FakeServer::start(vec![script.clone(), script]).await;
    let mut cfg = config(SmarthostTls::None);
    cfg.max_idle = 0;
    let (t, _) = transport(&server, cfg, &no_roots());
    let t = Arc::new(t);
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.deliver(&message(&["a@x.test"], "x")).await })
        })
        .collect();
    for task in tasks {
        let d = task.await.unwrap().unwrap();
        assert!(delivered(&d));
    }
    assert_eq!(server.accepts(), 2);
    // Scripts end without QUIT; the client's QUIT (max_idle = 0) may or may not arrive.
    server.finish().await.unwrap();
}

#[tokio::test]
async fn requiretls_needs_a_verified_smarthost() {
    // No connection may be made: the fake server expects none.
    let server = FakeServer::start(vec![]).await;
    let mut msg = message(&["a@x.test"], "x");
    msg.params.requiretls = true;
    for (tls, verify) in [
        (SmarthostTls::Implicit, false),
        (SmarthostTls::StartTls { required: true }, false),
        (SmarthostTls::None, true),
    ] {
        let mut cfg = config(tls);
        cfg.verify_certificates = verify;
        let (t, connector) = transport(&server, cfg, &no_roots());
        let err = t.deliver(&msg).await.unwrap_err();
        assert!(
            matches!(err, TransportError::RequireTlsUnsupported { .. }),
            "{err}"
        );
        assert_eq!(err.severity(), Severity::Permanent);
        assert_eq!(err.status_code(), "5.7.30");
        assert_eq!(
            connector.connects.load(Ordering::SeqCst),
            0,
            "dialed anyway"
        );
    }
}
