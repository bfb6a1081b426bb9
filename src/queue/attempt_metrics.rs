//! The per-attempt metrics (attempts by result, delivery latency, attempt duration),
//! with their handles kept per label set: asking the recorder for a series builds and
//! hashes its key on every call, which the delivery path would pay for every recipient.
//! The label sets are few (transports × TLS modes × results × attempt buckets).

use std::collections::HashMap;
use std::sync::Mutex;

use metrics::{Counter, Histogram};

/// What one recipient's attempt reports.
pub struct Attempt<'a> {
    pub transport: &'a str,
    /// The TLS mode of the session, "none" without one.
    pub tls: &'a str,
    pub result: Outcome,
    /// 1 for a first attempt; 5 and more share one bucket ("5+").
    pub attempt: u32,
    /// Seconds from acceptance to delivery, for a delivered recipient.
    pub latency: Option<f64>,
    /// Seconds the attempt took.
    pub duration: f64,
}

/// The `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Temporary,
    Permanent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Temporary => "temporary",
            Outcome::Permanent => "permanent",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const OUTCOMES: [Outcome; 3] = [Outcome::Delivered, Outcome::Temporary, Outcome::Permanent];
const ATTEMPT_BUCKETS: usize = 5;

fn attempt_bucket(n: u32) -> usize {
    (n.clamp(1, ATTEMPT_BUCKETS as u32) - 1) as usize
}

fn attempt_label(bucket: usize) -> &'static str {
    ["1", "2", "3", "4", "5+"][bucket.min(ATTEMPT_BUCKETS - 1)]
}

type Durations = [[Option<Histogram>; ATTEMPT_BUCKETS]; 3];

struct PerTransport {
    attempts: [Counter; 3],
    latency: Histogram,
    /// Attempt durations by TLS mode, then result and attempt bucket.
    durations: HashMap<Box<str>, Durations>,
}

impl PerTransport {
    fn new(transport: &str) -> PerTransport {
        let counter = |o: Outcome| {
            metrics::counter!("relaygate_delivery_attempts_total",
                "transport" => transport.to_string(), "result" => o.as_str())
        };
        PerTransport {
            attempts: OUTCOMES.map(counter),
            // From acceptance to delivery (docs/operations.md).
            latency: metrics::histogram!("relaygate_delivery_latency_seconds",
                "transport" => transport.to_string()),
            durations: HashMap::new(),
        }
    }
}

/// The handles, created on first use.
#[derive(Default)]
pub struct AttemptMetrics {
    transports: Mutex<HashMap<Box<str>, PerTransport>>,
}

impl AttemptMetrics {
    pub fn new() -> AttemptMetrics {
        AttemptMetrics::default()
    }

    /// Counts one recipient's attempt.
    pub fn record(&self, a: &Attempt<'_>) {
        let mut all = self.transports.lock().unwrap_or_else(|p| p.into_inner());
        if !all.contains_key(a.transport) {
            all.insert(a.transport.into(), PerTransport::new(a.transport));
        }
        let Some(t) = all.get_mut(a.transport) else {
            return;
        };
        t.attempts[a.result.index()].increment(1);
        if let Some(latency) = a.latency {
            t.latency.record(latency);
        }
        if !t.durations.contains_key(a.tls) {
            t.durations.insert(a.tls.into(), Durations::default());
        }
        let Some(by_tls) = t.durations.get_mut(a.tls) else {
            return;
        };
        let bucket = attempt_bucket(a.attempt);
        let slot = &mut by_tls[a.result.index()][bucket];
        let histogram = slot.get_or_insert_with(|| {
            metrics::histogram!("relaygate_queue_delivery_duration_seconds",
                "attempt" => attempt_label(bucket),
                "transport" => a.transport.to_string(),
                "tlsmode" => a.tls.to_string(),
                "result" => a.result.as_str())
        });
        histogram.record(a.duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_buckets() {
        let labels: Vec<&str> = [0, 1, 2, 4, 5, 6, 99]
            .into_iter()
            .map(|n| attempt_label(attempt_bucket(n)))
            .collect();
        assert_eq!(labels, ["1", "1", "2", "4", "5+", "5+", "5+"]);
    }
}
