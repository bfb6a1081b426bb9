//! TLS on both sides: STARTTLS and REQUIRETLS on the submission listener, and a
//! smarthost reached with verified STARTTLS through `tls.extra_ca_file`.

use anyhow::{ensure, Context, Result};

use crate::support::deadline;
use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::pki::Pki;
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, SmtpClient};

fn tls_submission(pki: &Pki) -> String {
    format!(
        "tls_cert = {}\ntls_key = {}\n",
        toml_str(&pki.chain_pem.to_string_lossy()),
        toml_str(&pki.key_pem.to_string_lossy())
    )
}

#[tokio::test]
async fn submission_starttls_offers_requiretls_only_inside_tls() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.submission_toml = tls_submission(&pki);
    let gw = Gateway::start(opts).await?;

    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    let ehlo = c.ehlo("app.test").await?;
    ensure!(
        ehlo.capability("STARTTLS").is_some(),
        "no STARTTLS before TLS: {ehlo:?}"
    );
    ensure!(
        ehlo.capability("REQUIRETLS").is_none(),
        "REQUIRETLS offered without TLS"
    );
    let r = c.cmd("MAIL FROM:<a@src.test> REQUIRETLS").await?;
    ensure!(
        r.code == 530,
        "REQUIRETLS without TLS must be refused, got {r:?}"
    );

    c.starttls(pki.client_config()?).await?;
    let ehlo = c.ehlo("app.test").await?;
    ensure!(
        ehlo.capability("STARTTLS").is_none(),
        "STARTTLS offered again inside TLS"
    );
    ensure!(
        ehlo.capability("REQUIRETLS").is_some(),
        "no REQUIRETLS inside TLS: {ehlo:?}"
    );
    c.expect("MAIL FROM:<a@src.test> REQUIRETLS", 250).await?;
    c.expect("RSET", 250).await?;
    // The sink is plaintext, so this message is sent without REQUIRETLS.
    c.expect("MAIL FROM:<a@src.test>", 250).await?;
    c.expect("RCPT TO:<r@dst.test>", 250).await?;
    c.expect("DATA", 354).await?;
    let r = c
        .send_data(&simple_message("a@src.test", "r@dst.test", "tls", "tls-1"))
        .await?;
    ensure!(r.code == 250, "DATA refused: {r:?}");
    c.quit().await?;

    let msgs = sink
        .wait_for(deadline(30), |m| m.iter().any(|x| x.has_rcpt("r@dst.test")))
        .await?;
    let m = msgs
        .iter()
        .find(|x| x.has_rcpt("r@dst.test"))
        .context("delivered")?;
    let received = m.header("Received").context("Received header")?;
    ensure!(
        received.contains("ESMTPS"),
        "Received does not say ESMTPS: {received}"
    );
    Ok(())
}

fn tls_sink_route(port: u16, ca: Option<&Pki>) -> String {
    let mut s = format!(
        "[transports.tlssink]\nkind = \"smtp\"\nhost = \"localhost\"\nport = {port}\n\n[[routes]]\ntransport = \"tlssink\"\n"
    );
    if let Some(pki) = ca {
        s.push_str(&format!(
            "\n[tls]\nextra_ca_file = {}\n",
            toml_str(&pki.ca_pem.to_string_lossy())
        ));
    }
    s
}

#[tokio::test]
async fn smarthost_starttls_verified_against_extra_ca() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start_tls(&pki).await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: tls_sink_route(sink.port(), Some(&pki)),
        ..Default::default()
    })
    .await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.send_message(
        "a@src.test",
        &["v@dst.test"],
        &simple_message("a@src.test", "v@dst.test", "v", "v-1"),
    )
    .await?;
    let msgs = sink
        .wait_for(deadline(30), |m| m.iter().any(|x| x.has_rcpt("v@dst.test")))
        .await?;
    ensure!(msgs.iter().all(|m| m.tls), "message not sent inside TLS");
    gw.wait_queue_empty(deadline(10)).await?;
    Ok(())
}

#[tokio::test]
async fn smarthost_with_untrusted_certificate_gets_nothing() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start_tls(&pki).await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: tls_sink_route(sink.port(), None),
        ..Default::default()
    })
    .await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.send_message(
        "a@src.test",
        &["u@dst.test"],
        &simple_message("a@src.test", "u@dst.test", "u", "u-1"),
    )
    .await?;
    // The attempt fails on the certificate and the message stays queued with the reason.
    let end = deadline(30);
    let reply = loop {
        let msgs = gw.queue_messages().await?;
        let reply = msgs
            .iter()
            .flat_map(|m| m["rcpts"].as_array().cloned().unwrap_or_default())
            .find(|r| r["address"] == "u@dst.test" && r["attempts"].as_u64().unwrap_or(0) >= 1)
            .and_then(|r| r["last_reply"].as_str().map(str::to_string));
        if let Some(r) = reply {
            break r;
        }
        ensure!(
            std::time::Instant::now() < end,
            "no failed attempt recorded: {msgs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    ensure!(
        reply.to_ascii_lowercase().contains("certificate")
            || reply.to_ascii_lowercase().contains("tls"),
        "reason does not name the TLS problem: {reply}"
    );
    ensure!(
        sink.messages().is_empty(),
        "an unverified smarthost got the message"
    );
    Ok(())
}

#[tokio::test]
async fn requiretls_message_to_plaintext_smarthost_bounces_with_5_7_30() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.submission_toml = tls_submission(&pki);
    let gw = Gateway::start(opts).await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.starttls(pki.client_config()?).await?;
    c.ehlo("app.test").await?;
    c.expect("MAIL FROM:<a@src.test> REQUIRETLS", 250).await?;
    c.expect("RCPT TO:<r@dst.test>", 250).await?;
    c.expect("DATA", 354).await?;
    let r = c
        .send_data(&simple_message("a@src.test", "r@dst.test", "rt", "rt-1"))
        .await?;
    ensure!(r.code == 250, "DATA refused: {r:?}");
    let msgs = sink
        .wait_for(deadline(30), |m| m.iter().any(|x| x.is_bounce()))
        .await?;
    ensure!(
        !msgs.iter().any(|m| m.has_rcpt("r@dst.test")),
        "REQUIRETLS message sent in plaintext"
    );
    let dsn = msgs.iter().find(|m| m.is_bounce()).context("DSN")?;
    ensure!(
        dsn.text().contains("Status: 5.7.30"),
        "DSN lacks 5.7.30:\n{}",
        dsn.text()
    );
    Ok(())
}
