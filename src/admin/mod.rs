//! The admin HTTP listener: `/healthz`, `/metrics` (Prometheus text), the queue API
//! under `/api/queue` and the login lockouts under `/api/auth` (`lockouts.rs`). Loopback by default; any other address needs a bearer token,
//! compared in constant time.
//!
//! A browser on the same machine must not be able to use it: requests whose `Host`
//! names anything but the listen address, `localhost` or `admin.allowed_hosts` are
//! refused (DNS rebinding), and a state-changing request needs a JSON body or the token
//! (a cross-site form post can send neither). The listener holds at most
//! [`MAX_CONNECTIONS`] connections, each must send its request headers within
//! [`HEADER_READ_TIMEOUT`], and none lives longer than [`CONNECTION_LIFETIME`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use serde::Deserialize;

use crate::address::address_domain;
use crate::model::{format_id, parse_id, rfc3339, AttemptInfo, RcptState, StoredMessage};
use crate::queue::{OpError, Queue, Selector};
use crate::snapshot::SnapshotCell;
use crate::submission::auth_guard::AuthGuard;

mod lockouts;
mod transports;

#[derive(Clone)]
pub struct AdminState {
    pub queue: Arc<Queue>,
    pub metrics: Option<PrometheusHandle>,
    pub token: Option<Arc<String>>,
    pub snapshot: SnapshotCell,
    /// Route store state ("ok", or "degraded" while Redis is unreachable).
    pub store: crate::store::StoreStatus,
    /// `admin.allowed_hosts`, lowercase (the listen address and `localhost` are added at
    /// start).
    pub allowed_hosts: Arc<Vec<String>>,
    /// Failed logins and lockouts of the submission listener.
    pub auth_guard: Arc<AuthGuard>,
    /// Transport health (circuit breakers).
    pub health: Arc<crate::queue::health::Health>,
    /// Rate limits (shown with the health).
    pub rates: Arc<crate::queue::rate::Limiter>,
}

/// Connections the admin listener holds at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a connection has to send its request headers (also while idle between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// The host part of a `Host` header value, lowercase: `[::1]:9025` → `::1`,
/// `LocalHost:9025` → `localhost`.
fn host_name(value: &str) -> String {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if v.matches(':').count() > 1 {
        // A bare IPv6 address (our own listen address), no port.
        v
    } else {
        v.rsplit_once(':').map_or(v, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                v
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn has_valid_token(state: &AdminState, req: &Request) -> bool {
    let Some(token) = &state.token else {
        return false;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    relaygate_transports::ct_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Refuses requests for other hosts, and state changes without JSON or the token.
async fn guard(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        let name = host.to_str().map(host_name).unwrap_or_default();
        if !state.allowed_hosts.contains(&name) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this admin API does not serve that host name (add it to admin.allowed_hosts)\n",
            )
                .into_response();
        }
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) && !has_valid_token(&state, &req) {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "state-changing requests need a JSON body (Content-Type: application/json)\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if state.token.is_some() && !has_valid_token(&state, &req) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    }
    next.run(req).await
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/queue", get(queue_list))
        .route("/api/queue/retry", post(bulk_retry))
        .route("/api/queue/hold", post(bulk_hold))
        .route("/api/queue/release", post(bulk_release))
        .route("/api/queue/holds", get(hold_rules))
        .route("/api/queue/{id}", get(queue_show))
        .route("/api/queue/{id}/retry", post(one_retry))
        .route("/api/queue/{id}/hold", post(one_hold))
        .route("/api/queue/{id}/release", post(one_release))
        .route("/api/queue/{id}/drop", post(one_drop))
        .route("/api/queue/{id}/requiretls", post(one_requiretls))
        .route("/api/queue/{id}/transport", post(one_transport))
        .route("/api/transports", get(transports::health))
        .route("/api/auth/lockouts", get(lockouts::list))
        .route("/api/auth/lockouts/clear", post(lockouts::clear))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Binds the admin listener and serves until shutdown.
pub async fn start(
    addr: &str,
    mut state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("admin listener {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("admin listener {addr}: {e}"))?;
    tracing::info!(listen = %local, "admin: listening");
    let mut hosts: Vec<String> = state.allowed_hosts.iter().map(|h| host_name(h)).collect();
    hosts.push(host_name(&local.ip().to_string()));
    hosts.push("localhost".into());
    state.allowed_hosts = Arc::new(hosts);
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.changed() => return,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!("admin: connection limit reached; closing a new connection");
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            });
        }
    });
    Ok(local)
}

