//! Self-tests of the test support code (sink, client, PKI), independent of the
//! gateway, so a failure elsewhere is not a harness bug.

use anyhow::{ensure, Result};

use crate::support::pki::Pki;
use crate::support::sink::{Mode, Sink};
use crate::support::smtp_client::{dot_stuff, submit, SmtpClient};
use crate::support::{deadline, header_value, mentions_line};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_records_transaction_and_unstuffs_dots() -> Result<()> {
    let sink = Sink::start().await?;
    let body = b"Subject: t\r\n\r\n.leading dot\r\n..two\r\nend\r\n";
    submit(
        sink.addr(),
        "a@src.test",
        &["b@dst.test", "c@dst.test"],
        body,
    )
    .await?;
    let msgs = sink.wait_for(deadline(10), |m| !m.is_empty()).await?;
    ensure!(msgs.len() == 1, "{}", sink.summary());
    let m = &msgs[0];
    assert_eq!(m.mail_from, "a@src.test");
    assert_eq!(m.rcpts, vec!["b@dst.test", "c@dst.test"]);
    assert_eq!(m.ehlo, "client.test");
    assert!(!m.tls);
    assert_eq!(m.data, body.to_vec());
    assert_eq!(m.header("subject").as_deref(), Some("t"));
    assert_eq!(sink.connections(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_magic_replies_and_counts() -> Result<()> {
    let sink = Sink::start().await?;
    for round in 1..=3 {
        let mut c = SmtpClient::connect(sink.addr()).await?;
        c.ehlo("c.test").await?;
        c.expect("MAIL FROM:<s@x> BODY=8BITMIME", 250).await?;
        let r = c.cmd("RCPT TO:<x+550@dom>").await?;
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced(), Some("5.1.1"));
        assert_eq!(c.cmd("RCPT TO:<x+451@dom>").await?.code, 451);
        let expect = if round <= 2 { 451 } else { 250 };
        assert_eq!(c.cmd("RCPT TO:<x+451x2@dom>").await?.code, expect);
        c.expect("RCPT TO:<ok@dom>", 250).await?;
        c.quit().await?;
    }
    assert_eq!(sink.rcpt_attempts("x+451x2@dom"), 3);
    assert_eq!(sink.rcpt_attempts("X+550@DOM"), 3);
    assert_eq!(sink.connections(), 3);
    assert!(sink.messages().is_empty());

    // A data-time rejection refuses the whole transaction.
    let mut c = SmtpClient::connect(sink.addr()).await?;
    c.ehlo("c.test").await?;
    let r = c
        .send_message("s@x", &["ok@dom", "y+data550@dom"], b"x\r\n")
        .await?;
    assert_eq!(r.code, 550);
    let r = c.send_message("s@x", &["ok@dom"], b"x\r\n").await?;
    assert_eq!(r.code, 250);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].mail_params, "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_modes() -> Result<()> {
    let sink = Sink::start().await?;
    sink.set_mode(Mode::RejectAll("452 4.3.1 full".into()));
    let mut c = SmtpClient::connect(sink.addr()).await?;
    c.ehlo("c.test").await?;
    assert_eq!(c.cmd("MAIL FROM:<a@b>").await?.code, 452);
    c.quit().await?;
    sink.set_mode(Mode::Greeting("554 5.3.2 no service".into()));
    let c = SmtpClient::connect(sink.addr()).await?;
    assert_eq!(c.greeting.code, 554);
    sink.set_mode(Mode::CloseConnections);
    assert!(SmtpClient::connect(sink.addr()).await.is_err());
    sink.set_mode(Mode::Normal);
    submit(sink.addr(), "a@b", &["c@d"], b"x\r\n").await?;
    assert_eq!(sink.connections(), 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_pipelining_in_order() -> Result<()> {
    let sink = Sink::start().await?;
    let mut c = SmtpClient::connect(sink.addr()).await?;
    c.ehlo("c.test").await?;
    let mut batch = String::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        let (cmd, code) = match i % 4 {
            0 => ("NOOP", 250),
            1 => ("VRFY x", 252),
            2 => ("RCPT TO:<a@b>", 503),
            _ => ("RSET", 250),
        };
        batch.push_str(cmd);
        batch.push_str("\r\n");
        expected.push(code);
    }
    batch.push_str("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    expected.extend([250, 250, 354]);
    c.send_raw(batch.as_bytes()).await?;
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(c.read_reply().await?.code);
    }
    assert_eq!(got, expected);
    assert_eq!(c.send_data(b"x\r\n").await?.code, 250);
    c.quit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_starttls_resets_session() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start_tls(&pki).await?;
    let mut c = SmtpClient::connect(sink.addr()).await?;
    let caps = c.ehlo("before.test").await?;
    assert!(caps.has_capability("STARTTLS"));
    c.starttls(pki.client_config()?).await?;
    // The pre-TLS EHLO is forgotten.
    assert_eq!(c.cmd("MAIL FROM:<a@b>").await?.code, 503);
    let caps = c.ehlo("after.test").await?;
    assert!(!caps.has_capability("STARTTLS"));
    assert!(caps.has_capability("PIPELINING") && caps.has_capability("DSN"));
    assert_eq!(c.send_message("a@b", &["c@d"], b"x\r\n").await?.code, 250);
    c.quit().await?;
    let m = &sink.messages()[0];
    assert!(m.tls);
    assert_eq!(m.ehlo, "after.test");
    Ok(())
}

#[test]
fn helpers() {
    assert_eq!(
        dot_stuff(b".a\r\nb\r\n.\r\n"),
        b"..a\r\nb\r\n..\r\n".to_vec()
    );
    assert_eq!(dot_stuff(b"a"), b"a\r\n".to_vec());
    let data = b"Received: from a\r\n\tby b\r\nSubject: x\r\n\r\nSubject: body\r\n";
    assert_eq!(
        header_value(data, "received").as_deref(),
        Some("from a by b")
    );
    assert_eq!(header_value(data, "X-None"), None);
    assert!(mentions_line("error at line 12, column 3", 12));
    assert!(!mentions_line("error at line 120", 12));
    assert!(!mentions_line("error at line 1", 12));
}

#[test]
fn generated_config_is_the_documented_toml() -> Result<()> {
    use crate::support::gateway::{config_text, sink_route_toml, GatewayOptions};
    let opts = GatewayOptions {
        extra_toml: sink_route_toml(2526),
        trusted_networks: Some(vec!["192.0.2.0/24".into()]),
        max_message_size: Some("1KiB".into()),
        ..Default::default()
    };
    let text = config_text(&opts, std::path::Path::new("/tmp/x \"y\"/data"));
    let v: toml::Value = toml::from_str(&text)?;
    assert_eq!(v["hostname"].as_str(), Some("gw.test"));
    assert_eq!(v["data_dir"].as_str(), Some("/tmp/x \"y\"/data"));
    assert_eq!(v["submission"]["listen"][0].as_str(), Some("127.0.0.1:0"));
    assert_eq!(
        v["submission"]["trusted_networks"][0].as_str(),
        Some("192.0.2.0/24")
    );
    assert_eq!(v["submission"]["max_message_size"].as_str(), Some("1KiB"));
    assert_eq!(v["admin"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(v["queue"]["first_retry"].as_str(), Some("200ms"));
    assert_eq!(v["queue"]["max_attempts"].as_integer(), Some(8));
    assert_eq!(v["transports"]["sink"]["port"].as_integer(), Some(2526));
    assert_eq!(v["transports"]["sink"]["no_starttls"].as_bool(), Some(true));
    assert_eq!(v["routes"][0]["transport"].as_str(), Some("sink"));
    let plain = config_text(&GatewayOptions::default(), std::path::Path::new("/d"));
    assert!(!plain.contains("trusted_networks") && !plain.contains("max_message_size"));
    Ok(())
}

#[test]
fn ready_json_parses() -> Result<()> {
    use crate::support::gateway::parse_ready;
    let r = parse_ready(
        r#"{"pid": 42, "submission": ["127.0.0.1:40001"], "submission_tls": [], "admin": "127.0.0.1:40002"}"#,
    )?;
    assert_eq!(r.pid, 42);
    assert_eq!(r.submission, vec!["127.0.0.1:40001".parse()?]);
    assert!(r.submission_tls.is_empty());
    assert_eq!(r.admin, "127.0.0.1:40002".parse()?);
    assert!(parse_ready(r#"{"pid": 42}"#).is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_reads_chunked_and_plain_bodies() -> Result<()> {
    use crate::support::gateway::http_get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let replies: [&[u8]; 2] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"messa\r\n9\r\nges\":[]}\n\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
        ];
        for reply in replies {
            let (mut s, _) = listener.accept().await?;
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await?;
                anyhow::ensure!(n > 0, "request truncated");
                req.extend_from_slice(&buf[..n]);
            }
            anyhow::ensure!(req.starts_with(b"GET /api/queue HTTP/1.1\r\n"));
            s.write_all(reply).await?;
        }
        anyhow::Ok(())
    });
    let r = http_get(addr, "/api/queue").await?;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(0));
    let r = http_get(addr, "/api/queue").await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"nope");
    server.await??;
    Ok(())
}
