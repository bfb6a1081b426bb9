//! The scheduler: takes due recipients from the queue, picks each one's route for this
//! attempt, groups them into transactions, and runs those within the concurrency limits
//! (global, and per destination). Results go back to the queue, which decides what
//! happens next.
//!
//! Grouping: recipients of one message that resolve to the same smarthost share one
//! transaction; for direct delivery they are grouped by recipient domain and handed to
//! the direct transport (`relaygate_transports::direct`), which tries the domain's MX
//! hosts under DANE, MTA-STS and REQUIRETLS; its per-host facts become the
//! `queue_destination*`, `queue_tlsrequiredno_ignored_total`,
//! `queue_requiretls_unsupported_total`, `queue_mtasts_mx_mismatch_total`,
//! `queue_connection_total` and `queue_plaintext_fallback_total` metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relaygate_transports::direct::{
    DaneHost, DialedIps, DirectRequest, DirectResult, DirectTransport, SkipReason,
};
use relaygate_transports::smarthost::SmarthostTransport;
use relaygate_transports::{OutboundMessage, OutboundRcpt, RcptOutcome, Severity};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::{Claim, Placement, Queue, RcptResult, Verdict};
use crate::model::{format_id, now_ms, AttemptInfo, Ret, StoredMessage};
use crate::routes::{address_domain, select, RouteQuery};
use crate::snapshot::{Snapshot, SnapshotCell, TransportEntry};

/// Name used for direct delivery when no route (or an empty transport) matched.
pub const DIRECT: &str = "direct";

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
    global: Arc<Semaphore>,
    limits: Limits,
    running: Mutex<Running>,
}

/// One transaction to run.
struct Job {
    message: Arc<StoredMessage>,
    body: crate::spool::BodyRef,
    rcpts: Vec<usize>,
    transport: String,
    /// Which route chose the transport ("global[0]", "account[1]", "override", "none").
    route: String,
    placement: Placement,
}

impl Scheduler {
    pub fn new(queue: Arc<Queue>, snapshot: SnapshotCell, limits: Limits) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            queue,
            snapshot,
            global: Arc::new(Semaphore::new(limits.global)),
            limits,
            running: Mutex::new(Running::default()),
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
            let claim = self.queue.claim(
                now_ms(),
                |msg, idx| placement(&snap, msg, idx),
                |p| self.reserve(p),
            );
            drop(snap);
            match claim {
                Claim::Work(work, placement) => {
                    let job = Job {
                        message: Arc::new(work.message),
                        body: work.body,
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
                Verdict::Delivered => "delivered",
                Verdict::Temporary => "temporary",
                Verdict::Permanent => "permanent",
            };
            let tls = r.info.tls.clone().unwrap_or_else(|| "none".into());
            tracing::info!(
                queue_id = %format_id(job.message.id),
                rcpt = %rcpt.address,
                attempt = rcpt.attempts + 1,
                route = %job.route,
                transport = %job.transport,
                remote = r.info.remote.as_deref().unwrap_or("-"),
                tls = %tls,
                result,
                reply = %r.info.reply,
                duration_ms = elapsed.as_millis() as u64,
                "delivery attempt"
            );
            metrics::counter!("relaygate_delivery_attempts_total",
                "transport" => job.transport.clone(), "result" => result)
            .increment(1);
            metrics::histogram!("relaygate_queue_delivery_duration_seconds",
                "attempt" => attempt_label(rcpt.attempts + 1),
                "transport" => job.transport.clone(),
                "tlsmode" => tls,
                "result" => result)
            .record(elapsed.as_secs_f64());
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
        let all = |verdict: Verdict, reply: String, remote: Option<String>| -> Vec<RcptResult> {
            job.rcpts
                .iter()
                .map(|&index| RcptResult {
                    index,
                    verdict,
                    info: AttemptInfo {
                        at: now_ms(),
                        transport: job.transport.clone(),
                        remote: remote.clone(),
                        reply: reply.clone(),
                        tls: None,
                        dialed: Default::default(),
                    },
                })
                .collect()
        };
        let snap = self.snapshot.get();
        let transport = match snap.transports.get(&job.transport) {
            Some(TransportEntry::Smarthost(t)) => Chosen::Smarthost(Arc::clone(t)),
            Some(TransportEntry::Direct(d)) => Chosen::Direct(Arc::clone(d)),
            None => {
                return all(
                    Verdict::Temporary,
                    format!("transport {:?} is not configured", job.transport),
                    None,
                )
            }
        };
        drop(snap);
        let body = match self.queue.spool().read_body(job.body).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(queue_id = %format_id(job.message.id), error = %e, "cannot read message body");
                return all(
                    Verdict::Temporary,
                    format!("local error reading the spool: {e}"),
                    None,
                );
            }
        };
        let msg = &job.message;
        let outbound = OutboundMessage {
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
            body: Arc::from(body),
            eight_bit: msg.params.eight_bit,
            smtputf8: msg.params.smtputf8,
            requiretls: msg.overrides.requiretls.unwrap_or(msg.params.requiretls),
            ret: msg.params.ret.map(|r| match r {
                Ret::Full => relaygate_transports::Ret::Full,
                Ret::Hdrs => relaygate_transports::Ret::Hdrs,
            }),
            envid: msg.params.envid.as_deref().map(xtext_encode),
        };
        let transport = match transport {
            Chosen::Smarthost(t) => t,
            Chosen::Direct(d) => return self.attempt_direct(job, &d, outbound).await,
        };
        match transport.deliver(&outbound).await {
            Ok(delivery) => {
                metrics::counter!("relaygate_queue_connection_total", "result" => "ok")
                    .increment(1);
                let remote = match delivery.remote.addr {
                    Some(a) => format!("{} [{}]", delivery.remote.host, a.ip()),
                    None => delivery.remote.host.clone(),
                };
                let tls = delivery.remote.tls.mode().to_string();
                job.rcpts
                    .iter()
                    .zip(delivery.outcomes)
                    .map(|(&index, outcome)| {
                        let verdict = match &outcome {
                            RcptOutcome::Delivered(_) => Verdict::Delivered,
                            RcptOutcome::Transient(_) => Verdict::Temporary,
                            RcptOutcome::Permanent(_) => Verdict::Permanent,
                        };
                        RcptResult {
                            index,
                            verdict,
                            info: AttemptInfo {
                                at: now_ms(),
                                transport: job.transport.clone(),
                                remote: Some(remote.clone()),
                                reply: outcome.reply().to_string(),
                                tls: Some(tls.clone()),
                                dialed: Default::default(),
                            },
                        }
                    })
                    .collect()
            }
            Err(e) => {
                metrics::counter!("relaygate_queue_connection_total", "result" => "error")
                    .increment(1);
                let verdict = match e.severity() {
                    Severity::Temporary => Verdict::Temporary,
                    Severity::Permanent => Verdict::Permanent,
                };
                // Our own failures carry their status code first, so DSNs report it.
                all(verdict, format!("{} {e}", e.status_code()), None)
            }
        }
    }
}

