//! The Redis store (issue 4 acceptance), against real `redis-server` processes started
//! by `support::redis`: the failover story through each level of routes, live reload
//! across two gateways, outages (Redis killed under load, a gateway started while Redis
//! is down), a refused snapshot, Redis Cluster, TLS, and the store CLI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::Value;

use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::redis::{sink_transport, store_toml, RedisCluster, RedisServer, StoreCli};
use crate::support::sink::{Mode, Sink};
use crate::support::smtp_client::{simple_message, submit, SmtpClient};
use crate::support::{deadline, wait_until, wait_until_async};

/// Generous: retries are 200 ms apart, so each scenario takes seconds.
const DELIVERY_SECS: u64 = 60;
const PREFIX: &str = "relaygate:";

/// A gateway on the Redis store at `url` (plus `extra` TOML).
pub(crate) async fn gateway(url: &str, extra: &str) -> Result<Gateway> {
    Gateway::start(GatewayOptions {
        extra_toml: format!("{}\n{extra}", store_toml(url)),
        ..Default::default()
    })
    .await
}

pub(crate) async fn healthz(gw: &Gateway) -> Result<Value> {
    let resp = gw.http_get("/healthz").await?;
    ensure!(resp.status == 200, "/healthz: HTTP {}", resp.status);
    serde_json::from_slice(&resp.body).context("/healthz is not JSON")
}

pub(crate) fn store_version(h: &Value) -> u64 {
    h["store_detail"]["version"].as_u64().unwrap_or(0)
}

/// Polls `/healthz` until `pred` holds; returns the last document.
pub(crate) async fn wait_health(
    gw: &Gateway,
    secs: u64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let last = std::sync::Mutex::new(Value::Null);
    let result = wait_until_async(deadline(secs), what, || async {
        let h = healthz(gw).await?;
        let ok = pred(&h);
        *last.lock().unwrap() = h;
        Ok(ok)
    })
    .await;
    let last = last.into_inner().unwrap();
    result.with_context(|| format!("last /healthz: {last}\n{}", gw.log_tails()))?;
    Ok(last)
}

/// Submits one message to `rcpt` through `gw` and waits until `sink` has it.
pub(crate) async fn deliver_one(gw: &Gateway, sink: &Sink, rcpt: &str) -> Result<()> {
    submit(
        gw.submission_addr(),
        "s@src.test",
        &[rcpt],
        &simple_message("s@src.test", rcpt, "one", &rcpt.replace('@', ".")),
    )
    .await?;
    sink.wait_for(deadline(DELIVERY_SECS), |m| {
        m.iter().any(|x| x.has_rcpt(rcpt))
    })
    .await
    .with_context(|| gw.log_tails())?;
    Ok(())
}

/// "version N published" in a CLI report → N.
pub(crate) fn published_version(stdout: &str) -> Result<u64> {
    stdout
        .split("store version ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no published version in {stdout:?}"))
}

/// One `delivery attempt` log line: (attempt, route, transport).
fn attempts(gw: &Gateway, rcpt: &str) -> Vec<(u32, String, String)> {
    let log = std::fs::read_to_string(gw.dir().join("stderr.log")).unwrap_or_default();
    let needle = format!("rcpt={rcpt} ");
    let mut out = Vec::new();
    for line in log.lines() {
        if !line.contains("delivery attempt") || !line.contains(&needle) {
            continue;
        }
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|t| t.strip_prefix(name))
                .unwrap_or("")
                .to_string()
        };
        out.push((
            field("attempt=").parse().unwrap_or(0),
            field("route="),
            field("transport="),
        ));
    }
    out.sort();
    out
}

