//! REQUIRETLS and `TLS-Required: No` on the direct path (issue 6 acceptance, RFC 8689):
//! a REQUIRETLS message goes only to hosts verified by DANE or MTA-STS `enforce` that
//! announce REQUIRETLS, and carries REQUIRETLS on MAIL FROM; when no host can take it,
//! it bounces at once with 5.7.30. `TLS-Required: No` relaxes the recipient's policies,
//! and every relaxation is counted. The queue override (`queue set-requiretls`) changes
//! the outcome of a queued message. Each test asserts the metrics it moves.

use anyhow::{ensure, Result};
use relaygate_transports::testkit::Rcode;

use crate::support::deadline;
use crate::support::metrics::sample;
use crate::support::sink::Sink;
use crate::support::tls_lab::{
    field_values, queued_after, send_requiretls, send_tls_required_no, spki_sha256, TlsLab, SECS,
};

const RCPT: &str = "rcpt@dst.test";
const UNSUPPORTED: &str = "relaygate_queue_requiretls_unsupported_total";
const IGNORED: &str = "relaygate_queue_tlsrequiredno_ignored_total";
const DURATION: &str = "relaygate_queue_delivery_duration_seconds_count";
const NAMES: &[&str] = &[
    "mx.dst.test",
    "mx1.dst.test",
    "mx2.dst.test",
    "mta-sts.dst.test",
];

/// `host` of dst.test gets a DANE-EE record matching the lab certificate, and every
/// answer on the way to it is authentic.
fn dane(lab: &TlsLab, host: &str) -> Result<()> {
    lab.authentic(&["dst.test", host]);
    lab.tlsa(host, (3, 1, 1, spki_sha256(lab.pki.cert_der())?), true);
    Ok(())
}

