//! Structured results (issue 13): each attempt is recorded as data — reply code,
//! enhanced status, the command it answered, whether the remote said it, the kind of
//! failure — and the admin API and DSNs read those fields.

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::support::deadline;
use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, submit};

const SENDER: &str = "sender@src.test";

/// The first recipient's latest attempt, from `GET /api/queue/{id}`, once it has one.
async fn latest_attempt(gw: &Gateway) -> Result<Value> {
    let end = deadline(30);
    loop {
        let msgs = gw.queue_messages().await?;
        if let Some(id) = msgs.first().and_then(|m| m["id"].as_str()) {
            let resp = gw.http_get(&format!("/api/queue/{id}")).await?;
            let v: Value = serde_json::from_slice(&resp.body)?;
            if let Some(last) = v["rcpts"][0]["history"].as_array().and_then(|h| h.last()) {
                return Ok(last.clone());
            }
        }
        ensure!(std::time::Instant::now() < end, "no attempt recorded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_is_recorded_as_data() -> Result<()> {
    let sink = Sink::start().await?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.first_retry = "1h".into();
    let gw = Gateway::start(opts).await?;
    let rcpt = "x+451@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", "r-1"),
    )
    .await?;
    let a = latest_attempt(&gw).await?;
    ensure!(a["code"] == 451, "{a}");
    ensure!(a["enhanced"] == "4.3.0", "{a}");
    ensure!(a["stage"] == "RCPT TO", "{a}");
    ensure!(a["remote_reply"] == true, "{a}");
    ensure!(a["reason"] == "recipient", "{a}");
    ensure!(a["remote_host"] == "127.0.0.1", "{a}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_ours_and_says_so() -> Result<()> {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut opts = GatewayOptions::relay_to(port);
    opts.first_retry = "1h".into();
    let gw = Gateway::start(opts).await?;
    submit(
        gw.submission_addr(),
        SENDER,
        &["a@dst.test"],
        &simple_message(SENDER, "a@dst.test", "s", "c-1"),
    )
    .await?;
    let a = latest_attempt(&gw).await?;
    ensure!(a["remote_reply"] == false, "{a}");
    ensure!(a["reason"] == "connect", "{a}");
    ensure!(a["stage"] == "connect", "{a}");
    ensure!(a["enhanced"] == "4.4.1", "{a}");
    let reply = a["reply"].as_str().context("reply")?;
    ensure!(
        reply.starts_with("4.4.1 ") && reply.contains("connect failed"),
        "{reply}"
    );
    Ok(())
}

/// A rejection at the end of DATA: the DSN's Status and Diagnostic-Code come from the
/// recorded fields (the remote's enhanced code, type smtp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_rejection_reaches_the_dsn_from_fields() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let rcpt = "x+data550@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", "d-1"),
    )
    .await?;
    let msgs = sink
        .wait_for(deadline(60), |m| m.iter().any(|m| m.is_bounce()))
        .await?;
    let dsn = msgs.iter().find(|m| m.is_bounce()).context("dsn")?;
    let text = dsn.text();
    ensure!(text.contains("Status: 5.6.0\r\n"), "{text}");
    ensure!(
        text.contains("Diagnostic-Code: smtp; 550 5.6.0 magic data reject\r\n"),
        "{text}"
    );
    ensure!(text.contains("Remote-MTA: dns; 127.0.0.1\r\n"), "{text}");
    Ok(())
}

/// A smarthost that takes two recipients per transaction: the other three go in further
/// transactions of the same attempt (landed main handled this only on the direct path:
/// through a smarthost they waited a full retry interval, here an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_452_too_many_recipients_go_in_the_same_attempt() -> Result<()> {
    let sink = Sink::start().await?;
    sink.set_mode(crate::support::sink::Mode::RcptsPerTransaction(2));
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.first_retry = "1h".into();
    let gw = Gateway::start(opts).await?;
    let rcpts: Vec<String> = (0..5).map(|i| format!("r{i}@dst.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    submit(
        gw.submission_addr(),
        SENDER,
        &refs,
        &simple_message(SENDER, &rcpts[0], "s", "m-1"),
    )
    .await?;
    let msgs = sink
        .wait_for(deadline(30), |m| {
            rcpts.iter().all(|r| m.iter().any(|x| x.has_rcpt(r)))
        })
        .await?;
    ensure!(
        msgs.len() == 3,
        "three transactions (2+2+1): {}",
        sink.summary()
    );
    for r in &rcpts {
        let copies = msgs.iter().filter(|m| m.has_rcpt(r)).count();
        ensure!(copies == 1, "{r} delivered {copies} times");
    }
    gw.wait_queue_empty(deadline(10)).await?;
    Ok(())
}

