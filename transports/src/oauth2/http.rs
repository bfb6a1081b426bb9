//! The HTTPS POST to the token endpoint, behind the [`TokenHttp`] trait so the grant
//! logic can be tested with canned answers.
//!
//! [`HttpsTokenClient`] is the real one, built like the MTA-STS policy fetch: HTTP/1.1
//! on hyper over a rustls connection PKIX-verified against [`TlsRoots`] (webpki roots
//! plus `tls.extra_ca_file`) for the endpoint's host name, the connection opened by a
//! [`Connector`] (so the host resolves through `[dns]` like smarthost names), no
//! redirects followed, the answer capped and the whole exchange under one deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::{wire::TokenEndpoint, TokenError};
use crate::stream::Connector;
use crate::tls::{verified_client_config, TlsRoots};

/// Bound on one whole token request (connect, TLS, request, answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read; token answers are a few kilobytes (JWTs included).
pub const MAX_ANSWER: usize = 64 * 1024;

/// The endpoint's answer, not yet interpreted. `Debug` shows no body (it may hold a
/// token).
#[derive(Clone)]
pub struct TokenResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("status", &self.status)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// The future of [`TokenHttp::post_form`].
pub type PostFuture<'a> =
    Pin<Box<dyn Future<Output = Result<TokenResponse, TokenError>> + Send + 'a>>;

/// POSTs a form to a token endpoint.
pub trait TokenHttp: Send + Sync {
    /// Sends `form` (`application/x-www-form-urlencoded`) to `endpoint` and returns the
    /// answer, whatever its status.
    fn post_form<'a>(&'a self, endpoint: &'a TokenEndpoint, form: String) -> PostFuture<'a>;
}

/// The real client: HTTPS with PKIX verification.
#[derive(Clone)]
pub struct HttpsTokenClient {
    connector: Arc<dyn Connector>,
    tls: Arc<ClientConfig>,
    timeout: Duration,
    max_answer: usize,
}

impl std::fmt::Debug for HttpsTokenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsTokenClient")
            .field("timeout", &self.timeout)
            .field("max_answer", &self.max_answer)
            .finish_non_exhaustive()
    }
}

impl HttpsTokenClient {
    /// A client connecting through `connector` and trusting `roots`, with
    /// [`DEFAULT_TIMEOUT`] and a [`MAX_ANSWER`] cap.
    pub fn new(connector: Arc<dyn Connector>, roots: &TlsRoots) -> Self {
        let mut tls = (*verified_client_config(roots)).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        HttpsTokenClient {
            connector,
            tls: Arc::new(tls),
            timeout: DEFAULT_TIMEOUT,
            max_answer: MAX_ANSWER,
        }
    }

    /// Another bound on one whole request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn post(
        &self,
        endpoint: &TokenEndpoint,
        form: String,
    ) -> Result<TokenResponse, TokenError> {
        let url = endpoint.url();
        let (io, _addr) = self
            .connector
            .connect(endpoint.host(), endpoint.port())
            .await
            .map_err(|source| TokenError::Connect {
                url: url.to_string(),
                source,
            })?;
        let server_name =
            ServerName::try_from(endpoint.host().to_string()).map_err(|e| TokenError::Tls {
                url: url.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
        // RFC 6749 §3.2: the token endpoint is reached over TLS, its certificate
        // verified for its name (RFC 2818).
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(server_name, io)
            .await
            .map_err(|source| TokenError::Tls {
                url: url.to_string(),
                source,
            })?;
        let http = |e: hyper::Error| TokenError::Http {
            url: url.to_string(),
            message: e.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http)?;
        let request = Request::post(endpoint.path())
            .header(HOST, endpoint.host_header())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "relaygate")
            .header(CONNECTION, "close")
            .header(CONTENT_LENGTH, form.len())
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| TokenError::Http {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(http)?;
            let status = response.status().as_u16();
            let body = crate::capped_body::read_capped(response, self.max_answer)
                .await
                .map_err(|e| match e {
                    crate::capped_body::BodyError::TooLarge => TokenError::TooLarge {
                        url: url.to_string(),
                        limit: self.max_answer,
                    },
                    crate::capped_body::BodyError::Http(message) => TokenError::Http {
                        url: url.to_string(),
                        message,
                    },
                })?;
            Ok(TokenResponse {
                status,
                body: body.to_vec(),
            })
        };
        // The connection task moves the bytes; run it beside the exchange, and let the
        // exchange finish on its own if the connection ends first (answer buffered).
        tokio::pin!(exchange, connection);
        tokio::select! {
            result = &mut exchange => result,
            ended = &mut connection => match ended {
                Ok(()) => exchange.await,
                Err(e) => Err(http(e)),
            },
        }
    }
}

impl TokenHttp for HttpsTokenClient {
    fn post_form<'a>(&'a self, endpoint: &'a TokenEndpoint, form: String) -> PostFuture<'a> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.post(endpoint, form)).await {
                Ok(result) => result,
                Err(_) => Err(TokenError::Timeout {
                    url: endpoint.url().to_string(),
                    after: self.timeout,
                }),
            }
        })
    }
}
