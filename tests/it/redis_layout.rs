//! The Redis key layout (issue 11 item 7, "no keyspace scans in Redis"), against a real
//! `redis-server`: a route reload with 100,000 fleet-cache keys under the prefix is fast,
//! runs no slow command and no `KEYS`/`SCAN` (seen through `MONITOR`, which shows the
//! commands run inside Lua scripts too); a store written in the old layout is migrated
//! when it is first opened; the route index's errors name the key.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use redis::Value;

use crate::redis::{gateway, published_version, store_version, wait_health};
use crate::support::deadline;
use crate::support::redis::{
    monitored_command, sink_transport, store_toml, Monitor, RedisCluster, RedisServer, StoreCli,
};
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, submit};

const PREFIX: &str = "relaygate:";
const DELIVERY_SECS: u64 = 60;
/// Keys per pipeline when filling the server.
const BATCH: usize = 5_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A TLS status record as the gateway writes it.
fn tls_status_json(domain: &str) -> String {
    format!(
        r#"{{"domain":"{domain}","host":"mx.{domain}","ip":null,"starttls":true,"requiretls":false,"tls":"unverified","tls_error":null,"updated_at":{}}}"#,
        unix_now()
    )
}

/// An MTA-STS back-off entry (no policy), fresh: the gateway's background refresh
/// neither fetches nor forgets it.
fn mtasts_json(domain: &str) -> String {
    let now = unix_now();
    format!(
        r#"{{"domain":"{domain}","record_id":"","policy":null,"updated":{now},"expires":{},"last_use":{now},"failures":1,"retry_after":{}}}"#,
        now + 86_400,
        now + 86_400
    )
}

/// A data connection of the test's own.
async fn connect(redis: &RedisServer) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis.url())?;
    // The crate's default response timeout is short for 5,000-command pipelines on a
    // machine busy with the rest of the suite; the pipelines have their own 30 s limit.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    Ok(tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .context("connect timed out")??)
}

/// Runs `pipe` with a 30 s limit.
async fn run_pipe(
    conn: &mut redis::aio::MultiplexedConnection,
    pipe: &redis::Pipeline,
) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(30), pipe.query_async::<()>(conn))
        .await
        .context("pipeline timed out")??;
    Ok(())
}

/// Writes `n` fleet-cache keys under `prefix` in pipelines of [`BATCH`]: `n / 2` TLS
/// status records and `n / 2` MTA-STS entries (with an expiry), at the names of
/// `layout` 2 (indexed, like the gateway writes them) or 1 (the old names).
async fn fill_fleet(redis: &RedisServer, prefix: &str, n: usize, layout: u32) -> Result<()> {
    let mut conn = connect(redis).await?;
    let (tls, sts) = if layout == 1 {
        ("tlsstatus:", "mtasts:")
    } else {
        ("fleet:tlsstatus:", "fleet:mtasts:")
    };
    let index = format!("{prefix}fleet:mtasts-index");
    let mut i = 0;
    while i < n {
        let mut pipe = redis::pipe();
        for j in i..(i + BATCH).min(n) {
            let domain = format!("d{j}.example");
            if j % 2 == 0 {
                pipe.set(format!("{prefix}{tls}{domain}"), tls_status_json(&domain))
                    .ignore();
            } else {
                let key = format!("{prefix}{sts}{domain}");
                pipe.set_ex(&key, mtasts_json(&domain), 200_000).ignore();
                if layout != 1 {
                    pipe.sadd(&index, &key).ignore();
                }
            }
        }
        run_pipe(&mut conn, &pipe).await?;
        i += BATCH;
    }
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        _ => Vec::new(),
    }
}

async fn members(redis: &RedisServer, key: &str) -> Result<BTreeSet<String>> {
    Ok(texts(&redis.cmd(&["SMEMBERS", key]).await?)
        .into_iter()
        .collect())
}

async fn get(redis: &RedisServer, key: &str) -> Result<String> {
    Ok(text(&redis.cmd(&["GET", key]).await?))
}

/// Submits one message from `from` to `rcpt` and waits until `sink` has it.
async fn deliver(
    gw: &crate::support::gateway::Gateway,
    sink: &Sink,
    from: &str,
    rcpt: &str,
) -> Result<()> {
    submit(
        gw.submission_addr(),
        from,
        &[rcpt],
        &simple_message(from, rcpt, "layout", &rcpt.replace('@', ".")),
    )
    .await?;
    sink.wait_for(deadline(DELIVERY_SECS), |m| {
        m.iter().any(|x| x.has_rcpt(rcpt))
    })
    .await
    .with_context(|| gw.log_tails())?;
    Ok(())
}

