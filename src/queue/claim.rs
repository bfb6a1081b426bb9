//! Claiming due work for the scheduler, only as far as delivery slots allow.
//!
//! The scheduler asks for work only when it holds a free global slot. The queue walks its
//! due index oldest first; for each recipient the scheduler says where it would go
//! ([`Placement`]) and whether that destination (and its transport) has a free slot. If
//! it has, the recipient is claimed together with the message's other due recipients
//! for the same destination (one transaction). If not, the recipient is parked under the
//! key that was full (the destination, or the transport): it leaves the due index, so
//! the next walk does not pass over it again, and a destination that is full cannot
//! starve the others. When an attempt ends, the oldest recipient parked under its
//! destination and the oldest under its transport go back to the head of the due index
//! ([`Queue::unpark`]). Parking moves index entries, it copies nothing:
//! memory does not grow with the backlog.

use std::sync::Arc;

use super::{DueKey, DueWork, Queue, Slot};
use crate::model::{MsgId, RcptState, StoredMessage};

/// Where one due recipient would be delivered on this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The concurrency key: the smarthost transport, or `transport/domain` for direct.
    pub destination: Arc<str>,
    /// The transport's name.
    pub transport: Arc<str>,
    /// Which route chose it ("global[0]", "override", "none", ...), for the logs.
    pub route: String,
    /// The route's fallback transports, tried in the same attempt when this one cannot
    /// take the message.
    pub fallback: Vec<Arc<str>>,
    /// Most recipients per transaction through the transport (`max_recipients`); the
    /// others of the message are claimed again, as another transaction.
    pub max_rcpts: Option<usize>,
}

/// What one call of [`Queue::claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// Work to run now; its slots were reserved by `reserve`.
    Work(Box<DueWork>, Placement),
    /// Nothing is due that can run now.
    Idle,
    /// Recipients were parked and more are due: call again (after a yield).
    Again,
}

/// Most recipients parked in one call, so the queue lock is never held long.
const PARK_BATCH: usize = 512;

impl Queue {
    /// Takes the oldest due recipient whose destination has a free slot (`reserve`
    /// reserves it, or names the key that is full), with the message's other due
    /// recipients for the same destination. Recipients that cannot run are parked under
    /// the full key on the way.
    pub fn claim(
        &self,
        now: i64,
        mut place: impl FnMut(&StoredMessage, usize) -> Placement,
        mut reserve: impl FnMut(&Placement) -> Result<(), Arc<str>>,
    ) -> Claim {
        let mut st = self.lock();
        let mut parked = 0;
        loop {
            let Some(&key) = st.due.first() else {
                return Claim::Idle;
            };
            let (t, id, idx) = key;
            if t > now {
                return Claim::Idle;
            }
            if parked >= PARK_BATCH {
                return Claim::Again;
            }
            st.due.remove(&key);
            let Some(e) = st.messages.get(&id) else {
                continue;
            };
            if !is_current(&e.msg, &e.slots, key, Slot::Idle) {
                continue;
            }
            let placement = place(&e.msg, idx);
            if let Err(full) = reserve(&placement) {
                if let Some(e) = st.messages.get_mut(&id) {
                    e.slots[idx] = Slot::Parked;
                }
                st.parked.entry(full).or_default().insert(key);
                parked += 1;
                continue;
            }
            // The message's other due recipients for the same destination ride along.
            let mut rcpts = vec![idx];
            let mut keys: Vec<(usize, DueKey, Slot)> = Vec::new();
            for (j, r) in e.msg.rcpts.iter().enumerate() {
                let RcptState::Pending { next_attempt } = r.state else {
                    continue;
                };
                let slot = e.slots[j];
                if j == idx || next_attempt > now || slot == Slot::InFlight {
                    continue;
                }
                if slot == Slot::Idle && st.rcpt_held(&e.msg, r) {
                    continue;
                }
                if place(&e.msg, j).destination == placement.destination {
                    keys.push((j, (next_attempt, id, j), slot));
                }
            }
            for (j, k, slot) in keys {
                if placement.max_rcpts.is_some_and(|max| rcpts.len() >= max) {
                    break;
                }
                let removed = match slot {
                    Slot::Idle => st.due.remove(&k),
                    _ => st
                        .parked
                        .get_mut(&placement.destination)
                        .is_some_and(|set| set.remove(&k)),
                };
                if removed {
                    rcpts.push(j);
                }
            }
            rcpts.sort_unstable();
            let Some(e) = st.messages.get_mut(&id) else {
                return Claim::Idle;
            };
            for &j in &rcpts {
                e.slots[j] = Slot::InFlight;
            }
            let work = Box::new(DueWork {
                message: e.msg.clone(),
                body: e.body,
                cached: e.cached.clone(),
                rcpts,
            });
            return Claim::Work(work, placement);
        }
    }

