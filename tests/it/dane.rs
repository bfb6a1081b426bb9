//! DANE for direct delivery (issue 6 acceptance, RFC 7672): TLSA records found under
//! DNSSEC (the test DNS sets the AD bit per name, the gateway trusts it) decide whether
//! the MX must offer STARTTLS and which certificate it must show. Every row of the
//! acceptance table is a test, and each asserts the `GET /metrics` counters it moves.
//! The last ones run the same rules through a `socks` transport (issue 7 acceptance).

use anyhow::{ensure, Result};
use relaygate_transports::testkit::Rcode;

use crate::support::gateway::{toml_str, Gateway};
use crate::support::metrics::sample;
use crate::support::microsocks::{Microsocks, EGRESS_IP};
use crate::support::sink::Sink;
use crate::support::tls_lab::{queued_after, send, spki_sha256, wait_metric, TlsLab, SECS};
use crate::support::{deadline, wait_until};

const RCPT: &str = "rcpt@dst.test";
const DURATION: &str = "relaygate_queue_delivery_duration_seconds_count";

/// dst.test → mx.dst.test (a STARTTLS sink with the lab CA's certificate, unless
/// `plain`), every answer on the way DNSSEC-authentic.
async fn lab(plain: bool) -> Result<(TlsLab, Sink)> {
    let mut lab = TlsLab::new(&["mx.dst.test"]).await?;
    let sink = if plain {
        Sink::start().await?
    } else {
        Sink::start_tls(&lab.pki).await?
    };
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    lab.authentic(&["dst.test", "mx.dst.test"]);
    Ok((lab, sink))
}

/// Delivered to `sink` over TLS; returns the metrics once the queue is empty.
async fn delivered_over_tls(gw: &Gateway, sink: &Sink) -> Result<String> {
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(RCPT)))
        .await?;
    ensure!(msgs[0].tls, "not delivered over TLS: {}", sink.summary());
    gw.wait_queue_empty(deadline(SECS)).await?;
    gw.metrics_text().await
}

/// One attempt that did not deliver: the queued recipient.
async fn one_failed_attempt(gw: &Gateway, sink: &Sink) -> Result<serde_json::Value> {
    let msg = queued_after(gw, 1).await?;
    let rcpt = msg["rcpts"][0].clone();
    ensure!(rcpt["status"] == "pending", "{rcpt}");
    ensure!(sink.messages().is_empty(), "delivered: {}", sink.summary());
    Ok(rcpt)
}

#[tokio::test]
async fn dane_ee_record_matching_the_key_verifies() -> Result<()> {
    let (lab, sink) = lab(false).await?;
    lab.tlsa(
        "mx.dst.test",
        (3, 1, 1, spki_sha256(lab.pki.cert_der())?),
        true,
    );
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "dane-ee").await?;
    let metrics = delivered_over_tls(&gw, &sink).await?;
    let m = |name: &str| sample(&metrics, name, &[]);
    ensure!(
        m("relaygate_queue_destinations_authentic_total") >= 1.0,
        "{metrics}"
    );
    ensure!(
        m("relaygate_queue_destination_dane_required_total") >= 1.0,
        "{metrics}"
    );
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "verified+dane"), ("result", "delivered")]
        ) == 1.0,
        "{metrics}"
    );
    ensure!(
        m("relaygate_queue_plaintext_fallback_total") == 0.0,
        "{metrics}"
    );
    ensure!(
        sample(
            &metrics,
            "relaygate_queue_connection_total",
            &[("result", "ok")]
        ) >= 1.0,
        "{metrics}"
    );
    let record = gw.data_dir().join("tls-status/dst.test.json");
    wait_until(
        deadline(SECS),
        "a TLS status record saying verified",
        || std::fs::read_to_string(&record).is_ok_and(|t| t.contains("\"tls\":\"verified\"")),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn dane_wrong_digest_fails_the_host_without_plaintext_retry() -> Result<()> {
    let (mut lab, sink) = lab(false).await?;
    lab.first_retry = "1h".into();
    lab.tlsa("mx.dst.test", (3, 1, 1, vec![0xAA; 32]), true);
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "dane-bad").await?;
    let rcpt = one_failed_attempt(&gw, &sink).await?;
    let reply = rcpt["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451 4.7"),
        "temporary TLS failure: {reply:?}"
    );
    ensure!(
        sink.connections() == 1,
        "one TLS session and no plaintext retry: {}",
        sink.summary()
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(
            &metrics,
            "relaygate_queue_destination_dane_required_total",
            &[]
        ) == 1.0
            && sample(&metrics, "relaygate_queue_plaintext_fallback_total", &[]) == 0.0,
        "{metrics}"
    );
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "none+dane"), ("result", "temporary")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn dane_ta_record_on_the_issuing_ca_verifies() -> Result<()> {
    let (lab, sink) = lab(false).await?;
    lab.tlsa(
        "mx.dst.test",
        (2, 1, 1, spki_sha256(lab.pki.ca_der())?),
        true,
    );
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "dane-ta").await?;
    let metrics = delivered_over_tls(&gw, &sink).await?;
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
async fn dane_only_unusable_records_deliver_over_unverified_tls() -> Result<()> {
    let (lab, sink) = lab(false).await?;
    // PKIX-EE (1) is not for SMTP (RFC 7672 §3.1.3); 3 1 1 with a short digest is broken.
    lab.tlsa(
        "mx.dst.test",
        (1, 1, 1, spki_sha256(lab.pki.cert_der())?),
        true,
    );
    lab.tlsa("mx.dst.test", (3, 1, 1, vec![1; 20]), true);
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "dane-unusable").await?;
    let metrics = delivered_over_tls(&gw, &sink).await?;
    let m = |name: &str| sample(&metrics, name, &[]);
    ensure!(
        m("relaygate_queue_destination_dane_required_total") == 1.0,
        "{metrics}"
    );
    ensure!(
        m("relaygate_queue_destination_dane_starttlsunverified_total") == 1.0,
        "{metrics}"
    );
    ensure!(
        sample(&metrics, DURATION, &[("tlsmode", "unverified+dane")]) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn dane_tlsa_servfail_is_temporary_and_never_a_downgrade() -> Result<()> {
    let (lab, sink) = lab(false).await?;
    let owner = lab.tlsa_owner("mx.dst.test");
    lab.dns.set_authentic(&owner, true);
    lab.dns.set_rcode(&owner, Rcode::ServFail);
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "dane-servfail").await?;
    let msg = queued_after(&gw, 2).await?;
    let reply = msg["rcpts"][0]["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451 4.4.3") && reply.contains("TLSA"),
        "last reply {reply:?}"
    );
    ensure!(sink.connections() == 0, "dialed: {}", sink.summary());
    wait_metric(
        &gw,
        "relaygate_queue_destination_dane_gathertlsa_errors_total",
        &[],
        2.0,
    )
    .await?;
    // The resolver recovers with a secure denial: no DANE, delivered.
    lab.dns.clear_fault(&owner);
    delivered_over_tls(&gw, &sink).await?;
    ensure!(
        lab.dsn.messages().is_empty(),
        "no DSN for a temporary failure"
    );
    Ok(())
}

