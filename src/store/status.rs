//! How the store is doing, for `/healthz`, the metrics and the logs.
//!
//! The Redis store is "up" while both its data connection and its change subscription
//! work; otherwise the gateway runs on its last good snapshot and is "degraded". Only
//! changes of that state are logged (one line when Redis goes away, one when it is
//! back), never each retry, and `relaygate_store_up` follows it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use super::StoreError;

#[derive(Default)]
struct Detail {
    /// The state last reported (logged and exported).
    reported_up: bool,
    /// Whether it was ever up (the first "up" is the start, not a recovery).
    ever_up: bool,
    last_error: Option<String>,
    rejected: Option<String>,
    loaded_at_ms: i64,
    from_persisted: bool,
}

struct Inner {
    kind: &'static str,
    source: String,
    data_up: AtomicBool,
    sub_up: AtomicBool,
    version: AtomicU64,
    detail: Mutex<Detail>,
}

/// A cheap, shared handle on the store's state.
#[derive(Clone)]
pub struct StoreStatus {
    inner: Arc<Inner>,
}

impl StoreStatus {
    /// The file store: always up.
    pub fn file() -> StoreStatus {
        let s = StoreStatus::new("file", String::new(), true);
        metrics::gauge!("relaygate_store_up").set(1.0);
        s
    }

    /// A Redis store, down until its connections say otherwise.
    pub fn redis(source: &str) -> StoreStatus {
        let s = StoreStatus::new("redis", source.to_string(), false);
        metrics::gauge!("relaygate_store_up").set(0.0);
        s
    }

    fn new(kind: &'static str, source: String, up: bool) -> StoreStatus {
        StoreStatus {
            inner: Arc::new(Inner {
                kind,
                source,
                data_up: AtomicBool::new(up),
                sub_up: AtomicBool::new(up),
                version: AtomicU64::new(0),
                detail: Mutex::new(Detail {
                    reported_up: up,
                    ever_up: up,
                    // The file store is loaded with the config, now.
                    loaded_at_ms: if kind == "file" {
                        crate::model::now_ms()
                    } else {
                        0
                    },
                    ..Default::default()
                }),
            }),
        }
    }

    fn detail(&self) -> MutexGuard<'_, Detail> {
        self.inner.detail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the store is reachable and followed.
    pub fn is_up(&self) -> bool {
        self.inner.data_up.load(Ordering::SeqCst) && self.inner.sub_up.load(Ordering::SeqCst)
    }

    /// The version of the snapshot in force.
    pub fn version(&self) -> u64 {
        self.inner.version.load(Ordering::SeqCst)
    }

    /// The data connection works (or not, and why).
    pub fn set_data(&self, up: bool, error: Option<&StoreError>) {
        self.inner.data_up.store(up, Ordering::SeqCst);
        self.update(error);
    }

    /// The subscription works (or not, and why).
    pub fn set_subscription(&self, up: bool, error: Option<&StoreError>) {
        self.inner.sub_up.store(up, Ordering::SeqCst);
        self.update(error);
    }

    fn update(&self, error: Option<&StoreError>) {
        let up = self.is_up();
        let mut d = self.detail();
        if let Some(e) = error {
            d.last_error = Some(e.to_string());
        }
        if up == d.reported_up {
            if let Some(e) = error {
                tracing::debug!(store = %self.inner.source, error = %e, "store: still unreachable");
            }
            return;
        }
        d.reported_up = up;
        metrics::gauge!("relaygate_store_up").set(if up { 1.0 } else { 0.0 });
        if up && !d.ever_up {
            d.ever_up = true;
            tracing::info!(store = %self.inner.source, version = self.version(), "store: connected; following changes");
        } else if up {
            tracing::info!(store = %self.inner.source, version = self.version(), "store: Redis reachable again; following changes");
        } else {
            tracing::warn!(
                store = %self.inner.source,
                error = d.last_error.as_deref().unwrap_or("unknown"),
                version = self.version(),
                "store: Redis unreachable; delivering on the last good snapshot, reconnecting with backoff"
            );
        }
    }

    /// A snapshot was put in force.
    pub fn loaded(&self, version: u64, from_persisted: bool) {
        self.inner.version.store(version, Ordering::SeqCst);
        metrics::gauge!("relaygate_store_version").set(version as f64);
        let mut d = self.detail();
        d.loaded_at_ms = crate::model::now_ms();
        d.from_persisted = from_persisted;
    }

    /// Records the problems of the last refused snapshot (`None`: the last load was
    /// good). Returns whether this differs from the previous record (to log it once).
    pub fn set_rejected(&self, text: Option<String>) -> bool {
        let mut d = self.detail();
        let changed = d.rejected != text;
        d.rejected = text;
        changed
    }

    /// `"ok"` or `"degraded"`.
    /// `ok`, or `degraded` while Redis is unreachable or its content is refused (the
    /// last good snapshot stays in force; `store_detail.rejected` says why).
    pub fn state(&self) -> &'static str {
        if self.is_up() && self.detail().rejected.is_none() {
            "ok"
        } else {
            "degraded"
        }
    }

    /// Details for `/healthz`.
    pub fn detail_json(&self) -> Value {
        // `state` takes the detail lock itself: read it first.
        let state = self.state();
        let d = self.detail();
        json!({
            "kind": self.inner.kind,
            "state": state,
            "source": self.inner.source,
            "version": self.version(),
            "subscribed": self.inner.sub_up.load(Ordering::SeqCst),
            "loaded_at": crate::model::rfc3339(d.loaded_at_ms),
            "from_persisted_snapshot": d.from_persisted,
            "last_error": d.last_error,
            "rejected": d.rejected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_needs_both_connections() {
        let s = StoreStatus::redis("redis://x");
        assert_eq!(s.state(), "degraded");
        s.set_data(true, None);
        assert!(!s.is_up());
        s.set_subscription(true, None);
        assert_eq!(s.state(), "ok");
        s.set_data(false, None);
        assert_eq!(s.state(), "degraded");
        s.set_data(true, None);
        assert!(s.set_rejected(Some("x".into())));
        assert_eq!(s.state(), "degraded", "refused content is degraded too");
        assert!(!s.set_rejected(Some("x".into())));
        assert!(s.set_rejected(None));
        assert_eq!(s.state(), "ok");
        s.set_data(false, None);
        assert_eq!(StoreStatus::file().state(), "ok");
    }
}
