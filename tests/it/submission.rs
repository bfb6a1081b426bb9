//! The submission server: relay control, SIZE, DATA termination (no smuggling)
//! and PIPELINING (issue 2 acceptance).

use anyhow::{ensure, Result};

use crate::support::deadline;
use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, SmtpClient};

const SENDER: &str = "sender@src.test";

async fn relay_with(tweak: impl FnOnce(&mut GatewayOptions)) -> Result<(Sink, Gateway)> {
    let sink = Sink::start().await?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    tweak(&mut opts);
    let gw = Gateway::start(opts).await?;
    Ok((sink, gw))
}

async fn connect(gw: &Gateway) -> Result<SmtpClient> {
    let c = SmtpClient::connect(gw.submission_addr()).await?;
    ensure!(c.greeting.code == 220, "greeting: {}", c.greeting);
    Ok(c)
}

/// A client outside `trusted_networks` (loopback is not in 192.0.2.0/24) gets
/// 5.7.x for every RCPT, and nothing is queued or relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_client_cannot_relay() -> Result<()> {
    let (sink, gw) = relay_with(|o| o.trusted_networks = Some(vec!["192.0.2.0/24".into()])).await?;
    let mut c = connect(&gw).await?;
    c.ehlo("outsider.test").await?;
    c.cmd(&format!("MAIL FROM:<{SENDER}>")).await?;
    for rcpt in ["victim@dst.test", "someone@example.org", "rcpt@gw.test"] {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>")).await?;
        ensure!(
            (500..600).contains(&reply.code),
            "RCPT {rcpt} from an untrusted client: {reply}"
        );
        ensure!(
            reply.enhanced().is_some_and(|e| e.starts_with("5.7.")),
            "RCPT {rcpt}: expected enhanced code 5.7.x, got {reply}"
        );
    }
    let reply = c.cmd("DATA").await?;
    ensure!(
        reply.code >= 500,
        "DATA without an accepted recipient: {reply}"
    );
    c.quit().await?;
    let queued = gw.queue_messages().await?;
    ensure!(
        queued.is_empty(),
        "queued from an untrusted client: {queued:?}"
    );
    assert!(sink.messages().is_empty(), "{}", sink.summary());
    Ok(())
}

/// max_message_size = 1KiB: SIZE is advertised, a 4 KiB DATA gets 552, the
/// session continues, and only the later small message is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_data_gets_552_and_session_continues() -> Result<()> {
    let (sink, gw) = relay_with(|o| o.max_message_size = Some("1KiB".into())).await?;
    let mut c = connect(&gw).await?;
    let caps = c.ehlo("client.test").await?;
    assert_eq!(caps.capability("SIZE"), Some("SIZE 1024"), "EHLO: {caps}");

    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250).await?;
    c.expect("RCPT TO:<big@dst.test>", 250).await?;
    c.expect("DATA", 354).await?;
    let mut big = b"Subject: big\r\nMessage-ID: <big@client.test>\r\n\r\n".to_vec();
    while big.len() < 4096 {
        big.extend_from_slice(&[b'x'; 62]);
        big.extend_from_slice(b"\r\n");
    }
    let reply = c.send_data(&big).await?;
    assert_eq!(reply.code, 552, "4 KiB over a 1 KiB limit: {reply}");
    c.expect("NOOP", 250).await?;

    let small = simple_message(SENDER, "small@dst.test", "small", "small-1");
    let reply = c.send_message(SENDER, &["small@dst.test"], &small).await?;
    assert_eq!(reply.code, 250, "a small message after the 552: {reply}");
    c.quit().await?;

    sink.wait_for(deadline(60), |m| {
        m.iter().any(|m| m.has_rcpt("small@dst.test"))
    })
    .await?;
    gw.wait_queue_empty(deadline(60)).await?;
    let msgs = sink.messages();
    ensure!(
        msgs.len() == 1,
        "only the small message: {}",
        sink.summary()
    );
    assert_eq!(sink.rcpt_attempts("big@dst.test"), 0);
    Ok(())
}

