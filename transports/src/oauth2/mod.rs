//! OAuth 2.0 access tokens for the bearer-token SASL mechanisms (XOAUTH2, OAUTHBEARER)
//! of smarthost transports.
//!
//! A transport that logs in with a token asks its [`TokenSource`] for one at each login
//! (after the EHLO inside TLS has shown that a bearer mechanism will be used), then hands
//! it to the mechanism (`crate::sasl::oauth`). Two sources exist:
//!
//! - [`TokenFile`]: a file that another tool keeps fresh; it is read again at every
//!   login, and its expiry is not known to us.
//! - [`OAuthClient`]: relaygate's own client for the token endpoint, with the
//!   client-credentials grant (RFC 6749 §4.4) or the refresh-token grant (RFC 6749 §6).
//!   It POSTs a form to the endpoint over PKIX-verified HTTPS ([`HttpsTokenClient`]),
//!   reads `access_token` and `expires_in`, and keeps the token until
//!   [`REFRESH_MARGIN`] before it expires; concurrent logins share one request.
//!
//! Everything that fails on the way — an unreadable file, the endpoint unreachable, an
//! OAuth error answer such as `invalid_grant` — is a [`TokenError`]; the smarthost
//! turns it into a temporary `auth` failure of the attempt. Tokens travel as
//! [`Secret`]s; no `Debug` output, log line or error message holds one.
//!
//! # Layout
//!
//! - this file — the [`TokenSource`] trait, [`AccessToken`], [`TokenError`], [`TokenFile`].
//! - [`wire`] — the endpoint URL, the request form and the JSON answers (no I/O).
//! - [`client`] — the grants and the token cache ([`OAuthClient`]).
//! - [`http`] — the HTTPS POST behind the [`TokenHttp`] trait, so tests can inject one.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::session::Secret;

pub mod client;
pub mod http;
pub mod wire;

pub use client::{Grant, OAuthClient, OAuthClientConfig, REFRESH_MARGIN};
pub use http::{HttpsTokenClient, TokenHttp, TokenResponse};
pub use wire::TokenEndpoint;

/// Where an [`AccessToken`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// Read from the token file just now.
    File,
    /// Obtained from the token endpoint for this login.
    Fetched,
    /// Obtained earlier from the endpoint and still valid.
    Cached,
}

impl TokenOrigin {
    /// The label used in logs and by `auth-test`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenOrigin::File => "read from the token file",
            TokenOrigin::Fetched => "fetched from the token endpoint",
            TokenOrigin::Cached => "cached from an earlier fetch",
        }
    }
}

/// An access token for one login. `Debug` shows no token.
#[derive(Clone)]
pub struct AccessToken {
    /// The token itself.
    pub secret: Secret,
    /// How long it stays valid from now, when known (`expires_in`).
    pub valid_for: Option<Duration>,
    /// Where it came from.
    pub origin: TokenOrigin,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &self.secret)
            .field("valid_for", &self.valid_for)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Why no token could be had. No variant holds a token, a secret or a refresh token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file (or a secret file) could not be read.
    #[error("cannot read {what} {path}: {source}", path = .path.display())]
    ReadFile {
        /// Which file, e.g. "token_file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The token file holds no token.
    #[error("token_file {path} is empty", path = .path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// The token endpoint could not be reached.
    #[error("token endpoint {url}: connect failed: {source}")]
    Connect {
        /// The endpoint.
        url: String,
        /// The connection error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (an untrusted or wrong certificate included).
    #[error("token endpoint {url}: TLS failed: {source}")]
    Tls {
        /// The endpoint.
        url: String,
        /// What rustls said.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("token endpoint {url}: HTTP: {message}")]
    Http {
        /// The endpoint.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// No complete answer in time.
    #[error("token endpoint {url}: no complete answer within {after:?}")]
    Timeout {
        /// The endpoint.
        url: String,
        /// The deadline.
        after: Duration,
    },
    /// The answer is larger than we read.
    #[error("token endpoint {url}: answer larger than {limit} bytes")]
    TooLarge {
        /// The endpoint.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// An OAuth error answer (RFC 6749 §5.2), e.g. `invalid_grant` for an expired or
    /// revoked refresh token, `invalid_client` for a wrong secret.
    #[error(
        "token endpoint {url} refused the request (HTTP {status}): {error}{description}",
        description = .description.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    Refused {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The `error` code.
        error: String,
        /// `error_description`, when given.
        description: Option<String>,
    },
    /// Another status than 200 without an OAuth error.
    #[error("token endpoint {url}: HTTP status {status}")]
    Status {
        /// The endpoint.
        url: String,
        /// The status.
        status: u16,
    },
    /// A 200 answer that is not a usable token response (RFC 6749 §5.1).
    #[error("token endpoint {url}: unusable answer: {reason}")]
    BadResponse {
        /// The endpoint.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The future of [`TokenSource::token`].
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send + 'a>>;

/// Gives a transport an access token for its next login.
pub trait TokenSource: Send + Sync {
    /// A token that is valid now (as far as we know).
    fn token(&self) -> TokenFuture<'_>;

    /// Where tokens come from, for logs and `auth-test` (no secret in it).
    fn describe(&self) -> String;

    /// The server refused the last token: do not hand it out again. A source that
    /// caches drops its token; the default does nothing.
    fn forget(&self) {}
}

/// A token file kept fresh by another tool; read again at every login. Its first line,
/// trimmed, is the token.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// The source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TokenFile { path: path.into() }
    }
}

impl TokenSource for TokenFile {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let text = tokio::fs::read_to_string(&self.path)
                .await
                .map_err(|source| TokenError::ReadFile {
                    what: "token_file",
                    path: self.path.clone(),
                    source,
                })?;
            let token = text.lines().next().unwrap_or_default().trim();
            if token.is_empty() {
                return Err(TokenError::EmptyFile {
                    path: self.path.clone(),
                });
            }
            Ok(AccessToken {
                secret: Secret::new(token),
                valid_for: None,
                origin: TokenOrigin::File,
            })
        })
    }

    fn describe(&self) -> String {
        format!("token_file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn token_file_is_read_at_every_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let source = TokenFile::new(&path);
        assert!(matches!(
            source.token().await,
            Err(TokenError::ReadFile { .. })
        ));
        std::fs::write(&path, "first-token\n").unwrap();
        let t = source.token().await.unwrap();
        assert_eq!(t.secret.expose(), "first-token");
        assert_eq!(t.origin, TokenOrigin::File);
        assert_eq!(t.valid_for, None);
        assert!(!format!("{t:?}").contains("first-token"));
        // Another tool replaced it.
        std::fs::write(&path, "  second-token  \r\nignored\n").unwrap();
        assert_eq!(
            source.token().await.unwrap().secret.expose(),
            "second-token"
        );
        std::fs::write(&path, "\n").unwrap();
        let err = source.token().await.unwrap_err();
        assert!(matches!(err, TokenError::EmptyFile { .. }), "{err}");
        assert!(source.describe().contains("token_file"));
    }

    #[test]
    fn refused_reads_well() {
        let e = TokenError::Refused {
            url: "https://login.test/token".into(),
            status: 400,
            error: "invalid_grant".into(),
            description: Some("AADSTS70008: the refresh token has expired".into()),
        };
        assert_eq!(
            e.to_string(),
            "token endpoint https://login.test/token refused the request (HTTP 400): \
             invalid_grant: AADSTS70008: the refresh token has expired"
        );
    }
}
