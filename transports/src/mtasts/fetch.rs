//! Fetching the policy file: `GET https://mta-sts.<domain>/.well-known/mta-sts.txt`
//! (RFC 8461 §3.3), behind the [`PolicyFetcher`] trait so that tests can serve policies
//! without a network.
//!
//! [`HttpsFetcher`] is the real one: an HTTP/1.1 GET on hyper over a rustls connection
//! that is PKIX-verified against [`TlsRoots`] (webpki roots plus `tls.extra_ca_file`) for
//! the name `mta-sts.<domain>`. The host's addresses come from our own [`Resolver`], so
//! the test DNS server (and DNSSEC-aware resolution) applies here too. Only a `200` with
//! `Content-Type: text/plain` counts; redirects are refused (RFC 8461 §3.3: senders MUST
//! NOT follow them), the body is capped and the whole fetch has a deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;

use super::policy::MAX_POLICY_SIZE;
use crate::dns::{normalize_name, resolve_host, AddressFamilies, DestinationError, Host, Resolver};
use crate::tls::{verified_client_config, TlsRoots};

/// The path of the policy file (RFC 8461 §3.2).
pub const WELL_KNOWN_PATH: &str = "/.well-known/mta-sts.txt";
/// Default bound on one whole fetch (RFC 8461 §3.3 suggests about a minute).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The policy host of a domain: `mta-sts.<domain>`.
pub fn policy_host(domain: &str) -> String {
    format!("mta-sts.{}", normalize_name(domain))
}

/// The policy URL, with the port when it is not 443.
pub fn policy_url(domain: &str, port: u16) -> String {
    match port {
        443 => format!("https://{}{WELL_KNOWN_PATH}", policy_host(domain)),
        _ => format!("https://{}:{port}{WELL_KNOWN_PATH}", policy_host(domain)),
    }
}

/// Why no policy body was obtained.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `mta-sts.<domain>` does not exist (or has no address): no policy is served.
    #[error("fetching {url}: the policy host does not exist: {source}")]
    NoPolicyHost {
        /// The URL.
        url: String,
        /// What DNS said.
        #[source]
        source: DestinationError,
    },
    /// Resolving the policy host failed without a definite answer.
    #[error("fetching {url}: {source}")]
    Dns {
        /// The URL.
        url: String,
        /// What DNS said.
        #[source]
        source: DestinationError,
    },
    /// No address of the policy host accepted a connection.
    #[error("fetching {url}: connecting to {addr}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The last address tried.
        addr: SocketAddr,
        /// The last connection error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (untrusted or wrong certificate included).
    #[error("fetching {url}: TLS: {source}")]
    Tls {
        /// The URL.
        url: String,
        /// What rustls said.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("fetching {url}: HTTP: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What hyper said.
        message: String,
    },
    /// `404 Not Found`: no policy is served.
    #[error("fetching {url}: 404 Not Found")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// A redirect, which senders must not follow (RFC 8461 §3.3).
    #[error("fetching {url}: refusing redirect {status} to {location:?}")]
    Redirect {
        /// The URL.
        url: String,
        /// The 3xx status.
        status: u16,
        /// Where it pointed.
        location: Option<String>,
    },
    /// Any other status than 200 (RFC 8461 §3.3).
    #[error("fetching {url}: HTTP status {status}, 200 required")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// Not `text/plain` (RFC 8461 §3.2).
    #[error("fetching {url}: content type {content_type:?}, text/plain required")]
    ContentType {
        /// The URL.
        url: String,
        /// The Content-Type received ("" when absent).
        content_type: String,
    },
    /// The body exceeds the cap.
    #[error("fetching {url}: policy larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// The body is not UTF-8.
    #[error("fetching {url}: policy is not UTF-8 text")]
    NotText {
        /// The URL.
        url: String,
    },
    /// The whole fetch took too long.
    #[error("fetching {url}: no complete answer within {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        after: Duration,
    },
}

impl FetchError {
    /// The domain serves no policy (no policy host, or 404) rather than failing to.
    pub fn is_no_policy(&self) -> bool {
        match self {
            FetchError::NoPolicyHost { .. } | FetchError::NotFound { .. } => true,
            FetchError::Dns { .. }
            | FetchError::Connect { .. }
            | FetchError::Tls { .. }
            | FetchError::Http { .. }
            | FetchError::Redirect { .. }
            | FetchError::Status { .. }
            | FetchError::ContentType { .. }
            | FetchError::TooLarge { .. }
            | FetchError::NotText { .. }
            | FetchError::Timeout { .. } => false,
        }
    }
}

/// A boxed fetch future borrowing the fetcher and the domain.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<String, FetchError>> + Send + 'a>>;

/// Gets the policy file body of a domain.
pub trait PolicyFetcher: Send + Sync {
    /// The body of `https://mta-sts.<domain>/.well-known/mta-sts.txt` (a `200` with
    /// `text/plain`), not yet parsed.
    fn fetch<'a>(&'a self, domain: &'a str) -> FetchFuture<'a>;
}

/// The real fetcher: HTTPS with PKIX verification.
#[derive(Clone)]
pub struct HttpsFetcher {
    resolver: Arc<dyn Resolver>,
    tls: Arc<ClientConfig>,
    port: u16,
    timeout: Duration,
    max_body: usize,
    families: AddressFamilies,
}

