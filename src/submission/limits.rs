//! What one client may take from the submission server: connection slots (in all and
//! per client address, with slots reserved for `trusted_networks`), time (per command,
//! for DATA, for the whole session), junk commands and errors, and the memory its
//! connection holds. Each limit reached gets its reply and counts in
//! `relaygate_submission_limits_total{limit}`.
//!
//! Memory per connection: the read buffer ([`READ_BUFFER`]), one command line (at most
//! [`super::proto::MAX_COMMAND_LINE`]), and pending replies, which are written out before
//! they pass [`OUT_FLUSH_BYTES`]; a client that does not read them within
//! `command_timeout` is disconnected. The message being received (DATA) is bounded by
//! `max_message_size` on its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::proto::Reply;

/// The read buffer of a connection.
pub const READ_BUFFER: usize = 16 * 1024;
/// Pending replies are written out once they reach this size, even while the client has
/// more commands waiting (pipelining).
pub const OUT_FLUSH_BYTES: usize = 16 * 1024;
/// Share of `max_connections` that untrusted clients may take: the rest is kept for
/// clients in `trusted_networks` (the applications the gateway is for).
const UNTRUSTED_SHARE: (usize, usize) = (9, 10);

/// The limits of `[submission]`.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
    pub max_junk_commands: u32,
    pub max_errors: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            session_timeout: Duration::from_secs(1800),
            max_junk_commands: 100,
            max_errors: 20,
            max_connections: 1000,
            max_connections_per_ip: 50,
        }
    }
}

/// Whether pending replies must be written now, before reading the next command: when
/// no complete command is buffered (so pipelined commands are answered in one write), or
/// once the replies reach [`OUT_FLUSH_BYTES`]. A client that sends without reading,
/// ending every write mid-line, can never make them pile up.
pub fn must_flush(buffered: &[u8], pending: usize) -> bool {
    pending >= OUT_FLUSH_BYTES || !buffered.contains(&b'\n')
}

/// Counts a limit reached.
pub fn hit(limit: &'static str) {
    metrics::counter!("relaygate_submission_limits_total", "limit" => limit).increment(1);
}

/// Every limit label, for exporting the series at 0 from start.
pub const LIMIT_LABELS: [&str; 9] = [
    "connections",
    "connections_per_ip",
    "command_timeout",
    "data_timeout",
    "session_timeout",
    "write_timeout",
    "junk_commands",
    "errors",
    "auth_lockout",
];

/// One session's counters.
#[derive(Debug)]
pub struct SessionCounters {
    started: Instant,
    junk: u32,
    errors: u32,
}

impl SessionCounters {
    pub fn new() -> SessionCounters {
        SessionCounters {
            started: Instant::now(),
            junk: 0,
            errors: 0,
        }
    }

    /// Time left to wait for the next command: the command timeout, or less when the
    /// session's own time runs out first. `None` when the session time is up.
    pub fn command_wait(&self, l: &SessionLimits) -> Option<(Duration, &'static str)> {
        let left = l.session_timeout.checked_sub(self.started.elapsed())?;
        if left.is_zero() {
            return None;
        }
        Some(if left < l.command_timeout {
            (left, "session_timeout")
        } else {
            (l.command_timeout, "command_timeout")
        })
    }

    /// A deadline for the DATA phase: its own limit, or the session's end if sooner.
    pub fn data_deadline(&self, l: &SessionLimits) -> (Instant, &'static str) {
        let session_end = self.started + l.session_timeout;
        let data_end = Instant::now() + l.data_timeout;
        if session_end < data_end {
            (session_end, "session_timeout")
        } else {
            (data_end, "data_timeout")
        }
    }

    /// A NOOP, RSET, VRFY, HELP or refused RCPT; the closing reply once over the limit.
    pub fn junk(&mut self, l: &SessionLimits) -> Option<Reply> {
        self.junk += 1;
        (self.junk > l.max_junk_commands).then(|| {
            hit("junk_commands");
            Reply::new(421, "4.7.0", "too many commands without mail, closing")
        })
    }

    /// A message was accepted: the junk count starts over (a long-lived application
    /// connection may RSET between thousands of messages).
    pub fn accepted(&mut self) {
        self.junk = 0;
    }

