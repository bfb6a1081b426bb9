//! The fleet-wide caches of direct delivery with the Redis store (issue 5 item 4,
//! issue 6 item 1): two gateways share one real `redis-server`; the MTA-STS policy one
//! gateway fetched is applied by the other while the policy server is down, and the TLS
//! status record of each recipient domain lands at `{prefix}fleet:tlsstatus:{domain}`.

use anyhow::{ensure, Context, Result};
use redis::Value;

use crate::support::gateway::Gateway;
use crate::support::https::PolicyServer;
use crate::support::metrics::sample;
use crate::support::redis::{store_toml, RedisServer};
use crate::support::sink::Sink;
use crate::support::tls_lab::{send, TlsLab, SECS};
use crate::support::{deadline, wait_until_async};

const PREFIX: &str = "relaygate:";
const MISMATCH: &str = "relaygate_queue_mtasts_mx_mismatch_total";
const DURATION: &str = "relaygate_queue_delivery_duration_seconds_count";
const NAMES: &[&str] = &[
    "mx1.dst.test",
    "mx2.dst.test",
    "mta-sts.dst.test",
    "mx.plain.test",
];

/// The string at `key`, or `None`.
async fn get(redis: &RedisServer, key: &str) -> Result<Option<String>> {
    match redis.cmd(&["GET", key]).await? {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(String::from_utf8(b)?)),
        other => anyhow::bail!("GET {key}: unexpected {other:?}"),
    }
}

/// Waits until `key` holds a JSON object and returns it.
async fn wait_json(redis: &RedisServer, key: &str) -> Result<serde_json::Value> {
    let found = std::sync::Mutex::new(None);
    wait_until_async(deadline(SECS), key, || async {
        let value = get(redis, key).await?;
        let ok = value.is_some();
        *found.lock().unwrap() = value;
        Ok(ok)
    })
    .await?;
    let text = found.into_inner().unwrap().context("no value")?;
    serde_json::from_str(&text).with_context(|| format!("{key} is not JSON: {text}"))
}

/// Waits until `sink` has a message for `rcpt` and `gw`'s queue is empty.
async fn delivered(gw: &Gateway, sink: &Sink, rcpt: &str) -> Result<String> {
    let msgs = sink
        .wait_for(deadline(SECS), |m| m.iter().any(|x| x.has_rcpt(rcpt)))
        .await?;
    let m = msgs
        .iter()
        .find(|x| x.has_rcpt(rcpt))
        .context("message vanished")?;
    ensure!(m.tls, "{rcpt} not delivered over TLS: {}", sink.summary());
    gw.wait_queue_empty(deadline(SECS)).await?;
    gw.metrics_text().await
}

#[tokio::test]
async fn mtasts_cache_and_tls_status_are_fleet_wide_in_redis() -> Result<()> {
    let redis = RedisServer::start().await?;
    let mut lab = TlsLab::new(NAMES).await?;
    lab.extra_toml = store_toml(&redis.url());
    // mx1 is preferred but not listed by the enforce policy: only mx2 may be used.
    let unlisted = Sink::start().await?;
    let listed = Sink::start_tls(&lab.pki).await?;
    let plain = Sink::start().await?;
    lab.mx("dst.test", 10, "mx1.dst.test", &unlisted);
    lab.mx("dst.test", 20, "mx2.dst.test", &listed);
    lab.mx("plain.test", 10, "mx.plain.test", &plain);
    lab.mtasts(
        "dst.test",
        "1",
        "version: STSv1\nmode: enforce\nmx: mx2.dst.test\nmax_age: 86400\n",
    );

    // Gateway A fetches the policy and caches it in Redis.
    let a = lab.gateway().await?;
    send(&a, "a@dst.test", "fleet-a").await?;
    let metrics = delivered(&a, &listed, "a@dst.test").await?;
    ensure!(
        sample(&metrics, MISMATCH, &[("mode", "enforce")]) == 1.0,
        "A applied enforce: {metrics}"
    );
    ensure!(lab.policies.requests("dst.test") == 1, "A fetched once");
    let cached = wait_json(&redis, &format!("{PREFIX}fleet:mtasts:dst.test")).await?;
    ensure!(
        cached["domain"] == "dst.test" && cached["policy"]["mode"] == "enforce",
        "{cached}"
    );
    let ttl = redis
        .cmd(&["TTL", &format!("{PREFIX}fleet:mtasts:dst.test")])
        .await?;
    ensure!(
        matches!(ttl, Value::Int(t) if t > 86_400),
        "the entry expires a bit after max_age: TTL {ttl:?}"
    );
    // Listed through the index, not by scanning the keyspace.
    let indexed = redis
        .cmd(&[
            "SISMEMBER",
            &format!("{PREFIX}fleet:mtasts-index"),
            &format!("{PREFIX}fleet:mtasts:dst.test"),
        ])
        .await?;
    ensure!(indexed == Value::Int(1), "not in the index: {indexed:?}");
    ensure!(
        !a.data_dir().join("mtasts.json").exists(),
        "no cache file with the Redis store"
    );

    // A's TLS status records, in Redis only.
    let status = wait_json(&redis, &format!("{PREFIX}fleet:tlsstatus:dst.test")).await?;
    ensure!(
        status["starttls"] == true && status["host"] == "mx2.dst.test",
        "{status}"
    );
    send(&a, "p@plain.test", "fleet-plain").await?;
    plain
        .wait_for(deadline(SECS), |m| {
            m.iter().any(|x| x.has_rcpt("p@plain.test"))
        })
        .await?;
    let status = wait_json(&redis, &format!("{PREFIX}fleet:tlsstatus:plain.test")).await?;
    ensure!(
        status["starttls"] == false && status["tls"] == "none",
        "{status}"
    );
    ensure!(
        !a.data_dir().join("tls-status").exists(),
        "no TLS status files with the Redis store"
    );

    // Gateway B starts, then the policy server goes away (its port closes): B can only
    // know the enforce policy from A's entry in Redis. Without it the fetch would fail,
    // B would treat dst.test as having no policy and deliver to the unlisted mx1.
    let b = lab.gateway().await?;
    lab.policies = PolicyServer::start(&lab.pki).await?;
    send(&b, "b@dst.test", "fleet-b").await?;
    let metrics = delivered(&b, &listed, "b@dst.test").await?;
    ensure!(
        unlisted.connections() == 0,
        "the unlisted MX was dialed: {}",
        unlisted.summary()
    );
    ensure!(
        sample(&metrics, MISMATCH, &[("mode", "enforce")]) == 1.0,
        "B applied A's enforce policy: {metrics}"
    );
    ensure!(
        sample(
            &metrics,
            DURATION,
            &[("tlsmode", "verified+mtasts"), ("result", "delivered")]
        ) == 1.0,
        "{metrics}"
    );
    Ok(())
}
