//! Failover shared by a fleet (issue 14): two gateways on one real `redis-server` share
//! transport health (one gateway's discovery that a transport is down keeps the other
//! from connecting to it, and a successful probe brings it back for both) and rate
//! limits (the limit holds for the sum of the gateways). Also: an account's submission
//! rate limit (`452 4.7.0` beyond it), alone and fleet-wide.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use base64::Engine;
use serde_json::Value;

use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::redis::{store_toml, RedisServer, StoreCli};
use crate::support::sink::{Mode, Sink};
use crate::support::smtp_client::{simple_message, submit, SmtpClient};
use crate::support::{deadline, wait_until_async};

const SENDER: &str = "sender@src.test";

/// A gateway on the Redis store at `url`; `max_attempts = 1`, so an attempt counted
/// against a recipient would fail it at once.
async fn fleet_gateway(url: &str, extra: &str) -> Result<Gateway> {
    Gateway::start(GatewayOptions {
        extra_toml: format!("{}\n{extra}", store_toml(url)),
        max_attempts: 1,
        first_retry: "200ms".into(),
        ..Default::default()
    })
    .await
}

async fn send(gw: &Gateway, rcpt: &str) -> Result<()> {
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", rcpt),
    )
    .await
}

async fn received(sink: &Sink, gw: &Gateway, rcpt: &str) -> Result<()> {
    sink.wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt(rcpt)))
        .await
        .with_context(|| gw.log_tails())?;
    Ok(())
}

/// The state of `name` in `gw`'s `/api/transports` ("up" when not listed).
async fn state(gw: &Gateway, name: &str) -> Result<String> {
    let v: Value = serde_json::from_slice(&gw.http_get("/api/transports").await?.body)?;
    Ok(v["transports"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["transport"] == name))
        .and_then(|t| t["state"].as_str())
        .unwrap_or("up")
        .to_string())
}

async fn wait_state(gw: &Gateway, name: &str, want: &str) -> Result<()> {
    wait_until_async(deadline(15), &format!("{name} {want}"), || async {
        Ok(state(gw, name).await? == want)
    })
    .await
    .with_context(|| gw.log_tails())
}

/// The primary answers Amazon SES's throttling reply after DATA. Gateway 1 finds it
/// down after two attempts (neither counted against the recipient: `max_attempts = 1`
/// and the message still goes out, through the next route) and records that in Redis;
/// gateway 2 then sends its mail to the backup without ever connecting to the primary.
/// When the primary recovers, gateway 1's probe brings it back for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateways_discovery_protects_the_fleet() -> Result<()> {
    let redis = RedisServer::start().await?;
    let primary = Sink::start().await?;
    primary.set_mode(Mode::DataReply(
        "454 Throttling failure: Maximum sending rate exceeded.".into(),
    ));
    let backup = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "[transports.primary]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\
         down_after = 2\ndown_for = \"1h\"\n\n\
         [transports.backup]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
         [[routes]]\ntransport = \"primary\"\n\n[[routes]]\ntransport = \"backup\"\n",
        primary.port(),
        backup.port()
    ))
    .await?;
    let gw1 = fleet_gateway(&redis.url(), "").await?;
    let gw2 = fleet_gateway(&redis.url(), "").await?;

    send(&gw1, "one@dst.test").await?;
    received(&backup, &gw1, "one@dst.test").await?;
    ensure!(
        !backup.messages().iter().any(|m| m.is_bounce()),
        "a throttled attempt counted: a DSN went out"
    );
    let tried = primary.connections();
    ensure!(tried >= 1, "the primary was never tried");
    let key = "relaygate:fleet:health:primary";
    let record: Value = match redis.cmd(&["GET", key]).await? {
        redis::Value::BulkString(b) => serde_json::from_slice(&b)?,
        other => anyhow::bail!("{key}: {other:?}"),
    };
    ensure!(record["state"] == "down", "{record}");
    ensure!(
        record["why"]
            .as_str()
            .is_some_and(|w| w.contains("Throttling failure")),
        "{record}"
    );

    // Gateway 2 learns it from Redis, then never connects to the primary.
    wait_state(&gw2, "primary", "down").await?;
    send(&gw2, "two@dst.test").await?;
    received(&backup, &gw2, "two@dst.test").await?;
    ensure!(
        primary.connections() == tried,
        "gateway 2 connected to the down primary"
    );

    // The primary recovers; queue retry on gateway 1 ends the hold-down there, the next
    // message is the probe, and its success brings the primary back on gateway 2 too.
    primary.set_mode(Mode::Normal);
    let out = gw1.run_cli(&["queue", "retry", "--all"]).await?;
    ensure!(out.code == Some(0), "{out}");
    send(&gw1, "three@dst.test").await?;
    received(&primary, &gw1, "three@dst.test").await?;
    wait_state(&gw1, "primary", "up").await?;
    wait_state(&gw2, "primary", "up").await?;
    send(&gw2, "four@dst.test").await?;
    received(&primary, &gw2, "four@dst.test").await?;
    Ok(())
}

