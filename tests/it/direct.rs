//! Direct MX delivery, the default transport (issue 5 acceptance): the real gateway
//! resolves through the in-process DNS server (`TestDns`, with scripted zones and a
//! per-name AD bit) and delivers to sinks on 127.0.0.1 (and ::1), reached through
//! `direct.port` / `direct.port_overrides`. No routes are configured anywhere here.
//!
//! DSNs go back to `sender@src.test` by direct delivery too, so every lab has an MX for
//! `src.test` that points at a sink of its own.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use relaygate_transports::testkit::{Rcode, TestDns};
use serde_json::Value;

use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::pki::Pki;
use crate::support::sink::{Mode, Received, Sink};
use crate::support::smtp_client::{simple_message, submit, SmtpClient};
use crate::support::{deadline, temp_dir, wait_until};

const SENDER: &str = "sender@src.test";
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Generous: every scenario takes seconds with the compressed retry schedule.
const SECS: u64 = 60;

/// A DNS server with `src.test` (the sender's domain) pointing at its own sink, and a
/// gateway configured to use them.
struct Lab {
    dns: TestDns,
    /// Receives DSNs to `SENDER`.
    dsn: Sink,
    /// MX host name → port.
    ports: Vec<(String, u16)>,
    /// Extra lines for `[dns]` (e.g. `trust_ad = true`).
    dns_toml: String,
    /// `direct.port`; by default a port where nothing listens.
    default_port: u16,
    max_attempts: u32,
}

impl Lab {
    async fn new() -> Result<Lab> {
        let dns = TestDns::start()
            .await
            .context("starting the test DNS server")?;
        Lab::with_dns(dns).await
    }

    async fn with_dns(dns: TestDns) -> Result<Lab> {
        let dsn = Sink::start().await?;
        dns.add_mx("src.test", 10, "mx.src.test");
        dns.add_a("mx.src.test", LOCALHOST);
        let default_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        Ok(Lab {
            ports: vec![("mx.src.test".into(), dsn.port())],
            dns,
            dsn,
            dns_toml: String::new(),
            default_port,
            max_attempts: 8,
        })
    }

    /// `host` resolves to 127.0.0.1 and is reached on `sink`'s port.
    fn host(&mut self, host: &str, sink: &Sink) {
        self.dns.add_a(host, LOCALHOST);
        self.ports.push((host.to_string(), sink.port()));
    }

    /// `domain` has one MX, `mx.<domain>`, at `sink`.
    fn domain_at(&mut self, domain: &str, sink: &Sink) {
        let mx = format!("mx.{domain}");
        self.dns.add_mx(domain, 10, &mx);
        self.host(&mx, sink);
    }

    fn toml(&self) -> String {
        let overrides: Vec<String> = self
            .ports
            .iter()
            .map(|(host, port)| format!("{} = {port}", toml_str(host)))
            .collect();
        format!(
            "[dns]\nnameservers = [{}]\n{}\n[direct]\nport = {}\nport_overrides = {{ {} }}\n",
            toml_str(&self.dns.addr().to_string()),
            self.dns_toml,
            self.default_port,
            overrides.join(", ")
        )
    }

    async fn gateway(&self) -> Result<Gateway> {
        Gateway::start(GatewayOptions {
            extra_toml: self.toml(),
            max_attempts: self.max_attempts,
            ..Default::default()
        })
        .await
    }
}

async fn send(gw: &Gateway, to: &str, id: &str) -> Result<()> {
    submit(
        gw.submission_addr(),
        SENDER,
        &[to],
        &simple_message(SENDER, to, id, id),
    )
    .await
}

/// The values of every `name:` line anywhere in the message (DSN fields live in a part).
fn field_values(m: &Received, name: &str) -> Vec<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    m.text()
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .collect()
}

/// Waits for the failure DSN to `SENDER` and returns it.
async fn failure_dsn(lab: &Lab) -> Result<Received> {
    let msgs = lab
        .dsn
        .wait_for(deadline(SECS), |m| {
            m.iter().any(|x| x.is_bounce() && x.has_rcpt(SENDER))
        })
        .await?;
    let dsn = msgs
        .into_iter()
        .find(|x| x.is_bounce() && x.has_rcpt(SENDER))
        .context("no DSN")?;
    let actions: Vec<String> = field_values(&dsn, "Action")
        .into_iter()
        .map(|a| a.to_ascii_lowercase())
        .collect();
    ensure!(
        actions == ["failed"],
        "not a failure DSN: {actions:?}\n{}",
        dsn.text()
    );
    Ok(dsn)
}

