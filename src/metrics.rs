//! Prometheus metrics: installs the recorder, declares the histogram buckets, exports
//! every documented series whose labels are known in advance at 0 from the start (so
//! alerts and `rate()` work before the first event), and refreshes the gauges that
//! describe the queue and the per-transport series right before each scrape.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::model::now_ms;
use crate::queue::Queue;

/// Buckets for delivery and latency histograms, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Installs the global recorder. Returns `None` if one is already installed.
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .ok()?
        .install_recorder()
        .ok()
}

/// Counters whose label values are known in advance, at 0 (an existing value is kept).
pub fn register_known() {
    for name in [
        "relaygate_submissions_accepted_total",
        "relaygate_queue_destinations_total",
        "relaygate_queue_destinations_authentic_total",
        "relaygate_queue_destination_dane_required_total",
        "relaygate_queue_destination_dane_starttlsunverified_total",
        "relaygate_queue_destination_dane_gathertlsa_errors_total",
        "relaygate_queue_plaintext_fallback_total",
        "relaygate_dkim_signed_total",
        "relaygate_dkim_unsigned_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for result in ["ok", "timeout", "error"] {
        metrics::counter!("relaygate_queue_connection_total", "result" => result).increment(0);
    }
    for reason in ["nopolicy", "norequiretls"] {
        metrics::counter!("relaygate_queue_requiretls_unsupported_total", "reason" => reason)
            .increment(0);
    }
    for ignored in ["mtastspolicy", "mtastsmx", "badtlsa", "badtls", "tlsverify"] {
        metrics::counter!("relaygate_queue_tlsrequiredno_ignored_total", "ignored" => ignored)
            .increment(0);
    }
    for mode in ["enforce", "testing"] {
        metrics::counter!("relaygate_queue_mtasts_mx_mismatch_total", "mode" => mode).increment(0);
    }
    for mechanism in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-1",
        "CRAM-MD5",
        "PLAIN",
        "LOGIN",
    ] {
        for result in ["success", "failure"] {
            metrics::counter!("relaygate_sasl_server_total", "mechanism" => mechanism, "result" => result)
                .increment(0);
        }
    }
}

/// The series of each configured transport, at 0 until used: attempts by result, and
/// `relaygate_transport_up` from the breaker's state (1 unless down).
pub fn refresh_transport_series(
    snapshot: &crate::snapshot::Snapshot,
    health: &crate::queue::health::Health,
) {
    for name in snapshot.transports.keys() {
        for result in ["delivered", "temporary", "permanent"] {
            metrics::counter!("relaygate_delivery_attempts_total",
                "transport" => name.clone(), "result" => result)
            .increment(0);
        }
    }
    let down: Vec<String> = health
        .views()
        .into_iter()
        .filter(|v| v.state != "up")
        .map(|v| v.transport)
        .collect();
    for name in snapshot.breakers.keys() {
        let up = if down.contains(name) { 0.0 } else { 1.0 };
        metrics::gauge!("relaygate_transport_up", "transport" => name.clone()).set(up);
        for state in ["down", "up"] {
            metrics::counter!("relaygate_transport_state_changes_total",
                "transport" => name.clone(), "state" => state)
            .increment(0);
        }
    }
    // Every step a route's fallback chain can take (a down step is skipped, so any
    // earlier transport of the chain may hand over to any later one).
    let routes = &snapshot.routes;
    let lists = std::iter::once(&routes.global)
        .chain(routes.domains.values())
        .chain(routes.accounts.values());
    for route in lists.flatten().filter(|r| !r.fallback.is_empty()) {
        let first = if route.transport.is_empty() {
            crate::snapshot::DIRECT.to_string()
        } else {
            route.transport.clone()
        };
        let chain: Vec<&String> = std::iter::once(&first).chain(&route.fallback).collect();
        for (i, from) in chain.iter().enumerate() {
            for to in &chain[i + 1..] {
                metrics::counter!("relaygate_fallback_total",
                    "from" => (*from).clone(), "to" => (*to).clone())
                .increment(0);
            }
        }
    }
}

/// Updates queue gauges from the queue's current counts.
pub fn refresh_queue_gauges(queue: &Queue) {
    let c = queue.counts();
    metrics::gauge!("relaygate_queue_messages").set(c.messages as f64);
    metrics::gauge!("relaygate_queue_recipients", "state" => "pending").set(c.pending_rcpts as f64);
    metrics::gauge!("relaygate_queue_recipients", "state" => "inflight")
        .set(c.in_flight_rcpts as f64);
    metrics::gauge!("relaygate_queue_held_messages").set(c.held_messages as f64);
    let oldest = c
        .oldest_received_ms
        .map(|t| ((now_ms() - t).max(0) as f64) / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("relaygate_queue_oldest_message_age_seconds").set(oldest);
    metrics::gauge!("relaygate_spool_segments").set(queue.spool().segment_count() as f64);
    let degraded = queue.spool().health().degraded.is_some();
    metrics::gauge!("relaygate_spool_writable").set(if degraded { 0.0 } else { 1.0 });
}
