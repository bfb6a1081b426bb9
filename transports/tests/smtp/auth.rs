//! Smarthost AUTH (RFC 4954) against the fake server running the project's SASL server
//! mechanisms: mechanism choice after TLS, channel binding, refusals, and what must never
//! be sent (a second AUTH after 535, credentials without TLS).

use std::{sync::atomic::Ordering, time::Duration};

use relaygate_transports::{
    sasl::{Mechanism, SaslError},
    BindingUse, RcptOutcome, Secret, Severity, SmarthostAuth, SmarthostConfig, SmarthostTls,
    TlsInfo, TransportError,
};

use crate::{
    fake::{ehlo, greeting, rx, tx, AuthOutcome, FakeServer, SaslServer, Step},
    pki::TestPki,
    session::message,
    smarthost::{config, delivered, no_roots, transport, txn},
};

const USER: &str = "app";
const PASSWORD: &str = "correct horse";

fn auth_config(tls: SmarthostTls, password: &str, mechanisms: &[Mechanism]) -> SmarthostConfig {
    let mut cfg = config(tls);
    cfg.auth = Some(SmarthostAuth {
        username: USER.into(),
        password: Secret::new(password),
        mechanisms: mechanisms.to_vec(),
    });
    cfg
}

/// Greeting, EHLO offering STARTTLS (and `before` AUTH names, which must be forgotten),
/// TLS, and the EHLO inside TLS offering `after`.
fn starttls_session(before: &str, after: &[&str]) -> Vec<Step> {
    let mut s = vec![greeting()];
    let before_line = format!("AUTH {before}");
    s.extend(ehlo(&["STARTTLS", &before_line]));
    s.extend([rx("STARTTLS\r\n"), tx("220 go ahead\r\n"), Step::Tls]);
    let mut exts = vec!["PIPELINING"];
    exts.extend_from_slice(after);
    s.extend(ehlo(&exts));
    s
}

/// The client's QUIT, answered, then whatever it sends until it closes.
fn quit_then_end() -> Vec<Step> {
    vec![rx("QUIT\r\n"), tx("221 bye\r\n"), Step::ReadToEnd]
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test]
async fn scram_sha256_chosen_over_cram_md5_after_tls() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let sasl = SaslServer::with_account(USER, PASSWORD);
    // Before TLS the server offers only PLAIN; that list must be discarded.
    let mut script = starttls_session("PLAIN", &["AUTH CRAM-MD5 SCRAM-SHA-256"]);
    script.push(Step::Sasl(sasl));
    script.extend(txn());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let cfg = auth_config(SmarthostTls::StartTls { required: true }, PASSWORD, &[]);
    let (t, _) = transport(&server, cfg, &pki.roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await;
    let log = server.auth_log();
    let transcript = server.transcript(0);
    server.finish().await.unwrap();
    let d = d.unwrap();
    assert!(delivered(&d), "{d:?}");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].mechanism, Mechanism::ScramSha256);
    assert_eq!(log[0].outcome, AuthOutcome::Success(USER.into()));
    // RFC 4954 §4: SCRAM's client-first goes on the AUTH line.
    assert!(log[0].initial_response);
    // TLS 1.3 and our list has -PLUS, the server did not offer it: gs2 flag "y".
    assert!(
        transcript.contains("AUTH SCRAM-SHA-256 eSws"),
        "{transcript}"
    );
    assert!(!transcript.contains(PASSWORD), "{transcript}");
}

#[tokio::test]
async fn configured_mechanism_wins() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let mut script = starttls_session("CRAM-MD5", &["AUTH SCRAM-SHA-256 CRAM-MD5"]);
    script.push(Step::Sasl(SaslServer::with_account(USER, PASSWORD)));
    script.extend(txn());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let cfg = auth_config(
        SmarthostTls::StartTls { required: true },
        PASSWORD,
        &[Mechanism::CramMd5],
    );
    let (t, _) = transport(&server, cfg, &pki.roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await;
    let log = server.auth_log();
    server.finish().await.unwrap();
    assert!(delivered(&d.unwrap()));
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].mechanism, Mechanism::CramMd5);
    // CRAM-MD5 has no initial response: the server speaks first.
    assert!(!log[0].initial_response);
    assert_eq!(log[0].outcome, AuthOutcome::Success(USER.into()));
}

