//! Rate limits (`rate_limit = "14/s"`, `"1000/h"`, `"50000/d"`, or a list) of transports
//! and of submitting accounts: a GCRA per limit, allowing a burst of at most one
//! second's worth. The scheduler asks before each delivery: a short wait is slept
//! through; a longer one puts the recipients back in the queue until then, which is
//! neither a failed attempt nor a reason for a delayed DSN. Submission asks at each
//! MAIL of an account with a limit and answers `452 4.7.0` when over it.
//!
//! [`Limiter`] holds the state: in this process ([`RateLimits`]), or, with the Redis
//! store, in Redis (a [`FleetRates`] backend, one atomic script per message), so that
//! a limit holds for the sum of every gateway of the fleet. When Redis cannot answer,
//! the local state stands in (a throttled warning says so).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One limit: `count` messages per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// `"N/s"`, `"N/m"`, `"N/h"`, `"N/d"`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("{text:?} is not a rate like \"14/s\", \"1000/h\" or \"50000/d\"");
        let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(bad());
        }
        Ok(Rate { count, period })
    }

    /// Time between two messages at the steady rate.
    pub fn interval(&self) -> Duration {
        self.period / self.count
    }

    /// How far ahead of the steady schedule a burst may run: one second's worth of
    /// messages (at least one message).
    pub fn tolerance(&self) -> Duration {
        let per_second = (self.count as f64 / self.period.as_secs_f64()).floor() as u32;
        self.interval() * per_second.max(1).saturating_sub(1)
    }
}

/// What the limiter says about one message now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it now (the slot is taken).
    Now,
    /// Send it after this wait (the slot is taken).
    After(Duration),
    /// Not before this wait; nothing taken.
    Defer(Duration),
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.period.as_secs() {
            1 => write!(f, "{}/s", self.count),
            60 => write!(f, "{}/m", self.count),
            3600 => write!(f, "{}/h", self.count),
            86_400 => write!(f, "{}/d", self.count),
            secs => write!(f, "{}/{secs}s", self.count),
        }
    }
}

/// The local limiters: the theoretical arrival time per (key, limit).
#[derive(Debug, Default)]
pub struct RateLimits {
    tat: Mutex<HashMap<(String, usize), Instant>>,
}

/// Waits up to this long are slept through by the delivery; longer ones defer.
pub const MAX_SLEEP: Duration = Duration::from_secs(5);

/// A fleet-wide backend: takes one message under `limits` for `key` (e.g.
/// `transport:ses`), with the same rules as [`RateLimits::take`].
/// With `max_sleep` of `None` nothing is taken: the answer is the wait a message would
/// have now (`Now` or `Defer`), for views.
pub trait FleetRates: Send + Sync {
    fn take<'a>(
        &'a self,
        key: &'a str,
        limits: &'a [Rate],
        max_sleep: Option<Duration>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Decision, String>> + Send + 'a>>;
}

/// The rate limiter of this gateway: local, or fleet-wide with the local state standing
/// in while the fleet backend cannot answer.
#[derive(Default)]
pub struct Limiter {
    local: RateLimits,
    fleet: Option<std::sync::Arc<dyn FleetRates>>,
    warned: Mutex<Option<Instant>>,
}

impl Limiter {
    /// Limits shared through `fleet`.
    pub fn fleet(fleet: std::sync::Arc<dyn FleetRates>) -> Limiter {
        Limiter {
            fleet: Some(fleet),
            ..Default::default()
        }
    }

    /// One message for `key` under `limits`; waits up to `max_sleep` are `After`,
    /// longer ones `Defer` (nothing taken).
    pub async fn take(&self, key: &str, limits: &[Rate], max_sleep: Duration) -> Decision {
        if limits.is_empty() {
            return Decision::Now;
        }
        if let Some(fleet) = &self.fleet {
            match fleet.take(key, limits, Some(max_sleep)).await {
                Ok(d) => return d,
                Err(e) => {
                    let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
                    if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                        *warned = Some(Instant::now());
                        tracing::warn!(key, error = %e,
                            "rate limit: the fleet state is unavailable; this gateway counts alone");
                    }
                }
            }
        }
        self.local.take(key, limits, max_sleep)
    }
}

