//! `/api/auth/lockouts`: the submission listener's failed-login counts and lockouts, and
//! clearing them (`relaygate lockouts list | clear`).

use std::net::IpAddr;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bad_request, AdminState};

/// `GET /api/auth/lockouts`: every counted (account, address) and address, locked ones
/// first.
pub(super) async fn list(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({ "lockouts": state.auth_guard.list() }))
}

/// The body of `POST /api/auth/lockouts/clear`: an address, an account, both, or
/// `all`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClearBody {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /api/auth/lockouts/clear`: forgets the matching counts; answers how many.
pub(super) async fn clear(State(state): State<AdminState>, Json(b): Json<ClearBody>) -> Response {
    let address = match b.address.as_deref().map(parse_address).transpose() {
        Ok(a) => a,
        Err(e) => return bad_request(e),
    };
    if address.is_none() && b.account.is_none() && !b.all {
        return bad_request("name an address, an account, or all");
    }
    if b.all && (address.is_some() || b.account.is_some()) {
        return bad_request("all clears everything: give it alone");
    }
    let cleared = state.auth_guard.clear(address, b.account.as_deref());
    tracing::info!(
        address = b.address.as_deref().unwrap_or("-"),
        account = b.account.as_deref().unwrap_or("-"),
        cleared,
        "admin: login lockouts cleared"
    );
    Json(json!({ "cleared": cleared })).into_response()
}

/// An address as `list` shows it (`2001:db8::/64` too) or as a client connects.
fn parse_address(s: &str) -> Result<IpAddr, String> {
    let bare = s.trim().strip_suffix("/64").unwrap_or(s.trim());
    bare.parse()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_listed() {
        assert_eq!(
            parse_address("2001:db8::/64").unwrap(),
            "2001:db8::".parse::<IpAddr>().unwrap()
        );
        assert!(parse_address("192.0.2.1").is_ok());
        assert!(parse_address("nope").is_err());
    }
}