/// `rate_limit = "20/s"` on a transport used by two gateways on one Redis: 200 messages,
/// half through each, take at least nine seconds together (one gateway alone would send
/// its 100 in under five), and none has a failed attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_the_sum_of_the_fleet() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "[transports.relay]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\
         rate_limit = \"20/s\"\n\n[[routes]]\ntransport = \"relay\"\n",
        sink.port()
    ))
    .await?;
    let gw1 = fleet_gateway(&redis.url(), "").await?;
    let gw2 = fleet_gateway(&redis.url(), "").await?;
    let started = Instant::now();
    let load = |gw: &Gateway, tag: &'static str| {
        let addr = gw.submission_addr();
        async move {
            let mut c = SmtpClient::connect(addr).await?;
            c.ehlo("app.test").await?;
            for i in 0..100 {
                let rcpt = format!("{tag}{i}@dst.test");
                let r = c
                    .send_message(SENDER, &[&rcpt], &simple_message(SENDER, &rcpt, "s", &rcpt))
                    .await?;
                ensure!(r.code == 250, "{tag} message {i}: {r:?}");
            }
            anyhow::Ok(())
        }
    };
    let (a, b) = tokio::join!(load(&gw1, "a"), load(&gw2, "b"));
    a?;
    b?;
    sink.wait_for(deadline(90), |m| m.len() >= 200)
        .await
        .with_context(|| format!("{}\n{}", gw1.log_tails(), gw2.log_tails()))?;
    let took = started.elapsed();
    ensure!(
        took >= Duration::from_millis(8_900),
        "200 messages at 20/s for the fleet went out in {took:?}"
    );
    let msgs = sink.messages();
    ensure!(msgs.len() == 200, "{}", sink.summary());
    ensure!(
        msgs.iter().any(|m| m.rcpts[0].starts_with('a'))
            && msgs.iter().any(|m| m.rcpts[0].starts_with('b')),
        "both gateways delivered"
    );
    for gw in [&gw1, &gw2] {
        ensure!(
            !gw.log_tails().contains("counts alone"),
            "Redis was not used"
        );
    }
    let status = gw1.run_cli(&["transports", "status"]).await?;
    ensure!(
        status.code == Some(0) && status.stdout.contains("rate limit 20/s"),
        "{status}"
    );
    let key = "relaygate:fleet:rate:transport:relay:20/s";
    ensure!(
        !matches!(redis.cmd(&["GET", key]).await?, redis::Value::Nil),
        "no {key}"
    );
    Ok(())
}

fn plain(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// `[accounts.NAME]` with a password file in `dir` and `rate_limit`.
fn account_toml(dir: &std::path::Path, name: &str, rate: &str) -> Result<String> {
    let pw = dir.join(format!("{name}.password"));
    std::fs::write(&pw, "secret-password\n")?;
    Ok(format!(
        "[accounts.{name}]\npassword_file = {}\nrate_limit = {}\n",
        toml_str(&pw.to_string_lossy()),
        toml_str(rate)
    ))
}

/// A session authenticated as `name`.
async fn login(gw: &Gateway, name: &str) -> Result<SmtpClient> {
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    c.expect(
        &format!("AUTH PLAIN {}", plain(name, "secret-password")),
        235,
    )
    .await?;
    Ok(c)
}

/// `accounts.app.rate_limit = "3/m"`: one message, then MAIL gets `452 4.7.0` with the
/// time to wait, and the session goes on (RSET, NOOP work; nothing is queued); an
/// account without a limit on the same gateway is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_rate_gets_452() -> Result<()> {
    let sink = Sink::start().await?;
    let dir = tempfile::tempdir()?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.extra_toml
        .push_str(&account_toml(dir.path(), "app", "3/m")?);
    opts.extra_toml
        .push_str(&account_toml(dir.path(), "free", "1000/s")?);
    let gw = Gateway::start(opts).await?;
    let mut c = login(&gw, "app").await?;
    let body = simple_message(SENDER, "r1@dst.test", "s", "r1");
    let r = c.send_message(SENDER, &["r1@dst.test"], &body).await?;
    ensure!(r.code == 250, "{r:?}");
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>")).await?;
    ensure!(
        r.code == 452 && r.text().contains("4.7.0") && r.text().contains("rate limit"),
        "{r:?}"
    );
    c.expect("RCPT TO:<r2@dst.test>", 503).await?;
    c.expect("NOOP", 250).await?;
    let mut f = login(&gw, "free").await?;
    for i in 0..3 {
        let rcpt = format!("f{i}@dst.test");
        let r = f
            .send_message(SENDER, &[&rcpt], &simple_message(SENDER, &rcpt, "s", &rcpt))
            .await?;
        ensure!(r.code == 250, "{r:?}");
    }
    sink.wait_for(deadline(20), |m| m.len() >= 4).await?;
    ensure!(
        !sink.messages().iter().any(|m| m.has_rcpt("r2@dst.test")),
        "the refused message went out"
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("relaygate_submissions_refused_total{reason=\"rate\"} 1")),
        "no refusal counted"
    );
    Ok(())
}

/// The same limit with the Redis store holds across two gateways: the account's one
/// message per 20 s went through gateway 1, so gateway 2 refuses the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_rate_is_fleet_wide() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = Sink::start().await?;
    let dir = tempfile::tempdir()?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "{}\n{}[[routes]]\ntransport = \"relay\"\n",
        crate::support::redis::sink_transport("relay", sink.port()),
        account_toml(dir.path(), "app", "3/m")?
    ))
    .await?;
    let gw1 = fleet_gateway(&redis.url(), "").await?;
    let gw2 = fleet_gateway(&redis.url(), "").await?;
    let mut c1 = login(&gw1, "app").await?;
    let r = c1
        .send_message(
            SENDER,
            &["x@dst.test"],
            &simple_message(SENDER, "x@dst.test", "s", "x"),
        )
        .await?;
    ensure!(r.code == 250, "{r:?}");
    let mut c2 = login(&gw2, "app").await?;
    let r = c2.cmd(&format!("MAIL FROM:<{SENDER}>")).await?;
    ensure!(
        r.code == 452,
        "gateway 2 let the account past its rate: {r:?}"
    );
    Ok(())
}
