//! Failed logins on the submission listener: how long each AUTH answer waits, which
//! clients are locked out, and the slots for password checks.
//!
//! Failures are counted per (account, client address) and per client address (IPv6 per
//! /64, the block one host usually holds). The wait before an answer depends only on the
//! failures counted *before* this attempt, so a right and a wrong password are answered
//! after the same time and the timing tells a guesser nothing. Reaching
//! `auth_max_failures` for one account from one address, or `auth_max_failures_per_ip`
//! from one address, locks that key out for `auth_lockout`: AUTH gets `454 4.7.0`
//! whatever the password. Nothing is counted per account alone, so a guesser elsewhere
//! cannot lock the real application out. Addresses in `trusted_networks` are counted per
//! account only: one misconfigured local app must not lock out its neighbours.
//! Operators list and clear lockouts through the admin API (`relaygate lockouts`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A key with no failure for this long is forgotten (unless locked).
const FORGET_AFTER: Duration = Duration::from_secs(900);
/// The wait after the first failure; it doubles with each further one.
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Keys remembered at most, so a flood of names cannot grow the table without bound;
/// when full, forgotten keys are dropped, then the oldest unlocked ones.
const MAX_TRACKED: usize = 20_000;

/// SASL steps that may run at once on the blocking pool: password checks run PBKDF2
/// with the verifier's iteration count, which must not stall the async threads, nor
/// take every core when guessers hammer the listener.
const VERIFY_SLOTS: usize = 2;

/// `[submission] auth_max_failures`, `auth_max_failures_per_ip`, `auth_lockout`.
#[derive(Debug, Clone, Copy)]
pub struct AuthPolicy {
    pub max_failures: u32,
    pub max_failures_per_ip: u32,
    pub lockout: Duration,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            max_failures: 10,
            max_failures_per_ip: 30,
            lockout: Duration::from_secs(900),
        }
    }
}

/// What failures are counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Every login from one address (IPv6: its /64).
    Address(IpAddr),
    /// One account from one address.
    Account(String, IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// The verdict on one finished exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Wait this long before answering (the same for success and failure).
    pub delay: Duration,
    /// The key is locked out: answer `454 4.7.0` whatever the outcome.
    pub locked: bool,
}

/// One counted key, as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct LockoutView {
    /// The client address (`2001:db8::/64` for IPv6).
    pub address: String,
    /// The account, or none for the address as a whole.
    pub account: Option<String>,
    pub failures: u32,
    pub locked: bool,
    /// When the lockout ends (RFC 3339), if locked.
    pub locked_until: Option<String>,
    /// Seconds since the last failure.
    pub last_failure_secs_ago: u64,
}

/// Failed-login bookkeeping for one listener set.
#[derive(Debug)]
pub struct AuthGuard {
    policy: AuthPolicy,
    table: Mutex<HashMap<Key, Record>>,
    /// Held while a SASL step runs on the blocking pool.
    pub verify_slots: Arc<tokio::sync::Semaphore>,
}

impl Default for AuthGuard {
    fn default() -> Self {
        AuthGuard::new(AuthPolicy::default())
    }
}

