//! Hostile clients (issue 12): what one connection may take from the gateway. Replies to
//! a client that does not read are bounded and it is dropped; junk commands, errors,
//! slow sessions and slow DATA end with 421; connection slots are capped per address
//! and some are kept for trusted clients.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::AsyncWriteExt;

use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::Sink;
use crate::support::smtp_client::SmtpClient;

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("VmRSS")
}

async fn gateway(submission_toml: &str) -> Result<(Sink, Gateway)> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        submission_toml: submission_toml.to_string(),
        ..GatewayOptions::relay_to(sink.port())
    })
    .await?;
    Ok((sink, gw))
}

/// A client pipelines commands without ever reading the replies, each write ending in
/// the middle of a line (landed main kept reading and buffered every reply: 24 MB sent
/// took it from 23 MB to 461 MB RSS). Now the gateway stops reading once its replies
/// back up, holds a bounded amount, and drops the client after `command_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_pipeliner_is_bounded_and_dropped() -> Result<()> {
    let (_sink, gw) = gateway("command_timeout = \"2s\"\nmax_junk_commands = 100000000\n").await?;
    let pid = gw.pid().context("pid")?;
    let before = rss_kib(pid)?;
    let mut stream = tokio::net::TcpStream::connect(gw.submission_addr()).await?;
    // Every write ends in the middle of a NOOP, which the next one completes.
    stream.write_all(b"NO").await?;
    // Small writes, paced, so that each of the gateway's reads ends mid-line (with
    // landed main's rule, "write replies only when the input buffer is empty", it then
    // never wrote a reply and kept every one in memory).
    let chunk = "OP\r\n".to_string() + &"NOOP\r\n".repeat(1_300) + "NO";
    let chunk = chunk.as_bytes();
    let mut pacing = tokio::time::interval(Duration::from_millis(2));
    let mut sent = 0usize;
    let mut peak = before;
    let mut dropped = false;
    let started = Instant::now();
    // Bounded: at most 24 MB, 60 s. A write that blocks for 5 s means the gateway has
    // stopped reading (longer than its 2 s command_timeout, after which it drops us).
    while sent < 24 << 20 && started.elapsed() < Duration::from_secs(60) {
        pacing.tick().await;
        match tokio::time::timeout(Duration::from_secs(5), stream.write_all(chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => {
                dropped = true;
                break;
            }
            Err(_) => break,
        }
        peak = peak.max(rss_kib(pid)?);
    }
    peak = peak.max(rss_kib(pid)?);
    ensure!(
        peak < before + 32 * 1024,
        "RSS grew from {before} KiB to {peak} KiB after {sent} bytes from one client"
    );
    if !dropped {
        // The stalled client is dropped after command_timeout: the connection ends.
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            while stream.write_all(chunk).await.is_ok() {}
        })
        .await;
        ensure!(closed.is_ok(), "the non-reading client was never dropped");
    }
    let metrics = gw.metrics_text().await?;
    ensure!(
        metrics.lines().any(|l| l
            .starts_with("relaygate_submission_limits_total{limit=\"write_timeout\"}")
            && !l.ends_with(" 0")),
        "write_timeout not counted"
    );
    Ok(())
}

/// The same pipeliner against the default config, amplified: each `EHLO` line of 8 bytes
/// gets a reply of several hundred, and each write ends mid-line in small paced writes,
/// so every read of the gateway ends mid-line. Landed main answered only when its input
/// buffer was empty, so it never wrote and kept every reply (this test measured it past
/// +32 MiB after about 1 MB sent); now replies go out at 16 KiB, the gateway stops
/// reading when the client does not take them, and its memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_ehlo_pipeliner_does_not_grow_memory() -> Result<()> {
    let (_sink, gw) = gateway("").await?;
    let pid = gw.pid().context("pid")?;
    let before = rss_kib(pid)?;
    let mut stream = tokio::net::TcpStream::connect(gw.submission_addr()).await?;
    stream.write_all(b"EH").await?;
    let chunk = "LO a\r\n".to_string() + &"EHLO a\r\n".repeat(250) + "EH";
    let chunk = chunk.as_bytes();
    let mut pacing = tokio::time::interval(Duration::from_millis(5));
    let (mut sent, mut peak) = (0usize, before);
    let started = Instant::now();
    // Bounded: 3 MB or 40 s; stops early when the gateway stops reading (a write blocked
    // for 3 s) or once memory has clearly grown.
    while sent < 3 << 20 && started.elapsed() < Duration::from_secs(40) {
        pacing.tick().await;
        match tokio::time::timeout(Duration::from_secs(3), stream.write_all(chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) | Err(_) => break,
        }
        peak = peak.max(rss_kib(pid)?);
        if peak > before + 32 * 1024 {
            break;
        }
    }
    ensure!(
        peak < before + 32 * 1024,
        "RSS grew from {before} KiB to {peak} KiB after {sent} bytes from one client"
    );
    Ok(())
}

