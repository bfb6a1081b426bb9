//! The scheduler: takes due recipients from the queue, picks each one's route for this
//! attempt, groups them into transactions, and runs those within the concurrency limits
//! (global, and per destination). Results go back to the queue, which decides what
//! happens next.
//!
//! Grouping: recipients of one message with the same destination share one batch; the
//! transport says what a destination is (one per smarthost, one per recipient domain
//! for direct delivery). Every transport is reached through the one seam,
//! `relaygate_transports::Transport`: the scheduler knows no transport kind, and the
//! metrics a kind owns are emitted by it. Each recipient's structured result is kept
//! as data in its attempt record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relaygate_transports::direct::DialedIps;
use relaygate_transports::transport::RcptResult as TransportResult;
use relaygate_transports::{Batch, EnhancedCode, OutboundMessage, OutboundRcpt};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::attempt_metrics::{Attempt, AttemptMetrics, Outcome};
use super::{Claim, Placement, Queue, RcptResult, Verdict};
use crate::address::{address_domain, orcpt_xtext};
use crate::model::{format_id, now_ms, AttemptInfo, MailParams, ResultInfo, StoredMessage};
use crate::routes::{select, select_usable, RouteQuery};
use crate::snapshot::{Snapshot, SnapshotCell, DIRECT};

/// The concurrency limits of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Attempts running at once, in all.
    pub global: usize,
    /// Attempts running at once through one transport.
    pub per_transport: usize,
    /// Attempts running at once to one destination (a smarthost, or a domain through a
    /// direct transport).
    pub per_destination: usize,
}

/// Attempts running per destination and per transport; an entry goes at zero, so the
/// maps hold only what is running.
#[derive(Default)]
struct Running {
    destinations: HashMap<Arc<str>, usize>,
    transports: HashMap<Arc<str>, usize>,
}

pub struct Scheduler {
    queue: Arc<Queue>,
    snapshot: SnapshotCell,
    /// Transport health (circuit breakers).
    health: Arc<super::health::Health>,
    /// Rate limits per transport.
    rates: Arc<super::rate::Limiter>,
    global: Arc<Semaphore>,
    limits: Limits,
    running: Mutex<Running>,
    metrics: AttemptMetrics,
}

/// One transaction to run.
struct Job {
    message: Arc<StoredMessage>,
    body: crate::spool::BodyRef,
    /// The body in memory, for a first attempt (else it is read from the spool).
    cached: Option<Arc<super::body_cache::CachedBody>>,
    rcpts: Vec<usize>,
    transport: String,
    /// Which route chose the transport ("global[0]", "account[1]", "override", "none").
    route: String,
    placement: Placement,
}