/// The first recipient of the only queued message, once it has had `attempts` attempts.
async fn queued_rcpt_after(gw: &Gateway, attempts: u64) -> Result<Value> {
    let until = deadline(SECS);
    let mut last = Value::Null;
    loop {
        if let Some(rcpt) = gw
            .queue_messages()
            .await?
            .first()
            .map(|m| m["rcpts"][0].clone())
        {
            if rcpt["attempts"].as_u64().unwrap_or(0) >= attempts {
                return Ok(rcpt);
            }
            last = rcpt;
        }
        if std::time::Instant::now() >= until {
            bail!("no recipient with {attempts} attempts in time; last seen: {last}");
        }
        tokio::time::sleep(crate::support::POLL_INTERVAL).await;
    }
}

/// The value of a counter in the Prometheus text (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(key, _)| *key == name)
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

fn tls_record_path(gw: &Gateway, domain: &str) -> PathBuf {
    gw.data_dir()
        .join("tls-status")
        .join(format!("{domain}.json"))
}

/// Waits for the domain's TLS status record to contain every one of `needles`.
async fn tls_record(gw: &Gateway, domain: &str, needles: &[&str]) -> Result<String> {
    let path = tls_record_path(gw, domain);
    let mut text = String::new();
    wait_until(deadline(SECS), "the TLS status record", || {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        needles.iter().all(|n| text.contains(n))
    })
    .await
    .with_context(|| format!("{}: {text:?}", path.display()))?;
    Ok(text)
}

/// Two plain sinks on the same port, one on 127.0.0.1 and one on ::1.
async fn dual_stack_sinks() -> Result<(Sink, Sink)> {
    for _ in 0..20 {
        let v4 = Sink::start().await?;
        if let Ok(v6) = Sink::start_on(SocketAddr::from((Ipv6Addr::LOCALHOST, v4.port()))).await {
            return Ok((v4, v6));
        }
    }
    bail!("no port free on both 127.0.0.1 and ::1")
}

#[tokio::test]
async fn default_config_delivers_to_the_mx() -> Result<()> {
    // A fresh install: no routes, no transports; only where DNS is and the lab port.
    let dns = TestDns::start().await?;
    let sink = Sink::start().await?;
    dns.add_mx("dst.test", 10, "mx.dst.test");
    dns.add_a("mx.dst.test", LOCALHOST);
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[dns]\nnameservers = [{}]\n\n[direct]\nport = {}\n",
            toml_str(&dns.addr().to_string()),
            sink.port()
        ),
        ..Default::default()
    })
    .await?;
    send(&gw, "rcpt@dst.test", "fresh-1").await?;
    let msgs = sink
        .wait_for(deadline(SECS), |m| {
            m.iter().any(|x| x.has_rcpt("rcpt@dst.test"))
        })
        .await?;
    ensure!(msgs[0].mail_from == SENDER, "envelope: {msgs:?}");
    ensure!(msgs[0].ehlo == "gw.test", "EHLO name: {:?}", msgs[0].ehlo);
    ensure!(dns.queries("dst.test") > 0, "the MX was never asked for");
    gw.wait_queue_empty(deadline(SECS)).await?;
    Ok(())
}

#[tokio::test]
async fn second_mx_takes_over_after_451() -> Result<()> {
    let mut lab = Lab::new().await?;
    let mx1 = Sink::start().await?;
    let mx2 = Sink::start().await?;
    mx1.set_mode(Mode::RejectAll("451 4.3.0 busy".into()));
    lab.dns.add_mx("dst.test", 10, "mx1.dst.test");
    lab.dns.add_mx("dst.test", 20, "mx2.dst.test");
    lab.host("mx1.dst.test", &mx1);
    lab.host("mx2.dst.test", &mx2);
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@dst.test", "pref-1").await?;
    mx2.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@dst.test"))
    })
    .await?;
    ensure!(
        mx1.rcpt_attempts("rcpt@dst.test") >= 1,
        "the preferred MX was skipped: {}",
        mx1.summary()
    );
    gw.wait_queue_empty(deadline(SECS)).await?;
    Ok(())
}