#[tokio::test]
async fn wrong_password_one_auth_then_holddown() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let mut script = starttls_session(
        "PLAIN",
        &["AUTH SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN LOGIN"],
    );
    script.push(Step::Sasl(SaslServer::with_account(USER, PASSWORD)));
    // After the 535 the client must say QUIT, not try another mechanism.
    script.extend(quit_then_end());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let mut cfg = auth_config(
        SmarthostTls::StartTls { required: true },
        "wrong",
        &[
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::CramMd5,
            Mechanism::Plain,
            Mechanism::Login,
        ],
    );
    cfg.auth_failure_holddown = Duration::from_secs(600);
    let (t, connector) = transport(&server, cfg, &pki.roots());
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    // A second delivery right away does not reach the server at all.
    let again = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    let log = server.auth_log();
    let transcript = server.transcript(0);
    server.finish().await.unwrap();

    match &err {
        TransportError::AuthFailed {
            mechanism, reply, ..
        } => {
            assert_eq!(*mechanism, Mechanism::ScramSha256);
            assert_eq!(reply.code, 535);
        }
        other => panic!("expected AuthFailed, got {other}"),
    }
    assert_eq!(err.severity(), Severity::Temporary);
    assert_eq!(err.status_code(), "4.7.8");
    assert!(err.to_string().contains("password"), "{err}");
    assert_eq!(count(&transcript, "AUTH "), 1, "{transcript}");
    assert!(transcript.ends_with("QUIT\r\n"), "{transcript}");
    assert_eq!(log.len(), 1);
    assert!(matches!(log[0].outcome, AuthOutcome::Failure(_)));

    assert!(
        matches!(&again, TransportError::AuthFailed { reply, .. } if reply.code == 535),
        "{again}"
    );
    assert_eq!(connector.connects.load(Ordering::SeqCst), 1);
    assert_eq!(t.idle_count(), 0);
}

#[tokio::test]
async fn no_common_mechanism_is_permanent_and_names_both_lists() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let mut first = starttls_session("CRAM-MD5", &["AUTH PLAIN LOGIN XOAUTH2"]);
    first.extend(quit_then_end());
    // AUTH not offered at all (after TLS) while credentials are configured.
    let mut second = starttls_session("CRAM-MD5", &["SIZE 1000"]);
    second.extend(quit_then_end());
    let server =
        FakeServer::start_with_tls(vec![first, second], Some(pki.server_config.clone())).await;
    let cfg = auth_config(SmarthostTls::StartTls { required: true }, PASSWORD, &[]);
    let (t, _) = transport(&server, cfg, &pki.roots());
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    let err2 = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    let transcripts = [server.transcript(0), server.transcript(1)];
    server.finish().await.unwrap();

    assert!(
        matches!(err, TransportError::NoCommonMechanism { .. }),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Permanent);
    let text = err.to_string();
    assert!(
        text.contains("[SCRAM-SHA-256-PLUS SCRAM-SHA-256 SCRAM-SHA-1-PLUS SCRAM-SHA-1 CRAM-MD5]"),
        "{text}"
    );
    assert!(text.contains("[PLAIN LOGIN XOAUTH2]"), "{text}");
    assert!(
        matches!(&err2, TransportError::NoCommonMechanism { offered, .. } if offered.is_empty()),
        "{err2}"
    );
    assert_eq!(err2.severity(), Severity::Permanent);
    for t in transcripts {
        assert!(!t.contains("AUTH"), "{t}");
    }
}

#[tokio::test]
async fn no_tls_means_no_auth() {
    // STARTTLS optional and not offered: the credentials stay home.
    let mut first = vec![greeting()];
    first.extend(ehlo(&["PIPELINING", "AUTH PLAIN CRAM-MD5 SCRAM-SHA-256"]));
    first.extend(quit_then_end());
    // STARTTLS required and not offered.
    let mut second = vec![greeting()];
    second.extend(ehlo(&["PIPELINING", "AUTH PLAIN CRAM-MD5 SCRAM-SHA-256"]));
    second.push(Step::ReadToEnd);
    let server = FakeServer::start(vec![first, second]).await;

    let cfg = auth_config(SmarthostTls::StartTls { required: false }, PASSWORD, &[]);
    let (t, _) = transport(&server, cfg, &no_roots());
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    assert!(
        matches!(err, TransportError::AuthWithoutTls { .. }),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Temporary);

    let cfg = auth_config(SmarthostTls::StartTls { required: true }, PASSWORD, &[]);
    let (t, _) = transport(&server, cfg, &no_roots());
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    assert!(
        matches!(err, TransportError::StartTlsUnavailable { .. }),
        "{err}"
    );
    drop(t);
    let transcripts = [server.transcript(0), server.transcript(1)];
    server.finish().await.unwrap();
    for t in transcripts {
        assert!(!t.contains("AUTH"), "{t}");
    }
}

