//! Transport health, a circuit breaker per transport: after `down_after` consecutive
//! attempts that failed before the handover (connect, greeting, TLS, auth, throttle,
//! quota) a transport is down for `down_for`, doubling up to `down_for_max` each time it
//! goes down again. Routes naming a down transport do not match, so mail takes the next
//! matching route at once; when none does, it waits for the transport (never direct
//! delivery). When the hold-down ends, one attempt is let through (half-open): its
//! success brings the transport up, its failure takes it down again.
//!
//! State is local to this gateway; `relaygate_transport_up{transport}` and
//! `/api/transports` show it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// `down_after`, `down_for`, `down_for_max` of one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub down_after: u32,
    pub down_for: Duration,
    pub down_for_max: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            down_after: 5,
            down_for: Duration::from_secs(60),
            down_for_max: Duration::from_secs(1800),
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Up {
        failures: u32,
    },
    Down {
        until: Instant,
        hold: Duration,
        why: String,
        since: SystemTime,
    },
    /// The hold-down is over and one attempt is out to see whether it works.
    Probing {
        hold: Duration,
        why: String,
        since: SystemTime,
    },
}

/// What the scheduler may do with a transport now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Use it.
    Open,
    /// Use it: this attempt is the probe.
    Probe,
    /// Down: do not use it before this.
    Closed { until: Instant },
}

/// One transport's state as shown.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthView {
    pub transport: String,
    /// `up`, `down` or `probing`.
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// Seconds left in the hold-down, when down.
    pub down_for_secs: Option<u64>,
    /// The failure that took it down.
    pub why: Option<String>,
    /// When it went down (RFC 3339).
    pub since: Option<String>,
}

/// The breakers of all transports.
#[derive(Debug, Default)]
pub struct Health {
    states: Mutex<HashMap<String, State>>,
}

impl Health {
    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a route naming `transport` may match now (down transports do not).
    pub fn usable(&self, transport: &str) -> bool {
        !matches!(self.admission_peek(transport), Admission::Closed { .. })
    }

    fn admission_peek(&self, transport: &str) -> Admission {
        match self.states().get(transport) {
            Some(State::Down { until, .. }) if *until > Instant::now() => {
                Admission::Closed { until: *until }
            }
            Some(State::Probing { .. }) => Admission::Closed {
                until: Instant::now() + Duration::from_secs(1),
            },
            _ => Admission::Open,
        }
    }

    /// Before an attempt through `transport`: open, the probe, or closed.
    pub fn admit(&self, transport: &str) -> Admission {
        let mut states = self.states();
        match states.get(transport).cloned() {
            Some(State::Down {
                until,
                hold,
                why,
                since,
            }) => {
                if until > Instant::now() {
                    Admission::Closed { until }
                } else {
                    states.insert(transport.to_string(), State::Probing { hold, why, since });
                    Admission::Probe
                }
            }
            Some(State::Probing { .. }) => Admission::Closed {
                until: Instant::now() + Duration::from_secs(1),
            },
            Some(State::Up { .. }) | None => Admission::Open,
        }
    }

    /// After an attempt through `transport`: `handover_failed` when every recipient
    /// failed before the handover; `why` says how. Returns true when the transport has
    /// just gone down.
    pub fn record(&self, transport: &str, b: Breaker, handover_failed: bool, why: &str) -> bool {
        let mut states = self.states();
        let state = states
            .entry(transport.to_string())
            .or_insert(State::Up { failures: 0 });
        if !handover_failed {
            if !matches!(state, State::Up { failures: 0 }) {
                if !matches!(state, State::Up { .. }) {
                    tracing::info!(transport, "transport is up again");
                    metrics::counter!("relaygate_transport_state_changes_total", "transport" => transport.to_string(), "state" => "up").increment(1);
                }
                *state = State::Up { failures: 0 };
            }
            metrics::gauge!("relaygate_transport_up", "transport" => transport.to_string())
                .set(1.0);
            return false;
        }
        let (hold, went_down) = match state.clone() {
            State::Up { failures } => {
                let failures = failures + 1;
                if failures < b.down_after.max(1) {
                    *state = State::Up { failures };
                    return false;
                }
                (b.down_for, true)
            }
            // The probe failed: down again, for twice as long.
            State::Probing { hold, .. } => ((hold * 2).min(b.down_for_max), true),
            // Attempts that were already running when it went down.
            State::Down { .. } => return false,
        };
        *state = State::Down {
            until: Instant::now() + hold,
            hold,
            why: why.to_string(),
            since: SystemTime::now(),
        };
        tracing::warn!(
            transport,
            why,
            down_for_secs = hold.as_secs(),
            "transport is down: routes naming it do not match until it recovers"
        );
        metrics::gauge!("relaygate_transport_up", "transport" => transport.to_string()).set(0.0);
        metrics::counter!("relaygate_transport_state_changes_total", "transport" => transport.to_string(), "state" => "down").increment(1);
        went_down
    }