#[tokio::test]
async fn both_mx_451_is_retried_later() -> Result<()> {
    let mut lab = Lab::new().await?;
    let mx1 = Sink::start().await?;
    let mx2 = Sink::start().await?;
    mx1.set_mode(Mode::RejectAll("451 4.3.0 busy".into()));
    mx2.set_mode(Mode::RejectAll("451 4.3.0 also busy".into()));
    lab.dns.add_mx("dst.test", 10, "mx1.dst.test");
    lab.dns.add_mx("dst.test", 20, "mx2.dst.test");
    lab.host("mx1.dst.test", &mx1);
    lab.host("mx2.dst.test", &mx2);
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@dst.test", "busy-1").await?;
    let rcpt = queued_rcpt_after(&gw, 2).await?;
    ensure!(rcpt["status"] == "pending", "{rcpt}");
    let reply = rcpt["last_reply"].as_str().unwrap_or_default();
    ensure!(reply.starts_with("451"), "last reply {reply:?}");
    ensure!(
        rcpt["remote"].as_str() == Some("mx2.dst.test [127.0.0.1]"),
        "the last host tried should be reported: {rcpt}"
    );
    ensure!(
        mx1.rcpt_attempts("rcpt@dst.test") >= 2 && mx2.rcpt_attempts("rcpt@dst.test") >= 2,
        "both hosts are tried at every attempt: {} / {}",
        mx1.summary(),
        mx2.summary()
    );
    ensure!(
        lab.dsn.messages().is_empty(),
        "no DSN for a temporary failure"
    );
    // The backup recovers: the next attempt delivers there.
    mx2.set_mode(Mode::Normal);
    mx2.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@dst.test"))
    })
    .await?;
    gw.wait_queue_empty(deadline(SECS)).await?;
    Ok(())
}

#[tokio::test]
async fn first_mx_550_bounces_without_trying_the_second() -> Result<()> {
    let mut lab = Lab::new().await?;
    let mx1 = Sink::start().await?;
    let mx2 = Sink::start().await?;
    lab.dns.add_mx("dst.test", 10, "mx1.dst.test");
    lab.dns.add_mx("dst.test", 20, "mx2.dst.test");
    lab.host("mx1.dst.test", &mx1);
    lab.host("mx2.dst.test", &mx2);
    let gw = lab.gateway().await?;
    send(&gw, "user+550@dst.test", "reject-1").await?;
    let dsn = failure_dsn(&lab).await?;
    ensure!(
        field_values(&dsn, "Status") == ["5.1.1"],
        "status: {}",
        dsn.text()
    );
    ensure!(
        field_values(&dsn, "Remote-MTA") == ["dns; mx1.dst.test"],
        "the DSN names the remote MTA: {}",
        dsn.text()
    );
    ensure!(
        dsn.text().contains("127.0.0.1"),
        "the DSN names the remote address: {}",
        dsn.text()
    );
    ensure!(
        field_values(&dsn, "Diagnostic-Code")
            .first()
            .is_some_and(|d| d.starts_with("smtp; 550 5.1.1")),
        "the remote's reply: {}",
        dsn.text()
    );
    ensure!(
        mx2.connections() == 0,
        "the second MX was tried: {}",
        mx2.summary()
    );
    Ok(())
}

#[tokio::test]
async fn cname_chain_leads_to_the_mx() -> Result<()> {
    let mut lab = Lab::new().await?;
    let sink = Sink::start().await?;
    lab.dns.add_cname("alias.test", "alias2.test");
    lab.dns.add_cname("alias2.test", "real.test");
    lab.domain_at("real.test", &sink);
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@alias.test", "cname-1").await?;
    sink.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@alias.test"))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn cname_loop_is_temporary() -> Result<()> {
    let lab = Lab::new().await?;
    lab.dns.add_cname("loop.test", "loop2.test");
    lab.dns.add_cname("loop2.test", "loop.test");
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@loop.test", "loop-1").await?;
    let rcpt = queued_rcpt_after(&gw, 2).await?;
    ensure!(rcpt["status"] == "pending", "{rcpt}");
    let reply = rcpt["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451 4.4.3") && reply.contains("CNAME loop"),
        "last reply {reply:?}"
    );
    ensure!(
        lab.dsn.messages().is_empty(),
        "no DSN for a temporary failure"
    );
    Ok(())
}

