//! The lab of the verified-TLS scenarios (DANE, MTA-STS, REQUIRETLS): the in-process
//! DNS server with per-name AD bits (the gateway runs with `dns.trust_ad = true`), a
//! test CA whose server certificate covers the MX and policy host names, an HTTPS
//! policy server with that certificate (`mtasts.https_port`, `tls.extra_ca_file`), and
//! a sink for DSNs to `sender@src.test`. MX hosts resolve to 127.0.0.1 and are reached
//! on their sink's port through `direct.port_overrides`; `direct.port` (the port in
//! TLSA owner names) is a port where nothing listens.

use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use relaygate_transports::testkit::TestDns;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::gateway::{toml_str, Gateway, GatewayOptions};
use super::https::PolicyServer;
use super::pki::Pki;
use super::sink::{Received, Sink};
use super::smtp_client::{simple_message, submit, SmtpClient};
use super::{deadline, POLL_INTERVAL};

/// The envelope sender of every test message; DSNs go to `dsn`.
pub const SENDER: &str = "sender@src.test";
/// Generous: every scenario takes seconds with the compressed retry schedule.
pub const SECS: u64 = 60;

pub struct TlsLab {
    pub dns: TestDns,
    /// Receives DSNs to [`SENDER`].
    pub dsn: Sink,
    /// The trusted test CA; its server certificate covers the lab's names.
    pub pki: Pki,
    /// Serves MTA-STS policies.
    pub policies: PolicyServer,
    /// MX host name → port.
    ports: Vec<(String, u16)>,
    /// `direct.port`: where nothing listens; TLSA owners use it.
    pub default_port: u16,
    pub first_retry: String,
    pub max_attempts: u32,
    /// Appended to the config (e.g. a socks transport and its route).
    pub extra_toml: String,
}

impl TlsLab {
    /// A lab whose CA issues a certificate for `names` (plus localhost, 127.0.0.1).
    pub async fn new(names: &[&str]) -> Result<TlsLab> {
        let dns = TestDns::start()
            .await
            .context("starting the test DNS server")?;
        // Answers are not cached: scenarios change DNS data between attempts.
        dns.set_ttl(0);
        let dsn = Sink::start().await?;
        dns.add_mx("src.test", 10, "mx.src.test");
        dns.add_a("mx.src.test", Ipv4Addr::LOCALHOST);
        let pki = Pki::for_names(names)?;
        let policies = PolicyServer::start(&pki).await?;
        let default_port = super::microsocks::free_port()?;
        Ok(TlsLab {
            ports: vec![("mx.src.test".into(), dsn.port())],
            dns,
            dsn,
            pki,
            policies,
            default_port,
            first_retry: "200ms".into(),
            max_attempts: 8,
            extra_toml: String::new(),
        })
    }

    /// `host` resolves to 127.0.0.1 and is reached on `sink`'s port.
    pub fn host(&mut self, host: &str, sink: &Sink) {
        self.dns.add_a(host, Ipv4Addr::LOCALHOST);
        self.ports.push((host.to_string(), sink.port()));
    }

    /// `domain` gets an MX `host` with `preference`, at `sink`.
    pub fn mx(&mut self, domain: &str, preference: u16, host: &str, sink: &Sink) {
        self.dns.add_mx(domain, preference, host);
        self.host(host, sink);
    }

    /// Every answer about these names carries the AD bit.
    pub fn authentic(&self, names: &[&str]) {
        for name in names {
            self.dns.set_authentic(name, true);
        }
    }

    /// The TLSA owner name of `host` (`_<direct.port>._tcp.<host>`).
    pub fn tlsa_owner(&self, host: &str) -> String {
        format!("_{}._tcp.{host}", self.default_port)
    }

    /// Adds a TLSA record for `host`, authentic or not.
    pub fn tlsa(&self, host: &str, record: (u8, u8, u8, Vec<u8>), authentic: bool) {
        let owner = self.tlsa_owner(host);
        let (usage, selector, matching, data) = record;
        self.dns.add_tlsa(&owner, usage, selector, matching, &data);
        self.dns.set_authentic(&owner, authentic);
    }

    /// Publishes an MTA-STS policy for `domain`: the TXT record with `id`, the policy
    /// host's address, and `policy` on the HTTPS server.
    pub fn mtasts(&self, domain: &str, id: &str, policy: &str) {
        self.mtasts_record(domain, id);
        self.dns
            .add_a(&format!("mta-sts.{domain}"), Ipv4Addr::LOCALHOST);
        self.policies.set_policy(domain, policy);
    }

    /// Replaces `domain`'s `_mta-sts` TXT record with one for `id`.
    pub fn mtasts_record(&self, domain: &str, id: &str) {
        let owner = format!("_mta-sts.{domain}");
        self.dns.remove(&owner);
        self.dns.add_txt(&owner, &format!("v=STSv1; id={id}"));
    }

