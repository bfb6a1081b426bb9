//! Submission → spool → queue → `smtp` smarthost transport → sink; retries, DSNs
//! and grouping of recipients (issue 2 acceptance).

use anyhow::{ensure, Context, Result};

use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::{Received, Sink};
use crate::support::smtp_client::{simple_message, submit};
use crate::support::{deadline, run_python, temp_dir};

const SENDER: &str = "sender@src.test";
/// Generous: the compressed schedule makes every scenario take seconds, not minutes.
const DELIVERY_SECS: u64 = 60;

async fn relay() -> Result<(Sink, Gateway)> {
    relay_with(|_| {}).await
}

async fn relay_with(tweak: impl FnOnce(&mut GatewayOptions)) -> Result<(Sink, Gateway)> {
    let sink = Sink::start().await?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    tweak(&mut opts);
    let gw = Gateway::start(opts).await?;
    Ok((sink, gw))
}

/// The values of every `name:` field line anywhere in the message (the DSN's
/// per-recipient fields live in a MIME part, not in the top-level header).
fn field_values(m: &Received, name: &str) -> Vec<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    m.text()
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .collect()
}

fn actions(m: &Received) -> Vec<String> {
    field_values(m, "Action")
        .into_iter()
        .map(|a| a.to_ascii_lowercase())
        .collect()
}

/// A DSN to `SENDER`: null reverse path, the sender as the only recipient.
fn is_dsn_to_sender(m: &Received) -> bool {
    m.is_bounce() && m.rcpts.len() == 1 && m.has_rcpt(SENDER)
}

fn dsns_to_sender(msgs: &[Received]) -> Vec<&Received> {
    msgs.iter().filter(|m| is_dsn_to_sender(m)).collect()
}

/// Checks the RFC 3464/6522 shape of a DSN.
fn assert_dsn_shape(m: &Received) -> Result<()> {
    let ct = m
        .header("Content-Type")
        .context("DSN without a Content-Type header")?
        .to_ascii_lowercase()
        .replace('"', "");
    ensure!(
        ct.starts_with("multipart/report"),
        "DSN Content-Type is {ct:?}"
    );
    ensure!(
        ct.contains("report-type=delivery-status"),
        "DSN Content-Type lacks report-type=delivery-status: {ct:?}"
    );
    ensure!(
        m.text()
            .to_ascii_lowercase()
            .contains("content-type: message/delivery-status"),
        "DSN without a message/delivery-status part:\n{}",
        m.text()
    );
    Ok(())
}

fn final_recipients(m: &Received) -> Vec<String> {
    field_values(m, "Final-Recipient")
        .into_iter()
        .map(|v| {
            // "rfc822; user@domain"
            v.split_once(';')
                .map_or(v.as_str(), |(_, a)| a)
                .trim()
                .to_ascii_lowercase()
        })
        .collect()
}

/// smtplib (a real client) submits; the sink gets the same envelope and exactly
/// the submitted bytes behind one Received header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_smtplib_is_relayed_byte_exact() -> Result<()> {
    let (sink, gw) = relay().await?;
    let rcpt = "rcpt@dst.test";
    let body: &[u8] = b"From: Sender <sender@src.test>\r\n\
        To: <rcpt@dst.test>\r\n\
        Subject: smtplib submission\r\n\
        Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
        Message-ID: <smtplib-1@client.test>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=us-ascii\r\n\
        \r\n\
        First line.\r\n\
        .a line that starts with a dot\r\n\
        ..and one with two\r\n\
        \r\n\
        trailing blanks   \r\n\
        last line\r\n";
    let dir = temp_dir("relaygate-smtplib-")?;
    let body_path = dir.path().join("body.eml");
    std::fs::write(&body_path, body)?;
    let script = r#"
import smtplib, sys
host, port, sender, rcpt, path = sys.argv[1:6]
body = open(path, "rb").read()
with smtplib.SMTP(host, int(port), local_hostname="python.test", timeout=30) as s:
    refused = s.sendmail(sender, [rcpt], body)
    if refused:
        sys.exit("refused: %r" % (refused,))
"#;
    let addr = gw.submission_addr();
    let out = run_python(
        script,
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            SENDER,
            rcpt,
            &body_path.to_string_lossy(),
        ],
    )
    .await?;
    ensure!(
        out.status.success(),
        "smtplib failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    sink.wait_for(deadline(DELIVERY_SECS), |m| {
        m.iter().any(|m| m.has_rcpt(rcpt))
    })
    .await?;
    gw.wait_queue_empty(deadline(DELIVERY_SECS)).await?;
    let msgs = sink.messages();
    ensure!(msgs.len() == 1, "expected one message: {}", sink.summary());
    let m = &msgs[0];
    assert_eq!(m.mail_from, SENDER);
    assert_eq!(m.rcpts, vec![rcpt.to_string()]);

    let text = m.text();
    ensure!(
        text.starts_with("Received: from"),
        "data does not start with our Received header:\n{text}"
    );
    // The Received header may be folded: skip its continuation lines.
    let mut offset = text.find("\r\n").context("no CRLF in data")? + 2;
    while text[offset..].starts_with([' ', '\t']) {
        offset += text[offset..].find("\r\n").context("unterminated line")? + 2;
    }
    let rest = &m.data[offset..];
    ensure!(
        rest == body,
        "relayed bytes differ from the submitted ones:\n--- got\n{}\n--- submitted\n{}",
        String::from_utf8_lossy(rest),
        String::from_utf8_lossy(body)
    );
    Ok(())
}

