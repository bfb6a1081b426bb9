//! relaygate's own OAuth 2.0 client: the client-credentials grant (RFC 6749 §4.4) and
//! the refresh-token grant (RFC 6749 §6) against one token endpoint, with a cache.
//!
//! At each login the transport asks [`OAuthClient::token`]. A cached token is handed out
//! while it has more than [`REFRESH_MARGIN`] left; otherwise one request goes to the
//! endpoint (concurrent logins wait for it rather than sending their own) and its token
//! is cached for `expires_in`. An answer without `expires_in` is used for that login
//! only. When the endpoint fails while the old token has not yet expired, the old one
//! is used for this login (logged), so a short endpoint outage costs nothing.
//!
//! With the refresh-token grant, a new `refresh_token` in an answer (providers that
//! rotate them) replaces the one from the file in memory for later requests; relaygate
//! never writes the file, which an operator (or a reload) may change at any time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{
    http::TokenHttp,
    wire::{parse_answer, TokenEndpoint, TokenRequest},
    AccessToken, TokenError, TokenFuture, TokenOrigin, TokenSource,
};
use crate::session::Secret;

/// A cached token is renewed when less than this is left of its lifetime, so that it
/// cannot expire between the login and the server's check of it. A token that lives
/// shorter than this is used for the login it was fetched for only.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Which grant a client uses.
#[derive(Clone, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 §4.4: the client authenticates as itself (Microsoft 365 app-only
    /// access); needs the client secret.
    ClientCredentials,
    /// RFC 6749 §6: a refresh token obtained once with the user's consent (Google).
    RefreshToken(Secret),
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Grant {
    /// The `grant_type` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::RefreshToken(_) => "refresh_token",
        }
    }
}

/// The settings of one client. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct OAuthClientConfig {
    /// The token endpoint.
    pub endpoint: TokenEndpoint,
    /// `client_id`.
    pub client_id: String,
    /// The client secret (from `client_secret_file`), if any.
    pub client_secret: Option<Secret>,
    /// The grant.
    pub grant: Grant,
    /// `scope` (space-separated), empty for none.
    pub scope: String,
}

#[derive(Default)]
struct State {
    /// The last token and when it expires.
    cached: Option<(Secret, Instant)>,
    /// A refresh token the endpoint issued in place of the configured one.
    rotated_refresh: Option<Secret>,
}

