//! An operator's day: hold and release, retry after fixing a route, the attempt history
//! of a message, and the admin API's token (issue 8 acceptance).

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::support::gateway::{config_text, run_relaygate, toml_str, Gateway, GatewayOptions};
use crate::support::sink::{Mode, Sink};
use crate::support::smtp_client::{simple_message, SmtpClient};
use crate::support::{deadline, temp_dir, wait_until_async};

async fn submit(gw: &Gateway, to: &str, id: &str) -> Result<()> {
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.send_message(
        "a@src.test",
        &[to],
        &simple_message("a@src.test", to, id, id),
    )
    .await?;
    c.quit().await
}

fn cli_ok(out: &crate::support::gateway::CliOutput) -> Result<()> {
    ensure!(out.code == Some(0), "CLI failed: {out}");
    Ok(())
}

#[tokio::test]
async fn held_domain_waits_until_released() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    cli_ok(
        &gw.run_cli(&["queue", "hold", "--domain", "held.test"])
            .await?,
    )?;

    submit(&gw, "x@held.test", "held-1").await?;
    submit(&gw, "y@free.test", "free-1").await?;
    // Mail for other domains flows; the held one stays queued without an attempt.
    sink.wait_for(deadline(30), |m| {
        m.iter().any(|x| x.has_rcpt("y@free.test"))
    })
    .await?;
    wait_until_async(deadline(10), "only the held message queued", || async {
        Ok(gw.queue_messages().await?.len() == 1)
    })
    .await?;
    let msgs = gw.queue_messages().await?;
    ensure!(
        msgs[0]["rcpts"][0]["attempts"] == 0,
        "held mail was attempted: {msgs:?}"
    );
    ensure!(
        sink.rcpt_attempts("x@held.test") == 0,
        "held mail reached the sink"
    );
    // Held by a rule, and shown so (issue 16 item 5): the message, its recipient with
    // the rule, no next attempt; /healthz counts it; the rules are listed; a retry does
    // not send it and says why.
    let m = &msgs[0];
    let r = &m["rcpts"][0];
    ensure!(
        m["held"] == true
            && r["status"] == "held"
            && r["held_by"] == "rule domain=held.test"
            && r["next_attempt"].is_null(),
        "{m}"
    );
    let health: serde_json::Value = serde_json::from_slice(&gw.http_get("/healthz").await?.body)?;
    ensure!(health["queue"]["held_messages"] == 1, "{health}");
    let holds = gw.run_cli(&["queue", "holds"]).await?;
    cli_ok(&holds)?;
    ensure!(holds.stdout.contains("hold domain=held.test"), "{holds}");
    let retry = gw.run_cli(&["queue", "retry", "--all"]).await?;
    cli_ok(&retry)?;
    ensure!(
        retry
            .stdout
            .contains("1 recipient(s) not retried: held (rule domain=held.test)"),
        "{retry}"
    );
    ensure!(
        sink.rcpt_attempts("x@held.test") == 0,
        "retry sent held mail"
    );
    let listed = gw.run_cli(&["queue", "list"]).await?;
    ensure!(
        listed.stdout.contains("HELD") && listed.stdout.contains(" held "),
        "{listed}"
    );

    let t0 = std::time::Instant::now();
    cli_ok(
        &gw.run_cli(&["queue", "release", "--domain", "held.test"])
            .await?,
    )?;
    sink.wait_for(deadline(10), |m| {
        m.iter().any(|x| x.has_rcpt("x@held.test"))
    })
    .await?;
    ensure!(
        t0.elapsed() < Duration::from_secs(5),
        "release did not send at once"
    );
    gw.wait_queue_empty(deadline(10)).await?;
    Ok(())
}

#[tokio::test]
async fn retry_all_after_fixing_the_route_delivers_at_once() -> Result<()> {
    let sink = Sink::start().await?;
    // A route to a transport nobody listens on (port 1), retried only in an hour.
    let broken = |port: u16| {
        format!(
            "[transports.sink]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\nno_starttls = true\n\n[[routes]]\ntransport = \"sink\"\n"
        )
    };
    let mut opts = GatewayOptions {
        extra_toml: broken(1),
        first_retry: "1h".into(),
        ..Default::default()
    };
    let gw = Gateway::start(opts.clone()).await?;
    for i in 0..3 {
        submit(&gw, &format!("r{i}@dst.test"), &format!("stuck-{i}")).await?;
    }
    wait_until_async(deadline(30), "three failed first attempts", || async {
        let msgs = gw.queue_messages().await?;
        Ok(msgs.len() == 3 && msgs.iter().all(|m| m["rcpts"][0]["attempts"] == 1))
    })
    .await?;

    // Fix the route in the config file and reload with SIGHUP.
    opts.extra_toml = broken(sink.port());
    std::fs::write(gw.config_path(), config_text(&opts, gw.data_dir()))?;
    let pid = gw.pid().context("gateway pid")?.to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()?;
    ensure!(status.success(), "kill -HUP failed");
    wait_until_async(deadline(10), "config reloaded", || async {
        let h = gw.http_get("/healthz").await?;
        let v: serde_json::Value = serde_json::from_slice(&h.body)?;
        Ok(v["config_generation"] == 2)
    })
    .await?;

    let t0 = std::time::Instant::now();
    cli_ok(&gw.run_cli(&["queue", "retry", "--all"]).await?)?;
    sink.wait_for(deadline(10), |m| m.len() == 3).await?;
    ensure!(
        t0.elapsed() < Duration::from_secs(5),
        "retry --all was not immediate"
    );
    gw.wait_queue_empty(deadline(10)).await?;
    Ok(())
}

