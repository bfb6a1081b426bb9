//! The retry schedule: first attempt at once, then `first_retry` after the first
//! failure, doubling after each further one (7.5m, 15m, 30m, 1h, 2h, ... by default), or
//! the explicit `queue.retry_schedule` (its last delay repeating), with ±10% jitter so
//! that a burst of failures does not retry in lockstep.

use std::time::Duration;

/// The delays between attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrySchedule {
    /// `first_retry`, doubling after each further failure.
    Doubling(Duration),
    /// `retry_schedule`: the delay after the n-th failure is the n-th entry; the last
    /// one repeats. Never empty.
    Explicit(Vec<Duration>),
}

impl RetrySchedule {
    /// Delay after the `failed`-th failed attempt (1-based), before jitter.
    pub fn delay(&self, failed: u32) -> Duration {
        match self {
            RetrySchedule::Doubling(first) => backoff(*first, failed),
            RetrySchedule::Explicit(list) => {
                let i = (failed.max(1) as usize - 1).min(list.len().saturating_sub(1));
                list.get(i).copied().unwrap_or(Duration::from_secs(450))
            }
        }
    }
}

/// Delay after the `failed`-th failed attempt (1-based), before jitter.
pub fn backoff(first_retry: Duration, failed: u32) -> Duration {
    let shift = failed.saturating_sub(1).min(20);
    first_retry.saturating_mul(1u32 << shift)
}

/// `d` scaled by a random factor in [0.9, 1.1].
pub fn jitter(d: Duration) -> Duration {
    let factor = 0.9 + rand::random::<f64>() * 0.2;
    d.mul_f64(factor)
}

/// When the last attempt will be made, given `failed` attempts done so far and a limit
/// of `max_attempts` (for Will-Retry-Until in a delayed DSN, RFC 3464 §2.3.9).
pub fn last_attempt_at(
    now_ms: i64,
    schedule: &RetrySchedule,
    failed: u32,
    max_attempts: u32,
) -> i64 {
    let mut t = now_ms;
    for n in failed.max(1)..max_attempts {
        t += schedule.delay(n).as_millis() as i64;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling() {
        let f = Duration::from_secs(450);
        let got: Vec<u64> = (1..=5).map(|n| backoff(f, n).as_secs()).collect();
        assert_eq!(got, vec![450, 900, 1800, 3600, 7200]);
    }

    #[test]
    fn jitter_bounds() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(100)).as_secs_f64();
            assert!((90.0..=110.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_until() {
        // 5 failed of 8: attempts 6, 7, 8 remain, after delays b(5), b(6), b(7).
        let f = RetrySchedule::Doubling(Duration::from_secs(1));
        assert_eq!(last_attempt_at(0, &f, 5, 8), (16 + 32 + 64) * 1000);
        assert_eq!(last_attempt_at(0, &f, 8, 8), 0);
    }

    #[test]
    fn explicit_schedule_repeats_its_last_delay() {
        let s = RetrySchedule::Explicit(vec![Duration::from_secs(300), Duration::from_secs(600)]);
        let got: Vec<u64> = (1..=4).map(|n| s.delay(n).as_secs()).collect();
        assert_eq!(got, vec![300, 600, 600, 600]);
        assert_eq!(last_attempt_at(0, &s, 1, 4), (300 + 600 + 600) * 1000);
    }
}