/// 100 NOOP/RSET/VRFY/HELP (the default `max_junk_commands`) are fine; one more gets
/// 421 and the connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_commands_end_with_421() -> Result<()> {
    let (_sink, gw) = gateway("").await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("client.test").await?;
    for i in 0..100 {
        let cmd = ["NOOP", "RSET", "VRFY x", "HELP"][i % 4];
        let r = c.cmd(cmd).await?;
        ensure!(r.code < 400, "{cmd} #{i}: {r}");
    }
    let r = c.cmd("NOOP").await?;
    ensure!(
        r.code == 421 && r.text().contains("4.7.0"),
        "101st junk: {r}"
    );
    ensure!(c.cmd("NOOP").await.is_err(), "still connected after 421");
    Ok(())
}

/// `max_errors` syntax errors end the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_end_with_421() -> Result<()> {
    let (_sink, gw) = gateway("max_errors = 3\n").await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    ensure!(c.cmd("BOGUS").await?.code == 500);
    ensure!(c.cmd("BOGUS").await?.code == 500);
    ensure!(c.cmd("BOGUS").await?.code == 500);
    let r = c.read_reply().await?;
    ensure!(r.code == 421, "after the third error: {r}");
    ensure!(c.cmd("NOOP").await.is_err(), "still connected after 421");
    Ok(())
}

/// The whole session has a deadline, however busy the client keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_time_limit() -> Result<()> {
    let (_sink, gw) = gateway("session_timeout = \"2s\"\n").await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("client.test").await?;
    let started = Instant::now();
    // Idle: the next command wait is cut to what is left of the session.
    let r = c.read_reply().await?;
    ensure!(r.code == 421 && r.text().contains("4.4.2"), "{r}");
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "421 came after {:?}",
        started.elapsed()
    );
    Ok(())
}

/// DATA has one deadline for the whole phase: a client dribbling a byte at a time
/// (each read in time) is cut off when it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_time_limit_cuts_a_dribbling_client() -> Result<()> {
    let (_sink, gw) = gateway("data_timeout = \"2s\"\n").await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("client.test").await?;
    c.expect("MAIL FROM:<a@src.test>", 250).await?;
    c.expect("RCPT TO:<b@dst.test>", 250).await?;
    c.expect("DATA", 354).await?;
    let started = Instant::now();
    // One byte every 200 ms (pacing the load, not waiting for the gateway), at most 15 s.
    let mut pacing = tokio::time::interval(Duration::from_millis(200));
    loop {
        pacing.tick().await;
        if started.elapsed() > Duration::from_secs(15) {
            bail!("the dribbling client was never cut off");
        }
        if c.send_raw(b"x").await.is_err() {
            break;
        }
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(10), c.read_reply()).await {
            ensure!(r.code == 421, "{r}");
            break;
        }
    }
    ensure!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

/// Untrusted clients: at most `max_connections_per_ip` each, and together at most nine
/// tenths of `max_connections`; the rest is kept for trusted clients (the apps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_slots_per_address_and_reserved_for_trusted() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        trusted_networks: Some(vec!["127.0.0.1/32".into()]),
        submission_toml: "max_connections = 10\nmax_connections_per_ip = 3\n".into(),
        ..GatewayOptions::relay_to(sink.port())
    })
    .await?;
    let addr = gw.submission_addr();
    let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let c = SmtpClient::connect_from(addr, ip(2)).await?;
        ensure!(c.greeting.code == 220, "{}", c.greeting);
        held.push(c);
    }
    let fourth = SmtpClient::connect_from(addr, ip(2)).await?;
    ensure!(
        fourth.greeting.code == 421 && fourth.greeting.text().contains("4.7.0"),
        "4th from one address: {}",
        fourth.greeting
    );
    for n in 3..9 {
        let c = SmtpClient::connect_from(addr, ip(n)).await?;
        ensure!(c.greeting.code == 220, "from {}: {}", ip(n), c.greeting);
        held.push(c);
    }
    let over = SmtpClient::connect_from(addr, ip(20)).await?;
    ensure!(
        over.greeting.code == 421,
        "10th untrusted: {}",
        over.greeting
    );
    let app = SmtpClient::connect_from(addr, ip(1)).await?;
    ensure!(
        app.greeting.code == 220,
        "a trusted client must get the reserved slot: {}",
        app.greeting
    );
    Ok(())
}
