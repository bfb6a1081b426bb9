//! Transport health, a circuit breaker per transport: after `down_after` consecutive
//! attempts that failed before the handover (connect, greeting, TLS, auth, throttle,
//! quota) a transport is down for `down_for`, doubling up to `down_for_max` each time it
//! goes down again. Routes naming a down transport do not match, so mail takes the next
//! matching route at once; when none does, it waits for the transport (never direct
//! delivery). When the hold-down ends, one attempt is let through (half-open): its
//! success brings the transport up, its failure takes it down again.
//!
//! A reply classified quota takes the transport down at once, for `down_for_max`: a
//! provider's quota does not come back within seconds, so probing it every minute only
//! collects more refusals.
//!
//! Each gateway keeps its own state; with the Redis store, every change is also sent
//! out as a [`HealthEvent`] and the fleet's records come back through
//! [`Health::apply_fleet`] (`store::fleet_health`), so one gateway's discovery protects
//! all. `relaygate_transport_up{transport}` and `/api/transports` show the state.

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

/// How an attempt failed before the handover, for the breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The reply or error, as shown.
    pub why: String,
    /// Classified quota (down at once, for `down_for_max`).
    pub quota: bool,
}

impl Failure {
    pub fn new(why: &str) -> Failure {
        Failure {
            why: why.to_string(),
            quota: false,
        }
    }
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

/// A change of a transport's state, as the fleet records it (`{prefix}fleet:health:{transport}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum FleetRecord {
    /// Down until `until_ms` (Unix ms), for a hold-down of `hold_ms`.
    Down {
        since_ms: i64,
        until_ms: i64,
        hold_ms: u64,
        why: String,
        /// The gateway that saw it (its host name).
        by: String,
    },
    /// Up again (a probe worked).
    Up { since_ms: i64, by: String },
}

impl FleetRecord {
    /// When the change happened (Unix ms): a record is applied only when it is newer
    /// than every change this gateway made or applied.
    pub fn since_ms(&self) -> i64 {
        match self {
            FleetRecord::Down { since_ms, .. } | FleetRecord::Up { since_ms, .. } => *since_ms,
        }
    }
}

/// A change made here, for the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub transport: String,
    pub record: FleetRecord,
}

