//! Authenticated smarthost transports, end to end with the real binary:
//!
//! - gateway B relays through a `submission` transport (STARTTLS, verified with
//!   `tls.extra_ca_file`) to gateway A, whose `[accounts.app]` is the SASL server; the
//!   message arrives at A's sink for every mechanism, including SCRAM-SHA-256-PLUS
//!   bound to TLS 1.3;
//! - a wrong password: one 535 in A's log, no second AUTH, the message stays queued in
//!   B with the reason in `queue list`;
//! - `relaygate auth-test` against A, with the right and a wrong password;
//! - a real SASL server outside the project: Debian's Dovecot submission service, with
//!   each of SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN and LOGIN, relaying to a sink.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::support::dovecot::Dovecot;
use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::pki::Pki;
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, submit};
use crate::support::{deadline, wait_until_async};

const PASSWORD: &str = "correct horse battery staple";

/// Gateway A: the smarthost. Loopback is not trusted, so relaying needs AUTH as `app`;
/// STARTTLS with the test PKI; everything accepted goes to `sink`.
async fn gateway_a(sink: &Sink, pki: &Pki, dir: &Path) -> Result<Gateway> {
    let pw = dir.join("a-app.password");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.log_filter = Some("debug".into());
    opts.trusted_networks = Some(vec!["192.0.2.0/24".into()]);
    opts.submission_toml = format!(
        "tls_cert = {}\ntls_key = {}\n",
        toml_str(&pki.chain_pem.to_string_lossy()),
        toml_str(&pki.key_pem.to_string_lossy())
    );
    opts.extra_toml.push_str(&format!(
        "\n[accounts.app]\npassword_file = {}\n",
        toml_str(&pw.to_string_lossy())
    ));
    Gateway::start(opts).await
}

/// A `submission` transport named `name` to 127.0.0.1:`port` as `app`, with the password
/// in a file under `dir` and the given mechanism list (TOML array text, or "" for the
/// default), routed for recipient domain `domain`.
fn transport_toml(
    name: &str,
    port: u16,
    dir: &Path,
    password: &str,
    mechanisms: &str,
    domain: &str,
) -> Result<String> {
    let pw = dir.join(format!("{name}.password"));
    std::fs::write(&pw, format!("{password}\n"))?;
    let mechanisms = if mechanisms.is_empty() {
        String::new()
    } else {
        format!("mechanisms = {mechanisms}\n")
    };
    Ok(format!(
        "[transports.{name}]\nkind = \"submission\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         username = \"app\"\npassword_file = {}\n{mechanisms}\n\
         [[routes]]\nto_domain = [{}]\ntransport = {}\n\n",
        toml_str(&pw.to_string_lossy()),
        toml_str(domain),
        toml_str(name),
    ))
}

/// Gateway B: trusts loopback submitters and relays by the given transports/routes.
async fn gateway_b(pki: &Pki, transports: &str, first_retry: &str) -> Result<Gateway> {
    let opts = GatewayOptions {
        first_retry: first_retry.to_string(),
        extra_toml: format!(
            "[tls]\nextra_ca_file = {}\n\n{transports}",
            toml_str(&pki.ca_pem.to_string_lossy())
        ),
        log_filter: Some("debug".into()),
        ..Default::default()
    };
    Gateway::start(opts).await
}

/// The stderr log of a gateway.
fn stderr_log(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.dir().join("stderr.log")).unwrap_or_default()
}

/// The mechanisms of the "submission: authenticated" lines of a gateway's log.
fn authenticated_mechanisms(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("submission: authenticated"))
        .filter_map(|l| {
            let rest = &l[l.find("mechanism=")? + "mechanism=".len()..];
            let value = rest.split_whitespace().next()?;
            Some(value.trim_matches('"').to_string())
        })
        .collect()
}