/// Attempts 1–3 through `first` (route `first_route`), attempt 4 through `then`.
async fn assert_failover(
    gw: &Gateway,
    rcpt: &str,
    (first, first_route): (&str, &str),
    (then, then_route): (&str, &str),
) -> Result<()> {
    // The sink records a message before the gateway logs the attempt: wait for the log.
    let _ = wait_until(deadline(10), "the fourth attempt in the log", || {
        attempts(gw, rcpt).len() >= 4
    })
    .await;
    let seen = attempts(gw, rcpt);
    let want: Vec<(u32, String, String)> = (1..=4)
        .map(|n| {
            let (t, r) = if n <= 3 {
                (first, first_route)
            } else {
                (then, then_route)
            };
            (n, r.to_string(), t.to_string())
        })
        .collect();
    ensure!(seen == want, "attempts of {rcpt}: {seen:?}, want {want:?}");
    Ok(())
}

#[tokio::test]
async fn failover_after_three_attempts_through_each_level() -> Result<()> {
    let redis = RedisServer::start().await?;
    let a = Sink::start().await?;
    a.set_mode(Mode::RejectAll("451 4.3.0 busy".into()));
    let b = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    let password = cli.dir().join("app.password");
    std::fs::write(&password, "app secret\n")?;
    let mut toml = String::new();
    for (name, sink) in [
        ("A", &a),
        ("B", &b),
        ("dA", &a),
        ("dB", &b),
        ("aA", &a),
        ("aB", &b),
    ] {
        toml.push_str(&sink_transport(name, sink.port()));
    }
    toml.push_str(&format!(
        "[[routes]]\nminimum_attempts = 3\ntransport = \"B\"\n\n[[routes]]\ntransport = \"A\"\n\n\
         [domains.\"dom.test\"]\n\
         [[domains.\"dom.test\".routes]]\nminimum_attempts = 3\ntransport = \"dB\"\n\
         [[domains.\"dom.test\".routes]]\ntransport = \"dA\"\n\n\
         [accounts.app]\npassword_file = {}\n\
         [[accounts.app.routes]]\nminimum_attempts = 3\ntransport = \"aB\"\n\
         [[accounts.app.routes]]\ntransport = \"aA\"\n",
        toml_str(&password.to_string_lossy())
    ));
    cli.import(&toml).await?;
    let gw = gateway(&redis.url(), "").await?;

    // Global: the sender domain has no routes, no account.
    submit(
        gw.submission_addr(),
        "s@global.test",
        &["g@dest.test"],
        &simple_message("s@global.test", "g@dest.test", "global", "g-1"),
    )
    .await?;
    // Sender domain: its routes come before the global ones.
    submit(
        gw.submission_addr(),
        "s@dom.test",
        &["d@dest.test"],
        &simple_message("s@dom.test", "d@dest.test", "domain", "d-1"),
    )
    .await?;
    // Account (SASL identity from AUTH PLAIN, allowed on loopback): account routes come
    // first although the sender domain and the global routes match too.
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    use base64::Engine;
    let ir = base64::engine::general_purpose::STANDARD.encode("\0app\0app secret");
    c.expect(&format!("AUTH PLAIN {ir}"), 235).await?;
    let r = c
        .send_message(
            "s@dom.test",
            &["acct@dest.test"],
            &simple_message("s@dom.test", "acct@dest.test", "account", "a-1"),
        )
        .await?;
    ensure!(r.code == 250, "{r}");
    c.quit().await?;

    b.wait_for(deadline(DELIVERY_SECS), |m| {
        ["g@dest.test", "d@dest.test", "acct@dest.test"]
            .iter()
            .all(|r| m.iter().any(|x| x.has_rcpt(r)))
    })
    .await
    .with_context(|| gw.log_tails())?;
    assert_failover(&gw, "g@dest.test", ("A", "global[1]"), ("B", "global[0]")).await?;
    assert_failover(&gw, "d@dest.test", ("dA", "domain[1]"), ("dB", "domain[0]")).await?;
    assert_failover(
        &gw,
        "acct@dest.test",
        ("aA", "account[1]"),
        ("aB", "account[0]"),
    )
    .await?;
    ensure!(
        a.messages().is_empty(),
        "A accepted something: {}",
        a.summary()
    );
    Ok(())
}