    /// Ends a hold-down now (the next attempt is the probe): `queue retry`.
    pub fn probe_now(&self) {
        let now = Instant::now();
        for s in self.states().values_mut() {
            if let State::Down { until, .. } = s {
                *until = now;
            }
        }
    }

    /// Every transport with a state, down first.
    pub fn views(&self) -> Vec<HealthView> {
        let now = Instant::now();
        let mut v: Vec<HealthView> = self
            .states()
            .iter()
            .map(|(name, s)| {
                let ms = |t: &SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0)
                };
                match s {
                    State::Up { failures } => HealthView {
                        transport: name.clone(),
                        state: "up",
                        consecutive_failures: *failures,
                        down_for_secs: None,
                        why: None,
                        since: None,
                    },
                    State::Down {
                        until, why, since, ..
                    } => HealthView {
                        transport: name.clone(),
                        state: "down",
                        consecutive_failures: 0,
                        down_for_secs: Some(until.saturating_duration_since(now).as_secs()),
                        why: Some(why.clone()),
                        since: Some(crate::model::rfc3339(ms(since))),
                    },
                    State::Probing { why, since, .. } => HealthView {
                        transport: name.clone(),
                        state: "probing",
                        consecutive_failures: 0,
                        down_for_secs: Some(0),
                        why: Some(why.clone()),
                        since: Some(crate::model::rfc3339(ms(since))),
                    },
                }
            })
            .collect();
        v.sort_by(|a, b| (a.state == "up", &a.transport).cmp(&(b.state == "up", &b.transport)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(after: u32, for_ms: u64) -> Breaker {
        Breaker {
            down_after: after,
            down_for: Duration::from_millis(for_ms),
            down_for_max: Duration::from_millis(for_ms * 4),
        }
    }

    #[test]
    fn down_after_consecutive_failures_then_probe() {
        let h = Health::default();
        let b = b(3, 50);
        assert!(!h.record("p", b, true, "connect"));
        assert!(!h.record("p", b, false, ""), "a success resets the count");
        assert!(!h.record("p", b, true, "connect"));
        assert!(!h.record("p", b, true, "connect"));
        assert!(h.record("p", b, true, "connect"), "third in a row");
        assert!(!h.usable("p"));
        assert!(matches!(h.admit("p"), Admission::Closed { .. }));
        assert_eq!(h.views()[0].state, "down");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(h.admit("p"), Admission::Probe);
        assert!(!h.usable("p"), "one probe at a time");
        // The probe fails: down for twice as long.
        assert!(h.record("p", b, true, "connect"));
        let left = h.views()[0].down_for_secs;
        assert_eq!(left, Some(0));
        h.probe_now();
        assert_eq!(h.admit("p"), Admission::Probe);
        assert!(!h.record("p", b, false, ""));
        assert!(h.usable("p"));
        assert_eq!(h.views()[0].state, "up");
    }

    #[test]
    fn other_transports_are_independent() {
        let h = Health::default();
        assert!(h.record("p", b(1, 10_000), true, "tls"));
        assert!(h.usable("q"));
        assert!(!h.usable("p"));
    }
}