/// Always HTTP 200 while the gateway runs: with the Redis store unreachable it still
/// accepts and delivers (on its last good snapshot), and with the spool unwritable (a
/// full disk) it still delivers what is queued while submissions get 451; so `status`
/// and `store` / `spool` say "degraded" instead of failing the check.
async fn healthz(State(state): State<AdminState>) -> Json<Value> {
    let c = state.queue.counts();
    let store = state.store.state();
    let spool = state.queue.spool().health();
    let spool_state = if spool.degraded.is_some() {
        "degraded"
    } else {
        "ok"
    };
    let status = if store == "ok" && spool_state == "ok" {
        "ok"
    } else {
        "degraded"
    };
    Json(json!({
        "status": status,
        "store": store,
        "store_detail": state.store.detail_json(),
        "spool": spool_state,
        "spool_detail": {
            "reason": spool.degraded,
            "since": spool.since_ms.map(rfc3339),
            "segments": state.queue.spool().segment_count(),
            "current_segment": state.queue.spool().current_segment(),
        },
        "config_generation": state.snapshot.generation(),
        "transports_down": state.health.views().iter().filter(|v| v.state != "up").map(|v| v.transport.clone()).collect::<Vec<_>>(),
        "queue": {
            "messages": c.messages,
            "pending_recipients": c.pending_rcpts,
            "inflight_recipients": c.in_flight_rcpts,
            "held_messages": c.held_messages,
        },
    }))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    crate::metrics::refresh_queue_gauges(&state.queue);
    crate::metrics::refresh_transport_series(&state.snapshot.get(), &state.health);
    match &state.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

fn attempt_json(a: &AttemptInfo) -> Value {
    let mut v = json!({
        "at": rfc3339(a.at),
        "transport": a.transport,
        "remote": a.remote,
        "via": a.via,
        "tls": a.tls,
        "reply": a.reply,
    });
    if let Some(r) = &a.result {
        v["code"] = json!(r.code);
        v["enhanced"] = json!(r.enhanced_text());
        v["stage"] = json!(r.stage);
        v["remote_reply"] = json!(r.remote_reply);
        v["reason"] = json!(r.reason);
        v["remote_host"] = json!(r.remote_host);
    }
    v
}

/// One message with every recorded attempt of every recipient (`queue show`).
pub fn message_detail_json(m: &StoredMessage, holds: &[crate::queue::holds::HoldRule]) -> Value {
    let mut v = message_json(m, holds);
    v["client"] = json!(m.client);
    v["params"] = json!({
        "eight_bit": m.params.eight_bit,
        "smtputf8": m.params.smtputf8,
        "requiretls": m.params.requiretls,
        "envid": m.params.envid,
    });
    v["requiretls_override"] = json!(m.overrides.requiretls);
    if let Some(rcpts) = v["rcpts"].as_array_mut() {
        for (slot, r) in rcpts.iter_mut().zip(&m.rcpts) {
            slot["history"] = Value::Array(r.attempts_log().map(attempt_json).collect());
            slot["notify"] = json!(r.notify);
            slot["orcpt"] = json!(r.orcpt);
        }
    }
    v
}

/// The JSON form of a message, as `relaygate queue list --json` shows it. A pending
/// recipient that is held (its message, or a hold rule) shows status `held`, what holds
/// it (`held_by`) and no next attempt: it waits for a release.
pub fn message_json(m: &StoredMessage, holds: &[crate::queue::holds::HoldRule]) -> Value {
    let held_by: Vec<Option<String>> = m
        .rcpts
        .iter()
        .map(|r| {
            if r.state.is_final() {
                None
            } else {
                crate::queue::held_by(holds, m, r)
            }
        })
        .collect();
    json!({
        "id": format_id(m.id),
        "from": m.mail_from,
        "size": m.size,
        "held": m.overrides.held || held_by.iter().any(Option::is_some),
        "account": m.account,
        "received": rfc3339(m.received_at),
        "transport_override": m.overrides.transport,
        "rcpts": m.rcpts.iter().zip(&held_by).map(|(r, held)| json!({
            "address": r.address,
            "status": if held.is_some() { "held" } else { r.state.name() },
            "held_by": held,
            "attempts": r.attempts,
            "next_attempt": match r.state {
                RcptState::Pending { .. } if held.is_some() => Value::Null,
                RcptState::Pending { next_attempt } => Value::String(rfc3339(next_attempt)),
                RcptState::Delivered { .. } | RcptState::Failed { .. } => Value::Null,
            },
            "last_reply": r.last.as_ref().map(|l| l.reply.clone()),
            "last_code": r.last.as_ref().and_then(|l| l.result.as_ref()).map(|x| x.code),
            "last_enhanced": r.last.as_ref().and_then(|l| l.result.as_ref()).and_then(|x| x.enhanced_text()),
            "last_reason": r.last.as_ref().and_then(|l| l.result.as_ref()).and_then(|x| x.reason.clone()),
            "transport": r.last.as_ref().map(|l| l.transport.clone()),
            "remote": r.last.as_ref().and_then(|l| l.remote.clone()),
            "via": r.last.as_ref().and_then(|l| l.via.clone()),
        })).collect::<Vec<_>>(),
    })
}

/// Filters and paging of `GET /api/queue`; every filter set must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    pub account: Option<String>,
    /// Envelope sender, or its domain with a leading "@".
    pub sender: Option<String>,
    /// A recipient domain.
    pub domain: Option<String>,
    /// Transport of the latest attempt (or the forced one).
    pub transport: Option<String>,
    pub held: Option<bool>,
    /// Some pending recipient's next attempt is before / after this RFC 3339 time or unix ms.
    pub before: Option<String>,
    pub after: Option<String>,
    /// Case-insensitive text searched in addresses, id and replies.
    pub q: Option<String>,
    /// A recipient in this state: `pending`, `held`, `delivered` or `failed`.
    pub status: Option<String>,
    /// Received longer ago than this ("1h", "30m").
    pub older_than: Option<String>,
    #[serde(default)]
    pub offset: usize,
    pub limit: Option<usize>,
}

fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    httpdate::parse_http_date(s)
        .ok()
        .or_else(|| {
            // RFC 3339 "YYYY-MM-DDTHH:MM:SS[.mmm]Z"
            let b = s.as_bytes();
            if b.len() < 20 || !s.ends_with('Z') {
                return None;
            }
            let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
            let (y, mo, d, h, mi, se) = (
                num(0..4)?,
                num(5..7)?,
                num(8..10)?,
                num(11..13)?,
                num(14..16)?,
                num(17..19)?,
            );
            let days = days_from_civil(y, mo, d);
            let secs = days * 86400 + h * 3600 + mi * 60 + se;
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64))
        })
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl ListFilter {
    pub fn matches(
        &self,
        m: &StoredMessage,
        holds: &[crate::queue::holds::HoldRule],
    ) -> Result<bool, String> {
        if let Some(a) = &self.account {
            if m.account.as_deref() != Some(a.as_str()) {
                return Ok(false);
            }
        }
        if let Some(s) = &self.sender {
            let ok = match s.strip_prefix('@') {
                Some(d) => address_domain(&m.mail_from) == d.to_ascii_lowercase(),
                None => m.mail_from.eq_ignore_ascii_case(s),
            };
            if !ok {
                return Ok(false);
            }
        }
        if let Some(d) = &self.domain {
            let d = d.to_ascii_lowercase();
            if !m.rcpts.iter().any(|r| address_domain(&r.address) == d) {
                return Ok(false);
            }
        }
        if let Some(t) = &self.transport {
            let forced = m.overrides.transport.as_deref() == Some(t.as_str());
            if !forced
                && !m
                    .rcpts
                    .iter()
                    .any(|r| r.last.as_ref().is_some_and(|l| &l.transport == t))
            {
                return Ok(false);
            }
        }
        if let Some(h) = self.held {
            let held = m.overrides.held
                || m.rcpts
                    .iter()
                    .any(|r| !r.state.is_final() && crate::queue::held_by(holds, m, r).is_some());
            if held != h {
                return Ok(false);
            }
        }
        let next: Vec<i64> = m
            .rcpts
            .iter()
            .filter_map(|r| match r.state {
                RcptState::Pending { next_attempt } => Some(next_attempt),
                RcptState::Delivered { .. } | RcptState::Failed { .. } => None,
            })
            .collect();
        if let Some(b) = &self.before {
            let t = parse_time(b).ok_or_else(|| format!("before: cannot parse time {b:?}"))?;
            if !next.iter().any(|&n| n < t) {
                return Ok(false);
            }
        }
        if let Some(a) = &self.after {
            let t = parse_time(a).ok_or_else(|| format!("after: cannot parse time {a:?}"))?;
            if !next.iter().any(|&n| n > t) {
                return Ok(false);
            }
        }
        if let Some(want) = &self.status {
            let want = want.trim().to_ascii_lowercase();
            if !["pending", "held", "delivered", "failed"].contains(&want.as_str()) {
                return Err(format!(
                    "status: {want:?} is not pending, held, delivered or failed"
                ));
            }
            let any = m.rcpts.iter().any(|r| {
                let held = !r.state.is_final() && crate::queue::held_by(holds, m, r).is_some();
                let name = if held { "held" } else { r.state.name() };
                name == want
            });
            if !any {
                return Ok(false);
            }
        }
        if let Some(age) = &self.older_than {
            let d = crate::config::units::parse_duration(age)
                .map_err(|e| format!("older_than: {e}"))?;
            if crate::model::now_ms() - m.received_at < d.as_millis() as i64 {
                return Ok(false);
            }
        }
        if let Some(q) = &self.q {
            let q = q.to_lowercase();
            let hay = std::iter::once(format_id(m.id))
                .chain(std::iter::once(m.mail_from.clone()))
                .chain(m.rcpts.iter().map(|r| r.address.clone()))
                .chain(
                    m.rcpts
                        .iter()
                        .filter_map(|r| r.last.as_ref().map(|l| l.reply.clone())),
                );
            if !hay.map(|h| h.to_lowercase()).any(|h| h.contains(&q)) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": msg.into() })),
    )
        .into_response()
}

fn op_error(e: OpError) -> Response {
    let status = match e {
        OpError::NotFound(_) => StatusCode::NOT_FOUND,
        OpError::Invalid(_) => StatusCode::BAD_REQUEST,
        OpError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}

async fn queue_list(State(state): State<AdminState>, Query(filter): Query<ListFilter>) -> Response {
    let mut matched = Vec::new();
    let holds = state.queue.hold_rules();
    for m in state.queue.list() {
        match filter.matches(&m, &holds) {
            Ok(true) => matched.push(m),
            Ok(false) => {}
            Err(e) => return bad_request(e),
        }
    }
    let total = matched.len();
    let limit = filter.limit.unwrap_or(1000).min(10_000);
    let messages: Vec<Value> = matched
        .iter()
        .skip(filter.offset)
        .take(limit)
        .map(|m| message_json(m, &holds))
        .collect();
    Json(json!({ "total": total, "offset": filter.offset, "messages": messages })).into_response()
}

fn id_of(text: &str) -> Result<u64, String> {
    parse_id(text).ok_or_else(|| format!("{text:?} is not a queue id"))
}

async fn queue_show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let id = match id_of(&id) {
        Ok(i) => i,
        Err(e) => return bad_request(e),
    };
    match state.queue.get(id) {
        Some(m) => Json(message_detail_json(&m, &state.queue.hold_rules())).into_response(),
        None => op_error(OpError::NotFound(format_id(id))),
    }
}

/// Body of the bulk endpoints: exactly one of these.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkSelector {
    #[serde(default)]
    pub all: bool,
    pub domain: Option<String>,
    pub account: Option<String>,
}