#[tokio::test]
async fn queue_show_lists_every_attempt_with_the_reply() -> Result<()> {
    let sink = Sink::start().await?;
    sink.set_mode(Mode::RejectAll(
        "451 4.7.1 greylisted, come back later".into(),
    ));
    let gw = Gateway::start(GatewayOptions {
        first_retry: "100ms".into(),
        ..GatewayOptions::relay_to(sink.port())
    })
    .await?;
    submit(&gw, "g@dst.test", "grey-1").await?;
    wait_until_async(deadline(30), "three attempts", || async {
        let msgs = gw.queue_messages().await?;
        Ok(msgs.len() == 1 && msgs[0]["rcpts"][0]["attempts"].as_u64().unwrap_or(0) >= 3)
    })
    .await?;
    cli_ok(
        &gw.run_cli(&["queue", "hold", &id_of_first(&gw).await?])
            .await?,
    )?;
    let id = id_of_first(&gw).await?;
    let out = gw.run_cli(&["queue", "show", &id]).await?;
    cli_ok(&out)?;
    let lines = out
        .stdout
        .matches("451 4.7.1 greylisted, come back later")
        .count();
    ensure!(
        lines >= 3,
        "expected every attempt with its reply:\n{}",
        out.stdout
    );
    ensure!(out.stdout.contains("transport=sink"), "{}", out.stdout);
    ensure!(
        out.stdout.contains("remote=127.0.0.1 [127.0.0.1]"),
        "{}",
        out.stdout
    );
    ensure!(out.stdout.contains("held:      true"), "{}", out.stdout);
    let json = gw.run_cli(&["queue", "show", &id, "--json"]).await?;
    let v: serde_json::Value = serde_json::from_str(&json.stdout)?;
    let history = v["rcpts"][0]["history"].as_array().context("history")?;
    ensure!(
        history.len() as u64 == v["rcpts"][0]["attempts"].as_u64().unwrap_or(0),
        "{v}"
    );
    Ok(())
}

async fn id_of_first(gw: &Gateway) -> Result<String> {
    let msgs = gw.queue_messages().await?;
    Ok(msgs
        .first()
        .and_then(|m| m["id"].as_str())
        .context("no message")?
        .to_string())
}

#[tokio::test]
async fn drop_with_dsn_and_set_transport() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "{}\n[transports.other]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n",
            "[transports.nowhere]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 1\nno_starttls = true\n\n[[routes]]\ntransport = \"nowhere\"\n",
            sink.port()
        ),
        first_retry: "1h".into(),
        ..Default::default()
    })
    .await?;
    submit(&gw, "d1@dst.test", "drop-1").await?;
    submit(&gw, "d2@dst.test", "move-1").await?;
    wait_until_async(deadline(30), "two failed attempts", || async {
        let msgs = gw.queue_messages().await?;
        Ok(msgs.len() == 2 && msgs.iter().all(|m| m["rcpts"][0]["attempts"] == 1))
    })
    .await?;
    let msgs = gw.queue_messages().await?;
    let id_for = |addr: &str| {
        msgs.iter()
            .find(|m| m["rcpts"][0]["address"] == addr)
            .and_then(|m| m["id"].as_str())
            .map(str::to_string)
            .context("message")
    };
    let (drop_id, move_id) = (id_for("d1@dst.test")?, id_for("d2@dst.test")?);

    let bad = gw
        .run_cli(&["queue", "set-transport", &move_id, "missing"])
        .await?;
    ensure!(
        bad.code == Some(1) && bad.stderr.contains("missing"),
        "{bad}"
    );
    cli_ok(
        &gw.run_cli(&["queue", "set-transport", &move_id, "other"])
            .await?,
    )?;
    cli_ok(&gw.run_cli(&["queue", "retry", &move_id]).await?)?;
    sink.wait_for(deadline(10), |m| {
        m.iter().any(|x| x.has_rcpt("d2@dst.test"))
    })
    .await?;

    cli_ok(&gw.run_cli(&["queue", "drop", &drop_id, "--dsn"]).await?)?;
    // The DSN is queued like any message (its route is the broken one here): move it
    // to the working transport and check what it says.
    let end = deadline(10);
    let dsn_id = loop {
        let msgs = gw.queue_messages().await?;
        ensure!(
            !msgs.iter().any(|m| m["id"] == drop_id.as_str()),
            "dropped message still listed"
        );
        if let Some(id) = msgs
            .iter()
            .find(|m| m["from"] == "")
            .and_then(|m| m["id"].as_str())
        {
            break id.to_string();
        }
        ensure!(std::time::Instant::now() < end, "no DSN queued: {msgs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cli_ok(
        &gw.run_cli(&["queue", "set-transport", &dsn_id, "other"])
            .await?,
    )?;
    cli_ok(&gw.run_cli(&["queue", "retry", &dsn_id]).await?)?;
    let msgs = sink
        .wait_for(deadline(10), |m| m.iter().any(|x| x.is_bounce()))
        .await?;
    let dsn = msgs.iter().find(|m| m.is_bounce()).context("DSN")?;
    ensure!(
        dsn.text().contains("d1@dst.test") && dsn.text().contains("Action: failed"),
        "{}",
        dsn.text()
    );
    ensure!(
        !msgs.iter().any(|m| m.has_rcpt("d1@dst.test")),
        "dropped message was delivered"
    );
    Ok(())
}