/// The store as the CLI would load it, read in-process and timed.
async fn timed_load(cli: &StoreCli) -> Result<(Duration, relaygate::store::raw::RawStore)> {
    let config =
        relaygate::config::Config::load(cli.config_path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = relaygate::store::redis::RedisStore::open(&config.store, &config.tls)?;
    let mut conn = store.connect().await?;
    let started = Instant::now();
    let raw = store.load(&mut conn).await?;
    Ok((started.elapsed(), raw))
}

#[tokio::test]
async fn redis_route_reload_with_100k_fleet_keys_never_scans() -> Result<()> {
    let redis = RedisServer::start().await?;
    let one = Sink::start().await?;
    let two = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "{}{}[[routes]]\ntransport = \"one\"\n\n\
         [domains.\"src.test\"]\n[[domains.\"src.test\".routes]]\n\
         to_domain = [\"elsewhere.test\"]\ntransport = \"two\"\n",
        sink_transport("one", one.port()),
        sink_transport("two", two.port())
    ))
    .await?;
    let filling = Instant::now();
    fill_fleet(&redis, PREFIX, 100_000, 2).await?;
    let dbsize = redis.cmd(&["DBSIZE"]).await?;
    ensure!(
        matches!(dbsize, Value::Int(n) if n >= 100_000),
        "DBSIZE {dbsize:?}"
    );
    eprintln!("100,000 fleet keys written in {:?}", filling.elapsed());

    let gw = gateway(&redis.url(), "").await?;
    wait_health(&gw, 10, "store ok", |h| h["store"] == "ok").await?;

    redis
        .cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "10000"])
        .await?;
    redis.cmd(&["SLOWLOG", "RESET"]).await?;
    let monitor = Monitor::start(redis.port()).await?;

    // A change through the CLI, picked up by the gateway well within a second.
    let out = cli
        .ok(&["routes", "add", "--transport", "two", "--index", "0"])
        .await?;
    let published = Instant::now();
    let version = published_version(&out)?;
    wait_health(&gw, 5, "the new version", |h| store_version(h) >= version).await?;
    let picked_up = published.elapsed();
    ensure!(
        picked_up < Duration::from_secs(1),
        "the gateway took {picked_up:?} to reload"
    );
    // A direct load, timed on its own.
    let (took, raw) = timed_load(&cli).await?;
    ensure!(
        took < Duration::from_millis(250),
        "a store load took {took:?}"
    );
    ensure!(
        raw.version == version && raw.global.len() == 2 && raw.domains.len() == 1,
        "{raw:?}"
    );

    let lines = monitor.sync(&redis, "relaygate-layout-mark").await?;
    let scans: Vec<&String> = lines
        .iter()
        .filter(|l| matches!(monitored_command(l).as_deref(), Some("KEYS" | "SCAN")))
        .collect();
    ensure!(
        scans.is_empty(),
        "keyspace scans during a reload: {scans:?}"
    );
    // MONITOR does show what the load script runs: the absence above means something.
    let index_reads = lines
        .iter()
        .filter(|l| l.contains("lua]") && l.contains("\"SMEMBERS\" \"relaygate:routes:index\""))
        .count();
    ensure!(
        index_reads >= 2,
        "the loads were not seen through MONITOR ({} lines)",
        lines.len()
    );
    let slow = redis.cmd(&["SLOWLOG", "GET", "128"]).await?;
    ensure!(
        matches!(&slow, Value::Array(a) if a.is_empty()),
        "commands over 10 ms: {slow:?}"
    );

    deliver(&gw, &two, "s@other.test", "after@dest.test").await?;
    ensure!(one.messages().is_empty(), "{}", one.summary());
    Ok(())
}