impl BulkSelector {
    fn selector(&self) -> Result<Selector, OpError> {
        match (self.all, &self.domain, &self.account) {
            (true, None, None) => Ok(Selector::All),
            (false, Some(d), None) => Selector::domain(d),
            (false, None, Some(a)) => Ok(Selector::Account(a.clone())),
            _ => Err(OpError::Invalid(
                "give exactly one of all, domain, account".into(),
            )),
        }
    }
}

fn count_reply(result: Result<usize, OpError>) -> Response {
    match result {
        Ok(n) => Json(json!({ "recipients": n })).into_response(),
        Err(e) => op_error(e),
    }
}

/// A retry's answer: how many recipients are due now, and how many stay held (and by
/// what): a retry does not release held mail.
fn retry_reply(result: Result<crate::queue::Retried, OpError>) -> Response {
    match result {
        Ok(r) => Json(json!({
            "recipients": r.due,
            "held": r.held,
            "held_by": r.held_by,
        }))
        .into_response(),
        Err(e) => op_error(e),
    }
}

async fn bulk_retry(State(state): State<AdminState>, Json(b): Json<BulkSelector>) -> Response {
    // A retry also probes down transports at once.
    state.health.probe_now();
    retry_reply(b.selector().and_then(|s| state.queue.retry_now(&s)))
}

