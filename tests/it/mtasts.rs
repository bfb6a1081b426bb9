//! MTA-STS for direct delivery (issue 6 acceptance, RFC 8461): the gateway finds
//! `_mta-sts.<domain>`, fetches the policy from the HTTPS policy server (test CA via
//! `tls.extra_ca_file`, port via `mtasts.https_port`), caches it in
//! `data_dir/mtasts.json`, and applies it: `enforce` only to listed MX hosts with
//! PKIX-verified TLS, `testing` only counted. Each row of the acceptance table is a
//! test, asserting the `GET /metrics` counters it moves.

use anyhow::{ensure, Result};

use crate::support::deadline;
use crate::support::gateway::Gateway;
use crate::support::metrics::sample;
use crate::support::pki::Pki;
use crate::support::sink::Sink;
use crate::support::tls_lab::{queued_after, send, TlsLab, SECS};

const RCPT: &str = "rcpt@dst.test";
const DURATION: &str = "relaygate_queue_delivery_duration_seconds_count";
const MISMATCH: &str = "relaygate_queue_mtasts_mx_mismatch_total";
/// Every MX and policy host name the scenarios use.
const NAMES: &[&str] = &[
    "mx.dst.test",
    "mx1.dst.test",
    "mx2.dst.test",
    "mta-sts.dst.test",
];

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n")
}

/// Waits for `RCPT` at `sink` and for an empty queue; returns the metrics.
async fn delivered(gw: &Gateway, sink: &Sink, tls: bool) -> Result<String> {
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(RCPT)))
        .await?;
    ensure!(
        msgs[0].tls == tls,
        "TLS {} expected: {}",
        tls,
        sink.summary()
    );
    gw.wait_queue_empty(deadline(SECS)).await?;
    gw.metrics_text().await
}

/// A sink with a certificate from a CA the gateway does not trust.
async fn untrusted_sink() -> Result<(Pki, Sink)> {
    let other = Pki::for_names(NAMES)?;
    let sink = Sink::start_tls(&other).await?;
    Ok((other, sink))
}

#[tokio::test]
async fn mtasts_enforce_listed_mx_with_valid_certificate_is_delivered() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start_tls(&lab.pki).await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    lab.mtasts("dst.test", "1", &policy("enforce", "mx.dst.test"));
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-ok").await?;
    let metrics = delivered(&gw, &sink, true).await?;
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "verified+mtasts"), ("result", "delivered")]
        ) == 1.0,
        "{metrics}"
    );
    ensure!(sample(&metrics, MISMATCH, &[]) == 0.0, "{metrics}");
    ensure!(lab.policies.requests("dst.test") == 1, "one policy fetch");
    let cache = std::fs::read_to_string(gw.data_dir().join("mtasts.json"))?;
    ensure!(
        cache.contains("\"dst.test\"") && cache.contains("enforce"),
        "policy cached under data_dir: {cache}"
    );
    Ok(())
}

#[tokio::test]
async fn mtasts_enforce_skips_an_unlisted_mx_for_a_listed_one() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let unlisted = Sink::start().await?;
    let listed = Sink::start_tls(&lab.pki).await?;
    lab.mx("dst.test", 10, "mx1.dst.test", &unlisted);
    lab.mx("dst.test", 20, "mx2.dst.test", &listed);
    lab.mtasts("dst.test", "1", &policy("enforce", "mx2.dst.test"));
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-skip").await?;
    let metrics = delivered(&gw, &listed, true).await?;
    ensure!(
        unlisted.connections() == 0,
        "the preferred but unlisted MX was dialed: {}",
        unlisted.summary()
    );
    ensure!(
        sample(&metrics, MISMATCH, &[("mode", "enforce")]) == 1.0,
        "{metrics}"
    );
    ensure!(
        sample(&metrics, DURATION, &[("tlsmode", "verified+mtasts")]) == 1.0,
        "{metrics}"
    );
    // The skipped host is not a destination: only mx2's lookup counts.
    ensure!(
        sample(&metrics, "relaygate_queue_destinations_total", &[]) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn mtasts_enforce_without_a_listed_mx_is_not_delivered() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start_tls(&lab.pki).await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    lab.mtasts("dst.test", "1", &policy("enforce", "mx.elsewhere.test"));
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-none-listed").await?;
    let msg = queued_after(&gw, 2).await?;
    let rcpt = &msg["rcpts"][0];
    let reply = rcpt["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451 4.7.0") && reply.contains("MTA-STS"),
        "last reply {reply:?}"
    );
    ensure!(rcpt["status"] == "pending", "retried later: {rcpt}");
    ensure!(sink.connections() == 0, "dialed: {}", sink.summary());
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, MISMATCH, &[("mode", "enforce")]) >= 2.0,
        "{metrics}"
    );
    ensure!(
        lab.dsn.messages().is_empty(),
        "no DSN for a temporary failure"
    );
    Ok(())
}