/// 451 twice, then 250: delivered by attempt 3; the queue empties; no DSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempfail_twice_then_delivered_on_third_attempt() -> Result<()> {
    let (sink, gw) = relay().await?;
    let rcpt = "x+451x2@dst.test";
    let body = simple_message(SENDER, rcpt, "retry", "retry-1");
    submit(gw.submission_addr(), SENDER, &[rcpt], &body).await?;

    sink.wait_for(deadline(DELIVERY_SECS), |m| {
        m.iter().any(|m| m.has_rcpt(rcpt))
    })
    .await?;
    gw.wait_queue_empty(deadline(DELIVERY_SECS)).await?;
    assert_eq!(sink.rcpt_attempts(rcpt), 3, "{}", sink.summary());
    let msgs = sink.messages();
    let delivered = msgs.iter().filter(|m| m.has_rcpt(rcpt)).count();
    assert_eq!(delivered, 1, "{}", sink.summary());
    assert!(
        dsns_to_sender(&msgs).is_empty(),
        "no DSN expected: {}",
        sink.summary()
    );
    Ok(())
}

/// 550 at RCPT: one failure DSN to the sender with the remote's reply; the
/// recipient is tried once and the queue empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_rejection_bounces_with_dsn() -> Result<()> {
    let (sink, gw) = relay().await?;
    let rcpt = "x+550@dst.test";
    let body = simple_message(SENDER, rcpt, "bounce", "bounce-1");
    submit(gw.submission_addr(), SENDER, &[rcpt], &body).await?;

    sink.wait_for(deadline(DELIVERY_SECS), |m| m.iter().any(is_dsn_to_sender))
        .await?;
    gw.wait_queue_empty(deadline(DELIVERY_SECS)).await?;
    let msgs = sink.messages();
    let dsns = dsns_to_sender(&msgs);
    ensure!(dsns.len() == 1, "expected one DSN: {}", sink.summary());
    let dsn = dsns[0];
    assert_eq!(dsn.mail_from, "");
    assert_dsn_shape(dsn)?;
    assert_eq!(actions(dsn), vec!["failed"], "{}", dsn.text());
    assert_eq!(final_recipients(dsn), vec![rcpt], "{}", dsn.text());
    ensure!(
        dsn.text().contains("550 5.1.1 magic reject"),
        "DSN lacks the remote's reply:\n{}",
        dsn.text()
    );
    assert_eq!(sink.rcpt_attempts(rcpt), 1, "a 5xx must not be retried");
    assert_eq!(msgs.len(), 1, "only the DSN: {}", sink.summary());
    Ok(())
}