#[tokio::test]
async fn smarthost_auth_to_our_own_server_with_each_mechanism() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let a = gateway_a(&sink, &pki, pki.dir.path()).await?;
    let port = a.submission_addr().port();
    let cases = [
        ("default", ""),
        ("scram256plus", "[\"SCRAM-SHA-256-PLUS\"]"),
        ("scram256", "[\"SCRAM-SHA-256\"]"),
        ("scram1plus", "[\"SCRAM-SHA-1-PLUS\"]"),
        ("scram1", "[\"SCRAM-SHA-1\"]"),
        ("crammd5", "[\"CRAM-MD5\"]"),
        ("plain", "[\"PLAIN\"]"),
        ("login", "[\"LOGIN\"]"),
    ];
    let mut transports = String::new();
    for (name, mechs) in cases {
        transports.push_str(&transport_toml(
            name,
            port,
            pki.dir.path(),
            PASSWORD,
            mechs,
            &format!("{name}.test"),
        )?);
    }
    let b = gateway_b(&pki, &transports, "200ms").await?;
    for (name, _) in cases {
        let to = format!("r@{name}.test");
        submit(
            b.submission_addr(),
            "a@src.test",
            &[to.as_str()],
            &simple_message("a@src.test", &to, name, &format!("auth-{name}")),
        )
        .await
        .with_context(|| format!("submitting to B for {name}"))?;
    }
    let msgs = sink
        .wait_for(deadline(60), |m| {
            cases
                .iter()
                .all(|(name, _)| m.iter().any(|x| x.has_rcpt(&format!("r@{name}.test"))))
        })
        .await
        .with_context(|| format!("B's log:\n{}", b.log_tails()))?;
    ensure!(msgs.len() == cases.len(), "extra deliveries: {msgs:?}");
    b.wait_queue_empty(deadline(30)).await?;

    // A saw each mechanism; the default list picked SCRAM-SHA-256-PLUS (TLS 1.3, A
    // offers -PLUS), so -PLUS appears twice.
    let mut seen = authenticated_mechanisms(&stderr_log(&a));
    seen.sort();
    let mut want = vec![
        "CRAM-MD5",
        "LOGIN",
        "PLAIN",
        "SCRAM-SHA-1",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256-PLUS",
    ];
    want.sort();
    ensure!(seen == want, "A authenticated {seen:?}, want {want:?}");
    // Both sides logged at debug level; neither log holds the password in any form.
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let forms = [
        PASSWORD.to_string(),
        b64(&format!("\0app\0{PASSWORD}")),
        b64(PASSWORD),
    ];
    for (who, log) in [("A", stderr_log(&a)), ("B", stderr_log(&b))] {
        ensure!(log.contains("DEBUG"), "{who} did not log at debug level");
        for f in &forms {
            ensure!(
                !log.contains(f.as_str()),
                "a form of the password appears in {who}'s log"
            );
        }
    }
    Ok(())
}

/// The per-recipient entries of the first queued message.
fn first_rcpt(messages: &[Value]) -> Option<&Value> {
    messages.first()?.get("rcpts")?.as_array()?.first()
}

#[tokio::test]
async fn wrong_password_one_535_and_message_stays_queued() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let a = gateway_a(&sink, &pki, pki.dir.path()).await?;
    let transports = transport_toml(
        "provider",
        a.submission_addr().port(),
        pki.dir.path(),
        "wrong password",
        "",
        "dst.test",
    )?;
    // One attempt within the test: the retry is an hour away.
    let b = gateway_b(&pki, &transports, "1h").await?;
    submit(
        b.submission_addr(),
        "a@src.test",
        &["r@dst.test"],
        &simple_message("a@src.test", "r@dst.test", "wrong", "wrong-pw"),
    )
    .await?;

    wait_until_async(deadline(30), "B's first attempt to fail", || async {
        let m = b.queue_messages().await?;
        Ok(first_rcpt(&m).is_some_and(|r| r["attempts"].as_u64() == Some(1)))
    })
    .await?;
    let messages = b.queue_messages().await?;
    let rcpt = first_rcpt(&messages).context("the message left B's queue")?;
    ensure!(rcpt["status"] == "pending", "{rcpt}");
    let reason = rcpt["last_reply"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("535") && reason.contains("AUTH SCRAM-SHA-256-PLUS"),
        "last_reply: {reason}"
    );
    let list = b.run_cli(&["queue", "list"]).await?;
    ensure!(
        list.code == Some(0) && list.stdout.contains("535"),
        "queue list does not show the 535:\n{list}"
    );

    let log = stderr_log(&a);
    let failures = log
        .lines()
        .filter(|l| l.contains("submission: authentication failed"))
        .count();
    ensure!(failures == 1, "A logged {failures} failed logins:\n{log}");
    ensure!(
        authenticated_mechanisms(&log).is_empty(),
        "A logged a successful login:\n{log}"
    );
    ensure!(sink.messages().is_empty(), "{}", sink.summary());
    let b_log = stderr_log(&b);
    ensure!(
        b_log.contains("operator fixes the username/password"),
        "B's log does not tell the operator:\n{b_log}"
    );
    ensure!(
        !b_log.contains("wrong password"),
        "the password is in B's log"
    );
    Ok(())
}

