//! Smarthost AUTH with OAuth2 access tokens (XOAUTH2, OAUTHBEARER) against scripted
//! servers: the exact bytes on the wire, the JSON error challenge (RFC 7628 §3.2.2)
//! answered and decoded into the error, tokens never in clear without `no_starttls`,
//! the token asked for only when a bearer mechanism is chosen, and never logged.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use relaygate_transports::{
    oauth2::{AccessToken, TokenError, TokenFuture, TokenOrigin, TokenSource},
    sasl::Mechanism,
    stream::ConnectFuture,
    Connector, Io, ReasonKind, Secret, Severity, SmarthostAuth, SmarthostConfig, SmarthostTls,
    SmarthostTransport, TlsClientConfigs, TransportError,
};

use crate::{
    auth::capture,
    fake::{ehlo, greeting, rx, tx, FakeServer, SaslServer, Step},
    pki::TestPki,
    session::message,
    smarthost::{config, delivered, no_roots, transport, txn, HOST},
};

const USER: &str = "relay@example.org";
const TOKEN: &str = "ya29.a0-test_token~value";
const SCOPE: &str = "https://mail.example/";

/// Hands out scripted results and counts the calls.
#[derive(Default)]
struct Tokens {
    results: Mutex<Vec<Result<&'static str, TokenError>>>,
    calls: AtomicUsize,
    forgotten: AtomicUsize,
}

impl Tokens {
    fn giving(token: &'static str) -> Arc<Tokens> {
        let t = Tokens::default();
        t.results.lock().unwrap().push(Ok(token));
        Arc::new(t)
    }

    fn failing(e: TokenError) -> Arc<Tokens> {
        let t = Tokens::default();
        t.results.lock().unwrap().push(Err(e));
        Arc::new(t)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenSource for Tokens {
    fn token(&self) -> TokenFuture<'_> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut results = self.results.lock().unwrap();
        // A last token repeats; errors are handed out once.
        let next = match results.first() {
            Some(Ok(t)) if results.len() == 1 => Ok(*t),
            Some(_) => results.remove(0),
            None => Err(TokenError::EmptyFile {
                path: "/scripted".into(),
            }),
        };
        Box::pin(async move {
            next.map(|t| AccessToken {
                secret: Secret::new(t),
                valid_for: None,
                origin: TokenOrigin::File,
            })
        })
    }

    fn describe(&self) -> String {
        "scripted tokens".into()
    }

    fn forget(&self) {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
    }
}

fn oauth_config(tls: SmarthostTls, mechanisms: &[Mechanism], password: &str) -> SmarthostConfig {
    let mut cfg = config(tls);
    cfg.auth = Some(SmarthostAuth {
        username: USER.into(),
        password: Secret::new(password),
        mechanisms: mechanisms.to_vec(),
    });
    cfg
}

fn with_tokens(
    server: &FakeServer,
    cfg: SmarthostConfig,
    pki: Option<&TestPki>,
    tokens: &Arc<Tokens>,
) -> SmarthostTransport {
    let roots = pki.map(|p| p.roots()).unwrap_or_else(no_roots);
    let (t, _) = transport(server, cfg, &roots);
    t.with_token_source(Arc::clone(tokens) as Arc<dyn TokenSource>)
}

/// Connects to `addr` but reports `port` as the peer's (the smarthost's port).
struct ReportedPort {
    addr: SocketAddr,
    port: u16,
}

impl Connector for ReportedPort {
    fn connect<'a>(&'a self, _host: &'a str, _port: u16) -> ConnectFuture<'a> {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(self.addr).await?;
            let reported = SocketAddr::new(self.addr.ip(), self.port);
            Ok((Box::new(tcp) as Box<dyn Io>, reported))
        })
    }
}

/// Greeting, EHLO with STARTTLS, TLS, and the EHLO inside TLS offering `auth`.
fn starttls_session(auth: &str) -> Vec<Step> {
    let mut s = vec![greeting()];
    s.extend(ehlo(&["STARTTLS"]));
    s.extend([rx("STARTTLS\r\n"), tx("220 go ahead\r\n"), Step::Tls]);
    s.extend(ehlo(&["PIPELINING", auth]));
    s
}

fn quit_then_end() -> Vec<Step> {
    vec![rx("QUIT\r\n"), tx("221 bye\r\n"), Step::ReadToEnd]
}