/// The address failures are counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by
/// its /64.
fn address_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn show_address(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// The wait before answering after `prior` failures.
fn delay_after(prior: u32) -> Duration {
    match prior {
        0 => Duration::ZERO,
        n => FIRST_DELAY
            .saturating_mul(1 << (n - 1).min(10))
            .min(MAX_DELAY),
    }
}

impl Record {
    /// Whether the record still counts at `now`.
    fn live(&self, now: Instant) -> bool {
        match self.locked_until {
            Some(until) => until > now,
            None => now.duration_since(self.last) < FORGET_AFTER,
        }
    }
}

impl AuthGuard {
    pub fn new(policy: AuthPolicy) -> AuthGuard {
        AuthGuard {
            policy,
            table: Mutex::default(),
            verify_slots: Arc::new(tokio::sync::Semaphore::new(VERIFY_SLOTS)),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Record>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before an exchange: whether the client's address is locked out (then AUTH is
    /// refused without checking anything).
    pub fn address_locked(&self, ip: IpAddr, trusted: bool) -> bool {
        if trusted {
            return false;
        }
        let now = Instant::now();
        self.table()
            .get(&Key::Address(address_of(ip)))
            .is_some_and(|r| r.locked_until.is_some_and(|u| u > now))
    }

    /// At the end of an exchange: records its outcome and says when and how to answer.
    /// `username` is the name the client gave, when the mechanism got that far.
    pub fn settle(&self, ip: IpAddr, trusted: bool, username: Option<&str>, ok: bool) -> Settled {
        let now = Instant::now();
        let address = address_of(ip);
        let mut keys = Vec::with_capacity(2);
        if let Some(name) = username {
            keys.push(Key::Account(name.to_string(), address));
        }
        if !trusted {
            keys.push(Key::Address(address));
        }
        let mut table = self.table();
        if table.len() >= MAX_TRACKED {
            prune(&mut table, now);
        }
        let mut prior = 0;
        let mut locked = false;
        for key in &keys {
            if let Some(r) = table.get(key) {
                if r.live(now) {
                    prior = prior.max(r.failures);
                    locked |= r.locked_until.is_some();
                } else {
                    table.remove(key);
                }
            }
        }
        let delay = delay_after(prior);
        if locked {
            return Settled { delay, locked };
        }
        if ok {
            // Only this account's count from this address: a guesser that also holds
            // a valid account must not wipe its address's count by logging in.
            if let Some(key @ Key::Account(..)) = keys.first() {
                table.remove(key);
            }
            return Settled { delay, locked };
        }
        for key in keys {
            let limit = match key {
                Key::Address(_) => self.policy.max_failures_per_ip,
                Key::Account(..) => self.policy.max_failures,
            };
            let r = table.entry(key.clone()).or_insert(Record {
                failures: 0,
                last: now,
                locked_until: None,
            });
            r.failures = r.failures.saturating_add(1);
            r.last = now;
            if r.failures >= limit {
                r.locked_until = Some(now + self.policy.lockout);
                super::limits::hit("auth_lockout");
                let (address, account) = describe(&key);
                tracing::warn!(
                    address = %address,
                    account = account.unwrap_or("-"),
                    failures = r.failures,
                    lockout_secs = self.policy.lockout.as_secs(),
                    "submission: logins locked out after repeated failures (see `relaygate lockouts`)"
                );
            }
        }
        Settled { delay, locked }
    }

    /// Every counted key, locked ones first.
    pub fn list(&self) -> Vec<LockoutView> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut v: Vec<LockoutView> = self
            .table()
            .iter()
            .filter(|(_, r)| r.live(now))
            .map(|(k, r)| {
                let (address, account) = describe(k);
                let locked_until = r.locked_until.map(|u| {
                    let at = wall + u.saturating_duration_since(now);
                    let ms = at
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    crate::model::rfc3339(ms)
                });
                LockoutView {
                    address,
                    account: account.map(str::to_string),
                    failures: r.failures,
                    locked: locked_until.is_some(),
                    locked_until,
                    last_failure_secs_ago: now.duration_since(r.last).as_secs(),
                }
            })
            .collect();
        v.sort_by(|a, b| {
            (b.locked, &a.address, &a.account).cmp(&(a.locked, &b.address, &b.account))
        });
        v
    }

    /// Forgets the counts (and lockouts) matching an address and/or an account; both
    /// `None` clears everything. Returns how many keys were cleared.
    pub fn clear(&self, ip: Option<IpAddr>, account: Option<&str>) -> usize {
        let ip = ip.map(address_of);
        let mut table = self.table();
        let before = table.len();
        table.retain(|k, _| {
            let (k_ip, k_account) = match k {
                Key::Address(a) => (*a, None),
                Key::Account(name, a) => (*a, Some(name.as_str())),
            };
            let ip_match = ip.is_none_or(|i| i == k_ip);
            let account_match = match account {
                None => true,
                Some(want) => k_account == Some(want),
            };
            !(ip_match && account_match)
        });
        before - table.len()
    }
}

fn describe(key: &Key) -> (String, Option<&str>) {
    match key {
        Key::Address(a) => (show_address(*a), None),
        Key::Account(name, a) => (show_address(*a), Some(name.as_str())),
    }
}

/// Drops forgotten keys; if the table is still full, the unlocked ones with the oldest
/// failure, down to three quarters.
fn prune(table: &mut HashMap<Key, Record>, now: Instant) {
    table.retain(|_, r| r.live(now));
    if table.len() < MAX_TRACKED {
        return;
    }
    let mut unlocked: Vec<(Instant, Key)> = table
        .iter()
        .filter(|(_, r)| r.locked_until.is_none())
        .map(|(k, r)| (r.last, k.clone()))
        .collect();
    unlocked.sort_by_key(|(t, _)| *t);
    let excess = table.len().saturating_sub(MAX_TRACKED * 3 / 4);
    for (_, k) in unlocked.into_iter().take(excess) {
        table.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard(max: u32, per_ip: u32) -> AuthGuard {
        AuthGuard::new(AuthPolicy {
            max_failures: max,
            max_failures_per_ip: per_ip,
            lockout: Duration::from_secs(60),
        })
    }

    #[test]
    fn wait_depends_on_history_not_on_the_outcome() {
        let g = guard(100, 100);
        let a = ip("192.0.2.1");
        assert_eq!(g.settle(a, false, Some("app"), false).delay, Duration::ZERO);
        let d: Vec<_> = (0..4)
            .map(|_| g.settle(a, false, Some("app"), false).delay)
            .collect();
        assert!(d.windows(2).all(|w| w[1] > w[0]), "{d:?}");
        // The same history answered with success waits just as long as a failure would.
        let fail_wait = guard_after(5, false);
        let ok_wait = guard_after(5, true);
        assert_eq!(fail_wait, ok_wait);
        assert_eq!(ok_wait, delay_after(5));
    }

    fn guard_after(failures: u32, ok: bool) -> Duration {
        let g = guard(100, 100);
        let a = ip("192.0.2.9");
        for _ in 0..failures {
            g.settle(a, false, Some("app"), false);
        }
        g.settle(a, false, Some("app"), ok).delay
    }

    #[test]
    fn account_and_address_lockouts() {
        let g = guard(3, 5);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(!g.settle(a, false, Some("app"), false).locked);
        }
        // Locked for this account from this address, even with the right password.
        assert!(g.settle(a, false, Some("app"), true).locked);
        // Another address, same account: unaffected (the guesser cannot lock the app out).
        assert!(!g.settle(ip("192.0.2.2"), false, Some("app"), true).locked);
        assert!(!g.address_locked(a, false));
        // Two more failures from the address (other names) lock the whole address.
        g.settle(a, false, Some("x"), false);
        g.settle(a, false, None, false);
        assert!(g.address_locked(a, false));
        assert!(g.settle(a, false, Some("other"), true).locked);
        // Trusted clients are counted per account only.
        assert!(!g.address_locked(a, true));
        assert!(!g.settle(a, true, Some("other"), true).locked);
    }

    #[test]
    fn success_clears_only_its_account() {
        let g = guard(10, 10);
        let a = ip("192.0.2.1");
        g.settle(a, false, Some("guess"), false);
        g.settle(a, false, Some("app"), false);
        g.settle(a, false, Some("app"), true);
        let left = g.list();
        assert!(left.iter().any(|v| v.account.is_none() && v.failures == 2));
        assert!(left.iter().any(|v| v.account.as_deref() == Some("guess")));
        assert!(!left.iter().any(|v| v.account.as_deref() == Some("app")));
    }

    #[test]
    fn ipv6_counted_per_64() {
        let g = guard(10, 2);
        g.settle(ip("2001:db8::1"), false, None, false);
        g.settle(ip("2001:db8::2:3"), false, None, false);
        assert!(g.address_locked(ip("2001:db8::ffff"), false));
        assert!(!g.address_locked(ip("2001:db8:0:1::1"), false));
        assert_eq!(g.list()[0].address, "2001:db8::/64");
    }

    #[test]
    fn list_and_clear() {
        let g = guard(1, 100);
        let a = ip("192.0.2.1");
        g.settle(a, false, Some("app"), false);
        g.settle(ip("192.0.2.7"), false, Some("app"), false);
        let v = g.list();
        assert!(v[0].locked && v[0].locked_until.is_some(), "{v:?}");
        assert_eq!(g.clear(Some(a), Some("app")), 1);
        assert!(!g.settle(a, false, Some("app"), true).locked);
        assert_eq!(g.clear(None, Some("app")), 1);
        assert_eq!(g.clear(None, None), 2, "the two address keys");
        assert!(g.list().is_empty());
    }

    #[test]
    fn table_is_bounded() {
        let g = guard(100, 100);
        for i in 0..(MAX_TRACKED as u32 + 10) {
            g.settle(ip("192.0.2.1"), true, Some(&format!("u{i}")), false);
        }
        assert!(g.table().len() <= MAX_TRACKED);
    }
}
