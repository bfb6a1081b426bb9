//! `GET /api/transports`: what the scheduler knows about each transport now (health and
//! rate limits), for `relaygate transports status` and monitoring.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AdminState;

/// `GET /api/transports`: each transport's health (up, down until, why) and, for those
/// with a `rate_limit`, the limits and how long a message would wait now.
pub(super) async fn health(State(state): State<AdminState>) -> Json<Value> {
    let mut rows: Vec<Value> = state
        .health
        .views()
        .into_iter()
        .map(|v| serde_json::to_value(v).unwrap_or_default())
        .collect();
    let snap = state.snapshot.get();
    let mut limited: Vec<(&String, &Vec<crate::queue::rate::Rate>)> = snap.rates.iter().collect();
    limited.sort_by_key(|(name, _)| *name);
    for (name, limits) in limited {
        let wait = state.rates.wait(&format!("transport:{name}"), limits).await;
        let rate = json!({
            "rate_limit": limits.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "rate_wait_ms": wait.as_millis() as u64,
        });
        match rows.iter_mut().find(|r| r["transport"] == name.as_str()) {
            Some(row) => {
                if let (Some(row), Some(rate)) = (row.as_object_mut(), rate.as_object()) {
                    row.extend(rate.clone());
                }
            }
            None => {
                let mut row = json!({"transport": name, "state": "up", "consecutive_failures": 0});
                if let (Some(row), Some(rate)) = (row.as_object_mut(), rate.as_object()) {
                    row.extend(rate.clone());
                }
                rows.push(row);
            }
        }
    }
    Json(json!({ "transports": rows }))
}