#[tokio::test]
async fn null_mx_fails_at_once() -> Result<()> {
    let lab = Lab::new().await?;
    lab.dns.add_mx("nomail.test", 0, ".");
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@nomail.test", "nullmx-1").await?;
    let dsn = failure_dsn(&lab).await?;
    ensure!(
        field_values(&dsn, "Status") == ["5.1.10"],
        "status: {}",
        dsn.text()
    );
    ensure!(dsn.text().contains("null MX"), "reason: {}", dsn.text());
    gw.wait_queue_empty(deadline(SECS)).await?;
    Ok(())
}

#[tokio::test]
async fn nxdomain_fails_at_once() -> Result<()> {
    let lab = Lab::new().await?;
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@nx.test", "nx-1").await?;
    let dsn = failure_dsn(&lab).await?;
    ensure!(
        field_values(&dsn, "Status") == ["5.1.2"],
        "status: {}",
        dsn.text()
    );
    ensure!(dsn.text().contains("NXDOMAIN"), "reason: {}", dsn.text());
    Ok(())
}

#[tokio::test]
async fn servfail_is_retried() -> Result<()> {
    let mut lab = Lab::new().await?;
    let sink = Sink::start().await?;
    lab.domain_at("flaky.test", &sink);
    lab.dns.set_rcode("flaky.test", Rcode::ServFail);
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@flaky.test", "servfail-1").await?;
    let rcpt = queued_rcpt_after(&gw, 2).await?;
    let reply = rcpt["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451 4.4.3") && reply.contains("SERVFAIL"),
        "last reply {reply:?}"
    );
    ensure!(sink.connections() == 0, "delivered despite SERVFAIL");
    // The resolver recovers: the next attempt delivers.
    lab.dns.clear_fault("flaky.test");
    sink.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@flaky.test"))
    })
    .await?;
    ensure!(
        lab.dsn.messages().is_empty(),
        "no DSN for a temporary failure"
    );
    Ok(())
}

#[tokio::test]
async fn no_mx_delivers_to_the_domain_itself() -> Result<()> {
    let mut lab = Lab::new().await?;
    let sink = Sink::start().await?;
    // No MX record: the domain's own A record is the implicit MX (RFC 5321 §5.1).
    lab.host("bare.test", &sink);
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@bare.test", "implicit-1").await?;
    sink.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@bare.test"))
    })
    .await?;
    Ok(())
}

/// A dual-stack MX whose IPv6 address is refused with `reply`: attempt 1 dials IPv6
/// (the resolver's order), attempt 2 starts with IPv4.
async fn dual_stack_lab(reply: &str) -> Result<(Lab, Sink, Sink, Gateway)> {
    let mut lab = Lab::new().await?;
    let (v4, v6) = dual_stack_sinks().await?;
    v6.set_mode(Mode::RejectAll(reply.into()));
    lab.domain_at("dual.test", &v4);
    lab.dns.add_aaaa("mx.dual.test", Ipv6Addr::LOCALHOST);
    let gw = lab.gateway().await?;
    Ok((lab, v4, v6, gw))
}

#[tokio::test]
async fn dual_stack_host_alternates_families_between_attempts() -> Result<()> {
    let (_lab, v4, v6, gw) = dual_stack_lab("451 4.3.0 busy on this address").await?;
    send(&gw, "rcpt@dual.test", "dual-1").await?;
    let msgs = v4
        .wait_for(deadline(SECS), |m| {
            m.iter().any(|x| x.has_rcpt("rcpt@dual.test"))
        })
        .await?;
    ensure!(msgs[0].peer.is_ipv4(), "delivered from {}", msgs[0].peer);
    ensure!(
        v6.connections() == 1 && v6.rcpt_attempts("rcpt@dual.test") == 1,
        "attempt 1 goes over IPv6, attempt 2 over IPv4: {}",
        v6.summary()
    );
    ensure!(
        v4.connections() == 1,
        "IPv4 only on attempt 2: {}",
        v4.summary()
    );
    Ok(())
}