impl HttpsFetcher {
    /// Port 443, [`DEFAULT_TIMEOUT`], a [`MAX_POLICY_SIZE`] body cap, both families.
    pub fn new(resolver: Arc<dyn Resolver>, roots: &TlsRoots) -> Self {
        let mut tls = (*verified_client_config(roots)).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        HttpsFetcher {
            resolver,
            tls: Arc::new(tls),
            port: 443,
            timeout: DEFAULT_TIMEOUT,
            max_body: MAX_POLICY_SIZE,
            families: AddressFamilies::BOTH,
        }
    }

    /// Another HTTPS port (`mtasts.https_port`, labs and tests).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Another bound on one whole fetch.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Another body cap.
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// Only these address families (`direct.disable_ipv4/6`).
    pub fn with_families(mut self, families: AddressFamilies) -> Self {
        self.families = families;
        self
    }

    async fn get(&self, domain: &str, url: &str) -> Result<String, FetchError> {
        let host = policy_host(domain);
        let addrs = resolve_host(&*self.resolver, &Host::Name(host.clone()), self.families)
            .await
            .map_err(|source| {
                let url = url.to_string();
                if source.is_temporary() {
                    FetchError::Dns { url, source }
                } else {
                    FetchError::NoPolicyHost { url, source }
                }
            })?;
        let mut last = None;
        let mut tcp = None;
        for ip in addrs.ips {
            let addr = SocketAddr::new(ip, self.port);
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let tcp = match (tcp, last) {
            (Some(tcp), _) => tcp,
            (None, Some((addr, source))) => {
                return Err(FetchError::Connect {
                    url: url.to_string(),
                    addr,
                    source,
                })
            }
            (None, None) => {
                return Err(FetchError::Connect {
                    url: url.to_string(),
                    addr: SocketAddr::from(([0, 0, 0, 0], self.port)),
                    source: io::Error::new(io::ErrorKind::NotFound, "no address to dial"),
                })
            }
        };
        let server_name = ServerName::try_from(host.clone()).map_err(|e| FetchError::Tls {
            url: url.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        // RFC 8461 §3.3: the HTTPS certificate MUST be PKIX-valid for mta-sts.<domain>.
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|source| FetchError::Tls {
                url: url.to_string(),
                source,
            })?;
        let http = |e: hyper::Error| FetchError::Http {
            url: url.to_string(),
            message: e.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http)?;
        let host_header = match self.port {
            443 => host,
            port => format!("{host}:{port}"),
        };
        let request = Request::get(WELL_KNOWN_PATH)
            .header(HOST, host_header)
            .header(USER_AGENT, "relaygate")
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(http)?;
            self.read_response(url, response).await
        };
        // The connection task moves the bytes; run it beside the exchange, and let the
        // exchange finish on its own if the connection ends first (body already buffered).
        tokio::pin!(exchange, connection);
        tokio::select! {
            result = &mut exchange => result,
            ended = &mut connection => match ended {
                Ok(()) => exchange.await,
                Err(e) => Err(http(e)),
            },
        }
    }

    async fn read_response(
        &self,
        url: &str,
        response: hyper::Response<hyper::body::Incoming>,
    ) -> Result<String, FetchError> {
        let url = url.to_string();
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound { url });
        }
        if status.is_redirection() {
            // RFC 8461 §3.3: senders MUST NOT follow HTTP redirects.
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            return Err(FetchError::Redirect {
                url,
                status: status.as_u16(),
                location,
            });
        }
        if status != StatusCode::OK {
            // RFC 8461 §3.3: only a 200 response is a policy.
            return Err(FetchError::Status {
                url,
                status: status.as_u16(),
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if !is_text_plain(&content_type) {
            // RFC 8461 §3.2: the policy is served as text/plain.
            return Err(FetchError::ContentType { url, content_type });
        }
        let body = crate::capped_body::read_capped(response, self.max_body)
            .await
            .map_err(|e| match e {
                crate::capped_body::BodyError::TooLarge => FetchError::TooLarge {
                    url: url.clone(),
                    limit: self.max_body,
                },
                crate::capped_body::BodyError::Http(message) => FetchError::Http {
                    url: url.clone(),
                    message,
                },
            })?;
        String::from_utf8(body.to_vec()).map_err(|_| FetchError::NotText { url })
    }
}

impl PolicyFetcher for HttpsFetcher {
    fn fetch<'a>(&'a self, domain: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let url = policy_url(domain, self.port);
            match tokio::time::timeout(self.timeout, self.get(domain, &url)).await {
                Ok(result) => result,
                Err(_) => Err(FetchError::Timeout {
                    url,
                    after: self.timeout,
                }),
            }
        })
    }
}

/// `text/plain`, any case, with or without parameters (`; charset=utf-8`).
fn is_text_plain(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("");
    essence.trim().eq_ignore_ascii_case("text/plain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtasts_urls_and_content_types() {
        assert_eq!(
            policy_url("Example.COM.", 443),
            "https://mta-sts.example.com/.well-known/mta-sts.txt"
        );
        assert_eq!(
            policy_url("example.com", 8443),
            "https://mta-sts.example.com:8443/.well-known/mta-sts.txt"
        );
        for ok in [
            "text/plain",
            "Text/Plain; charset=utf-8",
            " text/plain ;charset=us-ascii",
        ] {
            assert!(is_text_plain(ok), "{ok}");
        }
        for bad in ["", "text/html", "text/plainx", "application/octet-stream"] {
            assert!(!is_text_plain(bad), "{bad}");
        }
    }
}
