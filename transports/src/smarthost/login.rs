//! Logging in to the smarthost: AUTH with the password, or with an OAuth2 access token
//! from the transport's [`TokenSource`] when the mechanism chosen after TLS is XOAUTH2
//! or OAUTHBEARER. The token is asked for only then, so a transport whose list also
//! holds password mechanisms does not depend on the token endpoint when the server
//! offers one of those.

use std::sync::Arc;

use super::{AuthProbe, Conn, SmarthostAuth, SmarthostTransport};
use crate::{
    oauth2::{AccessToken, TokenError, TokenSource},
    outcome::{Stage, TransportError},
    sasl::Mechanism,
    session::AuthPlan,
};

impl SmarthostTransport {
    /// Logs in with access tokens from `tokens` when XOAUTH2 or OAUTHBEARER is chosen.
    pub fn with_token_source(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Where this transport's access tokens come from, if it has a source.
    pub fn token_source(&self) -> Option<&Arc<dyn TokenSource>> {
        self.tokens.as_ref()
    }

    /// An access token for a login with `mechanism`.
    async fn token_for(
        &self,
        host: &str,
        mechanism: Mechanism,
    ) -> Result<AccessToken, TransportError> {
        let Some(tokens) = &self.tokens else {
            return Err(TransportError::Protocol {
                host: host.to_string(),
                command: Stage::Auth,
                detail: format!("{mechanism} chosen but the transport has no oauth2 settings"),
            });
        };
        tokens.token().await.map_err(|source| {
            tracing::warn!(transport = %self.config.name, source = %tokens.describe(),
                error = %source, "no OAuth2 access token");
            token_error(host, mechanism, source)
        })
    }

    /// Plans and runs AUTH on `conn`; for a bearer mechanism with the access token
    /// `token`, or one asked from the token source now.
    pub(super) async fn login(
        &self,
        conn: &mut Conn,
        auth: &SmarthostAuth,
        token: Option<&AccessToken>,
    ) -> Result<AuthPlan, TransportError> {
        let plan = conn.session.plan_auth(&self.auth_params(auth, None))?;
        if !plan.mechanism.is_bearer() {
            conn.session
                .run_auth(&self.auth_params(auth, None), &plan)
                .await?;
            return Ok(plan);
        }
        let fetched;
        let token = match token {
            Some(t) => t,
            None => {
                fetched = self.token_for(&conn.host, plan.mechanism).await?;
                &fetched
            }
        };
        tracing::debug!(transport = %self.config.name, origin = token.origin.as_str(),
            valid_secs = token.valid_for.map(|d| d.as_secs()), "using OAuth2 access token");
        let result = conn
            .session
            .run_auth(&self.auth_params(auth, Some(&token.secret)), &plan)
            .await;
        if let (Err(TransportError::AuthFailed { .. }), Some(tokens)) = (&result, &self.tokens) {
            // A refused token is not handed out again: the next login gets a new one
            // (a permission granted since it was issued shows only in a new token).
            tokens.forget();
        }
        result.map(|()| plan)
    }

    /// `auth-test`'s token step, before connecting: with a token source and a bearer
    /// mechanism listed, gets a token and keeps it in `probe`; returns the step's result
    /// (`None` when there is no token step).
    pub(super) async fn probe_token(
        &self,
        probe: &mut AuthProbe,
    ) -> Option<Result<(), TransportError>> {
        let mechanism = self
            .config
            .auth
            .as_ref()?
            .mechanisms
            .iter()
            .copied()
            .find(|m| m.is_bearer())?;
        let tokens: &Arc<dyn TokenSource> = self.tokens.as_ref()?;
        match tokens.token().await {
            Ok(token) => {
                probe.token = Some(token);
                Some(Ok(()))
            }
            Err(source) => Some(Err(token_error(&self.config.host, mechanism, source))),
        }
    }
}

fn token_error(host: &str, mechanism: Mechanism, source: TokenError) -> TransportError {
    TransportError::Token {
        host: host.to_string(),
        mechanism,
        source,
    }
}
