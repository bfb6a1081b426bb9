//! Session-level exchanges: exact bytes on the wire and per-recipient outcomes.

use std::{sync::Arc, time::Duration};

use relaygate_transports::{
    ConnectParams, OutboundMessage, OutboundRcpt, RcptOutcome, Ret, Session, SessionState,
    Severity, Stage, TcpConnector, Timeouts, TransportError,
};

use crate::fake::{ehlo, greeting, rx, tx, FakeServer, Step};

pub fn timeouts() -> Timeouts {
    Timeouts::uniform(Duration::from_secs(10))
}

pub fn message(rcpts: &[&str], body: &str) -> OutboundMessage {
    OutboundMessage {
        mail_from: "sender@example.org".into(),
        rcpts: rcpts.iter().map(|r| OutboundRcpt::new(*r)).collect(),
        body: Arc::from(body.as_bytes()),
        params: Default::default(),
    }
}

async fn connect(server: &FakeServer, t: Timeouts) -> Result<Session, TransportError> {
    let params = ConnectParams {
        host: "127.0.0.1".into(),
        port: server.addr().port(),
        implicit_tls: None,
        timeouts: t,
    };
    Session::connect_and_greet(&TcpConnector::new(Duration::from_secs(5)), &params).await
}

async fn ready(server: &FakeServer) -> Session {
    let mut s = connect(server, timeouts()).await.unwrap();
    s.ehlo("client.test").await.unwrap();
    s
}

fn script(parts: Vec<Vec<Step>>) -> Vec<Step> {
    parts.into_iter().flatten().collect()
}

fn codes(outcomes: &[RcptOutcome]) -> Vec<(char, u16)> {
    outcomes
        .iter()
        .map(|o| match o {
            RcptOutcome::Delivered(r) => ('D', r.code),
            RcptOutcome::Transient(r) => ('T', r.code),
            RcptOutcome::Permanent(r) => ('P', r.code),
        })
        .collect()
}

#[tokio::test]
async fn pipelined_transaction_sends_one_group_and_dot_stuffs() {
    let body = "Subject: x\r\n\r\n.leading dot\r\nmiddle\r\n..two\r\nno final newline";
    let mut msg = message(&["a@x.test", "b@x.test", "c@x.test"], body);
    msg.params.eight_bit = true;
    msg.params.ret = Some(Ret::Hdrs);
    msg.params.envid = Some("ID+1".into());
    msg.rcpts[0].notify = Some("SUCCESS,FAILURE".into());
    msg.rcpts[0].orcpt = Some("rfc822;a@x.test".into());
    let group = format!(
        "MAIL FROM:<sender@example.org> SIZE={} BODY=8BITMIME RET=HDRS ENVID=ID+2B1\r\n\
         RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@x.test\r\n\
         RCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n",
        body.len()
    );
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&["PIPELINING", "8BITMIME", "SIZE 1000000", "DSN"]),
        // No reply until the whole group arrived: a client waiting for the MAIL reply
        // before sending RCPT would time out here.
        vec![
            rx(&group),
            tx("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go\r\n"),
            rx("Subject: x\r\n\r\n..leading dot\r\nmiddle\r\n...two\r\nno final newline\r\n.\r\n"),
            tx("250 2.0.0 queued as 42\r\n"),
        ],
    ])])
    .await;
    let mut s = ready(&server).await;
    let out = s.send_message(&msg).await;
    server.finish().await.unwrap();
    let out = out.unwrap();
    assert_eq!(codes(&out), vec![('D', 250), ('P', 550), ('D', 250)]);
    assert_eq!(out[1].reply().to_string(), "550 5.1.1 no such user");
    assert_eq!(out[0].reply().to_string(), "250 2.0.0 queued as 42");
    assert_eq!(s.state(), SessionState::Ready);
}

#[tokio::test]
async fn serial_transaction_without_pipelining() {
    let mut msg = message(&["a@x.test", "b@x.test"], "hi\r\n");
    // Not offered: no BODY, no DSN parameters, no SIZE.
    msg.rcpts[1].notify = Some("NEVER".into());
    msg.params.ret = Some(Ret::Full);
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&["8BITMIME"]),
        vec![
            rx("MAIL FROM:<sender@example.org>\r\n"),
            tx("250 ok\r\n"),
            rx("RCPT TO:<a@x.test>\r\n"),
            tx("452 4.2.2 mailbox full\r\n"),
            rx("RCPT TO:<b@x.test>\r\n"),
            tx("250 ok\r\n"),
            rx("DATA\r\n"),
            tx("354 go\r\n"),
            rx("hi\r\n.\r\n"),
            tx("451 4.3.0 try later\r\n"),
        ],
    ])])
    .await;
    let mut s = ready(&server).await;
    let out = s.send_message(&msg).await;
    server.finish().await.unwrap();
    // 452 at RCPT: that recipient is transient; the end-of-data 451 hits the accepted one.
    assert_eq!(codes(&out.unwrap()), vec![('T', 452), ('T', 451)]);
}