#[tokio::test]
async fn dual_stack_policy_rejection_on_first_attempt_is_retried() -> Result<()> {
    let (lab, v4, v6, gw) = dual_stack_lab("550 5.7.1 your address is blocklisted").await?;
    send(&gw, "rcpt@dual.test", "dual-2").await?;
    // 5.7.1 over IPv6 on attempt 1 is not final; IPv4 gets its chance on attempt 2.
    v4.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@dual.test"))
    })
    .await?;
    ensure!(v6.rcpt_attempts("rcpt@dual.test") == 1, "{}", v6.summary());
    ensure!(
        lab.dsn.messages().is_empty(),
        "bounced: {}",
        lab.dsn.summary()
    );

    // Without the policy code (5.1.1) the same rejection is final on attempt 1.
    send(&gw, "other@dual.test", "dual-3").await?;
    v6.set_mode(Mode::RejectAll("550 5.1.1 no such user".into()));
    let dsn = failure_dsn(&lab).await?;
    ensure!(
        field_values(&dsn, "Status") == ["5.1.1"],
        "status: {}",
        dsn.text()
    );
    ensure!(
        !v4.messages().iter().any(|m| m.has_rcpt("other@dual.test")),
        "a final rejection must not be retried over IPv4"
    );
    Ok(())
}

#[tokio::test]
async fn starttls_with_untrusted_certificate_is_used() -> Result<()> {
    let mut lab = Lab::new().await?;
    let pki = Pki::new()?;
    let sink = Sink::start_tls(&pki).await?;
    lab.domain_at("tls.test", &sink);
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@tls.test", "tls-1").await?;
    let msgs = sink
        .wait_for(deadline(SECS), |m| {
            m.iter().any(|x| x.has_rcpt("rcpt@tls.test"))
        })
        .await?;
    ensure!(msgs[0].tls, "opportunistic TLS was not used");
    ensure!(
        msgs[0].ehlo == "gw.test",
        "EHLO again after TLS: {:?}",
        msgs[0].ehlo
    );
    tls_record(
        &gw,
        "tls.test",
        &[
            "\"host\":\"mx.tls.test\"",
            "\"starttls\":true",
            "\"tls\":\"unverified\"",
            "\"tls_error\":null",
        ],
    )
    .await?;
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        counter(&metrics, "relaygate_queue_plaintext_fallback_total") == 0.0,
        "no fallback was needed"
    );
    Ok(())
}

#[tokio::test]
async fn tls_handshake_failure_falls_back_to_plaintext() -> Result<()> {
    let mut lab = Lab::new().await?;
    let sink = Sink::start().await?;
    sink.set_mode(Mode::BrokenTls);
    lab.domain_at("badtls.test", &sink);
    let gw = lab.gateway().await?;
    send(&gw, "rcpt@badtls.test", "badtls-1").await?;
    let msgs = sink
        .wait_for(deadline(SECS), |m| {
            m.iter().any(|x| x.has_rcpt("rcpt@badtls.test"))
        })
        .await?;
    ensure!(!msgs[0].tls, "delivered over TLS from a broken TLS server?");
    ensure!(
        sink.connections() == 2,
        "one failed TLS session, one plaintext session: {}",
        sink.summary()
    );
    // The attempt is counted once it is finished.
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        counter(&metrics, "relaygate_queue_plaintext_fallback_total") == 1.0,
        "fallback not counted:\n{metrics}"
    );
    let record = tls_record(
        &gw,
        "badtls.test",
        &[
            "\"starttls\":true",
            "\"tls\":\"none\"",
            "\"tls_error\":\"mx.badtls.test [127.0.0.1]",
        ],
    )
    .await?;
    ensure!(record.contains("\"requiretls\":false"), "{record}");
    Ok(())
}

