//! Operator actions on the queue: retry now, hold and release (one message, or rules by
//! recipient domain / account), drop (with or without a DSN), REQUIRETLS and transport
//! overrides. Each change reaches the scheduler at once (it is woken).

use super::holds::{self, HoldRule};
use super::{Queue, Slot, State};
use crate::address::{address_domain, normalize_domain};
use crate::dsn::{Action, DsnRecipient};
use crate::model::{format_id, now_ms, MsgId, RcptState, StoredMessage};
use crate::spool::record::{self, OverridesUpdate};

/// Which messages an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Id(MsgId),
    All,
    /// Recipients at this domain.
    Domain(String),
    /// Messages submitted by this account.
    Account(String),
    /// Recipients whose last attempt went through this transport.
    LastTransport(String),
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no message {0} in the queue")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot save hold rules: {0}")]
    Persist(String),
}

impl Selector {
    /// Normalizes a domain selector.
    pub fn domain(d: &str) -> Result<Selector, OpError> {
        normalize_domain(d)
            .map(Selector::Domain)
            .map_err(|e| OpError::Invalid(e.to_string()))
    }
}

fn selects(sel: &Selector, id: MsgId, account: Option<&str>, r: &crate::model::Recipient) -> bool {
    match sel {
        Selector::Id(want) => id == *want,
        Selector::All => true,
        Selector::Domain(d) => *d == address_domain(&r.address),
        Selector::Account(a) => account == Some(a.as_str()),
        Selector::LastTransport(t) => r.last.as_ref().is_some_and(|l| l.transport == *t),
    }
}

impl State {
    /// Sets every selected, idle, pending recipient due now; returns how many.
    fn make_due_now(&mut self, sel: &Selector) -> Retried {
        let now = now_ms();
        let mut n = Retried::default();
        for e in self.messages.values_mut() {
            let (id, account) = (e.msg.id, e.msg.account.clone());
            for i in 0..e.msg.rcpts.len() {
                let r = &e.msg.rcpts[i];
                if e.slots[i] == Slot::InFlight
                    || !matches!(r.state, RcptState::Pending { .. })
                    || !selects(sel, id, account.as_deref(), r)
                {
                    continue;
                }
                // A held recipient stays held: retry does not release it.
                if let Some(why) = super::held_by(&self.holds, &e.msg, r) {
                    n.held += 1;
                    if !n.held_by.contains(&why) {
                        n.held_by.push(why);
                    }
                    continue;
                }
                if let RcptState::Pending { next_attempt } = &mut e.msg.rcpts[i].state {
                    *next_attempt = (*next_attempt).min(now);
                    n.due += 1;
                }
            }
        }
        self.reindex_all();
        n
    }
}

/// What a retry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retried {
    /// Recipients made due now.
    pub due: usize,
    /// Recipients left waiting because they are held.
    pub held: usize,
    /// What holds them (`message`, `rule domain=x.org`, ...).
    pub held_by: Vec<String>,
}

impl Queue {
    /// One message, as stored.
    pub fn get(&self, id: MsgId) -> Option<StoredMessage> {
        self.lock().messages.get(&id).map(|e| e.msg.clone())
    }

    /// The hold rules in force.
    pub fn hold_rules(&self) -> Vec<HoldRule> {
        self.lock().holds.clone()
    }

    /// Makes the selected recipients due now, except held ones. Says how many of each.
    pub fn retry_now(&self, sel: &Selector) -> Result<Retried, OpError> {
        let n = {
            let mut st = self.lock();
            if let Selector::Id(id) = sel {
                if !st.messages.contains_key(id) {
                    return Err(OpError::NotFound(format_id(*id)));
                }
            }
            st.make_due_now(sel)
        };
        self.wake();
        Ok(n)
    }

    fn set_overrides(
        &self,
        id: MsgId,
        change: impl FnOnce(&mut crate::model::Overrides),
    ) -> Result<(), OpError> {
        let mut st = self.lock();
        let e = st
            .messages
            .get_mut(&id)
            .ok_or_else(|| OpError::NotFound(format_id(id)))?;
        change(&mut e.msg.overrides);
        let rec = record::encode_overrides(&OverridesUpdate {
            id,
            overrides: e.msg.overrides.clone(),
        });
        self.spool.update(vec![rec]);
        st.reindex_all();
        drop(st);
        self.wake();
        Ok(())
    }

    fn save_holds(&self, st: &State) -> Result<(), OpError> {
        match &self.settings.holds_file {
            Some(path) => holds::save(path, &st.holds).map_err(OpError::Persist),
            None => Ok(()),
        }
    }