    pub fn toml(&self) -> String {
        let overrides: Vec<String> = self
            .ports
            .iter()
            .map(|(host, port)| format!("{} = {port}", toml_str(host)))
            .collect();
        format!(
            "[dns]\nnameservers = [{}]\ntrust_ad = true\n\n\
             [direct]\nport = {}\nport_overrides = {{ {} }}\n\n\
             [mtasts]\nhttps_port = {}\n\n\
             [tls]\nextra_ca_file = {}\n\n{}",
            toml_str(&self.dns.addr().to_string()),
            self.default_port,
            overrides.join(", "),
            self.policies.port(),
            toml_str(&self.pki.ca_pem.to_string_lossy()),
            self.extra_toml,
        )
    }

    /// The gateway, with a submission certificate so that clients can say REQUIRETLS.
    pub async fn gateway(&self) -> Result<Gateway> {
        Gateway::start(GatewayOptions {
            extra_toml: self.toml(),
            first_retry: self.first_retry.clone(),
            max_attempts: self.max_attempts,
            submission_toml: format!(
                "tls_cert = {}\ntls_key = {}\n",
                toml_str(&self.pki.chain_pem.to_string_lossy()),
                toml_str(&self.pki.key_pem.to_string_lossy())
            ),
            ..Default::default()
        })
        .await
    }

    /// Waits for the failure DSN to [`SENDER`] and returns it.
    pub async fn failure_dsn(&self) -> Result<Received> {
        let msgs = self
            .dsn
            .wait_for(deadline(SECS), |m| {
                m.iter().any(|x| x.is_bounce() && x.has_rcpt(SENDER))
            })
            .await?;
        let dsn = msgs
            .into_iter()
            .find(|x| x.is_bounce() && x.has_rcpt(SENDER))
            .context("no DSN")?;
        let actions = field_values(&dsn, "Action");
        ensure!(
            actions.iter().all(|a| a.eq_ignore_ascii_case("failed")) && !actions.is_empty(),
            "not a failure DSN: {actions:?}\n{}",
            dsn.text()
        );
        Ok(dsn)
    }
}

/// Submits a plain message from [`SENDER`] to `to`.
pub async fn send(gw: &Gateway, to: &str, id: &str) -> Result<()> {
    submit(
        gw.submission_addr(),
        SENDER,
        &[to],
        &simple_message(SENDER, to, id, id),
    )
    .await
}

/// Submits a message with a `TLS-Required: No` header (RFC 8689 §5).
pub async fn send_tls_required_no(gw: &Gateway, to: &str, id: &str) -> Result<()> {
    let body = format!(
        "From: <{SENDER}>\r\nTo: <{to}>\r\nSubject: {id}\r\nTLS-Required: No\r\n\
         Message-ID: <{id}@client.test>\r\n\r\nDeliver even without verified TLS.\r\n"
    );
    submit(gw.submission_addr(), SENDER, &[to], body.as_bytes()).await
}

/// Submits a message with `MAIL FROM:<...> REQUIRETLS`, over STARTTLS (RFC 8689 §4.1).
pub async fn send_requiretls(gw: &Gateway, pki: &Pki, to: &str, id: &str) -> Result<()> {
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.starttls(pki.client_config()?).await?;
    let caps = c.ehlo("app.test").await?;
    ensure!(caps.has_capability("REQUIRETLS"), "no REQUIRETLS: {caps}");
    c.expect(&format!("MAIL FROM:<{SENDER}> REQUIRETLS"), 250)
        .await?;
    c.expect(&format!("RCPT TO:<{to}>"), 250).await?;
    c.expect("DATA", 354).await?;
    let r = c.send_data(&simple_message(SENDER, to, id, id)).await?;
    ensure!(r.code == 250, "end of data: {r:?}");
    c.quit().await
}

/// The values of every `name:` line anywhere in the message (DSN fields live in a part).
pub fn field_values(m: &Received, name: &str) -> Vec<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    m.text()
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .collect()
}

/// The only queued message, once its first recipient has had `attempts` attempts.
pub async fn queued_after(gw: &Gateway, attempts: u64) -> Result<Value> {
    let until = deadline(SECS);
    let mut last = Value::Null;
    loop {
        match gw.queue_messages().await?.first().cloned() {
            Some(msg) if msg["rcpts"][0]["attempts"].as_u64().unwrap_or(0) >= attempts => {
                return Ok(msg)
            }
            Some(msg) => last = msg,
            None if !last.is_null() => {
                bail!("the message left the queue before {attempts} attempts; last seen: {last}")
            }
            None => {}
        }
        if Instant::now() >= until {
            bail!("no message with {attempts} attempts in time; last seen: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until `GET /metrics` has `name{labels}` at `at_least` or more; returns the text.
pub async fn wait_metric(
    gw: &Gateway,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> Result<String> {
    let until = deadline(SECS);
    loop {
        let text = gw.metrics_text().await?;
        if super::metrics::sample(&text, name, labels) >= at_least {
            return Ok(text);
        }
        if Instant::now() >= until {
            bail!("{name}{labels:?} never reached {at_least}:\n{text}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// TLSA association data: SHA-256 of the certificate's SubjectPublicKeyInfo (selector
/// 1, matching type 1).
pub fn spki_sha256(cert: &rustls::pki_types::CertificateDer<'_>) -> Result<Vec<u8>> {
    let spki = relaygate_transports::dane::spki_of(cert).context("certificate SPKI")?;
    Ok(Sha256::digest(&spki).to_vec())
}
