//! The queue: every message not yet finished, one entry per recipient, with a due-time
//! index so the scheduler finds what to send next without scanning everything.
//!
//! The in-memory state mirrors the spool. Each change is applied in memory and appended
//! to the spool while the queue lock is held, so the spool's order of records is the
//! order of the changes. A new message is in the queue only once it is durable.
//!
//! What happens after an attempt is decided in one place, [`decide`]: delivered, retried
//! later (doubling back-off, a delayed DSN after the configured attempt), or failed with a
//! DSN to the sender (never for a null sender). The scheduler (`scheduler.rs`) takes due
//! recipients, groups them into transactions and runs them.

mod attempt_metrics;
pub mod body_cache;
mod claim;
mod dsn_out;
pub mod health;
pub mod holds;
mod ops;
pub mod rate;
pub mod retry;
pub mod scheduler;

pub use claim::{Claim, Placement};
pub use ops::{OpError, Retried, Selector};

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::dsn::{self, Action, DsnRecipient};
use crate::model::{
    format_id, now_ms, AttemptInfo, MailParams, MsgId, Overrides, RcptState, Recipient,
    StoredMessage,
};
use crate::spool::record::{self, RecipientUpdate};
use crate::spool::{BodyRef, RecoveredMessages, Spool, SpoolError, WriteIntent};

/// Queue behaviour from the config.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub hostname: String,
    pub max_attempts: u32,
    pub retry: retry::RetrySchedule,
    /// Attempt after which a delayed DSN goes out (0: never).
    pub delayed_dsn_after: u32,
    /// Where hold rules are kept (`None`: in memory only).
    pub holds_file: Option<std::path::PathBuf>,
}

/// A message as handed over by the submission server.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub mail_from: String,
    pub params: MailParams,
    pub account: Option<String>,
    pub client: Option<String>,
    /// (address, NOTIFY, ORCPT)
    pub rcpts: Vec<(String, Option<String>, Option<String>)>,
    pub body: Vec<u8>,
    /// DKIM signatures of the body (see `StoredMessage::dkim`).
    pub dkim: Option<String>,
}

/// The verdict of one attempt for one recipient, as the transport layer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Temporary,
    Permanent,
    /// Not attempted: held back (a rate limit) until this time (unix ms). Not an
    /// attempt, not recorded, no DSN.
    Deferred(i64),
}

/// One recipient's result of an attempt.
#[derive(Debug, Clone)]
pub struct RcptResult {
    pub index: usize,
    pub verdict: Verdict,
    pub info: AttemptInfo,
}

/// Due recipients of one message, handed to the scheduler.
#[derive(Debug, Clone)]
pub struct DueWork {
    pub message: StoredMessage,
    pub body: BodyRef,
    /// The body itself, when it is still in memory from its acceptance.
    pub cached: Option<Arc<body_cache::CachedBody>>,
    pub rcpts: Vec<usize>,
}

/// Where a pending recipient stands with the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// In the due index (when not held).
    Idle,
    /// Due, but its destination had no free delivery slot: waiting in `parked`.
    Parked,
    /// An attempt is running.
    InFlight,
}

struct Entry {
    msg: StoredMessage,
    body: BodyRef,
    /// The body in memory until the first attempt is over (`body_cache`).
    cached: Option<Arc<body_cache::CachedBody>>,
    slots: Vec<Slot>,
}

impl Entry {
    fn new(msg: StoredMessage, body: BodyRef) -> Entry {
        let slots = vec![Slot::Idle; msg.rcpts.len()];
        Entry {
            msg,
            body,
            cached: None,
            slots,
        }
    }

    fn idle(&self) -> bool {
        self.slots.iter().all(|s| *s != Slot::InFlight)
    }
}

/// A due-index key: (due time ms, message, recipient index).
type DueKey = (i64, MsgId, usize);