async fn bulk_hold(State(state): State<AdminState>, Json(b): Json<BulkSelector>) -> Response {
    count_reply(b.selector().and_then(|s| state.queue.hold(&s)))
}

async fn bulk_release(State(state): State<AdminState>, Json(b): Json<BulkSelector>) -> Response {
    count_reply(b.selector().and_then(|s| state.queue.release(&s)))
}

async fn hold_rules(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({ "holds": state.queue.hold_rules() }))
}

async fn one_retry(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match id_of(&id) {
        Ok(id) => {
            state.health.probe_now();
            retry_reply(state.queue.retry_now(&Selector::Id(id)))
        }
        Err(e) => bad_request(e),
    }
}

async fn one_hold(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match id_of(&id) {
        Ok(id) => count_reply(state.queue.hold(&Selector::Id(id))),
        Err(e) => bad_request(e),
    }
}

async fn one_release(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match id_of(&id) {
        Ok(id) => count_reply(state.queue.release(&Selector::Id(id))),
        Err(e) => bad_request(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropBody {
    #[serde(default)]
    pub dsn: bool,
}

async fn one_drop(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Json(b): Json<DropBody>,
) -> Response {
    match id_of(&id) {
        Ok(id) => count_reply(state.queue.drop_message(id, b.dsn).await),
        Err(e) => bad_request(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueBody {
    pub value: String,
}

async fn one_requiretls(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Json(b): Json<ValueBody>,
) -> Response {
    let id = match id_of(&id) {
        Ok(i) => i,
        Err(e) => return bad_request(e),
    };
    let value = match b.value.to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        "default" => None,
        other => {
            return bad_request(format!(
                "REQUIRETLS value {other:?}: use yes, no or default"
            ))
        }
    };
    count_reply(state.queue.set_requiretls(id, value).map(|_| 1))
}

async fn one_transport(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Json(b): Json<ValueBody>,
) -> Response {
    let id = match id_of(&id) {
        Ok(i) => i,
        Err(e) => return bad_request(e),
    };
    let name = match b.value.as_str() {
        "" | "default" => None,
        name => {
            let snap = state.snapshot.get();
            if name != crate::snapshot::DIRECT && !snap.transports.contains_key(name) {
                let mut known: Vec<&String> = snap.transports.keys().collect();
                known.sort();
                return bad_request(format!(
                    "no transport named {name:?}; configured: {known:?}"
                ));
            }
            Some(name.to_string())
        }
    };
    count_reply(state.queue.set_transport(id, name).map(|_| 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for (value, want) in [
            ("127.0.0.1:9025", "127.0.0.1"),
            ("[::1]:9025", "::1"),
            ("[::1]", "::1"),
            ("LocalHost:9025", "localhost"),
            ("relay.internal.", "relay.internal"),
            ("evil.test:80", "evil.test"),
            ("::1", "::1"),
        ] {
            assert_eq!(host_name(value), want, "{value}");
        }
    }
}
