//! Prometheus metrics: installs the recorder, declares the histogram buckets, and
//! refreshes the gauges that describe the queue right before each scrape.

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