#[derive(Default)]
struct State {
    messages: HashMap<MsgId, Entry>,
    /// Pending, idle, unheld recipients, oldest due first.
    due: BTreeSet<DueKey>,
    /// Due recipients waiting for a free slot, under the key that was full (their
    /// destination or their transport).
    parked: HashMap<std::sync::Arc<str>, BTreeSet<DueKey>>,
    holds: Vec<holds::HoldRule>,
}

/// Why a recipient is held: the operator held its message, or a hold rule matches it.
pub fn held_by(holds: &[holds::HoldRule], msg: &StoredMessage, rcpt: &Recipient) -> Option<String> {
    if msg.overrides.held {
        return Some("message".into());
    }
    if holds.is_empty() {
        return None;
    }
    let domain = crate::address::address_domain(&rcpt.address);
    holds
        .iter()
        .find(|h| h.matches(msg.account.as_deref(), &domain))
        .map(holds::HoldRule::describe)
}

impl State {
    fn rcpt_held(&self, msg: &StoredMessage, rcpt: &Recipient) -> bool {
        held_by(&self.holds, msg, rcpt).is_some()
    }

    fn index(&mut self, id: MsgId) {
        let Some(e) = self.messages.get(&id) else {
            return;
        };
        let mut due = Vec::new();
        for (i, r) in e.msg.rcpts.iter().enumerate() {
            if let RcptState::Pending { next_attempt } = r.state {
                if e.slots[i] == Slot::Idle && !self.rcpt_held(&e.msg, r) {
                    due.push((next_attempt, id, i));
                }
            }
        }
        self.due.extend(due);
    }

    /// Rebuilds the due index from scratch (after hold changes); parked recipients are
    /// due again too.
    fn reindex_all(&mut self) {
        self.due.clear();
        self.parked.clear();
        for e in self.messages.values_mut() {
            for s in e.slots.iter_mut() {
                if *s == Slot::Parked {
                    *s = Slot::Idle;
                }
            }
        }
        let ids: Vec<MsgId> = self.messages.keys().copied().collect();
        for id in ids {
            self.index(id);
        }
    }
}

/// Counts for metrics and health.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueCounts {
    pub messages: usize,
    pub pending_rcpts: usize,
    pub in_flight_rcpts: usize,
    pub held_messages: usize,
    pub oldest_received_ms: Option<i64>,
}

pub struct Queue {
    spool: Arc<Spool>,
    settings: QueueSettings,
    state: Mutex<State>,
    wake: Notify,
    last_id: AtomicU64,
    /// Bodies of just-accepted messages, for their first attempt.
    bodies: Arc<body_cache::BodyCache>,
}

/// What to do with a recipient after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub rcpt: Recipient,
    pub dsn: Option<Action>,
}

/// The one place that decides between delivered, retry and failure for a recipient.
pub fn decide(
    current: &Recipient,
    verdict: Verdict,
    info: AttemptInfo,
    settings: &QueueSettings,
    null_sender: bool,
    now: i64,
) -> Decision {
    let mut rcpt = current.clone();
    if let Verdict::Deferred(until) = verdict {
        rcpt.state = RcptState::Pending {
            next_attempt: until,
        };
        return Decision { rcpt, dsn: None };
    }
    // A reply classified throttle (docs/replies.md) is the transport asking us to slow
    // down: the attempt is recorded but does not count against the recipient.
    let throttled = verdict == Verdict::Temporary
        && info.result.as_ref().and_then(|r| r.reason.as_deref()) == Some("throttle");
    if !throttled {
        rcpt.attempts = current.attempts.saturating_add(1);
    }
    rcpt.record_attempt(info);
    let failure_dsn =
        |r: &Recipient| (!null_sender && r.wants_notify("FAILURE")).then_some(Action::Failed);
    match verdict {
        Verdict::Delivered => {
            rcpt.state = RcptState::Delivered { at: now };
            Decision { rcpt, dsn: None }
        }
        Verdict::Permanent => {
            rcpt.state = RcptState::Failed { at: now };
            let dsn = failure_dsn(&rcpt);
            Decision { rcpt, dsn }
        }
        Verdict::Temporary if rcpt.attempts >= settings.max_attempts => {
            rcpt.state = RcptState::Failed { at: now };
            let dsn = failure_dsn(&rcpt);
            Decision { rcpt, dsn }
        }
        Verdict::Temporary => {
            let delay = retry::jitter(settings.retry.delay(rcpt.attempts));
            rcpt.state = RcptState::Pending {
                next_attempt: now + delay.as_millis() as i64,
            };
            let delayed_due = settings.delayed_dsn_after > 0
                && rcpt.attempts >= settings.delayed_dsn_after
                && !rcpt.delayed_dsn_sent
                && !null_sender
                && rcpt.wants_notify("DELAY");
            let dsn = if delayed_due {
                rcpt.delayed_dsn_sent = true;
                Some(Action::Delayed)
            } else {
                None
            };
            Decision { rcpt, dsn }
        }
        // Handled above.
        Verdict::Deferred(until) => {
            rcpt.state = RcptState::Pending {
                next_attempt: until,
            };
            Decision { rcpt, dsn: None }
        }
    }
}