    /// A slot under `key` (a destination or a transport) is free again: the oldest
    /// recipient parked under it goes back to the head of the due index.
    pub fn unpark(&self, key: &str) {
        let mut st = self.lock();
        loop {
            let Some(set) = st.parked.get_mut(key) else {
                return;
            };
            let Some(due) = set.pop_first() else {
                st.parked.remove(key);
                return;
            };
            if set.is_empty() {
                st.parked.remove(key);
            }
            let (_, id, idx) = due;
            let Some(e) = st.messages.get_mut(&id) else {
                continue;
            };
            if !is_current(&e.msg, &e.slots, due, Slot::Parked) {
                continue;
            }
            e.slots[idx] = Slot::Idle;
            st.due.insert(due);
            drop(st);
            self.wake();
            return;
        }
    }

    /// Every parked recipient is due again (routes or transports changed, so their
    /// destinations may have too).
    pub fn unpark_all(&self) {
        let mut st = self.lock();
        if st.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut st.parked);
        for key in parked.into_values().flatten() {
            let (_, id, idx) = key;
            if let Some(e) = st.messages.get_mut(&id) {
                if is_current(&e.msg, &e.slots, key, Slot::Parked) {
                    e.slots[idx] = Slot::Idle;
                    st.due.insert(key);
                }
            }
        }
        drop(st);
        self.wake();
    }

    /// Recipients parked, over all destinations.
    pub fn parked_count(&self) -> usize {
        self.lock().parked.values().map(|s| s.len()).sum()
    }

    /// Puts recipients back without an attempt having been made (e.g. on shutdown).
    pub fn unclaim(&self, id: MsgId, rcpts: &[usize]) {
        let mut st = self.lock();
        if let Some(e) = st.messages.get_mut(&id) {
            for &i in rcpts {
                if let Some(s) = e.slots.get_mut(i) {
                    *s = Slot::Idle;
                }
            }
            st.index(id);
        }
    }
}

