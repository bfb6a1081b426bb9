//! Metrics that tell the truth from the start (issue 16 item 8): every series documented
//! in docs/operations.md whose labels are known in advance is exported at 0 before the
//! first event, and every metric the Grafana dashboard (docs/grafana/relaygate.json)
//! queries is exported by a running gateway (Redis store, one message delivered).

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};

use crate::support::deadline;
use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::redis::{sink_transport, store_toml, RedisServer, StoreCli};
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, submit};

/// The metric names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every `relaygate_...` name in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("relaygate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn documented_series_exist_at_zero_from_the_start() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let have = exported(&gw.metrics_text().await?);
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))?;
    let section = doc
        .split("## Metrics")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .context("no Metrics section")?;
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `relaygate_"))
        .collect();
    ensure!(
        rows.len() > 20,
        "metrics table not found: {} rows",
        rows.len()
    );
    let mut missing = Vec::new();
    for row in rows {
        let first_cell = row.split('|').nth(1).unwrap_or("");
        let kind = row.split('|').nth(2).unwrap_or("");
        for name in names_in(first_cell) {
            // Histograms appear with their first observation; the Redis store's series
            // with the Redis store; events between named transports when they happen.
            // (Transport series exist for smarthost transports and fallback chains.)
            let later = kind.contains("histogram")
                || name.starts_with("relaygate_store_")
                || name == "relaygate_fallback_total"
                || name == "relaygate_transport_state_changes_total"
                || name == "relaygate_transport_up";
            if !later && !have.contains(&name) {
                missing.push(name);
            }
        }
    }
    ensure!(
        missing.is_empty(),
        "documented but not exported at start: {missing:?}"
    );
    // Per-transport attempts exist at 0 for the configured transport.
    let text = gw.metrics_text().await?;
    ensure!(
        text.lines()
            .any(|l| l.starts_with("relaygate_delivery_attempts_total{")
                && l.contains("transport=\"sink\"")
                && l.contains("result=\"permanent\"")
                && l.ends_with(" 0")),
        "no zero attempts series for the transport"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_is_exported() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = Sink::start().await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    cli.import(&format!(
        "{}{}[[routes]]\ntransport = \"relay\"\nfallback = [\"backup\"]\n",
        sink_transport("relay", sink.port()),
        sink_transport("backup", sink.port())
    ))
    .await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: store_toml(&redis.url()),
        ..Default::default()
    })
    .await?;
    let to = "m@dst.test";
    submit(
        gw.submission_addr(),
        "s@src.test",
        &[to],
        &simple_message("s@src.test", to, "metrics", "metrics"),
    )
    .await?;
    sink.wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt(to)))
        .await?;
    gw.wait_queue_empty(deadline(10)).await?;
    let have = exported(&gw.metrics_text().await?);
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana/relaygate.json"
    ))?)?;
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().context("no panels")? {
        for t in panel["targets"]
            .as_array()
            .context("panel without targets")?
        {
            used.extend(names_in(t["expr"].as_str().unwrap_or("")));
        }
    }
    ensure!(
        used.len() > 20,
        "dashboard uses only {} metrics",
        used.len()
    );
    let missing: Vec<&String> = used.iter().filter(|n| !have.contains(*n)).collect();
    ensure!(
        missing.is_empty(),
        "the dashboard queries metrics not exported: {missing:?}"
    );
    Ok(())
}