    /// A syntax or protocol error; the closing reply once at the limit.
    pub fn error(&mut self, l: &SessionLimits) -> Option<Reply> {
        self.errors += 1;
        (self.errors >= l.max_errors).then(|| {
            hit("errors");
            Reply::new(421, "4.7.0", "too many errors, closing")
        })
    }
}

impl Default for SessionCounters {
    fn default() -> Self {
        SessionCounters::new()
    }
}

/// Connections open, in all and per client address.
#[derive(Debug, Default)]
pub struct Connections {
    inner: Mutex<ConnCounts>,
}

#[derive(Debug, Default)]
struct ConnCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection slot; given back on drop.
#[derive(Debug)]
pub struct ConnSlot {
    owner: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.owner.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnCounts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a client, or says which limit refused it. Trusted clients may use
    /// every slot and have no per-address limit; untrusted ones share nine tenths of the
    /// slots and at most `max_connections_per_ip` each.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        trusted: bool,
        l: &SessionLimits,
    ) -> Result<ConnSlot, &'static str> {
        let mut c = self.lock();
        let cap = if trusted {
            l.max_connections
        } else {
            (l.max_connections * UNTRUSTED_SHARE.0 / UNTRUSTED_SHARE.1).max(1)
        };
        if c.total >= cap {
            return Err("connections");
        }
        let mine = c.per_ip.get(&ip).copied().unwrap_or(0);
        if !trusted && mine >= l.max_connections_per_ip {
            return Err("connections_per_ip");
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        Ok(ConnSlot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reserved_for_trusted_clients_and_capped_per_address() {
        let l = SessionLimits {
            max_connections: 10,
            max_connections_per_ip: 3,
            ..Default::default()
        };
        let conns = Arc::new(Connections::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(conns.admit(a, false, &l).unwrap());
        }
        assert_eq!(conns.admit(a, false, &l).unwrap_err(), "connections_per_ip");
        for i in 2..8 {
            let ip: IpAddr = format!("192.0.2.{i}").parse().unwrap();
            held.push(conns.admit(ip, false, &l).unwrap());
        }
        // 9 of 10 taken by untrusted clients: the last one is for the apps.
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(conns.admit(other, false, &l).unwrap_err(), "connections");
        let app: IpAddr = "127.0.0.1".parse().unwrap();
        let slot = conns.admit(app, true, &l).unwrap();
        assert_eq!(conns.admit(app, true, &l).unwrap_err(), "connections");
        drop(slot);
        held.truncate(0);
        assert_eq!(conns.open(), 0);
        assert!(conns.admit(a, false, &l).is_ok());
    }

    #[test]
    fn replies_are_written_before_they_pile_up() {
        // Pipelined commands waiting: replies may wait too, up to the bound.
        assert!(!must_flush(b"NOOP\r\nNO", 100));
        assert!(must_flush(b"NOOP\r\nNO", OUT_FLUSH_BYTES));
        // Only a partial line buffered (a client ending its writes mid-line): write.
        assert!(must_flush(b"NO", 100));
        assert!(must_flush(b"", 100));
    }

    #[test]
    fn junk_and_errors_close_at_their_limits() {
        let l = SessionLimits {
            max_junk_commands: 2,
            max_errors: 2,
            ..Default::default()
        };
        let mut c = SessionCounters::new();
        assert!(c.junk(&l).is_none());
        assert!(c.junk(&l).is_none());
        assert_eq!(c.junk(&l).map(|r| r.code), Some(421));
        assert!(c.error(&l).is_none());
        assert_eq!(c.error(&l).map(|r| r.code), Some(421));
    }

    #[test]
    fn the_session_deadline_shortens_the_command_wait() {
        let l = SessionLimits {
            command_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let c = SessionCounters::new();
        let (wait, which) = c.command_wait(&l).unwrap();
        assert!(wait <= Duration::from_secs(10) && which == "session_timeout");
        let l0 = SessionLimits {
            session_timeout: Duration::ZERO,
            ..l
        };
        assert!(c.command_wait(&l0).is_none());
    }
}