/// The DSN read by an independent MIME parser (Python's `email` package): a
/// multipart/report with the three parts, the status part's per-recipient block with
/// the fields, the original returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_parses_with_python_email() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let rcpt = "x+550@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "py", "py-1"),
    )
    .await?;
    let msgs = sink
        .wait_for(deadline(60), |m| m.iter().any(|m| m.is_bounce()))
        .await?;
    let dsn = msgs.iter().find(|m| m.is_bounce()).context("dsn")?;
    let dir = crate::support::temp_dir("dsn-py")?;
    let path = dir.path().join("dsn.eml");
    std::fs::write(&path, dsn.text())?;
    let script = r#"
import email, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=policy.default)
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status", m.get_param("report-type")
parts = m.get_payload()
assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/rfc822"], [p.get_content_type() for p in parts]
text = parts[0].get_content()
assert "550 5.1.1 magic reject" in text, text
blocks = parts[1].get_payload()
assert blocks[0]["Reporting-MTA"].startswith("dns;"), blocks[0]["Reporting-MTA"]
r = blocks[1]
assert r["Final-Recipient"].replace(" ", "") == "rfc822;x+550@dst.test", r["Final-Recipient"]
assert r["Action"] == "failed" and r["Status"] == "5.1.1", (r["Action"], r["Status"])
assert r["Diagnostic-Code"].startswith("smtp;"), r["Diagnostic-Code"]
original = parts[2].get_payload()[0]
assert original["Subject"] == "py", original["Subject"]
print("ok")
"#;
    let out = crate::support::run_python(script, &[&path.to_string_lossy()]).await?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "python email: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The same through the other kinds: direct delivery through a SOCKS proxy (the `socks`
/// kind), and plain direct delivery, both to an MX taking two recipients per
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_socks_452_too_many_recipients_go_in_the_same_attempt() -> Result<()> {
    use relaygate_transports::testkit::TestDns;
    for through_proxy in [false, true] {
        let dns = TestDns::start().await?;
        dns.add_mx("dst.test", 10, "mx.dst.test");
        dns.add_a("mx.dst.test", std::net::Ipv4Addr::LOCALHOST);
        let sink = Sink::start().await?;
        sink.set_mode(crate::support::sink::Mode::RcptsPerTransaction(2));
        let proxy = crate::support::microsocks::Microsocks::start(None)?;
        let mut toml = format!(
            "[dns]\nnameservers = [{}]\n\n[direct]\nport_overrides = {{ \"mx.dst.test\" = {} }}\n",
            crate::support::gateway::toml_str(&dns.addr().to_string()),
            sink.port()
        );
        if through_proxy {
            toml.push_str(&format!(
                "\n[transports.proxy]\nkind = \"socks\"\naddress = [\"{}\"]\n\n\
                 [[routes]]\nto_domain = [\"dst.test\"]\ntransport = \"proxy\"\n",
                proxy.addr
            ));
        }
        let gw = Gateway::start(GatewayOptions {
            extra_toml: toml,
            first_retry: "1h".into(),
            ..Default::default()
        })
        .await?;
        let rcpts: Vec<String> = (0..5).map(|i| format!("k{i}@dst.test")).collect();
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        submit(
            gw.submission_addr(),
            SENDER,
            &refs,
            &simple_message(SENDER, &rcpts[0], "s", "k-1"),
        )
        .await?;
        let msgs = sink
            .wait_for(deadline(30), |m| {
                rcpts.iter().all(|r| m.iter().any(|x| x.has_rcpt(r)))
            })
            .await
            .with_context(|| format!("through_proxy={through_proxy}"))?;
        ensure!(
            msgs.len() == 3,
            "through_proxy={through_proxy}: three transactions: {}",
            sink.summary()
        );
        gw.wait_queue_empty(deadline(10)).await?;
    }
    Ok(())
}
