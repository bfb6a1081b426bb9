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
            l.starts_with("relaygate_delivery_attempts_total") && l.contains("result=\"delivered\"")
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