    /// Holds one message, or adds a hold rule for a domain or an account (which also
    /// holds mail arriving later). Returns the number of recipients now held.
    pub fn hold(&self, sel: &Selector) -> Result<usize, OpError> {
        let rule = match sel {
            Selector::Id(id) => {
                self.set_overrides(*id, |o| o.held = true)?;
                return Ok(self
                    .get(*id)
                    .map(|m| m.rcpts.iter().filter(|r| !r.state.is_final()).count())
                    .unwrap_or(0));
            }
            Selector::All | Selector::LastTransport(_) => {
                return Err(OpError::Invalid(
                    "hold needs a message id, a domain or an account".into(),
                ))
            }
            Selector::Domain(d) => HoldRule {
                domain: Some(d.clone()),
                account: None,
            },
            Selector::Account(a) => HoldRule {
                domain: None,
                account: Some(a.clone()),
            },
        };
        let mut st = self.lock();
        if !st.holds.contains(&rule) {
            st.holds.push(rule);
            self.save_holds(&st)?;
        }
        st.reindex_all();
        Ok(count_selected(&st, sel))
    }

    /// Releases one message, or removes the hold rule for a domain or an account; the
    /// released recipients are due at once. Returns how many recipients were released.
    pub fn release(&self, sel: &Selector) -> Result<usize, OpError> {
        match sel {
            Selector::Id(id) => self.set_overrides(*id, |o| o.held = false)?,
            Selector::LastTransport(_) => {
                return Err(OpError::Invalid(
                    "release needs a message id, a domain, an account or all".into(),
                ))
            }
            Selector::All => {
                let mut st = self.lock();
                st.holds.clear();
                self.save_holds(&st)?;
                for e in st.messages.values_mut() {
                    e.msg.overrides.held = false;
                }
            }
            Selector::Domain(d) => {
                let mut st = self.lock();
                st.holds.retain(|h| h.domain.as_deref() != Some(d.as_str()));
                self.save_holds(&st)?;
            }
            Selector::Account(a) => {
                let mut st = self.lock();
                st.holds
                    .retain(|h| h.account.as_deref() != Some(a.as_str()));
                self.save_holds(&st)?;
            }
        }
        self.retry_now(sel).map(|r| r.due)
    }

    /// Sets or clears (`None`) the REQUIRETLS override of a message.
    pub fn set_requiretls(&self, id: MsgId, value: Option<bool>) -> Result<(), OpError> {
        self.set_overrides(id, |o| o.requiretls = value)
    }

    /// Forces (or with `None`, stops forcing) a transport for a message. The caller
    /// checks that the transport exists.
    pub fn set_transport(&self, id: MsgId, name: Option<String>) -> Result<(), OpError> {
        self.set_overrides(id, |o| o.transport = name)
    }

    /// Removes a message from the queue; with `dsn`, its pending recipients are reported
    /// to the sender as failed. Attempts already in flight finish but change nothing.
    pub async fn drop_message(&self, id: MsgId, dsn: bool) -> Result<usize, OpError> {
        let (msg, body) = {
            let mut st = self.lock();
            let e = st
                .messages
                .remove(&id)
                .ok_or_else(|| OpError::NotFound(format_id(id)))?;
            self.spool.remove(id, e.body, Vec::new());
            st.reindex_all();
            (e.msg, e.body)
        };
        let pending: Vec<DsnRecipient> = msg
            .rcpts
            .iter()
            .filter(|r| !r.state.is_final())
            .map(|r| DsnRecipient {
                address: r.address.clone(),
                orcpt: r.orcpt.clone(),
                diagnostic: "message deleted from the queue by the administrator".into(),
                last_attempt_ms: r.last.as_ref().map_or(now_ms(), |l| l.at),
                ..Default::default()
            })
            .collect();
        tracing::info!(queue_id = %format_id(id), dsn, recipients = pending.len(), "queue: message dropped by the administrator");
        if dsn && !msg.mail_from.is_empty() && !pending.is_empty() {
            if let Err(e) = self
                .send_dsn(&msg, body, Action::Failed, &pending, now_ms())
                .await
            {
                tracing::error!(queue_id = %format_id(id), error = %e, "queue: cannot queue DSN for dropped message");
            }
        }
        Ok(pending.len())
    }
}

fn count_selected(st: &State, sel: &Selector) -> usize {
    st.messages
        .values()
        .flat_map(|e| e.msg.rcpts.iter().map(move |r| (e, r)))
        .filter(|(e, r)| !r.state.is_final() && selects(sel, e.msg.id, e.msg.account.as_deref(), r))
        .count()
}