#[tokio::test]
async fn trust_ad_marks_authentic_destinations() -> Result<()> {
    let mut lab = Lab::new().await?;
    lab.dns_toml = "trust_ad = true\n".into();
    let sink = Sink::start().await?;
    lab.domain_at("signed.test", &sink);
    lab.domain_at("unsigned.test", &sink);
    for name in ["signed.test", "mx.signed.test"] {
        lab.dns.set_authentic(name, true);
    }
    let gw = lab.gateway().await?;

    send(&gw, "rcpt@unsigned.test", "ad-1").await?;
    sink.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@unsigned.test"))
    })
    .await?;
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        counter(&metrics, "relaygate_queue_destinations_total") == 1.0
            && counter(&metrics, "relaygate_queue_destinations_authentic_total") == 0.0,
        "no AD bit, not authentic:\n{metrics}"
    );

    send(&gw, "rcpt@signed.test", "ad-2").await?;
    sink.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@signed.test"))
    })
    .await?;
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        counter(&metrics, "relaygate_queue_destinations_total") == 2.0
            && counter(&metrics, "relaygate_queue_destinations_authentic_total") == 1.0,
        "AD bit on every answer: authentic:\n{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn requiretls_without_dane_or_mtasts_fails_without_dialing() -> Result<()> {
    let mut lab = Lab::new().await?;
    let pki = Pki::new()?;
    let mx = Sink::start_tls(&pki).await?;
    lab.domain_at("dst.test", &mx);
    let gw = Gateway::start(GatewayOptions {
        extra_toml: lab.toml(),
        submission_toml: format!(
            "tls_cert = {}\ntls_key = {}\n",
            toml_str(&pki.chain_pem.to_string_lossy()),
            toml_str(&pki.key_pem.to_string_lossy())
        ),
        ..Default::default()
    })
    .await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.starttls(pki.client_config()?).await?;
    c.ehlo("app.test").await?;
    c.expect(&format!("MAIL FROM:<{SENDER}> REQUIRETLS"), 250)
        .await?;
    c.expect("RCPT TO:<rcpt@dst.test>", 250).await?;
    c.expect("DATA", 354).await?;
    let r = c
        .send_data(&simple_message(SENDER, "rcpt@dst.test", "rt", "rt-1"))
        .await?;
    ensure!(r.code == 250, "end of data: {r:?}");
    c.quit().await?;
    let dsn = failure_dsn(&lab).await?;
    ensure!(
        field_values(&dsn, "Status") == ["5.7.30"],
        "status: {}",
        dsn.text()
    );
    ensure!(mx.connections() == 0, "the MX was dialed: {}", mx.summary());
    let metrics = gw.metrics_text().await?;
    ensure!(
        counter(
            &metrics,
            "relaygate_queue_requiretls_unsupported_total{reason=\"nopolicy\"}"
        ) >= 1.0,
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn validate_mode_authentic_and_bogus() -> Result<()> {
    let dns = TestDns::signed().await?;
    let anchor_dir = temp_dir("relaygate-anchor-")?;
    let anchor = anchor_dir.path().join("root.key");
    std::fs::write(&anchor, dns.trust_anchor().context("a signed server")?)?;
    let mut lab = Lab::with_dns(dns).await?;
    lab.dns_toml = format!(
        "validate = true\ntrust_anchor_file = {}\n",
        toml_str(&anchor.to_string_lossy())
    );
    let sink = Sink::start().await?;
    lab.domain_at("signed.test", &sink);
    lab.domain_at("broken.test", &sink);
    lab.dns.set_bogus("broken.test", true);
    let gw = lab.gateway().await?;

    // Validated in process from the trust anchor: authentic.
    send(&gw, "rcpt@signed.test", "val-1").await?;
    sink.wait_for(deadline(SECS), |m| {
        m.iter().any(|x| x.has_rcpt("rcpt@signed.test"))
    })
    .await?;
    gw.wait_queue_empty(deadline(SECS)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        counter(&metrics, "relaygate_queue_destinations_authentic_total") == 1.0,
        "a validated zone is authentic:\n{metrics}"
    );

    // A broken signature is bogus: no delivery, retried later.
    send(&gw, "rcpt@broken.test", "val-2").await?;
    let rcpt = queued_rcpt_after(&gw, 2).await?;
    let reply = rcpt["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reply.starts_with("451 4.4.3") && reply.contains("bogus"),
        "last reply {reply:?}"
    );
    ensure!(
        sink.rcpt_attempts("rcpt@broken.test") == 0,
        "delivered on bogus DNS data"
    );
    Ok(())
}