impl Scheduler {
    pub fn new(
        queue: Arc<Queue>,
        snapshot: SnapshotCell,
        limits: Limits,
        health: Arc<super::health::Health>,
        rates: Arc<super::rate::Limiter>,
    ) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            queue,
            snapshot,
            health,
            rates,
            global: Arc::new(Semaphore::new(limits.global)),
            limits,
            running: Mutex::new(Running::default()),
            metrics: AttemptMetrics::new(),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until `shutdown` turns true, then waits (bounded) for deliveries in flight.
    ///
    /// Work is claimed only with a free global slot in hand, and only for a destination
    /// (and transport) with a free slot: at most `global` attempts exist at any time,
    /// however large the backlog.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut generation = self.snapshot.generation();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let permit = tokio::select! {
                p = Arc::clone(&self.global).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.changed() => continue,
            };
            let now_generation = self.snapshot.generation();
            if now_generation != generation {
                // Routes or transports changed: parked recipients may go elsewhere now.
                generation = now_generation;
                self.queue.unpark_all();
            }
            let snap = self.snapshot.get();
            let health = &self.health;
            let claim = self.queue.claim(
                now_ms(),
                |msg, idx| placement(&snap, health, msg, idx),
                |p| self.reserve(p),
            );
            drop(snap);
            match claim {
                Claim::Work(work, placement) => {
                    let job = Job {
                        message: Arc::new(work.message),
                        body: work.body,
                        cached: work.cached,
                        rcpts: work.rcpts,
                        transport: placement.transport.to_string(),
                        route: placement.route.clone(),
                        placement,
                    };
                    let me = Arc::clone(&self);
                    tokio::spawn(async move { me.run_job(job, permit).await });
                }
                Claim::Again => {
                    drop(permit);
                    tokio::task::yield_now().await;
                }
                Claim::Idle => {
                    drop(permit);
                    let hint = self.queue.sleep_hint(Duration::from_secs(1));
                    tokio::select! {
                        _ = tokio::time::sleep(hint) => {}
                        _ = self.queue.woken() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        let drained = tokio::time::timeout(
            Duration::from_secs(30),
            self.global.acquire_many(self.limits.global as u32),
        )
        .await;
        if drained.is_err() {
            tracing::warn!("scheduler: deliveries still running at shutdown; they will be retried after restart");
        }
    }

    /// Takes a slot at the placement's destination and transport, if both have one;
    /// otherwise names the one that is full.
    fn reserve(&self, p: &Placement) -> Result<(), Arc<str>> {
        let mut r = self.running();
        let d = r.destinations.get(&p.destination).copied().unwrap_or(0);
        if d >= self.limits.per_destination {
            return Err(Arc::clone(&p.destination));
        }
        let t = r.transports.get(&p.transport).copied().unwrap_or(0);
        if t >= self.limits.per_transport {
            return Err(Arc::clone(&p.transport));
        }
        *r.destinations
            .entry(Arc::clone(&p.destination))
            .or_insert(0) += 1;
        *r.transports.entry(Arc::clone(&p.transport)).or_insert(0) += 1;
        Ok(())
    }

    /// Gives back the slots [`Scheduler::reserve`] took.
    fn release(&self, p: &Placement) {
        let mut guard = self.running();
        let r = &mut *guard;
        for (map, key) in [
            (&mut r.destinations, &p.destination),
            (&mut r.transports, &p.transport),
        ] {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }

    /// Attempts running now (for tests and metrics).
    pub fn running_count(&self) -> usize {
        self.limits.global - self.global.available_permits()
    }

    async fn run_job(&self, job: Job, _global: OwnedSemaphorePermit) {
        let started = Instant::now();
        let results = self.attempt(&job).await;
        let elapsed = started.elapsed();
        for r in &results {
            let rcpt = &job.message.rcpts[r.index];
            let result = match r.verdict {
                Verdict::Delivered => Outcome::Delivered,
                Verdict::Temporary => Outcome::Temporary,
                Verdict::Permanent => Outcome::Permanent,
                // Held back by a rate limit: not an attempt.
                Verdict::Deferred(_) => continue,
            };
            // The transport that took this attempt: a fallback's, when the route's
            // could not.
            let transport = if r.info.transport.is_empty() {
                job.transport.as_str()
            } else {
                r.info.transport.as_str()
            };
            tracing::info!(
                queue_id = %format_id(job.message.id),
                rcpt = %rcpt.address,
                attempt = rcpt.attempts + 1,
                route = %job.route,
                transport = %transport,
                remote = r.info.remote.as_deref().unwrap_or("-"),
                via = r.info.via.as_deref().unwrap_or("-"),
                // A failure before a session result (a refused login after STARTTLS,
                // for one) does not say which TLS mode it had: "-", not "none".
                tls = r.info.tls.as_deref().unwrap_or("-"),
                result = result.as_str(),
                reply = %r.info.reply,
                duration_ms = elapsed.as_millis() as u64,
                "delivery attempt"
            );
            self.metrics.record(&Attempt {
                transport,
                tls: r.info.tls.as_deref().unwrap_or("none"),
                result,
                attempt: rcpt.attempts + 1,
                // From acceptance to delivery (docs/operations.md).
                latency: (result == Outcome::Delivered)
                    .then(|| (now_ms() - job.message.received_at).max(0) as f64 / 1000.0),
                duration: elapsed.as_secs_f64(),
            });
        }
        self.queue.finish(job.message.id, results).await;
        self.release(&job.placement);
        self.queue.unpark(&job.placement.destination);
        if job.placement.transport != job.placement.destination {
            self.queue.unpark(&job.placement.transport);
        }
        self.queue.wake();
    }

    /// Makes one attempt for the job's recipients and reports a result for each.
    async fn attempt(&self, job: &Job) -> Vec<RcptResult> {
        let msg = &job.message;
        let local = |status: EnhancedCode, text: String| -> Vec<RcptResult> {
            let r = TransportResult::local(status, &text);
            job.rcpts
                .iter()
                .map(|&index| record(&job.transport, index, &r, &DialedIps::new()))
                .collect()
        };
        // One read of the snapshot for the whole attempt.
        let snap = self.snapshot.get();
        let transport = snap.transports.get(&job.transport).cloned();
        let Some(transport) = transport else {
            // RFC 3463 X.3.5: system incorrectly configured.
            return local(
                EnhancedCode::new(4, 3, 5),
                format!("transport {:?} is not configured", job.transport),
            );
        };
        let body: Arc<[u8]> = match &job.cached {
            // Just accepted: sent from memory, no read-back of what was just fsynced.
            Some(c) => Arc::clone(&c.bytes),
            None => match self.queue.spool().read_body(job.body).await {
                Ok(b) => Arc::from(b),
                Err(e) => {
                    tracing::error!(queue_id = %format_id(msg.id), error = %e, "cannot read message body");
                    return local(
                        EnhancedCode::new(4, 3, 0),
                        format!("local error reading the spool: {e}"),
                    );
                }
            },
        };
        let message = OutboundMessage {
            mail_from: msg.mail_from.clone(),
            rcpts: job
                .rcpts
                .iter()
                .map(|&i| OutboundRcpt {
                    address: msg.rcpts[i].address.clone(),
                    notify: msg.rcpts[i].notify.clone(),
                    orcpt: msg.rcpts[i].orcpt.as_deref().map(orcpt_xtext),
                })
                .collect(),
            body: with_dkim(msg.dkim.as_deref(), body, signs(&snap, &job.transport)),
            params: MailParams {
                // The operator's override, if any, is what is in force.
                requiretls: msg.overrides.requiretls.unwrap_or(msg.params.requiretls),
                ..msg.params.clone()
            },
        };
        // The addresses dialed on earlier attempts come from the first recipient's
        // attempt log (recipients of one destination are attempted together); this
        // attempt's go into every recipient's record, so the next one starts with the
        // other address family.
        let first = job.rcpts.first().and_then(|&i| msg.rcpts.get(i));
        let mut dialed = DialedIps::new();
        for info in first.into_iter().flat_map(|r| r.attempts_log()) {
            for (host, ips) in &info.dialed {
                dialed.entry(host.clone()).or_default().extend(ips);
            }
        }
        let attempt = job
            .rcpts
            .iter()
            .filter_map(|&i| msg.rcpts.get(i))
            .map(|r| r.attempts)
            .min()
            .unwrap_or(0)
            + 1;
        let mut batch = Batch {
            domain: first
                .map(|r| address_domain(&r.address))
                .unwrap_or_default(),
            message,
            attempt,
            dialed,
        };
        // A rate limit holds the batch back: a short wait is slept through, a longer one
        // puts the recipients back until then (not an attempt).
        if let Some(limits) = snap.rates.get(&job.transport) {
            let key = format!("transport:{}", job.transport);
            match self.rates.take(&key, limits, super::rate::MAX_SLEEP).await {
                super::rate::Decision::Now => {}
                super::rate::Decision::After(wait) => tokio::time::sleep(wait).await,
                super::rate::Decision::Defer(wait) => {
                    let until = now_ms() + wait.as_millis() as i64;
                    return job
                        .rcpts
                        .iter()
                        .map(|&index| RcptResult {
                            index,
                            verdict: Verdict::Deferred(until),
                            info: AttemptInfo::default(),
                        })
                        .collect();
                }
            }
        }
        let mut used: Arc<str> = Arc::from(job.transport.as_str());
        let mut result = match self
            .through(&snap, &job.transport, transport.as_ref(), &batch)
            .await
        {
            Some(r) => r,
            None => return self.waiting(job),
        };
        // Fallback within the attempt: the next transport of the route's chain while
        // every recipient failed before the message was handed over.
        for next in &job.placement.fallback {
            if !handover_failed(&result) {
                break;
            }
            let Some(t) = snap.transports.get(next.as_ref()).cloned() else {
                tracing::warn!(queue_id = %format_id(msg.id), transport = %next, "fallback transport is not configured; skipped");
                continue;
            };
            tracing::info!(queue_id = %format_id(msg.id), from = %used, to = %next,
                reason = result.rcpts.first().and_then(|r| r.reason).map_or("-", |k| k.as_str()),
                "delivery attempt: falling back to the next transport");
            if msg.dkim.is_some() && signs(&snap, next) != signs(&snap, &used) {
                // The next transport differs on `dkim`: the body with or without them.
                let body = Arc::clone(&batch.message.body);
                let body = match (signs(&snap, next), msg.dkim.as_deref()) {
                    (true, Some(h)) => with_dkim(Some(h), body, true),
                    _ => Arc::from(&body[msg.dkim.as_deref().map_or(0, str::len)..]),
                };
                batch.message.body = body;
            }
            let Some(r) = self.through(&snap, next, t.as_ref(), &batch).await else {
                continue;
            };
            metrics::counter!("relaygate_fallback_total", "from" => used.to_string(), "to" => next.to_string())
                .increment(1);
            result = r;
            used = Arc::clone(next);
        }
        if result.rcpts.len() != job.rcpts.len() {
            tracing::error!(queue_id = %format_id(msg.id), transport = %used, expected = job.rcpts.len(), got = result.rcpts.len(), "transport returned a result per recipient of another count");
            return local(
                EnhancedCode::new(4, 3, 0),
                "internal error: the transport lost track of recipients".into(),
            );
        }
        let via = proxy_of(&snap, &used);
        job.rcpts
            .iter()
            .zip(&result.rcpts)
            .map(|(&index, r)| {
                let mut rec = record(&used, index, r, &result.dialed);
                rec.info.via.clone_from(&via);
                rec
            })
            .collect()
    }
}

impl Scheduler {
    /// One delivery through `name`, within its circuit breaker: `None` when the
    /// transport is down (nothing sent). A smarthost transport's outcome feeds its
    /// breaker; when it goes down, the mail that last went through it is due at once,
    /// so it takes the next matching route.
    async fn through(
        &self,
        snap: &Snapshot,
        name: &str,
        transport: &dyn relaygate_transports::Transport,
        batch: &Batch,
    ) -> Option<relaygate_transports::BatchResult> {
        let breaker = snap.breakers.get(name).copied();
        let Some(breaker) = breaker else {
            return Some(transport.deliver(batch).await);
        };
        if let super::health::Admission::Closed { .. } = self.health.admit(name) {
            return None;
        }
        let result = transport.deliver(batch).await;
        let failure = handover_failed(&result).then(|| super::health::Failure {
            why: result.rcpts.first().map(|r| r.text()).unwrap_or_default(),
            quota: result
                .rcpts
                .iter()
                .any(|r| r.reason == Some(relaygate_transports::ReasonKind::Quota)),
        });
        if self.health.record(name, breaker, failure.as_ref()) {
            let _ = self
                .queue
                .retry_now(&super::Selector::LastTransport(name.to_string()));
        }
        Some(result)
    }

    /// The results while the job's transport is down and no other route matches: the
    /// mail waits (recorded as throttle: it does not count against the recipients).
    fn waiting(&self, job: &Job) -> Vec<RcptResult> {
        let mut r = TransportResult::local(
            EnhancedCode::new(4, 4, 5),
            &format!(
                "transport {:?} is down and no other route matches: waiting for it",
                job.transport
            ),
        );
        r.reason = Some(relaygate_transports::ReasonKind::Throttle);
        job.rcpts
            .iter()
            .map(|&index| record(&job.transport, index, &r, &DialedIps::new()))
            .collect()
    }
}

/// The SOCKS proxy mail through `transport` goes through, for the attempt's record:
/// a socks transport's own proxies, or those of a smarthost's `socks_proxy`.
fn proxy_of(snap: &Snapshot, transport: &str) -> Option<String> {
    let c = snap.configs.get(transport)?;
    let (name, proxy) = if c.kind == crate::config::TransportKind::Socks {
        (transport, c)
    } else if !c.socks_proxy.is_empty() {
        (c.socks_proxy.as_str(), snap.configs.get(&c.socks_proxy)?)
    } else {
        return None;
    };
    Some(format!("socks {name} ({})", proxy.address.join(", ")))
}

/// Whether mail through `transport` carries the DKIM signatures made at queueing
/// (every transport but those with `dkim = false`).
fn signs(snap: &Snapshot, transport: &str) -> bool {
    snap.configs
        .get(transport)
        .is_none_or(|c| c.dkim != Some(false))
}

/// The body to send: with the signature fields in front when `sign`.
fn with_dkim(dkim: Option<&str>, body: Arc<[u8]>, sign: bool) -> Arc<[u8]> {
    match dkim {
        Some(h) if sign => {
            let mut out = Vec::with_capacity(h.len() + body.len());
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&body);
            Arc::from(out)
        }
        _ => body,
    }
}

/// Whether every recipient failed before the message was handed over to the remote
/// (connect, greeting, TLS, auth, throttle, quota): then a fallback transport may help.
/// A recipient the remote refused or accepted never moves on.
fn handover_failed(result: &relaygate_transports::BatchResult) -> bool {
    use relaygate_transports::ReasonKind;
    !result.rcpts.is_empty()
        && result.rcpts.iter().all(|r| match r.reason {
            Some(
                ReasonKind::Connect
                | ReasonKind::Greeting
                | ReasonKind::Tls
                | ReasonKind::Auth
                | ReasonKind::Throttle
                | ReasonKind::Quota,
            ) => r.verdict != relaygate_transports::Verdict::Delivered,
            Some(
                ReasonKind::Policy
                | ReasonKind::Recipient
                | ReasonKind::Message
                | ReasonKind::Protocol
                | ReasonKind::Local,
            )
            | None => false,
        })
}

/// The queue's record of one recipient's result through `transport`.
fn record(transport: &str, index: usize, r: &TransportResult, dialed: &DialedIps) -> RcptResult {
    let verdict = match r.verdict {
        relaygate_transports::Verdict::Delivered => Verdict::Delivered,
        relaygate_transports::Verdict::Temporary => Verdict::Temporary,
        relaygate_transports::Verdict::Permanent => Verdict::Permanent,
    };
    RcptResult {
        index,
        verdict,
        info: AttemptInfo {
            via: None,
            at: now_ms(),
            transport: transport.to_string(),
            remote: r.remote.as_ref().map(ToString::to_string),
            reply: r.text(),
            tls: r.remote.as_ref().map(|m| m.tls.clone()),
            dialed: dialed.clone(),
            result: Some(ResultInfo {
                code: r.reply.code,
                enhanced: r
                    .reply
                    .enhanced
                    .map(|e| [u16::from(e.class), e.subject, e.detail]),
                stage: r.reply.stage.map(|s| s.to_string()),
                remote_reply: r.remote_reply(),
                reason: r.reason.map(|k| k.as_str().to_string()),
                remote_host: r.remote.as_ref().map(|m| m.host.clone()),
                remote_line: match (&r.context, r.remote_reply()) {
                    (Some(_), true) => Some(r.reply.to_string()),
                    _ => None,
                },
            }),
        },
    }
}

/// Where recipient `idx` of `msg` goes on this attempt: the operator's override, else the
/// first matching route (account, sender domain, global), else direct delivery.
fn placement(
    snap: &Snapshot,
    health: &super::health::Health,
    msg: &StoredMessage,
    idx: usize,
) -> Placement {
    let Some(rcpt) = msg.rcpts.get(idx) else {
        return Placement {
            destination: Arc::from(DIRECT),
            transport: Arc::from(DIRECT),
            route: "none".into(),
            fallback: Vec::new(),
            max_rcpts: None,
        };
    };
    let to_domain = address_domain(&rcpt.address);
    let (transport, route, fallback): (Arc<str>, String, Vec<Arc<str>>) =
        match &msg.overrides.transport {
            Some(t) => (Arc::from(t.as_str()), "override".to_string(), Vec::new()),
            None => {
                let from_domain = address_domain(&msg.mail_from);
                // `minimum_attempts` counts every attempt made, throttled ones (and
                // waits for a down transport) included, though those do not count
                // against `max_attempts`: a provider that throttles forever must not
                // keep the mail from the route meant for "after N attempts".
                let q = RouteQuery {
                    account: msg.account.as_deref(),
                    from_domain: &from_domain,
                    to_domain: &to_domain,
                    attempts: rcpt.attempts.max(rcpt.attempts_log().count() as u32),
                };
                // Routes naming a down transport do not match; when only such routes
                // match, the first of them is kept: the mail waits for it (never direct).
                let usable = |t: &str| t.is_empty() || health.usable(t);
                match select_usable(&snap.routes, &q, usable).or_else(|| select(&snap.routes, &q)) {
                    Some(s) => {
                        let name = if s.route.transport.is_empty() {
                            DIRECT
                        } else {
                            s.route.transport.as_str()
                        };
                        (
                            Arc::from(name),
                            format!("{}[{}]", s.level.as_str(), s.index),
                            s.route
                                .fallback
                                .iter()
                                .map(|f| Arc::from(f.as_str()))
                                .collect(),
                        )
                    }
                    None => (Arc::from(DIRECT), "none".to_string(), Vec::new()),
                }
            }
        };
    let destination: Arc<str> = match snap.transports.get(transport.as_ref()) {
        Some(t) => Arc::from(t.destination(&transport, &to_domain)),
        None => Arc::from(format!("{transport}/{to_domain}")),
    };
    let max_rcpts = snap
        .configs
        .get(transport.as_ref())
        .and_then(|c| c.max_recipients);
    Placement {
        destination,
        transport,
        route,
        fallback,
        max_rcpts,
    }
}