#[tokio::test]
async fn dane_inauthentic_tlsa_is_ignored() -> Result<()> {
    let (lab, sink) = lab(false).await?;
    // A wrong digest, but without the AD bit: not DANE, opportunistic TLS.
    lab.tlsa("mx.dst.test", (3, 1, 1, vec![0xAA; 32]), false);
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "dane-insecure").await?;
    let metrics = delivered_over_tls(&gw, &sink).await?;
    ensure!(
        sample(
            &metrics,
            "relaygate_queue_destination_dane_required_total",
            &[]
        ) == 0.0,
        "{metrics}"
    );
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "unverified"), ("result", "delivered")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn dane_required_but_no_starttls_is_not_delivered() -> Result<()> {
    let (mut lab, sink) = lab(true).await?;
    lab.first_retry = "1h".into();
    lab.tlsa(
        "mx.dst.test",
        (3, 1, 1, spki_sha256(lab.pki.cert_der())?),
        true,
    );
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "dane-nostarttls").await?;
    let rcpt = one_failed_attempt(&gw, &sink).await?;
    let reply = rcpt["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451") && reply.contains("STARTTLS"),
        "last reply {reply:?}"
    );
    ensure!(
        sink.connections() == 1,
        "no plaintext retry: {}",
        sink.summary()
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, "relaygate_queue_plaintext_fallback_total", &[]) == 0.0,
        "{metrics}"
    );
    Ok(())
}

/// A socks transport through `proxy` for dst.test.
fn socks_toml(proxy: &Microsocks) -> String {
    format!(
        "\n[transports.proxy]\nkind = \"socks\"\naddress = [{}]\nremote_ips = [\"{EGRESS_IP}\"]\n\
         remote_hostname = \"out.relay.test\"\n\n\
         [[routes]]\nto_domain = [\"dst.test\"]\ntransport = \"proxy\"\n",
        toml_str(&proxy.addr.to_string())
    )
}

#[tokio::test]
async fn dane_through_socks_mismatch_is_not_delivered() -> Result<()> {
    let (mut lab, sink) = lab(false).await?;
    let proxy = Microsocks::start(None)?;
    lab.extra_toml = socks_toml(&proxy);
    lab.first_retry = "1h".into();
    lab.tlsa("mx.dst.test", (3, 1, 1, vec![0xAA; 32]), true);
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "socks-dane-bad").await?;
    let rcpt = one_failed_attempt(&gw, &sink).await?;
    ensure!(rcpt["transport"] == "proxy", "{rcpt}");
    ensure!(
        sink.connections() == 1,
        "one TLS session through the proxy, no plaintext retry: {}",
        sink.summary()
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("transport", "proxy"), ("tlsmode", "none+dane")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn dane_through_socks_match_is_delivered_via_the_proxy() -> Result<()> {
    let (mut lab, sink) = lab(false).await?;
    let proxy = Microsocks::start(None)?;
    lab.extra_toml = socks_toml(&proxy);
    lab.tlsa(
        "mx.dst.test",
        (3, 1, 1, spki_sha256(lab.pki.cert_der())?),
        true,
    );
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "socks-dane-ok").await?;
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(RCPT)))
        .await?;
    ensure!(msgs[0].tls, "not over TLS");
    ensure!(
        msgs[0].peer.ip().to_string() == EGRESS_IP,
        "came from {} (not through the proxy)",
        msgs[0].peer
    );
    ensure!(msgs[0].ehlo == "out.relay.test", "EHLO {}", msgs[0].ehlo);
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("transport", "proxy"), ("tlsmode", "verified+dane")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}
