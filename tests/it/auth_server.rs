//! AUTH on the submission listener, driven by a real client outside the project: msmtp
//! (GNU SASL) from Debian, with each of SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5 and PLAIN.
//! Also: relay needs AUTH outside trusted networks, wrong passwords get 535, and the
//! authenticated account is recorded on the message.

use anyhow::{ensure, Context, Result};

use crate::support::deadline;
use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::pki::Pki;
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, SmtpClient};

const PASSWORD: &str = "correct horse battery staple";

/// A gateway whose loopback is NOT trusted (so relay needs AUTH), with STARTTLS and an
/// account `app` whose password is in a file.
async fn gateway_with_account(sink: &Sink, pki: &Pki, dir: &std::path::Path) -> Result<Gateway> {
    let pw = dir.join("app.password");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let mut opts = GatewayOptions::relay_to(sink.port());
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

async fn msmtp(
    gw: &Gateway,
    pki: &Pki,
    auth: &str,
    password: &str,
    to: &str,
) -> Result<std::process::Output> {
    let port = gw.submission_addr().port().to_string();
    let mut child = tokio::process::Command::new("msmtp")
        .args([
            "--host=127.0.0.1",
            &format!("--port={port}"),
            "--tls=on",
            "--tls-starttls=on",
            &format!("--tls-trust-file={}", pki.ca_pem.display()),
            "--tls-host-override=localhost",
            &format!("--auth={auth}"),
            "--user=app",
            &format!("--passwordeval=printf '%s' '{password}'"),
            "--from=a@src.test",
            "--domain=app.test",
            to,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running msmtp (install Debian's msmtp)")?;
    let body = simple_message("a@src.test", to, auth, &format!("msmtp-{auth}"));
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(&body).await?;
    }
    Ok(
        tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
            .await??,
    )
}

#[tokio::test]
async fn msmtp_authenticates_with_each_mechanism() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let gw = gateway_with_account(&sink, &pki, pki.dir.path()).await?;
    for (i, mech) in ["scram-sha-256", "scram-sha-1", "cram-md5", "plain"]
        .iter()
        .enumerate()
    {
        let to = format!("m{i}@dst.test");
        let out = msmtp(&gw, &pki, mech, PASSWORD, &to).await?;
        ensure!(
            out.status.success(),
            "msmtp --auth={mech} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let msgs = sink.wait_for(deadline(30), |m| m.len() >= 4).await?;
    for i in 0..4 {
        ensure!(
            msgs.iter().any(|m| m.has_rcpt(&format!("m{i}@dst.test"))),
            "m{i} missing"
        );
    }
    // The sink has the data before the gateway has read its 250: poll.
    gw.wait_queue_empty(deadline(10)).await?;
    Ok(())
}

#[tokio::test]
async fn wrong_password_gets_535_and_no_relay() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let gw = gateway_with_account(&sink, &pki, pki.dir.path()).await?;
    let out = msmtp(&gw, &pki, "scram-sha-256", "wrong password", "w@dst.test").await?;
    ensure!(
        !out.status.success(),
        "msmtp succeeded with a wrong password"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ensure!(
        err.contains("535"),
        "expected a 535 in msmtp's error: {err}"
    );

    // Without AUTH, from an untrusted address, every RCPT is refused.
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    let ehlo = c.ehlo("app.test").await?;
    ensure!(
        ehlo.capability("AUTH").is_some(),
        "AUTH not offered: {ehlo:?}"
    );
    c.expect("MAIL FROM:<a@src.test>", 250).await?;
    let r = c.cmd("RCPT TO:<x@dst.test>").await?;
    ensure!(r.code == 550, "relay without AUTH: {r:?}");
    ensure!(sink.messages().is_empty());
    Ok(())
}

#[tokio::test]
async fn plain_is_refused_without_tls_off_loopback_rules() -> Result<()> {
    // From loopback, PLAIN is offered without TLS; the account is recorded on the message.
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let gw = gateway_with_account(&sink, &pki, pki.dir.path()).await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    let ehlo = c.ehlo("app.test").await?;
    let auth = ehlo.capability("AUTH").context("AUTH")?;
    ensure!(
        auth.contains("PLAIN") && auth.contains("SCRAM-SHA-256"),
        "{auth}"
    );
    ensure!(!auth.contains("-PLUS"), "-PLUS without TLS: {auth}");
    use base64::Engine;
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0app\0{PASSWORD}"));
    c.expect(&format!("AUTH PLAIN {ir}"), 235).await?;
    let again = c.cmd(&format!("AUTH PLAIN {ir}")).await?;
    ensure!(again.code == 503, "second AUTH: {again:?}");
    c.send_message(
        "a@src.test",
        &["p@dst.test"],
        &simple_message("a@src.test", "p@dst.test", "p", "p-1"),
    )
    .await?;
    sink.wait_for(deadline(30), |m| m.iter().any(|x| x.has_rcpt("p@dst.test")))
        .await?;
    let msgs = sink.messages();
    let m = msgs
        .iter()
        .find(|x| x.has_rcpt("p@dst.test"))
        .context("delivered")?;
    let received = m.header("Received").context("Received")?;
    ensure!(
        received.contains("ESMTPA"),
        "Received should say ESMTPA: {received}"
    );
    Ok(())
}

#[tokio::test]
async fn verifiers_from_account_hash_authenticate() -> Result<()> {
    let dir = crate::support::temp_dir("relaygate-hash-")?;
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, "hashed pw\n")?;
    let out = crate::support::gateway::run_relaygate(
        &[
            "account",
            "hash",
            "--password-file",
            &pwfile.to_string_lossy(),
        ],
        dir.path(),
    )
    .await?;
    ensure!(out.code == Some(0), "account hash failed: {out}");
    ensure!(!out.stdout.contains("hashed pw"), "password printed");
    ensure!(
        out.stdout.contains("scram_sha256 = \"SCRAM-SHA-256$"),
        "{out}"
    );
    let sink = Sink::start().await?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.extra_toml
        .push_str(&format!("\n[accounts.hashed]\n{}", out.stdout));
    let gw = Gateway::start(opts).await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    use base64::Engine;
    let good = base64::engine::general_purpose::STANDARD.encode("\0hashed\0hashed pw");
    let bad = base64::engine::general_purpose::STANDARD.encode("\0hashed\0other");
    let r = c.cmd(&format!("AUTH PLAIN {bad}")).await?;
    ensure!(r.code == 535, "wrong password: {r:?}");
    c.expect(&format!("AUTH PLAIN {good}"), 235).await?;
    Ok(())
}

/// RFC 3207 §4.2: STARTTLS wipes what the client said before it, a completed AUTH
/// included. An AUTH made in plaintext does not carry over into the TLS session.
#[tokio::test]
async fn auth_before_starttls_does_not_carry_over() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let gw = gateway_with_account(&sink, &pki, pki.dir.path()).await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    use base64::Engine;
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0app\0{PASSWORD}"));
    c.expect(&format!("AUTH PLAIN {ir}"), 235).await?;
    c.starttls(pki.client_config()?).await?;
    c.ehlo("app.test").await?;
    c.expect("MAIL FROM:<a@src.test>", 250).await?;
    let rcpt = c.cmd("RCPT TO:<x@dst.test>").await?;
    ensure!(
        rcpt.code == 550 && rcpt.text().contains("5.7.1"),
        "relay after STARTTLS without a new AUTH: {rcpt:?}"
    );
    // A new AUTH inside TLS works.
    c.expect("RSET", 250).await?;
    c.expect(&format!("AUTH PLAIN {ir}"), 235).await?;
    c.expect("MAIL FROM:<a@src.test>", 250).await?;
    c.expect("RCPT TO:<x@dst.test>", 250).await?;
    Ok(())
}

/// Sender identity: an authenticated account may use only its `allowed_senders`, a
/// trusted client without AUTH only `trusted_senders` (landed main let any account
/// send as anyone).
#[tokio::test]
async fn senders_are_limited_per_account_and_for_trusted_clients() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let pw = pki.dir.path().join("app.password");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.trusted_networks = Some(vec!["127.0.0.1/32".into()]);
    opts.submission_toml = "trusted_senders = [\".src.test\"]\n".into();
    opts.extra_toml.push_str(&format!(
        "\n[accounts.app]\npassword_file = {}\nallowed_senders = [\"billing@example.org\", \"@app.example.org\"]\n",
        toml_str(&pw.to_string_lossy())
    ));
    let gw = Gateway::start(opts).await?;

    // A trusted client (127.0.0.1) without AUTH.
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.expect("MAIL FROM:<x@mail.src.test>", 250).await?;
    c.expect("RSET", 250).await?;
    let r = c.cmd("MAIL FROM:<ceo@example.org>").await?;
    ensure!(
        r.code == 553 && r.text().contains("5.7.1"),
        "trusted client as ceo@: {r}"
    );

    // The account, from another loopback address (not trusted).
    let mut c = SmtpClient::connect_from(gw.submission_addr(), [127, 0, 0, 2].into()).await?;
    c.ehlo("app.test").await?;
    use base64::Engine;
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0app\0{PASSWORD}"));
    c.expect(&format!("AUTH PLAIN {ir}"), 235).await?;
    for ok in [
        "billing@example.org",
        "Billing@EXAMPLE.org",
        "noreply@app.example.org",
        "",
    ] {
        c.expect(&format!("MAIL FROM:<{ok}>"), 250).await?;
        c.expect("RSET", 250).await?;
    }
    for no in ["ceo@example.org", "x@sub.app.example.org", "x@src.test"] {
        let r = c.cmd(&format!("MAIL FROM:<{no}>")).await?;
        ensure!(
            r.code == 553 && r.text().contains("5.7.1"),
            "account as {no}: {r}"
        );
    }
    Ok(())
}

/// SCRAM must not tell which accounts exist: an unknown user gets a decoy whose
/// iteration count is the one the real accounts use (landed main always said 4096).
#[tokio::test]
async fn scram_decoy_has_the_real_iteration_count() -> Result<()> {
    use base64::Engine;
    use relaygate_transports::sasl::{ScramHash, ScramVerifier};
    let b64 = base64::engine::general_purpose::STANDARD;
    let sink = Sink::start().await?;
    let verifier =
        ScramVerifier::from_password(ScramHash::Sha256, PASSWORD, b"0123456789abcdef", 20_000)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.extra_toml.push_str(&format!(
        "\n[accounts.app]\nscram_sha256 = {}\n",
        toml_str(&verifier.to_string())
    ));
    let gw = Gateway::start(opts).await?;
    let mut iterations = Vec::new();
    for user in ["app", "nobody", "admin"] {
        let mut c = SmtpClient::connect(gw.submission_addr()).await?;
        c.ehlo("app.test").await?;
        let first = b64.encode(format!("n,,n={user},r=clientnonce0123"));
        let r = c.cmd(&format!("AUTH SCRAM-SHA-256 {first}")).await?;
        ensure!(r.code == 334, "{user}: {r}");
        let challenge = String::from_utf8(b64.decode(r.lines[0].trim())?)?;
        let i = challenge
            .split(',')
            .find_map(|f| f.strip_prefix("i="))
            .context("no i= in the server-first message")?
            .to_string();
        iterations.push((user, i));
        c.cmd("*").await?;
    }
    ensure!(
        iterations.iter().all(|(_, i)| i == "20000"),
        "iteration counts differ between real and unknown users: {iterations:?}"
    );
    Ok(())
}

/// One AUTH PLAIN from `source` (a loopback address of its own): the reply and how long
/// the answer took.
async fn plain_from(
    gw: &Gateway,
    source: &str,
    user: &str,
    password: &str,
) -> Result<(u16, std::time::Duration)> {
    use base64::Engine;
    let mut c = SmtpClient::connect_from(gw.submission_addr(), source.parse()?).await?;
    c.ehlo("app.test").await?;
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    let started = std::time::Instant::now();
    let r = c.cmd(&format!("AUTH PLAIN {ir}")).await?;
    Ok((r.code, started.elapsed()))
}

/// A guesser is locked out per (account, address) and per address, the application on
/// another address keeps working, the operator sees the lockout and clears it (landed
/// main had no lockout: a guesser could try forever, slowed only per address).
#[tokio::test]
async fn guesser_is_locked_out_not_the_app_and_the_operator_can_clear_it() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let pw = pki.dir.path().join("app.password");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.trusted_networks = Some(vec!["192.0.2.0/24".into()]);
    opts.submission_toml =
        "auth_max_failures = 3\nauth_max_failures_per_ip = 5\nauth_lockout = \"10m\"\n".into();
    opts.extra_toml.push_str(&format!(
        "\n[accounts.app]\npassword_file = {}\n",
        toml_str(&pw.to_string_lossy())
    ));
    let gw = Gateway::start(opts).await?;
    let guesser = "127.0.0.2";
    for i in 0..3 {
        let (code, _) = plain_from(&gw, guesser, "app", &format!("guess {i}")).await?;
        ensure!(code == 535, "guess {i}: {code}");
    }
    // The right password from the guesser's address: still locked (454, not 235).
    let (code, _) = plain_from(&gw, guesser, "app", PASSWORD).await?;
    ensure!(code == 454, "right password during the lockout: {code}");
    // The application on its own address is not locked out.
    let (code, _) = plain_from(&gw, "127.0.0.3", "app", PASSWORD).await?;
    ensure!(
        code == 235,
        "the application was locked out by the guesser: {code}"
    );
    // Two more failures from the guesser's address (other names) lock the address.
    for user in ["admin", "root"] {
        let (code, _) = plain_from(&gw, guesser, user, "x").await?;
        ensure!(code == 535 || code == 454, "{user}: {code}");
    }
    let (code, took) = plain_from(&gw, guesser, "someone", "x").await?;
    ensure!(
        code == 454 && took < std::time::Duration::from_millis(500),
        "a locked address is refused at once: {code} after {took:?}"
    );
    // The operator sees both lockouts, and clears the address's.
    let list = gw.run_cli(&["lockouts", "list", "--json"]).await?;
    ensure!(list.code == Some(0), "{list}");
    let v: serde_json::Value = serde_json::from_str(&list.stdout)?;
    let locked: Vec<(String, Option<String>)> = v["lockouts"]
        .as_array()
        .context("lockouts")?
        .iter()
        .filter(|e| e["locked"] == true)
        .map(|e| {
            (
                e["address"].as_str().unwrap_or("").to_string(),
                e["account"].as_str().map(str::to_string),
            )
        })
        .collect();
    ensure!(
        locked.contains(&(guesser.into(), Some("app".into())))
            && locked.contains(&(guesser.into(), None)),
        "lockouts listed: {locked:?}"
    );
    let text = gw.run_cli(&["lockouts", "list"]).await?;
    ensure!(
        text.stdout.contains("locked") && text.stdout.contains(guesser),
        "{text}"
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("relaygate_submission_limits_total{limit=\"auth_lockout\"} 2")),
        "auth_lockout not counted twice"
    );
    let cleared = gw
        .run_cli(&["lockouts", "clear", "--address", guesser])
        .await?;
    ensure!(cleared.code == Some(0), "{cleared}");
    let (code, _) = plain_from(&gw, guesser, "app", PASSWORD).await?;
    ensure!(
        code == 235,
        "after clearing, the right password works: {code}"
    );
    Ok(())
}