#[tokio::test]
async fn admin_token_is_required_off_loopback_and_checked() -> Result<()> {
    // Off loopback without a token: refuses to start (before binding anything).
    let dir = temp_dir("relaygate-admin-")?;
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {}\n[submission]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"0.0.0.0:0\"\n",
            toml_str(&dir.path().join("data").to_string_lossy())
        ),
    )?;
    let out = run_relaygate(&["serve", "-c", &cfg.to_string_lossy()], dir.path()).await?;
    ensure!(out.code == Some(1), "started without a token: {out}");
    ensure!(
        out.stderr.contains("token_file"),
        "error does not name token_file: {out}"
    );

    // With a token: requests without it get 401, the CLI (which reads it) works.
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n")?;
    let sink = Sink::start().await?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.extra_toml = opts.extra_toml.clone();
    let gw = Gateway::start(opts).await?;
    // Rewrite the config with the token and restart.
    let text = std::fs::read_to_string(gw.config_path())?.replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = {}\n",
            toml_str(&token.to_string_lossy())
        ),
    );
    std::fs::write(gw.config_path(), text)?;
    let mut gw = gw;
    gw.restart().await?;
    let r = gw.http_get("/api/queue").await?;
    ensure!(r.status == 401, "no token but status {}", r.status);
    cli_ok(&gw.run_cli(&["queue", "list"]).await?)?;
    Ok(())
}

/// `queue list` filters and pages (issue 16 item 7), and `accounts list` shows the file
/// store's accounts (it printed nothing).
#[tokio::test]
async fn queue_list_filters_and_pages() -> Result<()> {
    let sink = Sink::start().await?;
    sink.set_mode(Mode::RejectAll("451 4.3.0 not now".into()));
    let dir = temp_dir("relaygate-ops-")?;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n")?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.first_retry = "1h".into();
    opts.extra_toml.push_str(&format!(
        "\n[accounts.app]\npassword_file = {}\nallowed_senders = [\"@src.test\"]\n",
        toml_str(&pw.to_string_lossy())
    ));
    let gw = Gateway::start(opts).await?;
    for to in ["x@a.test", "y@b.test", "z@c.test"] {
        submit(&gw, to, to).await?;
    }
    wait_until_async(deadline(30), "three attempted", || async {
        let msgs = gw.queue_messages().await?;
        Ok(msgs.len() == 3 && msgs.iter().all(|m| m["rcpts"][0]["attempts"] == 1))
    })
    .await?;
    let list = |args: &'static [&'static str]| {
        let gw = &gw;
        async move {
            let mut all = vec!["queue", "list"];
            all.extend_from_slice(args);
            gw.run_cli(&all).await
        }
    };
    let out = list(&["--domain", "b.test"]).await?;
    cli_ok(&out)?;
    ensure!(
        out.stdout.contains("<y@b.test>")
            && !out.stdout.contains("<x@a.test>")
            && !out.stdout.contains("<z@c.test>"),
        "{out}"
    );
    let out = list(&["--status", "pending", "--limit", "1"]).await?;
    cli_ok(&out)?;
    ensure!(
        out.stdout
            .contains("-- messages 1-1 of 3 (--offset 1 for more)"),
        "{out}"
    );
    let out = list(&["--status", "failed"]).await?;
    cli_ok(&out)?;
    ensure!(out.stdout.contains("no message matches"), "{out}");
    let out = list(&["--older-than", "1h"]).await?;
    ensure!(out.stdout.contains("no message matches"), "{out}");
    let out = list(&["--transport", "sink", "--offset", "2"]).await?;
    ensure!(out.stdout.contains("-- messages 3-3 of 3"), "{out}");
    let out = list(&["--status", "bogus"]).await?;
    ensure!(
        out.code == Some(1) && out.stderr.contains("status"),
        "{out}"
    );

    let out = gw.run_cli(&["accounts", "list"]).await?;
    cli_ok(&out)?;
    ensure!(
        out.stdout.contains("app (password_file") && out.stdout.contains("senders @src.test"),
        "{out}"
    );
    Ok(())
}