#[tokio::test]
async fn redis_old_layout_is_migrated_on_start() -> Result<()> {
    let redis = RedisServer::start().await?;
    let global = Sink::start().await?;
    let dom = Sink::start().await?;
    let transport = |port: u16| {
        format!(r#"{{"kind":"smtp","host":"127.0.0.1","port":{port},"no_starttls":true}}"#)
    };
    let p = |rest: &str| format!("{PREFIX}{rest}");
    let dst_status = tls_status_json("dst.test");
    // The store as relaygate wrote it before the index: no marker, no index.
    for args in [
        vec![
            "HSET".to_string(),
            p("transports"),
            "g".into(),
            transport(global.port()),
        ],
        vec![
            "HSET".into(),
            p("transports"),
            "d".into(),
            transport(dom.port()),
        ],
        vec![
            "RPUSH".into(),
            p("routes:global"),
            r#"{"transport":"g"}"#.into(),
        ],
        vec![
            "RPUSH".into(),
            p("routes:domain:old.test"),
            r#"{"transport":"d"}"#.into(),
        ],
        vec!["SET".into(), p("version"), "3".into()],
        vec!["SET".into(), p("tlsstatus:dst.test"), dst_status.clone()],
        vec![
            "SET".into(),
            p("mtasts:dst.test"),
            mtasts_json("dst.test"),
            "EX".into(),
            "100000".into(),
        ],
        // Written in both layouts: the new one is newer and stays.
        vec!["SET".into(), p("tlsstatus:both.test"), "old".into()],
        vec!["SET".into(), p("fleet:tlsstatus:both.test"), "new".into()],
        // Another store's keys are not touched.
        vec!["SET".into(), "other:tlsstatus:x.test".into(), "x".into()],
        vec![
            "RPUSH".into(),
            "other:routes:domain:x.test".into(),
            "{}".into(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        redis.cmd(&args).await?;
    }
    // Enough old fleet keys for several SCAN pages.
    fill_fleet(&redis, PREFIX, 5_000, 1).await?;

    let gw = gateway(&redis.url(), "").await?;
    let h = wait_health(&gw, 15, "store ok", |h| h["store"] == "ok").await?;
    ensure!(store_version(&h) == 3, "{h}");

    ensure!(get(&redis, &p("layout")).await? == "2", "no layout marker");
    let want: BTreeSet<String> = [p("routes:global"), p("routes:domain:old.test")].into();
    ensure!(members(&redis, &p("routes:index")).await? == want);
    ensure!(
        get(&redis, &p("fleet:tlsstatus:dst.test")).await? == dst_status,
        "the TLS status record did not move"
    );
    let ttl = redis.cmd(&["TTL", &p("fleet:mtasts:dst.test")]).await?;
    ensure!(
        matches!(ttl, Value::Int(t) if t > 90_000),
        "TTL kept: {ttl:?}"
    );
    ensure!(get(&redis, &p("fleet:tlsstatus:both.test")).await? == "new");
    let old = texts(&redis.cmd(&["KEYS", &p("tlsstatus:*")]).await?);
    let old_sts = texts(&redis.cmd(&["KEYS", &p("mtasts:*")]).await?);
    ensure!(
        old.is_empty() && old_sts.is_empty(),
        "old keys left: {old:?} {old_sts:?}"
    );
    let moved = texts(&redis.cmd(&["KEYS", &p("fleet:tlsstatus:*")]).await?).len();
    ensure!(
        moved == 2_500 + 2,
        "{moved} TLS status records under fleet:"
    );
    let indexed = members(&redis, &p("fleet:mtasts-index")).await?;
    ensure!(
        indexed.len() == 2_500 + 1 && indexed.contains(&p("fleet:mtasts:dst.test")),
        "{} MTA-STS entries indexed",
        indexed.len()
    );
    ensure!(get(&redis, "other:tlsstatus:x.test").await? == "x");
    let log = std::fs::read_to_string(gw.dir().join("stderr.log"))?;
    ensure!(
        log.contains("Redis key layout migrated"),
        "no migration line in the log"
    );

    // Both route levels are in force.
    deliver(&gw, &dom, "s@old.test", "d@dest.test").await?;
    deliver(&gw, &global, "s@new.test", "g@dest.test").await?;
    ensure!(global.messages().iter().all(|m| !m.has_rcpt("d@dest.test")));

    // The CLI sees the same, and its changes keep the index in step.
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    let out = cli.ok(&["routes", "list"]).await?;
    ensure!(out.contains("old.test") && out.contains("-> d"), "{out}");
    cli.ok(&["routes", "remove", "--domain", "old.test", "0"])
        .await?;
    cli.ok(&["routes", "add", "--account", "app", "--transport", "d"])
        .await?;
    let want: BTreeSet<String> = [p("routes:global"), p("routes:account:app")].into();
    ensure!(members(&redis, &p("routes:index")).await? == want);
    ensure!(redis.cmd(&["EXISTS", &p("routes:domain:old.test")]).await? == Value::Int(0));

    // Migrating again (marker deleted) changes nothing and sets the marker back.
    redis.cmd(&["DEL", &p("layout")]).await?;
    cli.ok(&["routes", "list"]).await?;
    ensure!(get(&redis, &p("layout")).await? == "2");
    ensure!(members(&redis, &p("routes:index")).await? == want);
    Ok(())
}

#[tokio::test]
async fn redis_route_index_errors_name_the_key() -> Result<()> {
    let redis = RedisServer::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(
        "[transports.t]\nkind = \"smtp\"\nhost = \"t.example\"\n\n[[routes]]\ntransport = \"t\"\n",
    )
    .await?;
    let index = format!("{PREFIX}routes:index");

    // A list deleted behind the CLI's back: read as empty, dropped from the index by
    // the next change.
    cli.ok(&["routes", "add", "--domain", "gone.test", "--transport", "t"])
        .await?;
    redis
        .cmd(&["DEL", &format!("{PREFIX}routes:domain:gone.test")])
        .await?;
    let out = cli.ok(&["routes", "list"]).await?;
    ensure!(!out.contains("gone.test"), "{out}");
    cli.ok(&["routes", "add", "--domain", "here.test", "--transport", "t"])
        .await?;
    let now = members(&redis, &index).await?;
    ensure!(
        !now.contains(&format!("{PREFIX}routes:domain:gone.test")),
        "{now:?}"
    );

    // A route list of the wrong type, named by the index.
    let bad = format!("{PREFIX}routes:domain:bad.test");
    redis.cmd(&["SET", &bad, "x"]).await?;
    redis.cmd(&["SADD", &index, &bad]).await?;
    let out = cli.run(&["check-config"]).await?;
    ensure!(
        out.code == Some(1)
            && out
                .stderr
                .contains(&format!("key {bad} holds a string, not a list")),
        "{out}"
    );
    redis.cmd(&["DEL", &bad]).await?;

    // A member that is no route list at all.
    let stray = format!("{PREFIX}transports");
    redis.cmd(&["SREM", &index, &bad]).await?;
    redis.cmd(&["SADD", &index, &stray]).await?;
    let out = cli.run(&["routes", "list"]).await?;
    ensure!(
        out.code == Some(1)
            && out
                .stderr
                .contains(&format!("{index} names {stray}, which is not a route list")),
        "{out}"
    );
    redis.cmd(&["SREM", &index, &stray]).await?;

    // The index itself of the wrong type.
    redis.cmd(&["DEL", &index]).await?;
    redis.cmd(&["SET", &index, "x"]).await?;
    let out = cli.run(&["routes", "list"]).await?;
    ensure!(
        out.code == Some(1)
            && out
                .stderr
                .contains(&format!("key {index} holds a string, not a set")),
        "{out}"
    );

    // A layout from a newer relaygate is refused, not migrated.
    redis.cmd(&["DEL", &index]).await?;
    redis.cmd(&["SET", &format!("{PREFIX}layout"), "9"]).await?;
    let out = cli.run(&["routes", "list"]).await?;
    if out.code != Some(1) || !out.stderr.contains("upgrade relaygate") {
        bail!("a newer layout was not refused: {out}");
    }
    Ok(())
}

#[tokio::test]
async fn redis_mtasts_cache_is_listed_through_its_index() -> Result<()> {
    use relaygate::store::fleet::{FleetRedis, RedisPolicyStore};
    use relaygate_transports::mtasts::{CachedPolicy, PolicyStore};

    let redis = RedisServer::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    let config =
        relaygate::config::Config::load(cli.config_path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = relaygate::store::redis::RedisStore::open(&config.store, &config.tls)?;
    let cache = RedisPolicyStore::new(std::sync::Arc::new(FleetRedis::new(store)));
    let err = |e: relaygate_transports::mtasts::StoreError| anyhow::anyhow!("{e}");
    for domain in ["a.test", "b.test", "c.test"] {
        let entry: CachedPolicy = serde_json::from_str(&mtasts_json(domain))?;
        cache.put(entry).await.map_err(err)?;
    }
    // More entries than one SSCAN page, as gateways write them.
    fill_fleet(&redis, PREFIX, 2_400, 2).await?;
    let index = format!("{PREFIX}fleet:mtasts-index");
    let listed = cache.list().await.map_err(err)?;
    ensure!(listed.len() == 3 + 1_200, "{} listed", listed.len());

    cache.remove("a.test").await.map_err(err)?;
    let a = format!("{PREFIX}fleet:mtasts:a.test");
    ensure!(redis.cmd(&["EXISTS", &a]).await? == Value::Int(0));
    ensure!(!members(&redis, &index).await?.contains(&a));

    // An entry whose key expired (deleted here) leaves the index at the next listing.
    let b = format!("{PREFIX}fleet:mtasts:b.test");
    redis.cmd(&["DEL", &b]).await?;
    let listed = cache.list().await.map_err(err)?;
    ensure!(listed.len() == 1 + 1_200, "{} listed", listed.len());
    ensure!(
        listed.iter().any(|e| e.domain == "c.test") && !listed.iter().any(|e| e.domain == "b.test")
    );
    let left = members(&redis, &index).await?;
    ensure!(
        left.len() == 1 + 1_200 && !left.contains(&b),
        "{} members",
        left.len()
    );
    Ok(())
}

#[tokio::test]
async fn redis_cluster_old_layout_is_migrated() -> Result<()> {
    let cluster = RedisCluster::start().await?;
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}/", n.port()))
        .collect();
    let client = redis::cluster::ClusterClient::new(seeds)?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_async_connection())
        .await
        .context("cluster connect timed out")??;
    // In cluster mode the default prefix gets a hash tag: `{relaygate:}`.
    let p = |rest: &str| format!("{{{PREFIX}}}{rest}");
    let mut pipe = redis::pipe();
    pipe.hset(
        p("transports"),
        "t",
        r#"{"kind":"smtp","host":"t.example"}"#,
    )
    .rpush(p("routes:domain:old.test"), r#"{"transport":"t"}"#)
    .set(p("version"), 2)
    .set(p("tlsstatus:dst.test"), tls_status_json("dst.test"))
    .set_ex(p("mtasts:dst.test"), mtasts_json("dst.test"), 100_000);
    for i in 0..1_500 {
        pipe.set(p(&format!("tlsstatus:d{i}.test")), "{}");
    }
    tokio::time::timeout(Duration::from_secs(30), pipe.query_async::<()>(&mut conn))
        .await
        .context("cluster writes timed out")??;

    let cli = StoreCli::new(&store_toml(&cluster.url()))?;
    let out = cli.ok(&["routes", "list"]).await?;
    ensure!(out.contains("old.test") && out.contains("-> t"), "{out}");

    let query = |args: Vec<String>| {
        let mut c = redis::cmd(&args[0]);
        for a in &args[1..] {
            c.arg(a);
        }
        let mut conn = conn.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), c.query_async::<Value>(&mut conn))
                .await
                .context("cluster query timed out")?
                .context("cluster query")
        }
    };
    let layout = query(vec!["GET".into(), p("layout")]).await?;
    ensure!(text(&layout) == "2", "{layout:?}");
    let index = query(vec!["SMEMBERS".into(), p("routes:index")]).await?;
    ensure!(texts(&index) == [p("routes:domain:old.test")], "{index:?}");
    let moved = query(vec![
        "EXISTS".into(),
        p("fleet:tlsstatus:dst.test"),
        p("fleet:mtasts:dst.test"),
        p("fleet:tlsstatus:d1499.test"),
    ])
    .await?;
    ensure!(moved == Value::Int(3), "{moved:?}");
    let old = query(vec![
        "EXISTS".into(),
        p("tlsstatus:dst.test"),
        p("mtasts:dst.test"),
    ])
    .await?;
    ensure!(old == Value::Int(0), "{old:?}");
    let indexed = query(vec![
        "SISMEMBER".into(),
        p("fleet:mtasts-index"),
        p("fleet:mtasts:dst.test"),
    ])
    .await?;
    ensure!(indexed == Value::Int(1), "{indexed:?}");

    // A change keeps the index in step in the cluster too.
    cli.ok(&["routes", "add", "--transport", "t"]).await?;
    let index = query(vec!["SMEMBERS".into(), p("routes:index")]).await?;
    ensure!(texts(&index).len() == 2, "{index:?}");
    Ok(())
}