/// Whether an index key still describes the recipient: pending at that time, in `slot`.
fn is_current(msg: &StoredMessage, slots: &[Slot], key: DueKey, slot: Slot) -> bool {
    let (t, _, idx) = key;
    slots.get(idx) == Some(&slot)
        && matches!(msg.rcpts.get(idx).map(|r| &r.state),
            Some(RcptState::Pending { next_attempt }) if *next_attempt == t)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::model::{now_ms, MailParams};
    use crate::queue::{NewMessage, QueueSettings};
    use crate::spool::Spool;

    async fn queue_with(dir: &std::path::Path, rcpts: &[&str]) -> Queue {
        let (spool, rec) = Spool::open(dir).unwrap();
        let q = Queue::new(
            Arc::new(spool),
            rec,
            QueueSettings {
                hostname: "gw.test".into(),
                max_attempts: 3,
                retry: crate::queue::retry::RetrySchedule::Doubling(
                    std::time::Duration::from_secs(60),
                ),
                delayed_dsn_after: 0,
                holds_file: None,
            },
        );
        for to in rcpts {
            let id = q.next_id();
            q.enqueue(
                id,
                NewMessage {
                    dkim: None,
                    mail_from: "s@s.org".into(),
                    params: MailParams::default(),
                    account: None,
                    client: None,
                    rcpts: vec![(to.to_string(), None, None)],
                    body: b"Subject: t\r\n\r\nhi\r\n".to_vec(),
                },
            )
            .await
            .unwrap();
        }
        q
    }

    fn by_domain(msg: &StoredMessage, idx: usize) -> Placement {
        let d = crate::address::address_domain(&msg.rcpts[idx].address);
        Placement {
            destination: Arc::from(d.as_str()),
            transport: Arc::from("direct"),
            route: "none".into(),
            fallback: Vec::new(),
            max_rcpts: None,
        }
    }

    /// One full destination with a large backlog neither blocks the others nor makes the
    /// queue hand out more work than there are slots.
    #[tokio::test]
    async fn full_destination_is_parked_not_starving_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut rcpts: Vec<String> = (0..1500).map(|i| format!("u{i}@slow.test")).collect();
        rcpts.push("v@fast.test".into());
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let q = queue_with(dir.path(), &refs).await;
        let mut running: HashMap<Arc<str>, usize> = HashMap::new();
        let mut claimed = Vec::new();
        let mut again = 0;
        loop {
            let c = q.claim(now_ms(), by_domain, |p| {
                let n = running.entry(Arc::clone(&p.destination)).or_default();
                if *n >= 2 {
                    return Err(Arc::clone(&p.destination));
                }
                *n += 1;
                Ok(())
            });
            match c {
                Claim::Work(w, p) => claimed.push((w.message.id, p.destination)),
                Claim::Again => again += 1,
                Claim::Idle => break,
            }
        }
        let slow = claimed.iter().filter(|(_, d)| &**d == "slow.test").count();
        let fast = claimed.iter().filter(|(_, d)| &**d == "fast.test").count();
        assert_eq!((slow, fast), (2, 1), "only free slots were claimed");
        assert!(again >= 2, "parking is done in bounded batches");
        assert_eq!(q.parked_count(), 1498);
        assert_eq!(q.counts().in_flight_rcpts, 3);
        // A finished attempt at slow.test lets exactly its oldest parked recipient go.
        let (first_slow, _) = claimed[0].clone();
        q.unclaim(first_slow, &[0]);
        running.insert(Arc::from("slow.test"), 1);
        q.unpark("slow.test");
        let Claim::Work(w, p) = q.claim(now_ms(), by_domain, |_| Ok(())) else {
            panic!("the unparked recipient is due");
        };
        assert_eq!(&*p.destination, "slow.test");
        assert!(w.message.id < claimed[1].0 + 10_000);
        // Oldest first: the unclaimed one (due earliest) comes before the parked ones.
        assert_eq!(w.message.id, first_slow);
        q.unpark("slow.test");
        let Claim::Work(w2, _) = q.claim(now_ms(), by_domain, |_| Ok(())) else {
            panic!("the next parked recipient is due");
        };
        assert!(w2.message.id > claimed[1].0, "parked in due order");
        // Routes changed: everything parked is due again.
        q.unpark_all();
        assert_eq!(q.parked_count(), 0);
    }

    /// A recipient held back by its transport's limit (not its destination's) comes back
    /// when any attempt through that transport ends, not only one at its destination.
    #[tokio::test]
    async fn transport_limit_parks_under_the_transport() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue_with(dir.path(), &["a1@a.test", "b1@b.test", "a2@a.test"]).await;
        // One slot per destination, one for the transport.
        let running = std::cell::RefCell::new((HashMap::<Arc<str>, usize>::new(), 0usize));
        let reserve = |p: &Placement| {
            let mut r = running.borrow_mut();
            if r.0.get(&p.destination).copied().unwrap_or(0) >= 1 {
                return Err(Arc::clone(&p.destination));
            }
            if r.1 >= 1 {
                return Err(Arc::clone(&p.transport));
            }
            *r.0.entry(Arc::clone(&p.destination)).or_default() += 1;
            r.1 += 1;
            Ok(())
        };
        let next = || loop {
            match q.claim(now_ms(), by_domain, reserve) {
                Claim::Work(w, p) => return Some((w, p)),
                Claim::Again => continue,
                Claim::Idle => return None,
            }
        };
        let (w1, p1) = next().unwrap();
        assert_eq!(w1.message.rcpts[0].address, "a1@a.test");
        assert!(next().is_none(), "b1 and a2 wait");
        assert_eq!(q.parked_count(), 2);
        // a1's attempt ends: its slots are free, and both of its keys are unparked.
        q.unclaim(w1.message.id, &[0]);
        q.drop_message(w1.message.id, false).await.unwrap();
        *running.borrow_mut() = (HashMap::new(), 0);
        q.unpark(&p1.destination);
        q.unpark(&p1.transport);
        let (w2, _) = next().unwrap();
        assert_eq!(
            w2.message.rcpts[0].address, "b1@b.test",
            "the recipient parked under the transport runs"
        );
    }
}