#[tokio::test]
async fn no_starttls_allows_plain_in_clear_and_long_initial_response() {
    // The operator set no_starttls and listed PLAIN: allowed in clear. The password is
    // long enough that the initial response would break the 512-octet line limit, so it
    // follows an empty 334 instead (RFC 4954 §4).
    let long_password = "p".repeat(600);
    let mut script = vec![greeting()];
    script.extend(ehlo(&["PIPELINING", "AUTH PLAIN"]));
    script.push(Step::Sasl(SaslServer::with_account(USER, &long_password)));
    script.extend(txn());
    let server = FakeServer::start(vec![script]).await;
    let cfg = auth_config(SmarthostTls::None, &long_password, &[Mechanism::Plain]);
    let (t, _) = transport(&server, cfg, &no_roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await;
    let log = server.auth_log();
    let transcript = server.transcript(0);
    server.finish().await.unwrap();
    assert!(delivered(&d.unwrap()));
    assert_eq!(log[0].mechanism, Mechanism::Plain);
    assert!(!log[0].initial_response);
    assert_eq!(log[0].outcome, AuthOutcome::Success(USER.into()));
    // The command line stays within 512 octets; the response line may be longer.
    assert!(
        transcript.starts_with("EHLO client.test\r\nAUTH PLAIN\r\nAGFwcABw"),
        "{transcript}"
    );
}

#[tokio::test]
async fn plus_with_tls_exporter_on_tls13() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let mut sasl = SaslServer::with_account(USER, PASSWORD);
    sasl.plus_advertised = true;
    let mut script = vec![Step::Tls, greeting()];
    script.extend(ehlo(&[
        "PIPELINING",
        "AUTH SCRAM-SHA-256 SCRAM-SHA-256-PLUS",
    ]));
    script.push(Step::Sasl(sasl));
    script.extend(txn());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let cfg = auth_config(SmarthostTls::Implicit, PASSWORD, &[]);
    let (t, _) = transport(&server, cfg, &pki.roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await;
    let log = server.auth_log();
    let transcript = server.transcript(0);
    server.finish().await.unwrap();
    let d = d.unwrap();
    assert!(delivered(&d));
    assert_eq!(
        d.remote.tls,
        TlsInfo::Verified {
            version: "TLSv1.3".into()
        }
    );
    // The server checked the binding data against its own exporter value.
    assert_eq!(log[0].mechanism, Mechanism::ScramSha256Plus);
    assert_eq!(log[0].outcome, AuthOutcome::Success(USER.into()));
    // gs2 header "p=tls-exporter,," in base64.
    assert!(
        transcript.contains("AUTH SCRAM-SHA-256-PLUS cD10bHMtZXhwb3J0ZXIsL"),
        "{transcript}"
    );
}

#[tokio::test]
async fn tls12_has_no_binding_and_skips_plus() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let mut sasl = SaslServer::with_account(USER, PASSWORD);
    sasl.plus_advertised = true;
    let mut script = vec![Step::Tls, greeting()];
    script.extend(ehlo(&[
        "PIPELINING",
        "AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256",
    ]));
    script.push(Step::Sasl(sasl));
    script.extend(txn());
    let server =
        FakeServer::start_with_tls(vec![script], Some(pki.server_config_tls12.clone())).await;
    let cfg = auth_config(SmarthostTls::Implicit, PASSWORD, &[]);
    let (t, _) = transport(&server, cfg, &pki.roots());
    let d = t.deliver(&message(&["a@x.test"], "x")).await;
    let log = server.auth_log();
    let transcript = server.transcript(0);
    server.finish().await.unwrap();
    assert_eq!(
        d.unwrap().remote.tls,
        TlsInfo::Verified {
            version: "TLSv1.2".into()
        }
    );
    assert_eq!(log[0].mechanism, Mechanism::ScramSha256);
    assert_eq!(log[0].outcome, AuthOutcome::Success(USER.into()));
    // Without TLS 1.3 we cannot bind: gs2 flag "n" (base64 "biws" = "n,,").
    assert!(
        transcript.contains("AUTH SCRAM-SHA-256 biws"),
        "{transcript}"
    );
}