#[tokio::test]
async fn helo_fallback_has_no_extensions() {
    let server = FakeServer::start(vec![vec![
        greeting(),
        rx("EHLO client.test\r\n"),
        tx("502 5.5.2 what?\r\n"),
        rx("HELO client.test\r\n"),
        tx("250 fake.test\r\n"),
        rx("MAIL FROM:<>\r\n"),
        tx("250 ok\r\n"),
        rx("RCPT TO:<a@x.test>\r\n"),
        tx("250 ok\r\n"),
        rx("DATA\r\n"),
        tx("354 go\r\n"),
        rx("x\r\n.\r\n"),
        tx("250 ok\r\n"),
        rx("QUIT\r\n"),
        tx("221 bye\r\n"),
    ]])
    .await;
    let mut s = connect(&server, timeouts()).await.unwrap();
    let caps = s.ehlo("client.test").await.unwrap();
    assert_eq!(caps, Default::default());
    let mut msg = message(&["a@x.test"], "x");
    msg.mail_from = String::new();
    let out = s.send_message(&msg).await;
    s.quit().await;
    server.finish().await.unwrap();
    assert_eq!(codes(&out.unwrap()), vec![('D', 250)]);
}

#[tokio::test]
async fn mail_rejected_applies_to_every_recipient() {
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&["PIPELINING"]),
        vec![
            rx("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
            tx("550 5.7.1 sender refused\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n"),
            rx("RSET\r\n"),
            tx("250 ok\r\n"),
        ],
    ])])
    .await;
    let mut s = ready(&server).await;
    let out = s
        .send_message(&message(&["a@x.test", "b@x.test"], "x"))
        .await
        .unwrap();
    assert_eq!(codes(&out), vec![('P', 550), ('P', 550)]);
    assert_eq!(out[1].reply().to_string(), "550 5.7.1 sender refused");
    assert_eq!(s.state(), SessionState::InTransaction);
    s.rset().await.unwrap();
    assert_eq!(s.state(), SessionState::Ready);
    server.finish().await.unwrap();
}

#[tokio::test]
async fn serial_mail_rejected_sends_no_rcpt() {
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&[]),
        vec![
            rx("MAIL FROM:<sender@example.org>\r\n"),
            tx("451 4.3.2 busy\r\n"),
            // The next thing the client sends must be RSET, not RCPT.
            rx("RSET\r\n"),
            tx("250 ok\r\n"),
        ],
    ])])
    .await;
    let mut s = ready(&server).await;
    let out = s.send_message(&message(&["a@x.test"], "x")).await.unwrap();
    assert_eq!(codes(&out), vec![('T', 451)]);
    s.rset().await.unwrap();
    server.finish().await.unwrap();
}

#[tokio::test]
async fn no_recipient_accepted_sends_no_body() {
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&["PIPELINING"]),
        vec![
            rx("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
            // A sloppy server says 354 although nobody was accepted.
            tx("250 ok\r\n550 5.1.1 a unknown\r\n450 4.2.1 b busy\r\n354 go\r\n"),
            rx(".\r\n"),
            tx("554 5.5.1 no valid recipients\r\n"),
        ],
    ])])
    .await;
    let mut s = ready(&server).await;
    let out = s
        .send_message(&message(&["a@x.test", "b@x.test"], "secret body\r\n"))
        .await
        .unwrap();
    server.finish().await.unwrap();
    assert_eq!(codes(&out), vec![('P', 550), ('T', 450)]);
}

#[tokio::test]
async fn data_refusal_hits_accepted_recipients_only() {
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&["PIPELINING"]),
        vec![
            rx("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
            tx("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n554 5.7.0 content refused\r\n"),
        ],
    ])])
    .await;
    let mut s = ready(&server).await;
    let out = s
        .send_message(&message(&["a@x.test", "b@x.test"], "x"))
        .await
        .unwrap();
    server.finish().await.unwrap();
    assert_eq!(codes(&out), vec![('P', 554), ('P', 550)]);
    assert_eq!(s.state(), SessionState::InTransaction);
}

#[tokio::test]
async fn rcptmax_defers_excess_recipients() {
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&["PIPELINING", "LIMITS RCPTMAX=2"]),
        vec![
            rx("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"),
            tx("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            rx("x\r\n.\r\n"),
            tx("250 ok\r\n"),
        ],
    ])])
    .await;
    let mut s = ready(&server).await;
    let out = s
        .send_message(&message(&["a@x.test", "b@x.test", "c@x.test"], "x"))
        .await
        .unwrap();
    server.finish().await.unwrap();
    assert_eq!(codes(&out), vec![('D', 250), ('D', 250), ('T', 452)]);
    assert_eq!(
        out[2].reply().to_string(),
        "452 4.5.3 too many recipients for one transaction"
    );
}