/// Where recipient `idx` of `msg` goes on this attempt: the operator's override, else the
/// first matching route (account, sender domain, global), else direct delivery.
fn placement(snap: &Snapshot, msg: &StoredMessage, idx: usize) -> Placement {
    let Some(rcpt) = msg.rcpts.get(idx) else {
        return Placement {
            destination: Arc::from(DIRECT),
            transport: Arc::from(DIRECT),
            route: "none".into(),
        };
    };
    let to_domain = address_domain(&rcpt.address);
    let (transport, route): (Arc<str>, String) = match &msg.overrides.transport {
        Some(t) => (Arc::from(t.as_str()), "override".to_string()),
        None => {
            let from_domain = address_domain(&msg.mail_from);
            let q = RouteQuery {
                account: msg.account.as_deref(),
                from_domain: &from_domain,
                to_domain: &to_domain,
                attempts: rcpt.attempts,
            };
            match select(&snap.routes, &q) {
                Some(s) => {
                    let name = if s.route.transport.is_empty() {
                        DIRECT
                    } else {
                        s.route.transport.as_str()
                    };
                    (
                        Arc::from(name),
                        format!("{}[{}]", s.level.as_str(), s.index),
                    )
                }
                None => (Arc::from(DIRECT), "none".to_string()),
            }
        }
    };
    let is_smarthost = matches!(
        snap.transports.get(transport.as_ref()),
        Some(TransportEntry::Smarthost(_))
    );
    let destination = if is_smarthost {
        Arc::clone(&transport)
    } else {
        Arc::from(format!("{transport}/{to_domain}"))
    };
    Placement {
        destination,
        transport,
        route,
    }
}

/// The transport an attempt goes through.
enum Chosen {
    Smarthost(Arc<SmarthostTransport>),
    Direct(Arc<DirectTransport>),
}

