//! The admin HTTP listener: `/healthz`, `/metrics` (Prometheus text) and the queue API
//! under `/api/queue`. Loopback by default; any other address needs a bearer token,
//! compared in constant time.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::model::{format_id, rfc3339, RcptState, StoredMessage};
use crate::queue::Queue;

#[derive(Clone)]
pub struct AdminState {
    pub queue: Arc<Queue>,
    pub metrics: Option<PrometheusHandle>,
    pub token: Option<Arc<String>>,
}

/// Constant-time comparison of two byte strings (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
        }
    }
    next.run(req).await
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/queue", get(queue_list))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Binds the admin listener and serves until shutdown.
pub async fn start(addr: &str, state: AdminState, mut shutdown: watch::Receiver<bool>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("admin listener {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("admin listener {addr}: {e}"))?;
    tracing::info!(listen = %local, "admin: listening");
    let app = router(state);
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    Ok(local)
}

async fn healthz(State(state): State<AdminState>) -> Json<Value> {
    let c = state.queue.counts();
    Json(json!({
        "status": "ok",
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
    match &state.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder not installed\n").into_response(),
    }
}

/// The JSON form of a message, as `relaygate queue list --json` shows it.
pub fn message_json(m: &StoredMessage) -> Value {
    json!({
        "id": format_id(m.id),
        "from": m.mail_from,
        "size": m.size,
        "held": m.overrides.held,
        "account": m.account,
        "received": rfc3339(m.received_at),
        "transport_override": m.overrides.transport,
        "rcpts": m.rcpts.iter().map(|r| json!({
            "address": r.address,
            "status": r.state.name(),
            "attempts": r.attempts,
            "next_attempt": match r.state {
                RcptState::Pending { next_attempt } => Value::String(rfc3339(next_attempt)),
                RcptState::Delivered { .. } | RcptState::Failed { .. } => Value::Null,
            },
            "last_reply": r.last.as_ref().map(|l| l.reply.clone()),
            "transport": r.last.as_ref().map(|l| l.transport.clone()),
            "remote": r.last.as_ref().and_then(|l| l.remote.clone()),
        })).collect::<Vec<_>>(),
    })
}

async fn queue_list(State(state): State<AdminState>) -> Json<Value> {
    let messages: Vec<Value> = state.queue.list().iter().map(message_json).collect();
    Json(json!({ "messages": messages }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