/// The client; share it (`Arc`) between the logins of a transport.
pub struct OAuthClient {
    config: OAuthClientConfig,
    http: Arc<dyn TokenHttp>,
    state: Mutex<State>,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// A client for `config`, posting through `http`.
    pub fn new(config: OAuthClientConfig, http: Arc<dyn TokenHttp>) -> Self {
        OAuthClient {
            config,
            http,
            state: Mutex::new(State::default()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &OAuthClientConfig {
        &self.config
    }

    async fn get(&self) -> Result<AccessToken, TokenError> {
        // Held across the request: concurrent logins wait for one answer.
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some((token, expires)) = &state.cached {
            if *expires > now + REFRESH_MARGIN {
                return Ok(AccessToken {
                    secret: token.clone(),
                    valid_for: Some(*expires - now),
                    origin: TokenOrigin::Cached,
                });
            }
        }
        let cfg = &self.config;
        let refresh_token = match &cfg.grant {
            Grant::ClientCredentials => None,
            Grant::RefreshToken(configured) => {
                Some(state.rotated_refresh.as_ref().unwrap_or(configured))
            }
        };
        let request = TokenRequest {
            client_id: &cfg.client_id,
            client_secret: cfg.client_secret.as_ref(),
            refresh_token,
            scope: &cfg.scope,
        };
        let url = cfg.endpoint.url();
        let answer = match self.http.post_form(&cfg.endpoint, request.form()).await {
            Ok(response) => parse_answer(url, response.status, &response.body),
            Err(e) => Err(e),
        };
        let grant = match answer {
            Ok(grant) => grant,
            Err(e) => {
                // The old token may still be good for a moment: better than failing.
                if let Some((token, expires)) = &state.cached {
                    let now = Instant::now();
                    if *expires > now {
                        tracing::warn!(endpoint = %url, error = %e,
                            left_secs = (*expires - now).as_secs(),
                            "token refresh failed; using the current token until it expires");
                        return Ok(AccessToken {
                            secret: token.clone(),
                            valid_for: Some(*expires - now),
                            origin: TokenOrigin::Cached,
                        });
                    }
                }
                state.cached = None;
                return Err(e);
            }
        };
        if let Some(rotated) = grant.refresh_token {
            if matches!(cfg.grant, Grant::RefreshToken(_)) {
                state.rotated_refresh = Some(rotated);
            }
        }
        let fetched = Instant::now();
        state.cached = grant
            .expires_in
            .map(|lifetime| (grant.access_token.clone(), fetched + lifetime));
        tracing::info!(endpoint = %url, grant = cfg.grant.as_str(),
            expires_in_secs = grant.expires_in.map(|d| d.as_secs()),
            "OAuth2 access token obtained");
        Ok(AccessToken {
            secret: grant.access_token,
            valid_for: grant.expires_in,
            origin: TokenOrigin::Fetched,
        })
    }
}

impl TokenSource for OAuthClient {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.get())
    }

    fn describe(&self) -> String {
        format!(
            "token endpoint {} ({} grant)",
            self.config.endpoint.url(),
            self.config.grant.as_str()
        )
    }

    fn forget(&self) {
        // Busy means a request is under way, whose answer replaces the token anyway.
        if let Ok(mut state) = self.state.try_lock() {
            state.cached = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::http::{PostFuture, TokenResponse};
    use std::collections::VecDeque;
    use std::sync::Mutex as StdMutex;

    /// Canned answers in order; records every form posted.
    #[derive(Default)]
    struct Canned {
        answers: StdMutex<VecDeque<Result<TokenResponse, TokenError>>>,
        forms: StdMutex<Vec<String>>,
    }

    impl Canned {
        fn push(&self, status: u16, body: &str) {
            self.answers.lock().unwrap().push_back(Ok(TokenResponse {
                status,
                body: body.as_bytes().to_vec(),
            }));
        }

        fn token(&self, token: &str, expires_in: u64) {
            self.push(
                200,
                &format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#),
            );
        }

        fn forms(&self) -> Vec<String> {
            self.forms.lock().unwrap().clone()
        }
    }

    impl TokenHttp for Canned {
        fn post_form<'a>(&'a self, endpoint: &'a TokenEndpoint, form: String) -> PostFuture<'a> {
            self.forms.lock().unwrap().push(form);
            let next = self.answers.lock().unwrap().pop_front();
            Box::pin(async move {
                next.unwrap_or_else(|| {
                    Err(TokenError::Http {
                        url: endpoint.url().to_string(),
                        message: "no answer scripted".into(),
                    })
                })
            })
        }
    }

    fn client(grant: Grant, http: &Arc<Canned>) -> OAuthClient {
        OAuthClient::new(
            OAuthClientConfig {
                endpoint: TokenEndpoint::parse("https://login.test/t").unwrap(),
                client_id: "cid".into(),
                client_secret: Some(Secret::new("csecret")),
                grant,
                scope: "mail".into(),
            },
            Arc::clone(http) as Arc<dyn TokenHttp>,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn cached_until_the_margin_then_refreshed() {
        let http = Arc::new(Canned::default());
        let c = client(Grant::ClientCredentials, &http);
        http.token("tok-1", 3600);
        http.token("tok-2", 3600);
        let t = c.token().await.unwrap();
        assert_eq!(
            (t.secret.expose(), t.origin),
            ("tok-1", TokenOrigin::Fetched)
        );
        assert_eq!(t.valid_for, Some(Duration::from_secs(3600)));
        tokio::time::advance(Duration::from_secs(3600 - 61)).await;
        let t = c.token().await.unwrap();
        assert_eq!(
            (t.secret.expose(), t.origin),
            ("tok-1", TokenOrigin::Cached)
        );
        assert_eq!(t.valid_for, Some(Duration::from_secs(61)));
        assert_eq!(http.forms().len(), 1);
        // Within the last minute: a new one.
        tokio::time::advance(Duration::from_secs(2)).await;
        let t = c.token().await.unwrap();
        assert_eq!(
            (t.secret.expose(), t.origin),
            ("tok-2", TokenOrigin::Fetched)
        );
        assert_eq!(
            http.forms(),
            vec!["grant_type=client_credentials&client_id=cid&client_secret=csecret&scope=mail"; 2]
        );
        assert!(c.describe().contains("client_credentials"));
        assert!(!format!("{c:?}").contains("csecret"));
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_and_lifetime_less_tokens_serve_one_login() {
        let http = Arc::new(Canned::default());
        let c = client(Grant::ClientCredentials, &http);
        http.token("short", 30);
        http.push(200, r#"{"access_token":"forever?","token_type":"Bearer"}"#);
        http.token("third", 3600);
        assert_eq!(c.token().await.unwrap().secret.expose(), "short");
        assert_eq!(c.token().await.unwrap().secret.expose(), "forever?");
        assert_eq!(c.token().await.unwrap().secret.expose(), "third");
        assert_eq!(http.forms().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_grant_uses_the_rotated_token() {
        let http = Arc::new(Canned::default());
        let c = client(Grant::RefreshToken(Secret::new("rt-file")), &http);
        http.push(
            200,
            r#"{"access_token":"a1","token_type":"Bearer","expires_in":30,"refresh_token":"rt-new"}"#,
        );
        http.token("a2", 100);
        assert_eq!(c.token().await.unwrap().secret.expose(), "a1");
        assert_eq!(c.token().await.unwrap().secret.expose(), "a2");
        let forms = http.forms();
        assert!(
            forms[0].starts_with("grant_type=refresh_token&refresh_token=rt-file&"),
            "{forms:?}"
        );
        assert!(forms[1].contains("refresh_token=rt-new&"), "{forms:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_the_grace_of_a_live_token() {
        let http = Arc::new(Canned::default());
        let c = client(Grant::RefreshToken(Secret::new("rt")), &http);
        http.push(
            400,
            r#"{"error":"invalid_grant","error_description":"expired or revoked"}"#,
        );
        let e = c.token().await.unwrap_err();
        assert!(
            matches!(&e, TokenError::Refused { error, .. } if error == "invalid_grant"),
            "{e}"
        );
        // A token within its margin, then the endpoint fails: the token still serves.
        http.token("live", 90);
        http.push(500, "oops");
        http.push(500, "oops");
        assert_eq!(c.token().await.unwrap().secret.expose(), "live");
        tokio::time::advance(Duration::from_secs(31)).await;
        let t = c.token().await.unwrap();
        assert_eq!((t.secret.expose(), t.origin), ("live", TokenOrigin::Cached));
        assert_eq!(t.valid_for, Some(Duration::from_secs(59)));
        // Once it has expired, the failure is the caller's.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(matches!(
            c.token().await,
            Err(TokenError::Status { status: 500, .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_forgotten() {
        let http = Arc::new(Canned::default());
        let c = client(Grant::ClientCredentials, &http);
        http.token("refused", 3600);
        http.token("next", 3600);
        assert_eq!(c.token().await.unwrap().secret.expose(), "refused");
        c.forget();
        let t = c.token().await.unwrap();
        assert_eq!(
            (t.secret.expose(), t.origin),
            ("next", TokenOrigin::Fetched)
        );
        assert_eq!(c.token().await.unwrap().origin, TokenOrigin::Cached);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_logins_share_one_request() {
        let http = Arc::new(Canned::default());
        let c = Arc::new(client(Grant::ClientCredentials, &http));
        http.token("shared", 3600);
        let (a, b) = tokio::join!(c.token(), c.token());
        assert_eq!(a.unwrap().secret.expose(), "shared");
        assert_eq!(b.unwrap().secret.expose(), "shared");
        assert_eq!(http.forms().len(), 1);
    }
}