impl Scheduler {
    /// Direct delivery for the job's recipients, all at one domain. The addresses dialed
    /// on earlier attempts come from the first recipient's attempt log (recipients of one
    /// domain are attempted together), and this attempt's go into every recipient's
    /// attempt info, so the next attempt starts with the other address family.
    async fn attempt_direct(
        &self,
        job: &Job,
        transport: &DirectTransport,
        message: OutboundMessage,
    ) -> Vec<RcptResult> {
        let msg = &job.message;
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
        let request = DirectRequest {
            domain: first
                .map(|r| address_domain(&r.address))
                .unwrap_or_default(),
            // RFC 8689 §5: the header counts only without REQUIRETLS (the transport
            // checks that too, against the effective REQUIRETLS after overrides).
            tls_required_no: msg.params.tls_required_no && !message.requiretls,
            message,
            attempt,
            dialed,
        };
        let result = transport.deliver(&request).await;
        direct_metrics(&result);
        job.rcpts
            .iter()
            .zip(result.rcpts)
            .map(|(&index, r)| RcptResult {
                index,
                verdict: match &r.outcome {
                    RcptOutcome::Delivered(_) => Verdict::Delivered,
                    RcptOutcome::Transient(_) => Verdict::Temporary,
                    RcptOutcome::Permanent(_) => Verdict::Permanent,
                },
                info: AttemptInfo {
                    at: now_ms(),
                    transport: job.transport.clone(),
                    remote: r.remote.as_ref().map(ToString::to_string),
                    reply: r.outcome.reply().to_string(),
                    // "verified+dane" and the like: the TLS used and the policies behind it.
                    tls: r.remote.as_ref().map(|m| m.tls_mode()),
                    dialed: result.dialed.clone(),
                },
            })
            .collect()
    }
}

/// The SPEC §3 counters of one direct attempt, from the transport's per-host facts.
fn direct_metrics(result: &DirectResult) {
    for host in &result.hosts {
        if host.looked_up {
            metrics::counter!("relaygate_queue_destinations_total").increment(1);
        }
        if host.authentic {
            metrics::counter!("relaygate_queue_destinations_authentic_total").increment(1);
        }
        match host.dane {
            Some(DaneHost::Verify) => {
                metrics::counter!("relaygate_queue_destination_dane_required_total").increment(1);
            }
            Some(DaneHost::Unverified) => {
                metrics::counter!("relaygate_queue_destination_dane_required_total").increment(1);
                metrics::counter!("relaygate_queue_destination_dane_starttlsunverified_total")
                    .increment(1);
            }
            Some(DaneHost::LookupFailed) => {
                metrics::counter!("relaygate_queue_destination_dane_gathertlsa_errors_total")
                    .increment(1);
            }
            Some(DaneHost::NotApplicable) | None => {}
        }
        match host.skip_reason {
            Some(SkipReason::RequireTlsNoPolicy) => {
                metrics::counter!("relaygate_queue_requiretls_unsupported_total",
                    "reason" => "nopolicy")
                .increment(1);
            }
            Some(SkipReason::MtaStsMx | SkipReason::TlsaLookup) | None => {}
        }
        if host.requiretls_refused {
            metrics::counter!("relaygate_queue_requiretls_unsupported_total",
                "reason" => "norequiretls")
            .increment(1);
        }
        if host.mtasts_mismatch {
            let mode = result.mtasts.map_or("none", |m| m.as_str());
            metrics::counter!("relaygate_queue_mtasts_mx_mismatch_total", "mode" => mode)
                .increment(1);
        }
    }
    for ignored in result.ignored() {
        metrics::counter!("relaygate_queue_tlsrequiredno_ignored_total",
            "ignored" => ignored.label())
        .increment(1);
    }
    for connect in result.connections() {
        metrics::counter!("relaygate_queue_connection_total", "result" => connect.label())
            .increment(1);
    }
    let fallbacks = result.plaintext_fallbacks();
    if fallbacks > 0 {
        metrics::counter!("relaygate_queue_plaintext_fallback_total").increment(fallbacks as u64);
    }
}

fn attempt_label(n: u32) -> String {
    if n >= 5 {
        "5+".into()
    } else {
        n.to_string()
    }
}

/// Encodes xtext (RFC 3461 §4): "+", "=", controls and non-ASCII as "+XX".
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

fn orcpt_xtext(orcpt: &str) -> String {
    match orcpt.split_once(';') {
        Some((kind, addr)) => format!("{kind};{}", xtext_encode(addr)),
        None => xtext_encode(orcpt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext() {
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(orcpt_xtext("rfc822;a+b@c"), "rfc822;a+2Bb@c");
    }
}