#[tokio::test]
async fn routes_add_reaches_two_gateways_within_a_second() -> Result<()> {
    let redis = RedisServer::start().await?;
    let one = Sink::start().await?;
    let two = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "{}{}[[routes]]\ntransport = \"one\"\n",
        sink_transport("one", one.port()),
        sink_transport("two", two.port())
    ))
    .await?;
    let gw1 = gateway(&redis.url(), "").await?;
    let gw2 = gateway(&redis.url(), "").await?;
    for gw in [&gw1, &gw2] {
        wait_health(gw, 10, "store ok", |h| h["store"] == "ok").await?;
    }

    let out = cli
        .ok(&["routes", "add", "--transport", "two", "--index", "0"])
        .await?;
    let published = Instant::now();
    let version = published_version(&out)?;
    let mut pending = vec![&gw1, &gw2];
    while !pending.is_empty() {
        ensure!(
            published.elapsed() < Duration::from_secs(1),
            "not every gateway had version {version} within 1 s"
        );
        let mut still = Vec::new();
        for gw in pending {
            if store_version(&healthz(gw).await?) < version {
                still.push(gw);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for (i, gw) in [&gw1, &gw2].iter().enumerate() {
        let rcpt = format!("r{i}@dest.test");
        submit(
            gw.submission_addr(),
            "s@src.test",
            &[&rcpt],
            &simple_message("s@src.test", &rcpt, "new route", &format!("n-{i}")),
        )
        .await?;
    }
    two.wait_for(deadline(DELIVERY_SECS), |m| {
        m.iter().any(|x| x.has_rcpt("r0@dest.test")) && m.iter().any(|x| x.has_rcpt("r1@dest.test"))
    })
    .await?;
    ensure!(one.messages().is_empty(), "{}", one.summary());
    Ok(())
}

/// Submits messages `from..to` (one recipient each) over 4 concurrent sessions.
async fn submit_many(gw: &Gateway, from: usize, to: usize) -> Result<()> {
    let addr = gw.submission_addr();
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= to {
                    return Ok::<(), anyhow::Error>(());
                }
                let rcpt = format!("m{i}@dest.test");
                submit(
                    addr,
                    "s@src.test",
                    &[&rcpt],
                    &simple_message("s@src.test", &rcpt, "load", &format!("load-{i}")),
                )
                .await
                .with_context(|| format!("message {i}"))?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

#[tokio::test]
async fn redis_killed_under_load_then_back_with_a_change() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    let s1 = Sink::start().await?;
    let s2 = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "{}{}[[routes]]\ntransport = \"s1\"\n",
        sink_transport("s1", s1.port()),
        sink_transport("s2", s2.port())
    ))
    .await?;
    let gw = gateway(&redis.url(), "").await?;
    wait_health(&gw, 10, "store ok", |h| h["store"] == "ok").await?;

    const N: usize = 1000;
    submit_many(&gw, 0, 300).await?;
    redis.kill9();
    submit_many(&gw, 300, N).await?;
    wait_health(&gw, 15, "store degraded", |h| {
        h["store"] == "degraded" && h["status"] == "degraded"
    })
    .await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        metrics.lines().any(|l| l.trim() == "relaygate_store_up 0"),
        "relaygate_store_up is not 0:\n{metrics}"
    );
    s1.wait_for(deadline(120), |m| {
        let mut seen = std::collections::HashSet::new();
        for x in m {
            for r in &x.rcpts {
                seen.insert(r.clone());
            }
        }
        seen.len() >= N
    })
    .await
    .with_context(|| gw.log_tails())?;
    let still_down = healthz(&gw).await?;
    ensure!(still_down["store"] == "degraded", "{still_down}");

    // Redis comes back; a change made at once reaches the gateway once it reconnects.
    redis.restart().await?;
    let out = cli
        .ok(&["routes", "add", "--transport", "s2", "--index", "0"])
        .await?;
    let version = published_version(&out)?;
    wait_health(&gw, 15, "reconnected with the new version", |h| {
        h["store"] == "ok" && store_version(h) >= version
    })
    .await?;
    deliver_one(&gw, &s2, "after@dest.test").await?;
    let log = std::fs::read_to_string(gw.dir().join("stderr.log"))?;
    let outage_lines = log.matches("store: Redis unreachable").count();
    ensure!(
        outage_lines == 1,
        "the outage was logged {outage_lines} times:\n{}",
        log.lines()
            .filter(|l| l.contains("store"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn gateway_starts_on_the_persisted_snapshot_while_redis_is_down() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    let sink = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "{}[[routes]]\ntransport = \"s\"\n",
        sink_transport("s", sink.port())
    ))
    .await?;
    let mut gw = gateway(&redis.url(), "").await?;
    let h = wait_health(&gw, 10, "store ok", |h| h["store"] == "ok").await?;
    let version = store_version(&h);
    gw.stop().await?;
    redis.kill9();

    gw.restart().await?;
    let h = healthz(&gw).await?;
    ensure!(h["store"] == "degraded", "{h}");
    ensure!(h["store_detail"]["from_persisted_snapshot"] == true, "{h}");
    ensure!(store_version(&h) == version, "{h}");
    deliver_one(&gw, &sink, "p@dest.test").await?;

    // Without a persisted snapshot, it refuses to start and says why.
    let err = match gateway(&redis.url(), "").await {
        Ok(_) => anyhow::bail!("a gateway without a snapshot started with Redis down"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains("no persisted snapshot"), "{err}");

    redis.restart().await?;
    wait_health(&gw, 15, "reconnected", |h| h["store"] == "ok").await?;
    Ok(())
}

#[tokio::test]
async fn snapshot_naming_a_missing_transport_is_refused() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = Sink::start().await?;
    // Over the unix socket.
    let url = redis.unix_url();
    let cli = StoreCli::new(&store_toml(&url))?;
    cli.import(&format!(
        "{}[[routes]]\ntransport = \"s\"\n",
        sink_transport("s", sink.port())
    ))
    .await?;
    let gw = gateway(&url, "").await?;
    let h = wait_health(&gw, 10, "store ok", |h| h["store"] == "ok").await?;
    let good = store_version(&h);

    // The CLI refuses it before writing, naming the route.
    let out = cli.run(&["routes", "add", "--transport", "ghost"]).await?;
    ensure!(out.code == Some(1), "{out}");
    ensure!(
        out.stderr.contains("routes:global[1]") && out.stderr.contains("\"ghost\""),
        "{out}"
    );

    // Written behind its back (as redis-cli would), it is refused by the gateway.
    let key = format!("{PREFIX}routes:global");
    redis
        .cmd(&["RPUSH", &key, r#"{"transport":"ghost"}"#])
        .await?;
    redis.cmd(&["INCR", &format!("{PREFIX}version")]).await?;
    redis
        .cmd(&["PUBLISH", &format!("{PREFIX}changed"), "x"])
        .await?;
    let h = wait_health(&gw, 10, "refusal", |h| {
        h["store_detail"]["rejected"]
            .as_str()
            .is_some_and(|r| r.contains("routes:global[1]"))
    })
    .await?;
    ensure!(
        store_version(&h) == good,
        "the refused version is in force: {h}"
    );
    // Refused content makes the store degraded (issue 16 item 4), with the reason.
    ensure!(h["store"] == "degraded" && h["status"] == "degraded", "{h}");
    let log = std::fs::read_to_string(gw.dir().join("stderr.log"))?;
    ensure!(
        log.lines()
            .any(|l| l.contains("snapshot refused") && l.contains("routes:global[1]")),
        "no refusal naming the route in the log"
    );

    // The previous snapshot keeps working.
    deliver_one(&gw, &sink, "ok@dest.test").await?;

    // The operator sees it too, and can fix it.
    let out = cli.run(&["check-config"]).await?;
    ensure!(
        out.code == Some(1) && out.stderr.contains("routes:global[1]"),
        "{out}"
    );
    // Never OK and exit 1 together (issue 16 item 2).
    ensure!(!out.stdout.contains("OK"), "check-config said OK: {out}");
    let out = cli.ok(&["routes", "list"]).await?;
    ensure!(out.contains("[1] (any) -> ghost"), "{out}");
    let out = cli.ok(&["routes", "remove", "--global", "1"]).await?;
    let fixed = published_version(&out)?;
    wait_health(&gw, 10, "fixed", |h| {
        store_version(h) == fixed && h["store_detail"]["rejected"].is_null() && h["store"] == "ok"
    })
    .await?;

    // SIGHUP with the Redis store: the snapshot is rebuilt with the re-read config file,
    // and the routes still come from Redis.
    let generation = |h: &Value| h["config_generation"].as_u64().unwrap_or(0);
    let before = generation(&healthz(&gw).await?);
    let pid = gw.pid().context("the gateway is not running")?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -HUP: {status}");
    wait_health(&gw, 10, "rebuilt after SIGHUP", |h| {
        generation(h) > before && h["store"] == "ok"
    })
    .await?;
    deliver_one(&gw, &sink, "hup@dest.test").await?;
    Ok(())
}

#[tokio::test]
async fn redis_cluster_load_and_reload() -> Result<()> {
    let cluster = RedisCluster::start().await?;
    let s1 = Sink::start().await?;
    let s2 = Sink::start().await?;
    let url = cluster.url();
    let cli = StoreCli::new(&store_toml(&url))?;
    cli.import(&format!(
        "{}{}[[routes]]\ntransport = \"s1\"\n",
        sink_transport("s1", s1.port()),
        sink_transport("s2", s2.port())
    ))
    .await?;
    let gw = gateway(&url, "").await?;
    wait_health(&gw, 15, "store ok", |h| h["store"] == "ok").await?;
    deliver_one(&gw, &s1, "c1@dest.test").await?;

    let out = cli
        .ok(&["routes", "add", "--transport", "s2", "--index", "0"])
        .await?;
    let version = published_version(&out)?;
    wait_health(&gw, 5, "reload from the cluster", |h| {
        store_version(h) >= version
    })
    .await?;
    deliver_one(&gw, &s2, "c2@dest.test").await?;
    Ok(())
}

#[tokio::test]
async fn store_over_tls() -> Result<()> {
    let pki = crate::support::pki::Pki::new()?;
    let redis = RedisServer::start_tls(&pki).await?;
    let sink = Sink::start().await?;
    let url = redis.tls_url().context("no TLS url")?;
    let tls = format!(
        "[tls]\nextra_ca_file = {}\n",
        toml_str(&pki.ca_pem.to_string_lossy())
    );
    let cli = StoreCli::new(&format!("{}\n{tls}", store_toml(&url)))?;
    cli.import(&format!(
        "{}[[routes]]\ntransport = \"s\"\n",
        sink_transport("s", sink.port())
    ))
    .await?;
    let gw = gateway(&url, &tls).await?;
    wait_health(&gw, 10, "store ok over TLS", |h| h["store"] == "ok").await?;
    deliver_one(&gw, &sink, "t@dest.test").await?;
    Ok(())
}

#[tokio::test]
async fn store_cli_explain_accounts_transports_and_the_file_store() -> Result<()> {
    let redis = RedisServer::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    let pw = cli.dir().join("pw");
    std::fs::write(&pw, "s3cret-pass\n")?;
    cli.ok(&[
        "transports",
        "set",
        "A",
        "--json",
        r#"{"kind":"smtp","host":"a.example"}"#,
    ])
    .await?;
    cli.ok(&[
        "transports",
        "set",
        "B",
        "--kind",
        "submission",
        "--host",
        "b.example",
    ])
    .await?;
    cli.ok(&[
        "routes",
        "add",
        "--to-domain",
        "gmail.com",
        "--transport",
        "A",
    ])
    .await?;
    cli.ok(&[
        "routes",
        "add",
        "--domain",
        "Example.ORG",
        "--minimum-attempts",
        "3",
        "--transport",
        "B",
    ])
    .await?;
    cli.ok(&[
        "routes",
        "add",
        "--account",
        "app",
        "--to-domain",
        "yahoo.com",
        "--transport",
        "B",
    ])
    .await?;
    cli.ok(&[
        "accounts",
        "set-password",
        "app",
        "--password-file",
        &pw.to_string_lossy(),
    ])
    .await?;

    // Stored as verifiers, never the password.
    let stored = redis
        .cmd(&["HGET", &format!("{PREFIX}accounts"), "app"])
        .await?;
    let stored = match stored {
        redis::Value::BulkString(b) => String::from_utf8(b)?,
        other => anyhow::bail!("HGET accounts app: {other:?}"),
    };
    ensure!(
        stored.contains("SCRAM-SHA-256$") && !stored.contains("s3cret"),
        "{stored}"
    );
    let domain_list = redis
        .cmd(&[
            "LRANGE",
            &format!("{PREFIX}routes:domain:example.org"),
            "0",
            "-1",
        ])
        .await?;
    ensure!(
        format!("{domain_list:?}").contains("minimum_attempts"),
        "{domain_list:?}"
    );

    // Explain: account, then sender domain, then global; reasons for each skip.
    let out = cli
        .ok(&[
            "routes",
            "explain",
            "--account",
            "app",
            "--from",
            "a@example.org",
            "--to",
            "b@gmail.com",
            "--attempt",
            "2",
        ])
        .await?;
    ensure!(
        out.contains("skip  routes:account:app[0]")
            && out.contains("to_domain")
            && out.contains("skip  routes:domain:example.org[0]")
            && out.contains("minimum_attempts 3")
            && out.contains("chosen: routes:global[0] -> transport A"),
        "{out}"
    );
    let out = cli
        .ok(&[
            "routes",
            "explain",
            "--account",
            "app",
            "--from",
            "a@example.org",
            "--to",
            "b@gmail.com",
            "--attempt",
            "4",
        ])
        .await?;
    ensure!(
        out.contains("chosen: routes:domain:example.org[0] -> transport B"),
        "{out}"
    );

    // A transport still in use cannot be removed; the error names the route.
    let out = cli.run(&["transports", "remove", "A"]).await?;
    ensure!(
        out.code == Some(1) && out.stderr.contains("routes:global[0]"),
        "{out}"
    );
    let out = cli.ok(&["transports", "list"]).await?;
    ensure!(out.contains("used by: routes:global[0]"), "{out}");
    let out = cli.ok(&["accounts", "list"]).await?;
    ensure!(
        out.contains("app (SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5; 1 route(s))"),
        "{out}"
    );

    // The file store: list and explain work; changes point at the file and SIGHUP.
    let file = StoreCli::new(
        "[transports.p]\nkind = \"smtp\"\nhost = \"p.example\"\n\n\
         [[routes]]\nminimum_attempts = 3\ntransport = \"p\"\n",
    )?;
    let out = file
        .ok(&[
            "routes",
            "explain",
            "--from",
            "a@x.org",
            "--to",
            "b@y.org",
            "--attempt",
            "4",
        ])
        .await?;
    ensure!(
        out.contains("chosen: routes:global[0] -> transport p"),
        "{out}"
    );
    let out = file
        .ok(&["routes", "explain", "--from", "a@x.org", "--to", "b@y.org"])
        .await?;
    ensure!(
        out.contains("no route matches -> transport direct"),
        "{out}"
    );
    let out = file.run(&["routes", "add", "--transport", "p"]).await?;
    ensure!(
        out.code == Some(1) && out.stderr.contains("SIGHUP"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn a_reset_store_is_refused_and_the_snapshot_stays() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    let toml = format!(
        "{}[[routes]]\ntransport = \"s\"\n",
        sink_transport("s", sink.port())
    );
    cli.import(&toml).await?;
    let gw = gateway(&redis.url(), "").await?;
    let h = wait_health(&gw, 10, "store ok", |h| h["store"] == "ok").await?;
    let good = store_version(&h);

    // Flushed (or restarted without persistence): taking the empty store would send
    // everything direct; it is refused instead.
    redis.cmd(&["FLUSHALL"]).await?;
    redis
        .cmd(&["PUBLISH", &format!("{PREFIX}changed"), "x"])
        .await?;
    let h = wait_health(&gw, 10, "refusal of the reset store", |h| {
        h["store_detail"]["rejected"]
            .as_str()
            .is_some_and(|r| r.contains("looks reset"))
    })
    .await?;
    ensure!(store_version(&h) == good, "{h}");
    deliver_one(&gw, &sink, "kept@dest.test").await?;

    // Written again, it is taken.
    cli.import(&toml).await?;
    wait_health(&gw, 10, "taken again", |h| {
        h["store_detail"]["rejected"].is_null()
    })
    .await?;
    Ok(())
}

/// Entries written by hand that are not even JSON objects (issue 16 item 4): `routes
/// list` shows them marked INVALID at their positions (it used to fail), `routes remove`
/// and `transports remove` take them out, and the gateway is degraded (with the reason)
/// until then. A removal that would add a problem is refused unless `--force`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_written_by_hand_can_be_listed_and_removed() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "{}[[routes]]\nto_domain = [\"a.test\"]\ntransport = \"s\"\n\n[[routes]]\ntransport = \"s\"\n",
        sink_transport("s", sink.port())
    ))
    .await?;
    let gw = gateway(&redis.url(), "").await?;
    wait_health(&gw, 10, "store ok", |h| h["store"] == "ok").await?;

    // As redis-cli would: a route that is not JSON, in the middle of the list, and a
    // transport that is not an object.
    let key = format!("{PREFIX}routes:global");
    redis
        .cmd(&[
            "LINSERT",
            &key,
            "BEFORE",
            r#"{"transport":"s"}"#,
            "not json",
        ])
        .await?;
    redis
        .cmd(&["HSET", &format!("{PREFIX}transports"), "bad", "[1,2]"])
        .await?;
    redis.cmd(&["INCR", &format!("{PREFIX}version")]).await?;
    redis
        .cmd(&["PUBLISH", &format!("{PREFIX}changed"), "x"])
        .await?;
    let h = wait_health(&gw, 10, "refused", |h| h["store"] == "degraded").await?;
    ensure!(
        h["store_detail"]["rejected"]
            .as_str()
            .is_some_and(|r| r.contains("routes:global[1]")),
        "{h}"
    );

    let listed = cli.run(&["routes", "list"]).await?;
    ensure!(
        listed.code == Some(0),
        "routes list fails on bad entries: {listed}"
    );
    ensure!(
        listed.stdout.contains("[0] to_domain=[a.test]")
            && listed.stdout.contains("[1] INVALID not json")
            && listed.stdout.contains("[2] (any) -> s")
            && listed.stdout.contains("transports[bad] INVALID"),
        "{listed}"
    );
    // Removing the good transport would leave routes naming nothing: refused.
    let out = cli.run(&["transports", "remove", "s"]).await?;
    ensure!(out.code == Some(1), "{out}");
    cli.ok(&["routes", "remove", "--global", "1"]).await?;
    cli.ok(&["transports", "remove", "bad"]).await?;
    wait_health(&gw, 10, "repaired", |h| h["store"] == "ok").await?;
    let listed = cli.ok(&["routes", "list"]).await?;
    ensure!(
        !listed.contains("INVALID") && listed.contains("[1] (any) -> s"),
        "{listed}"
    );
    // --force writes a change that leaves a problem.
    let out = cli.run(&["transports", "remove", "s", "--force"]).await?;
    ensure!(out.code == Some(0), "{out}");
    wait_health(&gw, 10, "refused again", |h| h["store"] == "degraded").await?;
    Ok(())
}