#[tokio::test]
async fn lying_server_signature_is_refused() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let mut sasl = SaslServer::with_account(USER, PASSWORD);
    sasl.lie = true;
    let mut script = starttls_session("PLAIN", &["AUTH SCRAM-SHA-1"]);
    script.push(Step::Sasl(sasl));
    script.extend(quit_then_end());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let cfg = auth_config(SmarthostTls::StartTls { required: true }, PASSWORD, &[]);
    let (t, _) = transport(&server, cfg, &pki.roots());
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    let log = server.auth_log();
    let transcript = server.transcript(0);
    server.finish().await.unwrap();
    match &err {
        TransportError::Sasl {
            mechanism, source, ..
        } => {
            assert_eq!(*mechanism, Mechanism::ScramSha1);
            assert!(
                matches!(source, SaslError::BadServerSignature { .. }),
                "{source}"
            );
        }
        other => panic!("expected a SASL error, got {other}"),
    }
    assert_eq!(err.severity(), Severity::Temporary);
    // The client cancelled with "*" (RFC 4954 §4) and sent no MAIL.
    assert_eq!(log[0].outcome, AuthOutcome::Cancelled);
    assert!(transcript.contains("\r\n*\r\nQUIT\r\n"), "{transcript}");
    assert!(!transcript.contains("MAIL FROM"), "{transcript}");
}

#[tokio::test]
async fn pooled_connection_authenticates_once_and_cache_skips_pbkdf2() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let sasl = SaslServer::with_account(USER, PASSWORD);
    // Connection 0 carries two messages (AUTH once); connection 1 is new (max_idle 0
    // for the second transport) and logs in again with the cached SaltedPassword.
    let mut first = starttls_session("PLAIN", &["AUTH SCRAM-SHA-256"]);
    first.push(Step::Sasl(sasl.clone()));
    first.extend(txn());
    first.extend([rx("RSET\r\n"), tx("250 ok\r\n")]);
    first.extend(txn());
    first.extend(quit_then_end());
    let mut second = starttls_session("PLAIN", &["AUTH SCRAM-SHA-256"]);
    second.push(Step::Sasl(sasl));
    second.extend(txn());
    second.push(Step::ReadToEnd);
    let server =
        FakeServer::start_with_tls(vec![first, second], Some(pki.server_config.clone())).await;
    let cfg = auth_config(SmarthostTls::StartTls { required: true }, PASSWORD, &[]);
    let (t, connector) = transport(&server, cfg, &pki.roots());
    let a = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    let b = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    assert!(b.remote.reused);
    t.close_idle().await;
    let c = t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    assert!(!c.remote.reused);
    let stats = t.sasl_cache_stats();
    drop(t);
    let log = server.auth_log();
    server.finish().await.unwrap();
    assert!([&a, &b, &c].iter().all(|d| delivered(d)));
    assert_eq!(connector.connects.load(Ordering::SeqCst), 2);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!((log[0].conn, log[1].conn), (0, 1));
    assert_eq!((stats.misses, stats.hits), (1, 1));
    assert!(matches!(a.outcomes[0], RcptOutcome::Delivered(_)));
}