/// Success and failure are answered after the same time, so timing tells a guesser
/// nothing (landed main answered a first failure 250 ms later than a success). Each
/// attempt comes from a fresh address, so both have the same (empty) history; the
/// fastest of three of each is compared.
#[tokio::test]
async fn success_and_failure_take_the_same_time() -> Result<()> {
    let sink = Sink::start().await?;
    let dir = tempfile::tempdir()?;
    let pw = dir.path().join("app.password");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.trusted_networks = Some(vec!["192.0.2.0/24".into()]);
    opts.extra_toml.push_str(&format!(
        "\n[accounts.app]\npassword_file = {}\n",
        toml_str(&pw.to_string_lossy())
    ));
    let gw = Gateway::start(opts).await?;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for i in 0..3 {
        let (code, took) = plain_from(&gw, &format!("127.0.1.{}", i + 1), "app", PASSWORD).await?;
        ensure!(code == 235, "{code}");
        ok.push(took);
        let (code, took) = plain_from(&gw, &format!("127.0.2.{}", i + 1), "app", "wrong").await?;
        ensure!(code == 535, "{code}");
        failed.push(took);
    }
    let (ok, failed) = (ok.iter().min().copied(), failed.iter().min().copied());
    let (ok, failed) = (ok.context("ok")?, failed.context("failed")?);
    ensure!(
        failed.abs_diff(ok) < std::time::Duration::from_millis(150),
        "success answered in {ok:?}, failure in {failed:?}"
    );
    Ok(())
}
