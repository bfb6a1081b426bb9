//! The admin listener: health, Prometheus metrics that move, and `relaygate queue list`.

use anyhow::{ensure, Context, Result};

use crate::support::deadline;
use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::{Mode, Sink};
use crate::support::smtp_client::{simple_message, SmtpClient};

/// The value of a metric line that starts with `prefix` (name plus labels).
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_and_health_move_with_traffic() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let health = gw.http_get("/healthz").await?;
    ensure!(health.status == 200, "healthz: {}", health.status);

    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.send_message(
        "a@src.test",
        &["m@dst.test"],
        &simple_message("a@src.test", "m@dst.test", "m", "m-1"),
    )
    .await?;
    sink.wait_for(deadline(30), |m| !m.is_empty()).await?;
    gw.wait_queue_empty(deadline(10)).await?;

    let text = gw.metrics_text().await?;
    ensure!(
        metric(&text, "relaygate_submissions_accepted_total") == Some(1.0),
        "accepted counter:\n{text}"
    );
    let delivered = text
        .lines()
        .find(|l| {
            // Every configured transport has its series (at 0 until used).
            l.starts_with("relaygate_delivery_attempts_total")
                && l.contains("result=\"delivered\"")
                && l.contains("transport=\"sink\"")
        })
        .context("no delivered attempts metric")?;
    ensure!(
        delivered.contains("transport=\"sink\"") && delivered.ends_with(" 1"),
        "{delivered}"
    );
    ensure!(
        text.contains("relaygate_queue_delivery_duration_seconds_bucket"),
        "no duration histogram:\n{text}"
    );
    ensure!(
        metric(&text, "relaygate_queue_messages") == Some(0.0),
        "queue gauge:\n{text}"
    );
    Ok(())
}

#[tokio::test]
async fn queue_list_shows_the_remote_reply() -> Result<()> {
    let sink = Sink::start().await?;
    sink.set_mode(Mode::RejectAll("451 4.3.0 try later please".into()));
    let gw = Gateway::start(GatewayOptions {
        first_retry: "1h".into(),
        ..GatewayOptions::relay_to(sink.port())
    })
    .await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.send_message(
        "a@src.test",
        &["q@dst.test"],
        &simple_message("a@src.test", "q@dst.test", "q", "q-1"),
    )
    .await?;

    let end = deadline(30);
    loop {
        let out = gw.run_cli(&["queue", "list"]).await?;
        ensure!(out.code == Some(0), "queue list failed: {out}");
        if out.stdout.contains("try later please") {
            ensure!(out.stdout.contains("<q@dst.test>"), "{out}");
            ensure!(out.stdout.contains("attempts=1"), "{out}");
            break;
        }
        ensure!(std::time::Instant::now() < end, "reply never listed: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = gw.run_cli(&["queue", "list", "--json"]).await?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).context("queue list --json")?;
    let rcpt = &v["messages"][0]["rcpts"][0];
    ensure!(
        rcpt["status"] == "pending" && rcpt["transport"] == "sink",
        "{v}"
    );
    ensure!(rcpt["next_attempt"].is_string(), "{v}");
    Ok(())
}

/// One raw HTTP/1.1 request with the given `Host` and extra header lines; the status.
async fn raw_status(addr: std::net::SocketAddr, head: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, anyhow::Error>(crate::support::gateway::parse_http(&raw)?.status)
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fut).await?
}

/// DNS rebinding: a page on another name that resolves to 127.0.0.1 reaches the listener
/// with its own Host header; that is refused. The listen address, localhost and
/// `admin.allowed_hosts` are served.
#[tokio::test]
async fn admin_serves_only_its_own_host_names() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let addr = gw.admin_addr();
    let get =
        |host: &str| format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let port = addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".into(),
    ] {
        let st = raw_status(addr, &get(&host)).await?;
        ensure!(st == 200, "Host {host}: {st}");
    }
    for host in [
        format!("evil.example:{port}"),
        "attacker.test".into(),
        format!("127.0.0.1.evil.test:{port}"),
    ] {
        let st = raw_status(addr, &get(&host)).await?;
        ensure!(st == 421, "Host {host} must be refused, got {st}");
    }
    Ok(())
}

/// A cross-site form post (no JSON content type) cannot change the queue; the CLI's
/// JSON requests can.
#[tokio::test]
async fn admin_state_changes_need_json() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let addr = gw.admin_addr();
    let post = |ctype: &str, body: &str| {
        format!(
            "POST /api/queue/retry HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for ctype in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let st = raw_status(addr, &post(ctype, "{\"all\":true}")).await?;
        ensure!(st == 415, "{ctype}: {st}");
    }
    let st = raw_status(addr, &post("application/json", "{\"all\":true}")).await?;
    ensure!(st == 200, "JSON: {st}");
    let out = gw.run_cli(&["queue", "retry", "--all"]).await?;
    ensure!(out.code == Some(0), "CLI: {out}");
    Ok(())
}

/// Idle connections do not pile up: each must send its headers within a few seconds,
/// and the listener stays usable.
#[tokio::test]
async fn admin_drops_idle_connections() -> Result<()> {
    use tokio::io::AsyncReadExt;
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(gw.admin_addr()).await?);
    }
    // Every one of them is closed by the gateway (EOF or reset), well within 20 s.
    let all_closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        for s in &mut idle {
            let mut b = [0u8; 64];
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    })
    .await;
    ensure!(all_closed.is_ok(), "idle admin connections were kept open");
    let health = gw.http_get("/healthz").await?;
    ensure!(health.status == 200, "healthz after: {}", health.status);
    Ok(())
}