#[tokio::test]
async fn auth_test_command_against_our_server() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let a = gateway_a(&sink, &pki, pki.dir.path()).await?;
    let port = a.submission_addr().port();
    let mut transports = transport_toml("good", port, pki.dir.path(), PASSWORD, "", "g.test")?;
    transports.push_str(&transport_toml(
        "cram",
        port,
        pki.dir.path(),
        PASSWORD,
        "[\"CRAM-MD5\"]",
        "c.test",
    )?);
    transports.push_str(&transport_toml(
        "bad",
        port,
        pki.dir.path(),
        "not the password",
        "",
        "b.test",
    )?);
    let b = gateway_b(&pki, &transports, "1h").await?;

    let out = b.run_cli(&["auth-test", "good"]).await?;
    ensure!(out.code == Some(0), "auth-test good:\n{out}");
    for want in [
        "TLSv1.3, certificate verified",
        "mechanisms advertised after TLS: SCRAM-SHA-256-PLUS SCRAM-SHA-256",
        "chosen mechanism: SCRAM-SHA-256-PLUS (channel binding: tls-exporter)",
        "authentication succeeded",
    ] {
        ensure!(out.stdout.contains(want), "missing {want:?}:\n{out}");
    }
    let out = b.run_cli(&["auth-test", "cram"]).await?;
    ensure!(
        out.code == Some(0) && out.stdout.contains("chosen mechanism: CRAM-MD5"),
        "auth-test cram:\n{out}"
    );

    let out = b.run_cli(&["auth-test", "bad"]).await?;
    ensure!(out.code == Some(1), "auth-test bad should exit 1:\n{out}");
    ensure!(
        out.stdout.contains("server reply: 535"),
        "no server reply:\n{out}"
    );
    ensure!(!out.stdout.contains("authentication succeeded"), "{out}");
    ensure!(!out.stdout.contains("not the password"), "{out}");

    let out = b.run_cli(&["auth-test", "nope"]).await?;
    ensure!(
        out.code == Some(1) && out.stderr.contains("no transport \"nope\""),
        "{out}"
    );
    // auth-test sends no message.
    ensure!(sink.messages().is_empty(), "{}", sink.summary());
    Ok(())
}

#[tokio::test]
async fn dovecot_real_server_with_each_mechanism() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let dovecot = Dovecot::start(&pki, sink.port(), "app", PASSWORD).await?;
    let port = dovecot.port();
    let cases = [
        ("default", ""),
        ("scram256", "[\"SCRAM-SHA-256\"]"),
        ("scram1", "[\"SCRAM-SHA-1\"]"),
        ("crammd5", "[\"CRAM-MD5\"]"),
        ("plain", "[\"PLAIN\"]"),
        ("login", "[\"LOGIN\"]"),
    ];
    let mut transports = String::new();
    for (name, mechs) in cases {
        transports.push_str(&transport_toml(
            name,
            port,
            pki.dir.path(),
            PASSWORD,
            mechs,
            &format!("{name}.test"),
        )?);
    }
    transports.push_str(&transport_toml(
        "bad",
        port,
        pki.dir.path(),
        "wrong",
        "",
        "bad.test",
    )?);
    let b = gateway_b(&pki, &transports, "200ms").await?;

    let out = b.run_cli(&["auth-test", "default"]).await?;
    ensure!(
        out.code == Some(0)
            && out.stdout.contains("certificate verified")
            && out.stdout.contains("chosen mechanism: SCRAM-SHA-256 ")
            && out.stdout.contains("authentication succeeded"),
        "auth-test against Dovecot:\n{out}\n{}",
        dovecot.logs()
    );
    let out = b.run_cli(&["auth-test", "bad"]).await?;
    ensure!(
        out.code == Some(1) && out.stdout.contains("server reply: 535"),
        "auth-test with a wrong password against Dovecot:\n{out}"
    );

    for (name, _) in cases {
        let to = format!("r@{name}.test");
        submit(
            b.submission_addr(),
            "a@src.test",
            &[to.as_str()],
            &simple_message("a@src.test", &to, name, &format!("dovecot-{name}")),
        )
        .await?;
    }
    sink.wait_for(deadline(60), |m| {
        cases
            .iter()
            .all(|(name, _)| m.iter().any(|x| x.has_rcpt(&format!("r@{name}.test"))))
    })
    .await
    .with_context(|| format!("{}\nB's log:\n{}", dovecot.logs(), b.log_tails()))?;
    b.wait_queue_empty(deadline(30)).await?;

    // Dovecot's login log names the mechanism of each session.
    let log = dovecot.log();
    for method in ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"] {
        ensure!(
            log.contains(&format!("method={method},")),
            "Dovecot did not log a {method} login:\n{log}"
        );
    }
    Ok(())
}