impl Queue {
    /// Builds the queue from what the spool recovered.
    pub fn new(spool: Arc<Spool>, recovered: RecoveredMessages, settings: QueueSettings) -> Queue {
        let mut state = State {
            messages: HashMap::with_capacity(recovered.len()),
            ..Default::default()
        };
        if let Some(path) = &settings.holds_file {
            match holds::load(path) {
                Ok(rules) => state.holds = rules,
                Err(e) => {
                    tracing::error!(error = %e, "queue: cannot read hold rules; starting without them")
                }
            }
        }
        let mut max_id = 0;
        let mut due_now = 0usize;
        for (_, r) in recovered {
            max_id = max_id.max(r.message.id);
            if r.message.is_done() {
                continue;
            }
            let id = r.message.id;
            due_now += r
                .message
                .rcpts
                .iter()
                .filter(|x| !x.state.is_final())
                .count();
            state.messages.insert(id, Entry::new(r.message, r.body));
            state.index(id);
        }
        if !state.messages.is_empty() {
            tracing::info!(
                messages = state.messages.len(),
                recipients = due_now,
                "queue: recovered from spool"
            );
        }
        Queue {
            spool,
            settings,
            state: Mutex::new(state),
            wake: Notify::new(),
            last_id: AtomicU64::new(max_id),
            bodies: body_cache::BodyCache::new(body_cache::BODY_CACHE_BYTES),
        }
    }