#[tokio::test]
async fn mtasts_enforce_bad_certificate_is_not_delivered_nor_in_plaintext() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    lab.first_retry = "1h".into();
    let (_other, sink) = untrusted_sink().await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    lab.mtasts("dst.test", "1", &policy("enforce", "mx.dst.test"));
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-badcert").await?;
    let msg = queued_after(&gw, 1).await?;
    let reply = msg["rcpts"][0]["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451 4.7"),
        "temporary TLS failure: {reply:?}"
    );
    ensure!(sink.messages().is_empty(), "delivered: {}", sink.summary());
    ensure!(
        sink.connections() == 1,
        "one TLS session, no plaintext retry: {}",
        sink.summary()
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, "relaygate_queue_plaintext_fallback_total", &[]) == 0.0,
        "{metrics}"
    );
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "none+mtasts"), ("result", "temporary")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn mtasts_testing_unlisted_mx_is_delivered_and_counted() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let (_other, sink) = untrusted_sink().await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    lab.mtasts("dst.test", "1", &policy("testing", "mx.elsewhere.test"));
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-testing").await?;
    // Delivered as without a policy: opportunistic TLS, certificate not verified.
    let metrics = delivered(&gw, &sink, true).await?;
    ensure!(
        sample(&metrics, MISMATCH, &[("mode", "testing")]) == 1.0,
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
    ensure!(
        lab.policies.requests("dst.test") == 1,
        "the policy was fetched"
    );
    Ok(())
}

#[tokio::test]
async fn mtasts_policy_404_means_no_policy() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let (_other, sink) = untrusted_sink().await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    // A TXT record, but the policy host answers 404.
    lab.mtasts("dst.test", "1", &policy("enforce", "mx.elsewhere.test"));
    lab.policies.set_status("dst.test", 404);
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-404").await?;
    let metrics = delivered(&gw, &sink, true).await?;
    ensure!(
        lab.policies.requests("dst.test") >= 1,
        "the policy was asked for"
    );
    ensure!(sample(&metrics, MISMATCH, &[]) == 0.0, "{metrics}");
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
async fn mtasts_cached_policy_survives_a_failed_refetch() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let unlisted = Sink::start().await?;
    let listed = Sink::start_tls(&lab.pki).await?;
    lab.mx("dst.test", 10, "mx1.dst.test", &unlisted);
    lab.mx("dst.test", 20, "mx2.dst.test", &listed);
    lab.mtasts("dst.test", "1", &policy("enforce", "mx2.dst.test"));
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-cache-1").await?;
    delivered(&gw, &listed, true).await?;
    ensure!(lab.policies.requests("dst.test") == 1);

    // A new id announces a new policy, but the policy host now fails: the cached
    // enforce policy stays in force (RFC 8461 §5.1).
    lab.mtasts_record("dst.test", "2");
    lab.policies.set_status("dst.test", 500);
    send(&gw, "second@dst.test", "sts-cache-2").await?;
    listed
        .wait_for(deadline(SECS), |m| {
            m.iter().any(|x| x.has_rcpt("second@dst.test"))
        })
        .await?;
    gw.wait_queue_empty(deadline(SECS)).await?;
    ensure!(
        lab.policies.requests("dst.test") >= 2,
        "the new policy was asked for"
    );
    ensure!(
        unlisted.connections() == 0,
        "the policy was dropped: {}",
        unlisted.summary()
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        sample(&metrics, MISMATCH, &[("mode", "enforce")]) == 2.0
            && sample(&metrics, DURATION, &[("tlsmode", "verified+mtasts")]) == 2.0,
        "{metrics}"
    );
    Ok(())
}

/// dst.test's chain is DNSSEC-authentic and mx.dst.test has a DANE-EE record for the
/// key of `cert`'s certificate; the policy enforces mx.dst.test.
fn dane_and_enforce(lab: &TlsLab, cert: &Pki) -> Result<()> {
    lab.authentic(&["dst.test", "mx.dst.test"]);
    lab.tlsa(
        "mx.dst.test",
        (
            3,
            1,
            1,
            crate::support::tls_lab::spki_sha256(cert.cert_der())?,
        ),
        true,
    );
    lab.mtasts("dst.test", "1", &policy("enforce", "mx.dst.test"));
    Ok(())
}

#[tokio::test]
async fn mtasts_enforce_and_dane_are_both_verified() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    let sink = Sink::start_tls(&lab.pki).await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    dane_and_enforce(&lab, &lab.pki)?;
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-dane").await?;
    let metrics = delivered(&gw, &sink, true).await?;
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "verified+mtasts+dane"), ("result", "delivered")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn mtasts_enforce_and_dane_need_pkix_even_when_tlsa_matches() -> Result<()> {
    let mut lab = TlsLab::new(NAMES).await?;
    lab.first_retry = "1h".into();
    // The TLSA record matches the server's key, but its CA is not trusted: PKIX fails.
    let (other, sink) = untrusted_sink().await?;
    lab.mx("dst.test", 10, "mx.dst.test", &sink);
    dane_and_enforce(&lab, &other)?;
    let gw = lab.gateway().await?;
    send(&gw, RCPT, "sts-dane-pkix").await?;
    let msg = queued_after(&gw, 1).await?;
    let reply = msg["rcpts"][0]["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451 4.7"),
        "temporary TLS failure: {reply:?}"
    );
    ensure!(sink.messages().is_empty(), "delivered: {}", sink.summary());
    ensure!(
        sink.connections() == 1,
        "no plaintext retry: {}",
        sink.summary()
    );
    Ok(())
}