/// Bare LF (and CR LF . LF / LF . CR LF) cannot end DATA: the "smuggled" commands
/// are content, exactly one message goes to the original recipient only, and the
/// bare LFs are normalised to CRLF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_dot_cannot_smuggle_a_second_message() -> Result<()> {
    let (sink, gw) = relay_with(|_| {}).await?;
    let separators: [&str; 3] = ["\n.\n", "\r\n.\n", "\n.\r\n"];
    let victim = "victim@dst.test";
    for (i, sep) in separators.iter().enumerate() {
        let orig = format!("orig{i}@dst.test");
        let mut c = connect(&gw).await?;
        c.ehlo("client.test").await?;
        c.expect(&format!("MAIL FROM:<{SENDER}>"), 250).await?;
        c.expect(&format!("RCPT TO:<{orig}>"), 250).await?;
        c.expect("DATA", 354).await?;
        let payload = format!(
            "Subject: smuggle {i}\r\nMessage-ID: <smuggle-{i}@client.test>\r\n\r\nhello{sep}\
             MAIL FROM:<evil@x>\r\nRCPT TO:<{victim}>\r\nDATA\r\nsmuggled {i}\r\n.\r\n"
        );
        c.send_raw(payload.as_bytes()).await?;
        let reply = c.read_reply().await?;
        assert_eq!(reply.code, 250, "separator {sep:?}: end of DATA: {reply}");
        // Had the separator ended DATA, the next replies would be 250 (MAIL),
        // 250 (RCPT), 354 (DATA), 250 (end): QUIT's 221 must come right away.
        let reply = c.cmd("QUIT").await?;
        assert_eq!(
            reply.code, 221,
            "separator {sep:?}: reply after DATA: {reply}"
        );
    }

    sink.wait_for(deadline(60), |m| {
        (0..separators.len()).all(|i| m.iter().any(|m| m.has_rcpt(&format!("orig{i}@dst.test"))))
    })
    .await?;
    gw.wait_queue_empty(deadline(60)).await?;
    let msgs = sink.messages();
    ensure!(
        msgs.len() == separators.len(),
        "one message per submission: {}",
        sink.summary()
    );
    assert_eq!(sink.rcpt_attempts(victim), 0, "{}", sink.summary());
    for (i, sep) in separators.iter().enumerate() {
        let orig = format!("orig{i}@dst.test");
        let m = msgs
            .iter()
            .find(|m| m.has_rcpt(&orig))
            .expect("waited for above");
        assert_eq!(m.rcpts, vec![orig.clone()], "separator {sep:?}");
        assert_eq!(m.mail_from, SENDER, "separator {sep:?}");
        let text = m.text();
        ensure!(
            text.contains("MAIL FROM:<evil@x>") && text.contains(&format!("smuggled {i}")),
            "separator {sep:?}: the smuggling attempt should be content:\n{text}"
        );
        let bare_lf = m
            .data
            .iter()
            .enumerate()
            .any(|(k, &b)| b == b'\n' && (k == 0 || m.data[k - 1] != b'\r'));
        ensure!(!bare_lf, "separator {sep:?}: bare LF relayed:\n{text:?}");
    }
    Ok(())
}

/// 500 commands written in one go get exactly 500 replies, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_pipelined_commands_get_500_replies_in_order() -> Result<()> {
    // Nearly all of them are junk (NOOP, RSET, VRFY): allow them, this is about order.
    let (sink, gw) =
        relay_with(|o| o.submission_toml.push_str("max_junk_commands = 1000\n")).await?;
    let mut c = connect(&gw).await?;
    let caps = c.ehlo("client.test").await?;
    assert!(caps.has_capability("PIPELINING"), "EHLO: {caps}");

    let mut batch = String::new();
    let mut expected = Vec::new();
    for i in 0..500 {
        let (cmd, code) = match i {
            100 => (format!("MAIL FROM:<{SENDER}>"), 250),
            101 => ("RCPT TO:<rcpt@dst.test>".to_string(), 250),
            102 => ("RSET".to_string(), 250),
            // Out of sequence: no transaction is open here.
            _ if i % 100 == 25 => ("RCPT TO:<rcpt@dst.test>".to_string(), 503),
            _ if i % 7 == 3 => ("VRFY someone".to_string(), 252),
            _ if i % 2 == 0 => ("NOOP".to_string(), 250),
            _ => ("RSET".to_string(), 250),
        };
        batch.push_str(&cmd);
        batch.push_str("\r\n");
        expected.push((cmd, code));
    }
    c.send_raw(batch.as_bytes()).await?;
    for (i, (cmd, code)) in expected.iter().enumerate() {
        let reply = c.read_reply().await?;
        assert_eq!(reply.code, *code, "reply #{i} (to {cmd:?}) was {reply}");
    }
    // Exactly 500: the next reply is QUIT's.
    let reply = c.cmd("QUIT").await?;
    assert_eq!(reply.code, 221, "after 500 replies: {reply}");
    let queued = gw.queue_messages().await?;
    ensure!(queued.is_empty(), "nothing was submitted: {queued:?}");
    assert!(sink.messages().is_empty());
    Ok(())
}