#[tokio::test]
async fn requiretls_with_dane_and_a_requiretls_server_is_delivered_with_requiretls() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start_tls(&lab.pki).await?;
    sink.set_requiretls(true);
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    dane(&lab, "mx.dst.test")?;
    let gw = lab.gateway().await?;
    send_requiretls(&gw, &lab.pki, RCPT, "rt-dane").await?;
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(RCPT)))
        .await?;
    ensure!(msgs[0].tls, "not over TLS");
    ensure!(
        msgs[0].mail_params.split(' ').any(|p| p == "REQUIRETLS"),
        "REQUIRETLS not passed on: {:?}",
        msgs[0].mail_params
    );
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(sample(&metrics, UNSUPPORTED, &[]) == 0.0, "{metrics}");
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "verified+dane"), ("result", "delivered")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn requiretls_with_mtasts_enforce_is_delivered_with_requiretls() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start_tls(&lab.pki).await?;
    sink.set_requiretls(true);
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    lab.mtasts(
        "dst.test",
        "1",
        "version: STSv1\nmode: enforce\nmx: mx.dst.test\nmax_age: 86400\n",
    );
    let gw = lab.gateway().await?;
    send_requiretls(&gw, &lab.pki, RCPT, "rt-sts").await?;
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(RCPT)))
        .await?;
    ensure!(
        msgs[0].mail_params.split(' ').any(|p| p == "REQUIRETLS"),
        "REQUIRETLS not passed on: {:?}",
        msgs[0].mail_params
    );
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, DURATION, &[("tlsmode", "verified+mtasts")]) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn requiretls_unsupported_by_every_mx_fails_at_once_with_5_7_30() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let mx1 = Sink::start_tls(&lab.pki).await?;
    let mx2 = Sink::start_tls(&lab.pki).await?;
    lab.mx("dst.test", 10, "mx1.dst.test", &mx1);
    lab.mx("dst.test", 20, "mx2.dst.test", &mx2);
    dane(&lab, "mx1.dst.test")?;
    dane(&lab, "mx2.dst.test")?;
    let gw = lab.gateway().await?;
    send_requiretls(&gw, &lab.pki, RCPT, "rt-unsupported").await?;
    let dsn = lab.failure_dsn().await?;
    ensure!(
        field_values(&dsn, "Status") == ["5.7.30"],
        "status: {}",
        dsn.text()
    );
    ensure!(
        mx1.connections() == 1 && mx2.connections() == 1,
        "each MX tried once, in one attempt: {} / {}",
        mx1.summary(),
        mx2.summary()
    );
    ensure!(mx1.messages().is_empty() && mx2.messages().is_empty());
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, UNSUPPORTED, &[("reason", "norequiretls")]) == 2.0,
        "{metrics}"
    );
    ensure!(
        sample(&metrics, DURATION, &[("result", "permanent")]) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn requiretls_without_dane_or_mtasts_fails_without_dialing() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    // Even a server announcing REQUIRETLS is not dialed: nothing verifies it.
    let sink = Sink::start_tls(&lab.pki).await?;
    sink.set_requiretls(true);
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    let gw = lab.gateway().await?;
    send_requiretls(&gw, &lab.pki, RCPT, "rt-nopolicy").await?;
    let dsn = lab.failure_dsn().await?;
    ensure!(
        field_values(&dsn, "Status") == ["5.7.30"],
        "status: {}",
        dsn.text()
    );
    ensure!(sink.connections() == 0, "dialed: {}", sink.summary());
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, UNSUPPORTED, &[("reason", "nopolicy")]) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn tls_required_no_with_mismatching_tlsa_is_delivered_and_counted() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start_tls(&lab.pki).await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    lab.authentic(&["dst.test", "mx.dst.test"]);
    lab.tlsa("mx.dst.test", (3, 1, 1, vec![0xAA; 32]), true);
    let gw = lab.gateway().await?;
    send_tls_required_no(&gw, RCPT, "trn-tlsa").await?;
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(RCPT)))
        .await?;
    ensure!(msgs[0].tls, "TLS is still used, just not verified");
    ensure!(sink.connections() == 1, "{}", sink.summary());
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, IGNORED, &[("ignored", "tlsverify")]) == 1.0,
        "{metrics}"
    );
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "unverified+dane"), ("result", "delivered")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn tls_required_no_relaxes_mtasts_and_tlsa_lookup_failures() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start().await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    lab.authentic(&["dst.test", "mx.dst.test"]);
    lab.dns
        .set_rcode(&lab.tlsa_owner("mx.dst.test"), Rcode::ServFail);
    lab.mtasts(
        "dst.test",
        "1",
        "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n",
    );
    // other.test's policy cannot be looked up at all.
    lab.mx("other.test", 10, "mx.other.test", &sink);
    lab.dns.set_rcode("_mta-sts.other.test", Rcode::ServFail);
    let gw = lab.gateway().await?;
    send_tls_required_no(&gw, RCPT, "trn-all").await?;
    send_tls_required_no(&gw, "rcpt@other.test", "trn-policy").await?;
    sink.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt(RCPT)) && m.iter().any(|x| x.has_rcpt("rcpt@other.test"))
    })
    .await?;
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    for ignored in ["mtastsmx", "badtlsa", "mtastspolicy"] {
        ensure!(
            sample(&metrics, IGNORED, &[("ignored", ignored)]) == 1.0,
            "{ignored}:\n{metrics}"
        );
    }
    ensure!(
        sample(
            &metrics,
            "relaygate_queue_destination_dane_gathertlsa_errors_total",
            &[]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn tls_required_no_allows_plaintext_where_dane_requires_starttls() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start().await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    dane(&lab, "mx.dst.test")?;
    let gw = lab.gateway().await?;
    send_tls_required_no(&gw, RCPT, "trn-plain").await?;
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(RCPT)))
        .await?;
    ensure!(!msgs[0].tls, "the server has no STARTTLS");
    ensure!(
        sink.connections() == 2,
        "a refused TLS session, then the plaintext retry: {}",
        sink.summary()
    );
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, IGNORED, &[("ignored", "badtls")]) == 1.0
            && sample(&metrics, "relaygate_queue_plaintext_fallback_total", &[]) == 1.0,
        "{metrics}"
    );
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "none+dane"), ("result", "delivered")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn set_requiretls_no_makes_a_queued_message_deliverable() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start_tls(&lab.pki).await?;
    // mx1 can never be verified (no DANE, no MTA-STS); mx2 cannot be resolved for now,
    // so the REQUIRETLS message waits instead of bouncing.
    lab.mx("dst.test", 10, "mx1.dst.test", &sink);
    lab.dns.add_mx("dst.test", 20, "mx2.dst.test");
    lab.dns.set_rcode("mx2.dst.test", Rcode::ServFail);
    let gw = lab.gateway().await?;
    send_requiretls(&gw, &lab.pki, RCPT, "rt-override").await?;
    let msg = queued_after(&gw, 2).await?;
    ensure!(msg["rcpts"][0]["status"] == "pending", "{msg}");
    ensure!(sink.connections() == 0, "dialed: {}", sink.summary());
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, UNSUPPORTED, &[("reason", "nopolicy")]) >= 2.0,
        "{metrics}"
    );

    let id = msg["id"].as_str().unwrap_or_default().to_string();
    let out = gw.run_cli(&["queue", "set-requiretls", &id, "no"]).await?;
    ensure!(out.code == Some(0), "{out}");
    let out = gw.run_cli(&["queue", "retry", &id]).await?;
    ensure!(out.code == Some(0), "{out}");
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(RCPT)))
        .await?;
    ensure!(
        !msgs[0].mail_params.contains("REQUIRETLS"),
        "REQUIRETLS was turned off: {:?}",
        msgs[0].mail_params
    );
    gw.wait_queue_empty(deadline(SECS)).await?;
    ensure!(
        lab.dsn.messages().is_empty(),
        "bounced: {}",
        lab.dsn.summary()
    );
    Ok(())
}