    /// Body bytes held in memory for first attempts.
    pub fn cached_body_bytes(&self) -> usize {
        self.bodies.used()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// A fresh id, larger than every id seen before.
    pub fn next_id(&self) -> MsgId {
        let floor = (now_ms().max(0) as u64) << 12;
        let mut cur = self.last_id.load(Ordering::Relaxed);
        loop {
            let next = floor.max(cur + 1);
            match self.last_id.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Stores a message durably, then queues its recipients for delivery now.
    pub async fn enqueue(&self, id: MsgId, new: NewMessage) -> Result<MsgId, SpoolError> {
        self.enqueue_announced(id, new, None).await
    }

    /// Announces a message to be enqueued soon (a submission receiving its body), so the
    /// spool may gather its flush with others (see [`crate::spool::WriteIntent`]).
    pub fn announce(&self) -> WriteIntent {
        self.spool.intent()
    }

    /// [`Queue::enqueue`] of a message announced with `intent`.
    pub async fn enqueue_announced(
        &self,
        id: MsgId,
        new: NewMessage,
        intent: Option<WriteIntent>,
    ) -> Result<MsgId, SpoolError> {
        let now = now_ms();
        let msg = StoredMessage {
            id,
            received_at: now,
            mail_from: new.mail_from,
            params: new.params,
            account: new.account,
            client: new.client,
            size: new.body.len() as u64,
            overrides: Overrides::default(),
            rcpts: new
                .rcpts
                .into_iter()
                .map(|(address, notify, orcpt)| Recipient {
                    address,
                    notify,
                    orcpt,
                    state: RcptState::Pending { next_attempt: now },
                    attempts: 0,
                    last: None,
                    history: Vec::new(),
                    delayed_dsn_sent: false,
                })
                .collect(),
            dkim: new.dkim,
        };
        let body = self.spool.add_message(&msg, &new.body, intent).await?;
        // Kept in memory for the first attempt, when the budget allows.
        let cached = self.bodies.admit(Arc::from(new.body));
        {
            let mut st = self.lock();
            let mut entry = Entry::new(msg, body);
            entry.cached = cached;
            st.messages.insert(id, entry);
            st.index(id);
        }
        self.wake.notify_one();
        Ok(id)
    }

    /// Waits until something may have become due.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Wakes the scheduler (after an admin change, for instance).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Earliest due time of an idle pending recipient.
    pub fn next_due(&self) -> Option<i64> {
        self.lock().due.iter().next().map(|&(t, _, _)| t)
    }

    /// Records the results of an attempt: sends the DSNs that are due (durably, before
    /// the failure is recorded), updates the recipients, and drops the message when
    /// every recipient is final.
    pub async fn finish(&self, id: MsgId, results: Vec<RcptResult>) {
        let now = now_ms();
        let (decisions, original, body_ref) = {
            let st = self.lock();
            let Some(e) = st.messages.get(&id) else {
                return;
            };
            let null_sender = e.msg.mail_from.is_empty();
            let decisions: Vec<(usize, Decision)> = results
                .into_iter()
                .filter_map(|r| {
                    let current = e.msg.rcpts.get(r.index)?;
                    Some((
                        r.index,
                        decide(current, r.verdict, r.info, &self.settings, null_sender, now),
                    ))
                })
                .collect();
            (decisions, e.msg.clone(), e.body)
        };

        if original.mail_from.is_empty() && original.params.smtputf8 {
            self.downgrade_refused_dsn(&original, body_ref, &decisions)
                .await;
        }
        for action in [Action::Failed, Action::Delayed] {
            let rcpts: Vec<DsnRecipient> = decisions
                .iter()
                .filter(|(_, d)| d.dsn == Some(action))
                .map(|(_, d)| self.dsn_recipient(&d.rcpt, action, now))
                .collect();
            if rcpts.is_empty() {
                continue;
            }
            if let Err(e) = self
                .send_dsn(&original, body_ref, action, &rcpts, now)
                .await
            {
                tracing::error!(queue_id = %format_id(id), error = %e, "queue: cannot queue DSN");
            }
        }
        for (_, d) in &decisions {
            if d.rcpt.state.is_final()
                && d.dsn.is_none()
                && matches!(d.rcpt.state, RcptState::Failed { .. })
            {
                tracing::info!(queue_id = %format_id(id), rcpt = %d.rcpt.address,
                    "queue: recipient failed; no DSN (null sender or NOTIFY)");
            }
        }

        let mut st = self.lock();
        let Some(e) = st.messages.get_mut(&id) else {
            return;
        };
        let mut records = Vec::with_capacity(decisions.len() + 1);
        for (index, d) in decisions {
            if let Some(slot) = e.msg.rcpts.get_mut(index) {
                *slot = d.rcpt.clone();
                if let Some(s) = e.slots.get_mut(index) {
                    *s = Slot::Idle;
                }
                records.push(record::encode_recipient(&RecipientUpdate {
                    id,
                    index,
                    rcpt: d.rcpt,
                }));
            }
        }
        let done = e.msg.is_done();
        let body = e.body;
        // The first attempt is over: retries read the spool.
        e.cached = None;
        // Durability of these records is not awaited: losing them in a crash means an
        // extra attempt (at-least-once), never a lost message.
        if done && e.idle() {
            st.messages.remove(&id);
            self.spool.remove(id, body, records);
        } else {
            st.index(id);
            self.spool.update(records);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// A copy of every message, for the admin API.
    pub fn list(&self) -> Vec<StoredMessage> {
        let st = self.lock();
        let mut v: Vec<StoredMessage> = st.messages.values().map(|e| e.msg.clone()).collect();
        v.sort_by_key(|m| m.id);
        v
    }

    pub fn counts(&self) -> QueueCounts {
        let st = self.lock();
        let mut c = QueueCounts {
            messages: st.messages.len(),
            ..Default::default()
        };
        for e in st.messages.values() {
            // Held by the operator, or a pending recipient held by a rule.
            if e.msg.overrides.held
                || e.msg
                    .rcpts
                    .iter()
                    .any(|r| !r.state.is_final() && st.rcpt_held(&e.msg, r))
            {
                c.held_messages += 1;
            }
            c.oldest_received_ms = Some(
                c.oldest_received_ms
                    .map_or(e.msg.received_at, |o: i64| o.min(e.msg.received_at)),
            );
            for (i, r) in e.msg.rcpts.iter().enumerate() {
                if !r.state.is_final() {
                    if e.slots[i] == Slot::InFlight {
                        c.in_flight_rcpts += 1;
                    } else {
                        c.pending_rcpts += 1;
                    }
                }
            }
        }
        c
    }

    /// Deletes spool segments nobody needs; when an old segment is kept alive by a few
    /// long-lived messages, writes those again at the head so it can go next time.
    pub async fn housekeeping(&self) {
        let Some(segment) = self.spool.collect() else {
            return;
        };
        let candidates: Vec<(MsgId, BodyRef)> = {
            let st = self.lock();
            st.messages
                .iter()
                .filter(|(_, e)| e.body.segment == segment && e.idle())
                .map(|(&id, e)| (id, e.body))
                .collect()
        };
        for (id, old) in candidates {
            let body = match self.spool.read_body(old).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(queue_id = %format_id(id), error = %e, "spool: relocation read failed");
                    continue;
                }
            };
            let written = {
                let st = self.lock();
                let Some(e) = st.messages.get(&id) else {
                    continue;
                };
                if e.body != old || !e.idle() {
                    continue;
                }
                // Submitted under the lock, so a later change's records come after it.
                self.spool.relocate(&e.msg, &body)
            };
            let new_ref = match written.await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(queue_id = %format_id(id), error = %e, "spool: relocation write failed");
                    continue;
                }
            };
            let mut st = self.lock();
            if let Some(e) = st.messages.get_mut(&id) {
                if e.body == old {
                    e.body = new_ref;
                    self.spool.commit_relocation(old, new_ref);
                }
            }
        }
    }

    /// Time until the next due recipient, capped.
    pub fn sleep_hint(&self, cap: Duration) -> Duration {
        match self.next_due() {
            Some(t) => {
                let wait = t - now_ms();
                if wait <= 0 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(wait as u64).min(cap)
                }
            }
            None => cap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> QueueSettings {
        QueueSettings {
            hostname: "gw.test".into(),
            max_attempts: 6,
            retry: retry::RetrySchedule::Doubling(Duration::from_secs(60)),
            delayed_dsn_after: 5,
            holds_file: None,
        }
    }

    fn rcpt(attempts: u32) -> Recipient {
        Recipient {
            address: "r@x.org".into(),
            notify: None,
            orcpt: None,
            state: RcptState::Pending { next_attempt: 0 },
            attempts,
            last: None,
            history: Vec::new(),
            delayed_dsn_sent: false,
        }
    }

    fn info() -> AttemptInfo {
        AttemptInfo {
            via: None,
            at: 1,
            transport: "t".into(),
            remote: None,
            reply: "451 later".into(),
            tls: None,
            dialed: Default::default(),
            result: None,
        }
    }

    #[test]
    fn a_deferral_is_not_an_attempt() {
        let s = settings();
        let d = decide(&rcpt(2), Verdict::Deferred(5000), info(), &s, false, 1000);
        assert_eq!(d.rcpt.state, RcptState::Pending { next_attempt: 5000 });
        assert_eq!(d.rcpt.attempts, 2);
        assert!(d.rcpt.last.is_none() && d.rcpt.history.is_empty());
        assert_eq!(d.dsn, None);
    }

    #[test]
    fn decisions() {
        let s = settings();
        let d = decide(&rcpt(0), Verdict::Delivered, info(), &s, false, 1000);
        assert_eq!(d.rcpt.state, RcptState::Delivered { at: 1000 });
        assert_eq!(d.dsn, None);

        let d = decide(&rcpt(0), Verdict::Permanent, info(), &s, false, 1000);
        assert_eq!(d.dsn, Some(Action::Failed));
        let d = decide(&rcpt(0), Verdict::Permanent, info(), &s, true, 1000);
        assert_eq!(d.dsn, None, "never a DSN for a null sender");

        let d = decide(&rcpt(0), Verdict::Temporary, info(), &s, false, 1000);
        match d.rcpt.state {
            RcptState::Pending { next_attempt } => {
                assert!(
                    (1000 + 54_000..=1000 + 66_000).contains(&next_attempt),
                    "{next_attempt}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.dsn, None);

        let d = decide(&rcpt(4), Verdict::Temporary, info(), &s, false, 1000);
        assert_eq!(d.dsn, Some(Action::Delayed));
        assert!(d.rcpt.delayed_dsn_sent);
        let d2 = decide(&d.rcpt, Verdict::Temporary, info(), &s, false, 1000);
        assert_eq!(d2.dsn, Some(Action::Failed));
        assert!(matches!(d2.rcpt.state, RcptState::Failed { .. }));
        assert_eq!(d2.rcpt.attempts, 6);
    }

    #[tokio::test]
    async fn enqueue_take_finish() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rec) = Spool::open(dir.path()).unwrap();
        let q = Queue::new(Arc::new(spool), rec, settings());
        let id = q.next_id();
        q.enqueue(
            id,
            NewMessage {
                dkim: None,
                mail_from: "s@s.org".into(),
                params: MailParams::default(),
                account: None,
                client: None,
                rcpts: vec![
                    ("a@x.org".into(), None, None),
                    ("b@x.org".into(), None, None),
                ],
                body: b"Subject: t\r\n\r\nhi\r\n".to_vec(),
            },
        )
        .await
        .unwrap();
        let place = |_: &StoredMessage, _: usize| Placement {
            destination: "t".into(),
            transport: "t".into(),
            route: "none".into(),
            fallback: Vec::new(),
            max_rcpts: None,
        };
        let Claim::Work(work, _) = q.claim(now_ms(), place, |_| Ok(())) else {
            panic!("work expected");
        };
        assert_eq!(
            work.rcpts,
            vec![0, 1],
            "one transaction for one destination"
        );
        assert!(
            matches!(q.claim(now_ms(), place, |_| Ok(())), Claim::Idle),
            "in flight is not due again"
        );
        q.finish(
            id,
            vec![
                RcptResult {
                    index: 0,
                    verdict: Verdict::Delivered,
                    info: info(),
                },
                RcptResult {
                    index: 1,
                    verdict: Verdict::Permanent,
                    info: AttemptInfo {
                        reply: "550 5.1.1 no".into(),
                        result: Some(crate::model::ResultInfo {
                            code: 550,
                            enhanced: Some([5, 1, 1]),
                            stage: Some("RCPT TO".into()),
                            remote_reply: true,
                            reason: Some("recipient".into()),
                            ..Default::default()
                        }),
                        ..info()
                    },
                },
            ],
        )
        .await;
        let list = q.list();
        assert_eq!(list.len(), 1, "only the DSN is left");
        assert_eq!(list[0].mail_from, "");
        assert_eq!(list[0].rcpts[0].address, "s@s.org");
    }
}