#[tokio::test]
async fn probe_reports_each_step_without_sending_mail() {
    let pki = TestPki::new(crate::smarthost::HOST);
    let mut ok = starttls_session("PLAIN", &["AUTH CRAM-MD5 SCRAM-SHA-1"]);
    ok.push(Step::Sasl(SaslServer::with_account(USER, PASSWORD)));
    ok.extend(quit_then_end());
    let mut bad = starttls_session("PLAIN", &["AUTH CRAM-MD5 SCRAM-SHA-1"]);
    bad.push(Step::Sasl(SaslServer::with_account(USER, "other")));
    bad.extend(quit_then_end());
    let server = FakeServer::start_with_tls(vec![ok, bad], Some(pki.server_config.clone())).await;
    let cfg = auth_config(SmarthostTls::StartTls { required: true }, PASSWORD, &[]);
    let (t, _) = transport(&server, cfg, &pki.roots());
    let good = t.probe_auth().await;
    let refused = t.probe_auth().await;
    let transcripts = [server.transcript(0), server.transcript(1)];
    server.finish().await.unwrap();

    assert!(good.result.is_ok(), "{:?}", good.result);
    assert_eq!(
        good.tls,
        TlsInfo::Verified {
            version: "TLSv1.3".into()
        }
    );
    assert_eq!(
        good.advertised,
        Some(vec!["CRAM-MD5".to_string(), "SCRAM-SHA-1".to_string()])
    );
    let plan = good.plan.unwrap();
    assert_eq!(plan.mechanism, Mechanism::ScramSha1);
    assert_eq!(plan.binding(), BindingUse::ServerLacksSupport);

    assert!(
        matches!(&refused.result, Err(TransportError::AuthFailed { reply, .. }) if reply.code == 535)
    );
    assert_eq!(
        refused.plan.map(|p| p.mechanism),
        Some(Mechanism::ScramSha1)
    );
    for t in transcripts {
        assert!(!t.contains("MAIL FROM"), "{t}");
    }
}

#[test]
fn config_debug_redacts_the_password() {
    let cfg = auth_config(SmarthostTls::Implicit, "s3cr3t-value", &[]);
    let text = format!("{cfg:?}");
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(text.contains("redacted"), "{text}");
}

/// Every tracing event of this test binary, with all its fields, as text: a global
/// subscriber (a thread-scoped one misses events whose callsite interest another test
/// thread cached first).
pub mod capture {
    use std::sync::{Arc, Mutex, OnceLock};

    use tracing::{
        field::{Field, Visit},
        span, Event, Metadata, Subscriber,
    };

    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<String>>);

    /// The process-wide capture, installed on first use.
    pub fn global() -> Capture {
        static GLOBAL: OnceLock<Capture> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let capture = Capture::default();
                tracing::subscriber::set_global_default(capture.clone())
                    .expect("no other global subscriber in this test binary");
                capture
            })
            .clone()
    }

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &span::Attributes<'_>) -> span::Id {
            let mut text = self.0.lock().unwrap();
            span.record(&mut Fields(&mut text));
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, values: &span::Record<'_>) {
            values.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut text = self.0.lock().unwrap();
            event.record(&mut Fields(&mut text));
            text.push('\n');
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }
}

#[tokio::test]
async fn debug_logs_never_show_the_password() {
    use base64::{engine::general_purpose::STANDARD as B64, Engine as _};

    let password = "pa55-in-the-clear";
    let capture = capture::global();
    // PLAIN in clear (no_starttls): the response on the wire carries the password
    // itself; then a wrong password, so the failure paths log too.
    let mut ok = vec![greeting()];
    ok.extend(ehlo(&["PIPELINING", "AUTH PLAIN"]));
    ok.push(Step::Sasl(SaslServer::with_account(USER, password)));
    ok.extend(txn());
    let mut bad = vec![greeting()];
    bad.extend(ehlo(&["PIPELINING", "AUTH PLAIN"]));
    bad.push(Step::Sasl(SaslServer::with_account(USER, "other")));
    bad.extend(quit_then_end());
    let server = FakeServer::start(vec![ok, bad]).await;
    let cfg = auth_config(SmarthostTls::None, password, &[Mechanism::Plain]);
    let (t, _) = transport(&server, cfg.clone(), &no_roots());
    t.deliver(&message(&["a@x.test"], "x")).await.unwrap();
    let (t2, _) = transport(&server, cfg, &no_roots());
    t2.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    let transcript = server.transcript(0);
    server.finish().await.unwrap();

    let logs = capture.0.lock().unwrap().clone();
    let wire = B64.encode(format!("\0{USER}\0{password}"));
    // The secret really was on the wire, so its absence from the logs means something.
    assert!(transcript.contains(&wire), "{transcript}");
    assert!(logs.contains("AUTH <redacted>"), "{logs}");
    assert!(logs.contains("refused the credentials"), "{logs}");
    assert!(!logs.contains(password), "{logs}");
    assert!(!logs.contains(&wire), "{logs}");
}