impl Limiter {
    /// How long a message for `key` would wait now (zero: it may go), without taking.
    pub async fn wait(&self, key: &str, limits: &[Rate]) -> Duration {
        if let Some(fleet) = &self.fleet {
            if let Ok(d) = fleet.take(key, limits, None).await {
                return match d {
                    Decision::Now => Duration::ZERO,
                    Decision::After(w) | Decision::Defer(w) => w,
                };
            }
        }
        self.local.wait(key, limits)
    }
}

impl RateLimits {
    /// The wait [`RateLimits::take`] would answer now, without taking.
    pub fn wait(&self, key: &str, limits: &[Rate]) -> Duration {
        match self.take_if(key, limits, None) {
            Decision::Now => Duration::ZERO,
            Decision::After(w) | Decision::Defer(w) => w,
        }
    }

    /// One message for `key` under `limits`.
    pub fn take(&self, key: &str, limits: &[Rate], max_sleep: Duration) -> Decision {
        self.take_if(key, limits, Some(max_sleep))
    }

    fn take_if(&self, key: &str, limits: &[Rate], max_sleep: Option<Duration>) -> Decision {
        if limits.is_empty() {
            return Decision::Now;
        }
        let now = Instant::now();
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        // The wait is the longest any limit asks for.
        let wait = limits
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = tat
                    .get(&(key.to_string(), i))
                    .copied()
                    .unwrap_or(now)
                    .max(now);
                (t.checked_sub(r.tolerance()).unwrap_or(now)).saturating_duration_since(now)
            })
            .max()
            .unwrap_or_default();
        let Some(max_sleep) = max_sleep else {
            return if wait.is_zero() {
                Decision::Now
            } else {
                Decision::Defer(wait)
            };
        };
        if wait > max_sleep {
            return Decision::Defer(wait);
        }
        for (i, r) in limits.iter().enumerate() {
            let t = tat.entry((key.to_string(), i)).or_insert(now);
            *t = (*t).max(now) + r.interval();
        }
        if wait.is_zero() {
            Decision::Now
        } else {
            Decision::After(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rates() {
        assert_eq!(
            Rate::parse("14/s").unwrap(),
            Rate {
                count: 14,
                period: Duration::from_secs(1)
            }
        );
        assert_eq!(
            Rate::parse("1000/h").unwrap().period,
            Duration::from_secs(3600)
        );
        for text in ["14/s", "1000/h", "50000/d", "3/m"] {
            assert_eq!(Rate::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "14", "0/s", "x/s", "5/w"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn burst_of_one_second_then_the_steady_rate() {
        let l = RateLimits::default();
        let r = [Rate::parse("10/s").unwrap()];
        // Ten go at once (one second's worth), the next ones wait about 100 ms more each.
        let now: Vec<Decision> = (0..10).map(|_| l.take("t", &r, MAX_SLEEP)).collect();
        assert!(now.iter().all(|d| *d == Decision::Now), "{now:?}");
        let Decision::After(w1) = l.take("t", &r, MAX_SLEEP) else {
            panic!("no wait")
        };
        let Decision::After(w2) = l.take("t", &r, MAX_SLEEP) else {
            panic!("no wait")
        };
        assert!(w1 <= Duration::from_millis(110) && w2 > w1, "{w1:?} {w2:?}");
        // Another transport is not affected.
        assert_eq!(l.take("u", &r, MAX_SLEEP), Decision::Now);
    }

    #[test]
    fn long_waits_defer_without_taking() {
        let l = RateLimits::default();
        let r = [Rate::parse("1/h").unwrap()];
        assert_eq!(l.take("t", &r, MAX_SLEEP), Decision::Now);
        let Decision::Defer(w) = l.take("t", &r, MAX_SLEEP) else {
            panic!("not deferred")
        };
        assert!(w > Duration::from_secs(3000), "{w:?}");
        let Decision::Defer(w2) = l.take("t", &r, MAX_SLEEP) else {
            panic!("not deferred")
        };
        assert!(w2 <= w, "a deferral takes nothing");
    }
}