fn json_error() -> String {
    format!(r#"{{"status":"401","schemes":"bearer","scope":"{SCOPE}"}}"#)
}

#[tokio::test]
async fn xoauth2_sends_the_documented_message_and_reuses_the_session() {
    let pki = TestPki::new(HOST);
    let ir = B64.encode(format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    let mut script = starttls_session("AUTH LOGIN PLAIN XOAUTH2");
    script.extend([
        rx(&format!("AUTH XOAUTH2 {ir}\r\n")),
        tx("235 2.7.0 Accepted\r\n"),
    ]);
    script.extend(txn());
    // The second message goes over the same, already authenticated session.
    script.extend([rx("RSET\r\n"), tx("250 ok\r\n")]);
    script.extend(txn());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let tokens = Tokens::giving(TOKEN);
    let cfg = oauth_config(
        SmarthostTls::StartTls { required: true },
        &[Mechanism::XOAuth2],
        "",
    );
    let t = with_tokens(&server, cfg, Some(&pki), &tokens);
    assert!(delivered(
        &t.deliver(&message(&["a@x.test"], "x")).await.unwrap()
    ));
    assert!(delivered(
        &t.deliver(&message(&["a@x.test"], "x")).await.unwrap()
    ));
    drop(t);
    server.finish().await.unwrap();
    assert_eq!(tokens.calls(), 1);
}

#[tokio::test]
async fn oauthbearer_names_host_and_port_and_decodes_the_json_error() {
    let pki = TestPki::new(HOST);
    let capture = capture::global();
    // RFC 7628 §4.1's shape, with the host and port connected to.
    let ir = B64.encode(format!(
        "n,a={USER},\x01host={HOST}\x01port=587\x01auth=Bearer {TOKEN}\x01\x01"
    ));
    let mut script = vec![Step::Tls, greeting()];
    script.extend(ehlo(&["PIPELINING", "AUTH OAUTHBEARER XOAUTH2"]));
    script.extend([
        rx(&format!("AUTH OAUTHBEARER {ir}\r\n")),
        tx(&format!("334 {}\r\n", B64.encode(json_error()))),
        // RFC 7628 §3.2.3: the client answers with a single %x01.
        rx("AQ==\r\n"),
        tx("535 5.7.8 Username and Password not accepted\r\n"),
    ]);
    script.extend(quit_then_end());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let tokens = Tokens::giving(TOKEN);
    let cfg = oauth_config(
        SmarthostTls::Implicit,
        &[Mechanism::OAuthBearer, Mechanism::XOAuth2],
        "",
    );
    // The session reports the smarthost's port 587 while the fake listens elsewhere.
    let connector = Arc::new(ReportedPort {
        addr: server.addr(),
        port: 587,
    });
    let t = SmarthostTransport::new(cfg, &TlsClientConfigs::new(&pki.roots()), connector)
        .with_token_source(Arc::clone(&tokens) as Arc<dyn TokenSource>);
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    let transcript = server.transcript(0);
    drop(t);
    server.finish().await.unwrap();
    match &err {
        TransportError::AuthFailed {
            mechanism,
            reply,
            bearer: Some(b),
            ..
        } => {
            assert_eq!(*mechanism, Mechanism::OAuthBearer);
            assert_eq!(reply.code, 535);
            assert_eq!(b.status.as_deref(), Some("401"));
            assert_eq!(b.scope.as_deref(), Some(SCOPE));
        }
        other => panic!("expected AuthFailed with the JSON error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!("status 401, schemes bearer, scope {SCOPE}")),
        "{text}"
    );
    assert_eq!(err.severity(), Severity::Temporary);
    assert_eq!(err.reason(), ReasonKind::Auth);
    // The token was on the wire, and is nowhere in the logs.
    let logs = capture.0.lock().unwrap().clone();
    assert!(transcript.contains(&ir), "{transcript}");
    assert!(!logs.contains(TOKEN), "{logs}");
    assert!(!logs.contains(&ir), "{logs}");
    assert!(logs.contains("AUTH <redacted>"), "{logs}");
}

#[tokio::test]
async fn xoauth2_answers_the_json_error_with_an_empty_line() {
    let pki = TestPki::new(HOST);
    let ir = B64.encode(format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    let mut script = starttls_session("AUTH XOAUTH2");
    script.extend([
        rx(&format!("AUTH XOAUTH2 {ir}\r\n")),
        tx(&format!("334 {}\r\n", B64.encode(json_error()))),
        // Google's and Microsoft's XOAUTH2: an empty response.
        rx("\r\n"),
        tx("535 5.7.3 Authentication unsuccessful\r\n"),
    ]);
    script.extend(quit_then_end());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let tokens = Tokens::giving(TOKEN);
    let cfg = oauth_config(
        SmarthostTls::StartTls { required: true },
        &[Mechanism::XOAuth2],
        "",
    );
    let t = with_tokens(&server, cfg, Some(&pki), &tokens);
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    drop(t);
    server.finish().await.unwrap();
    let text = err.to_string();
    assert!(text.contains("535 5.7.3"), "{text}");
    assert!(
        text.contains("the bearer token was refused: status 401"),
        "{text}"
    );
    assert!(text.contains(SCOPE), "{text}");
    // What the queue records for the recipients carries the same.
    let reply = err.as_reply();
    assert_eq!(reply.code, 535);
    // The refused token is not offered again.
    assert_eq!(tokens.forgotten.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_never_goes_in_clear_unless_no_starttls() {
    // Opportunistic STARTTLS that the server does not offer: no AUTH, no token asked.
    let mut clear = vec![greeting()];
    clear.extend(ehlo(&["PIPELINING", "AUTH XOAUTH2"]));
    clear.extend(quit_then_end());
    // no_starttls: the operator allowed it.
    let ir = B64.encode(format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    let mut allowed = vec![greeting()];
    allowed.extend(ehlo(&["PIPELINING", "AUTH XOAUTH2"]));
    allowed.extend([
        rx(&format!("AUTH XOAUTH2 {ir}\r\n")),
        tx("235 2.7.0 ok\r\n"),
    ]);
    allowed.extend(txn());
    let server = FakeServer::start(vec![clear, allowed]).await;
    let tokens = Tokens::giving(TOKEN);
    let cfg = oauth_config(
        SmarthostTls::StartTls { required: false },
        &[Mechanism::XOAuth2],
        "",
    );
    let t = with_tokens(&server, cfg, None, &tokens);
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    assert!(
        matches!(err, TransportError::AuthWithoutTls { .. }),
        "{err}"
    );
    assert_eq!(tokens.calls(), 0);
    drop(t);
    let cfg = oauth_config(SmarthostTls::None, &[Mechanism::XOAuth2], "");
    let t = with_tokens(&server, cfg, None, &tokens);
    assert!(delivered(
        &t.deliver(&message(&["a@x.test"], "x")).await.unwrap()
    ));
    drop(t);
    let first = server.transcript(0);
    server.finish().await.unwrap();
    assert!(!first.contains("AUTH"), "{first}");
    assert_eq!(tokens.calls(), 1);
}

#[tokio::test]
async fn no_token_fails_the_attempt_before_auth() {
    let pki = TestPki::new(HOST);
    let mut script = starttls_session("AUTH XOAUTH2");
    script.extend(quit_then_end());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let tokens = Tokens::failing(TokenError::Refused {
        url: "https://login.test/token".into(),
        status: 400,
        error: "invalid_grant".into(),
        description: Some("Token has been expired or revoked.".into()),
    });
    let cfg = oauth_config(
        SmarthostTls::StartTls { required: true },
        &[Mechanism::XOAuth2],
        "",
    );
    let t = with_tokens(&server, cfg, Some(&pki), &tokens);
    let err = t.deliver(&message(&["a@x.test"], "x")).await.unwrap_err();
    let transcript = server.transcript(0);
    drop(t);
    server.finish().await.unwrap();
    assert!(matches!(err, TransportError::Token { .. }), "{err}");
    assert_eq!(err.severity(), Severity::Temporary);
    assert_eq!(err.reason(), ReasonKind::Auth);
    assert_eq!(err.status_code(), "4.7.0");
    let text = err.to_string();
    assert!(
        text.contains("invalid_grant: Token has been expired or revoked."),
        "{text}"
    );
    assert!(!transcript.contains("AUTH"), "{transcript}");
}

#[tokio::test]
async fn a_password_mechanism_chosen_needs_no_token() {
    let pki = TestPki::new(HOST);
    let mut script = starttls_session("AUTH PLAIN");
    script.push(Step::Sasl(SaslServer::with_account(USER, "pw")));
    script.extend(txn());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let tokens = Tokens::giving(TOKEN);
    let cfg = oauth_config(
        SmarthostTls::StartTls { required: true },
        &[Mechanism::XOAuth2, Mechanism::Plain],
        "pw",
    );
    let t = with_tokens(&server, cfg, Some(&pki), &tokens);
    assert!(delivered(
        &t.deliver(&message(&["a@x.test"], "x")).await.unwrap()
    ));
    drop(t);
    server.finish().await.unwrap();
    assert_eq!(tokens.calls(), 0);
}

#[tokio::test]
async fn probe_runs_the_token_step_first() {
    let pki = TestPki::new(HOST);
    let ir = B64.encode(format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    let mut script = starttls_session("AUTH XOAUTH2");
    script.extend([
        rx(&format!("AUTH XOAUTH2 {ir}\r\n")),
        tx("235 2.7.0 ok\r\n"),
    ]);
    script.extend(quit_then_end());
    let server = FakeServer::start_with_tls(vec![script], Some(pki.server_config.clone())).await;
    let tokens = Tokens::giving(TOKEN);
    let cfg = oauth_config(
        SmarthostTls::StartTls { required: true },
        &[Mechanism::XOAuth2],
        "",
    );
    let t = with_tokens(&server, cfg.clone(), Some(&pki), &tokens);
    let probe = t.probe_auth().await;
    assert!(probe.result.is_ok(), "{:?}", probe.result);
    assert_eq!(probe.token.map(|t| t.origin), Some(TokenOrigin::File));
    assert_eq!(probe.plan.map(|p| p.mechanism), Some(Mechanism::XOAuth2));
    assert_eq!(tokens.calls(), 1);
    drop(t);
    server.finish().await.unwrap();

    // A failing token step stops the probe before it connects.
    let server = FakeServer::start(vec![]).await;
    let tokens = Tokens::failing(TokenError::EmptyFile {
        path: "/run/token".into(),
    });
    let t = with_tokens(&server, cfg, Some(&pki), &tokens);
    let probe = t.probe_auth().await;
    assert!(matches!(probe.result, Err(TransportError::Token { .. })));
    assert!(probe.addr.is_none() && probe.token.is_none());
    assert_eq!(server.accepts(), 0);
}