#[tokio::test]
async fn injected_recipient_is_refused_without_sending_it() {
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&[]),
        vec![
            rx("MAIL FROM:<sender@example.org>\r\n"),
            tx("250 ok\r\n"),
            rx("RCPT TO:<ok@x.test>\r\n"),
            tx("250 ok\r\n"),
            rx("DATA\r\n"),
            tx("354 go\r\n"),
            rx("x\r\n.\r\n"),
            tx("250 ok\r\n"),
        ],
    ])])
    .await;
    let mut s = ready(&server).await;
    let out = s
        .send_message(&message(
            &["evil@x.test>\r\nRCPT TO:<other@y.test", "ok@x.test"],
            "x",
        ))
        .await
        .unwrap();
    server.finish().await.unwrap();
    assert_eq!(codes(&out), vec![('P', 501), ('D', 250)]);
}

#[tokio::test]
async fn message_checks_fail_before_sending_anything() {
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&["SIZE 10"]),
        // After the refused messages the session is still usable.
        vec![rx("RSET\r\n"), tx("250 ok\r\n")],
    ])])
    .await;
    let mut s = ready(&server).await;
    let big = message(&["a@x.test"], "0123456789A");
    let err = s.send_message(&big).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::MessageTooLarge {
                size: 11,
                limit: 10,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Permanent);
    let mut m = message(&["a@x.test"], "x");
    m.params.eight_bit = true;
    let err = s.send_message(&m).await.unwrap_err();
    assert!(
        matches!(err, TransportError::EightBitUnsupported { .. }),
        "{err}"
    );
    let mut m = message(&["a@x.test"], "x");
    m.params.smtputf8 = true;
    let err = s.send_message(&m).await.unwrap_err();
    assert!(
        matches!(err, TransportError::SmtpUtf8Unsupported { .. }),
        "{err}"
    );
    let mut m = message(&["a@x.test"], "x");
    m.params.requiretls = true;
    let err = s.send_message(&m).await.unwrap_err();
    assert!(
        matches!(err, TransportError::RequireTlsUnsupported { .. }),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Permanent);
    assert_eq!(s.state(), SessionState::Ready);
    s.rset().await.unwrap();
    server.finish().await.unwrap();
}

#[tokio::test]
async fn greeting_rejected_is_permanent() {
    let server = FakeServer::start(vec![vec![tx("554 5.7.1 no service for you\r\n")]]).await;
    let err = connect(&server, timeouts()).await.unwrap_err();
    server.finish().await.unwrap();
    assert!(
        matches!(err, TransportError::GreetingRejected { .. }),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Permanent);
}

#[tokio::test]
async fn silent_server_times_out_on_greeting() {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (_conn, _) = listener.accept().await.unwrap();
        // Hold the connection open without a greeting until the client is done.
        let _ = stop_rx.await;
    });
    let t = Timeouts {
        greeting: Duration::from_millis(200),
        ..timeouts()
    };
    let params = ConnectParams {
        host: "127.0.0.1".into(),
        port,
        implicit_tls: None,
        timeouts: t,
    };
    let err = Session::connect_and_greet(&TcpConnector::new(Duration::from_secs(5)), &params)
        .await
        .unwrap_err();
    let _ = stop_tx.send(());
    server.await.unwrap();
    assert!(
        matches!(
            err,
            TransportError::Timeout {
                stage: Stage::Greeting,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Temporary);
}

#[tokio::test]
async fn garbage_and_hangups_are_temporary_errors() {
    let server = FakeServer::start(vec![
        script(vec![
            vec![greeting()],
            vec![rx("EHLO client.test\r\n"), tx("hello there\r\n")],
        ]),
        script(vec![
            vec![greeting()],
            ehlo(&[]),
            vec![rx("MAIL FROM:<sender@example.org>\r\n"), Step::Close],
        ]),
    ])
    .await;
    let mut s = connect(&server, timeouts()).await.unwrap();
    let err = s.ehlo("client.test").await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Protocol {
                command: Stage::Ehlo,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.state(), SessionState::Closed);

    let mut s = ready(&server).await;
    let err = s
        .send_message(&message(&["a@x.test"], "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Io {
                stage: Stage::Mail,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.severity(), Severity::Temporary);
    assert_eq!(s.state(), SessionState::Closed);
    server.finish().await.unwrap();
}

#[tokio::test]
async fn starttls_refuses_data_ahead_of_handshake() {
    let pki = crate::pki::TestPki::new("127.0.0.1");
    let server = FakeServer::start(vec![script(vec![
        vec![greeting()],
        ehlo(&["STARTTLS"]),
        // A man in the middle appends a reply that would be read as if inside TLS.
        vec![rx("STARTTLS\r\n"), tx("220 go ahead\r\n250 injected\r\n")],
    ])])
    .await;
    let mut s = ready(&server).await;
    let config = relaygate_transports::tls::verified_client_config(&pki.roots());
    let name = relaygate_transports::session::server_name("127.0.0.1").unwrap();
    let err = s.starttls(name, config).await.unwrap_err();
    server.finish().await.unwrap();
    assert!(
        matches!(
            err,
            TransportError::Protocol {
                command: Stage::StartTls,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.state(), SessionState::Closed);
}