/// The breakers of all transports.
#[derive(Debug, Default)]
pub struct Health {
    states: Mutex<HashMap<String, State>>,
    /// Per transport, when its latest change (made here or applied from the fleet)
    /// happened, Unix ms.
    changed: Mutex<HashMap<String, i64>>,
    /// Where changes made here go (the fleet sync task), when there is a fleet.
    events: Option<tokio::sync::mpsc::UnboundedSender<HealthEvent>>,
    /// This gateway's name in fleet records.
    name: String,
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Health {
    /// Breakers whose changes are sent to `events` (the fleet), naming this gateway `name`.
    pub fn with_events(
        name: &str,
        events: tokio::sync::mpsc::UnboundedSender<HealthEvent>,
    ) -> Health {
        Health {
            events: Some(events),
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.changed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a change made here at `since` and sends it to the fleet.
    fn announce(&self, transport: &str, record: FleetRecord) {
        self.changed()
            .insert(transport.to_string(), record.since_ms());
        if let Some(tx) = &self.events {
            let _ = tx.send(HealthEvent {
                transport: transport.to_string(),
                record,
            });
        }
    }

    /// Applies what the fleet says about `transport`, when it is newer than what this
    /// gateway knows: another gateway took it down (this one stops using it too) or
    /// brought it back up. Returns true when the state changed to down.
    pub fn apply_fleet(&self, transport: &str, record: &FleetRecord) -> bool {
        let now_ms = unix_ms(SystemTime::now());
        {
            let mut changed = self.changed();
            let known = changed.get(transport).copied().unwrap_or(i64::MIN);
            if record.since_ms() <= known {
                return false;
            }
            if let FleetRecord::Down { until_ms, .. } = record {
                if *until_ms <= now_ms {
                    return false;
                }
            }
            changed.insert(transport.to_string(), record.since_ms());
        }
        let mut states = self.states();
        match record {
            FleetRecord::Down {
                since_ms,
                until_ms,
                hold_ms,
                why,
                by,
            } => {
                let left = Duration::from_millis((until_ms - now_ms).max(0) as u64);
                states.insert(
                    transport.to_string(),
                    State::Down {
                        until: Instant::now() + left,
                        hold: Duration::from_millis(*hold_ms),
                        why: format!("{why} (seen by {by})"),
                        since: SystemTime::UNIX_EPOCH
                            + Duration::from_millis((*since_ms).max(0) as u64),
                    },
                );
                tracing::warn!(
                    transport,
                    why = why.as_str(),
                    by = by.as_str(),
                    down_for_secs = left.as_secs(),
                    "transport is down (reported by the fleet): routes naming it do not match"
                );
                metrics::gauge!("relaygate_transport_up", "transport" => transport.to_string())
                    .set(0.0);
                metrics::counter!("relaygate_transport_state_changes_total", "transport" => transport.to_string(), "state" => "down").increment(1);
                true
            }
            FleetRecord::Up { by, .. } => {
                let was_up = matches!(states.get(transport), None | Some(State::Up { .. }));
                states.insert(transport.to_string(), State::Up { failures: 0 });
                if !was_up {
                    tracing::info!(
                        transport,
                        by = by.as_str(),
                        "transport is up again (reported by the fleet)"
                    );
                    metrics::gauge!("relaygate_transport_up", "transport" => transport.to_string())
                        .set(1.0);
                    metrics::counter!("relaygate_transport_state_changes_total", "transport" => transport.to_string(), "state" => "up").increment(1);
                }
                false
            }
        }
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

    /// After an attempt through `transport`: `failure` when every recipient failed
    /// before the handover. Returns true when the transport has just gone down.
    pub fn record(&self, transport: &str, b: Breaker, failure: Option<&Failure>) -> bool {
        let mut states = self.states();
        let handover_failed = failure.is_some();
        let (why, quota) = failure.map_or(("", false), |f| (f.why.as_str(), f.quota));
        let known = states.contains_key(transport);
        if !known {
            states.insert(transport.to_string(), State::Up { failures: 0 });
        }
        let Some(state) = states.get_mut(transport) else {
            return false;
        };
        if !handover_failed {
            // The gauge changes only with the state (or when first seen): a delivery
            // costs no metrics lookup.
            let changed = !known || !matches!(state, State::Up { failures: 0 });
            if !matches!(state, State::Up { failures: 0 }) {
                let was_down = !matches!(state, State::Up { .. });
                *state = State::Up { failures: 0 };
                if was_down {
                    drop(states);
                    tracing::info!(transport, "transport is up again");
                    metrics::counter!("relaygate_transport_state_changes_total", "transport" => transport.to_string(), "state" => "up").increment(1);
                    self.announce(
                        transport,
                        FleetRecord::Up {
                            since_ms: unix_ms(SystemTime::now()),
                            by: self.name.clone(),
                        },
                    );
                }
            }
            if changed {
                metrics::gauge!("relaygate_transport_up", "transport" => transport.to_string())
                    .set(1.0);
            }
            return false;
        }
        let (hold, went_down) = match state.clone() {
            // A quota does not come back soon: down at once, for the longest hold-down.
            State::Up { .. } if quota => (b.down_for_max.max(b.down_for), true),
            State::Up { failures } => {
                let failures = failures + 1;
                if failures < b.down_after.max(1) {
                    *state = State::Up { failures };
                    return false;
                }
                (b.down_for, true)
            }
            // The probe failed: down again, for twice as long.
            State::Probing { .. } if quota => (b.down_for_max.max(b.down_for), true),
            State::Probing { hold, .. } => ((hold * 2).min(b.down_for_max), true),
            // Attempts that were already running when it went down.
            State::Down { .. } => return false,
        };
        let since = SystemTime::now();
        *state = State::Down {
            until: Instant::now() + hold,
            hold,
            why: why.to_string(),
            since,
        };
        drop(states);
        self.announce(
            transport,
            FleetRecord::Down {
                since_ms: unix_ms(since),
                until_ms: unix_ms(since + hold),
                hold_ms: hold.as_millis() as u64,
                why: why.to_string(),
                by: self.name.clone(),
            },
        );
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
        assert!(!h.record("p", b, Some(&Failure::new("connect"))));
        assert!(!h.record("p", b, None), "a success resets the count");
        assert!(!h.record("p", b, Some(&Failure::new("connect"))));
        assert!(!h.record("p", b, Some(&Failure::new("connect"))));
        assert!(
            h.record("p", b, Some(&Failure::new("connect"))),
            "third in a row"
        );
        assert!(!h.usable("p"));
        assert!(matches!(h.admit("p"), Admission::Closed { .. }));
        assert_eq!(h.views()[0].state, "down");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(h.admit("p"), Admission::Probe);
        assert!(!h.usable("p"), "one probe at a time");
        // The probe fails: down for twice as long.
        assert!(h.record("p", b, Some(&Failure::new("connect"))));
        let left = h.views()[0].down_for_secs;
        assert_eq!(left, Some(0));
        h.probe_now();
        assert_eq!(h.admit("p"), Admission::Probe);
        assert!(!h.record("p", b, None));
        assert!(h.usable("p"));
        assert_eq!(h.views()[0].state, "up");
    }

    #[test]
    fn other_transports_are_independent() {
        let h = Health::default();
        assert!(h.record("p", b(1, 10_000), Some(&Failure::new("tls"))));
        assert!(h.usable("q"));
        assert!(!h.usable("p"));
    }

    #[test]
    fn quota_goes_down_at_once_for_the_longest_hold() {
        let h = Health::default();
        let quota = Failure {
            why: "454 Throttling failure: Daily message quota exceeded".into(),
            quota: true,
        };
        assert!(h.record("p", b(5, 1000), Some(&quota)), "first quota reply");
        let v = &h.views()[0];
        assert_eq!(v.state, "down");
        assert!(v.down_for_secs.is_some_and(|s| s >= 3), "{v:?}");
    }

    #[test]
    fn changes_go_to_the_fleet_and_newer_fleet_records_apply() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let h = Health::with_events("gw1", tx);
        assert!(h.record("p", b(1, 60_000), Some(&Failure::new("421 busy"))));
        let ev = rx.try_recv().expect("a down event");
        let FleetRecord::Down {
            why, by, hold_ms, ..
        } = &ev.record
        else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (why.as_str(), by.as_str(), *hold_ms),
            ("421 busy", "gw1", 60_000)
        );
        // Its own record read back changes nothing.
        assert!(!h.apply_fleet("p", &ev.record));
        // Another gateway's probe worked later: up here too.
        let up = FleetRecord::Up {
            since_ms: ev.record.since_ms() + 1,
            by: "gw2".into(),
        };
        assert!(!h.apply_fleet("p", &up));
        assert!(h.usable("p"));
        assert!(rx.try_recv().is_err(), "applied records are not sent back");
        // Another gateway saw q fail: q is down here without a local failure.
        let now = unix_ms(SystemTime::now());
        let down = FleetRecord::Down {
            since_ms: now,
            until_ms: now + 60_000,
            hold_ms: 60_000,
            why: "connect refused".into(),
            by: "gw2".into(),
        };
        assert!(h.apply_fleet("q", &down));
        assert!(!h.usable("q"));
        assert!(!h.apply_fleet("q", &down), "once");
        // queue retry here ends the hold-down; the same record does not undo it.
        h.probe_now();
        assert!(!h.apply_fleet("q", &down));
        assert_eq!(h.admit("q"), Admission::Probe);
        // An expired record is ignored.
        let old = FleetRecord::Down {
            since_ms: now + 5,
            until_ms: now - 1,
            hold_ms: 1,
            why: "x".into(),
            by: "gw2".into(),
        };
        assert!(!h.apply_fleet("r", &old));
        assert!(h.usable("r"));
    }
}