/// 451 forever, max_attempts = 6: a delayed DSN after attempt 5, a failure DSN
/// after attempt 6, and exactly 6 attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempfail_forever_gives_delayed_then_failed_dsn() -> Result<()> {
    // 300ms doubling: attempts at about 0, 0.3, 0.9, 2.1, 4.5 and 9.3 s, so the
    // delayed DSN (after attempt 5) has ~4.8 s to arrive before attempt 6.
    let (sink, gw) = relay_with(|o| {
        o.first_retry = "300ms".into();
        o.max_attempts = 6;
    })
    .await?;
    let rcpt = "x+451@dst.test";
    let body = simple_message(SENDER, rcpt, "forever", "forever-1");
    submit(gw.submission_addr(), SENDER, &[rcpt], &body).await?;

    sink.wait_for(deadline(DELIVERY_SECS), |m| {
        m.iter()
            .any(|m| is_dsn_to_sender(m) && actions(m).iter().any(|a| a == "delayed"))
    })
    .await?;
    let attempts_at_delayed = sink.rcpt_attempts(rcpt);
    sink.wait_for(deadline(DELIVERY_SECS), |m| {
        m.iter()
            .any(|m| is_dsn_to_sender(m) && actions(m).iter().any(|a| a == "failed"))
    })
    .await?;
    gw.wait_queue_empty(deadline(DELIVERY_SECS)).await?;

    assert_eq!(
        attempts_at_delayed, 5,
        "the delayed DSN must follow the 5th attempt"
    );
    assert_eq!(sink.rcpt_attempts(rcpt), 6, "{}", sink.summary());
    let msgs = sink.messages();
    let dsns = dsns_to_sender(&msgs);
    ensure!(dsns.len() == 2, "expected two DSNs: {}", sink.summary());
    assert_eq!(actions(dsns[0]), vec!["delayed"], "{}", dsns[0].text());
    assert_eq!(actions(dsns[1]), vec!["failed"], "{}", dsns[1].text());
    for dsn in &dsns {
        assert_dsn_shape(dsn)?;
        assert_eq!(final_recipients(dsn), vec![rcpt], "{}", dsn.text());
    }
    ensure!(
        dsns[1].text().contains("451 4.3.0 magic tempfail"),
        "the failure DSN lacks the last reply:\n{}",
        dsns[1].text()
    );
    assert!(msgs.iter().all(|m| !m.has_rcpt(rcpt)));

    // Will-Retry-Until is accurate: the last attempt (the 6th) comes ~4.8 s (±10%) after
    // the 5th, and it really happened by then (dates have whole seconds).
    let date = |m: &Received, field: &str| -> Result<std::time::SystemTime> {
        let v = field_values(m, field)
            .into_iter()
            .next()
            .with_context(|| format!("no {field} in\n{}", m.text()))?;
        Ok(httpdate::parse_http_date(&v.replace(" +0000", " GMT"))?)
    };
    let until = date(dsns[0], "Will-Retry-Until")?;
    let fifth = date(dsns[0], "Last-Attempt-Date")?;
    let sixth = date(dsns[1], "Last-Attempt-Date")?;
    let ahead = until.duration_since(fifth).unwrap_or_default().as_secs();
    ensure!(
        (3..=7).contains(&ahead),
        "Will-Retry-Until is {ahead}s after the 5th attempt"
    );
    let diff = until
        .duration_since(sixth)
        .or_else(|_| sixth.duration_since(until))
        .unwrap_or_default()
        .as_secs();
    ensure!(
        diff <= 2,
        "the 6th attempt came {diff}s away from Will-Retry-Until"
    );
    Ok(())
}

/// Three recipients at one domain in one submission: one transaction, three RCPTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_at_one_domain_share_one_transaction() -> Result<()> {
    let (sink, gw) = relay().await?;
    let rcpts = ["a@dst.test", "b@dst.test", "c@dst.test"];
    let body = simple_message(SENDER, "a@dst.test", "three", "three-1");
    submit(gw.submission_addr(), SENDER, &rcpts, &body).await?;

    sink.wait_for(deadline(DELIVERY_SECS), |m| {
        rcpts.iter().all(|r| m.iter().any(|m| m.has_rcpt(r)))
    })
    .await?;
    gw.wait_queue_empty(deadline(DELIVERY_SECS)).await?;
    let msgs = sink.messages();
    ensure!(
        msgs.len() == 1,
        "expected one transaction: {}",
        sink.summary()
    );
    let mut got = msgs[0].rcpts.clone();
    got.sort();
    assert_eq!(got, rcpts);
    for r in rcpts {
        assert_eq!(sink.rcpt_attempts(r), 1, "{r}");
    }
    Ok(())
}

/// One of three recipients gets 550: only it bounces; the other two are
/// delivered once, together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rejected_recipient_bounces_alone() -> Result<()> {
    let (sink, gw) = relay().await?;
    let bad = "x+550@dst.test";
    let good = ["a@dst.test", "c@dst.test"];
    let body = simple_message(SENDER, "a@dst.test", "mixed", "mixed-1");
    submit(
        gw.submission_addr(),
        SENDER,
        &[good[0], bad, good[1]],
        &body,
    )
    .await?;

    sink.wait_for(deadline(DELIVERY_SECS), |m| {
        m.iter().any(is_dsn_to_sender) && good.iter().all(|r| m.iter().any(|m| m.has_rcpt(r)))
    })
    .await?;
    gw.wait_queue_empty(deadline(DELIVERY_SECS)).await?;
    let msgs = sink.messages();

    let delivered: Vec<&Received> = msgs.iter().filter(|m| !m.is_bounce()).collect();
    ensure!(
        delivered.len() == 1,
        "expected one delivery transaction: {}",
        sink.summary()
    );
    let mut got = delivered[0].rcpts.clone();
    got.sort();
    assert_eq!(got, good, "{}", sink.summary());

    let dsns = dsns_to_sender(&msgs);
    ensure!(dsns.len() == 1, "expected one DSN: {}", sink.summary());
    assert_dsn_shape(dsns[0])?;
    assert_eq!(final_recipients(dsns[0]), vec![bad], "{}", dsns[0].text());
    assert_eq!(actions(dsns[0]), vec!["failed"]);
    assert_eq!(sink.rcpt_attempts(bad), 1);
    Ok(())
}
