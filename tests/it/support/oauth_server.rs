//! A local OAuth 2.0 token endpoint over HTTPS (a certificate from a test [`Pki`], on
//! 127.0.0.1): it answers `POST /token` with `application/x-www-form-urlencoded`
//! bodies, records every request's form, and either issues numbered tokens
//! (`PREFIX-1`, `PREFIX-2`, ... with the `expires_in` the test set) or refuses with an
//! OAuth error (RFC 6749 §5.2). One response per connection. The gateway reaches it as
//! `https://localhost:PORT/token` and trusts the CA through `tls.extra_ca_file`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::pki::Pki;

/// The largest request read.
const MAX_REQUEST: usize = 64 * 1024;

/// What the endpoint answers.
#[derive(Clone, Debug)]
enum Answer {
    /// A token `PREFIX-N` valid for this many seconds.
    Issue { prefix: String, expires_in: u64 },
    /// This status with `{"error": ..., "error_description": ...}`.
    Refuse {
        status: u16,
        error: String,
        description: String,
    },
}

/// One request the endpoint received.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The request line, e.g. `POST /token HTTP/1.1`.
    pub request_line: String,
    /// The Content-Type header.
    pub content_type: String,
    /// The form fields.
    pub form: BTreeMap<String, String>,
}

impl TokenRequest {
    /// A form field, "" when absent.
    pub fn field(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }
}

struct State {
    answer: Answer,
    requests: Vec<TokenRequest>,
    issued: Vec<String>,
}

/// The running endpoint; dropping it stops it.
pub struct OAuthServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OAuthServer {
    /// Starts on 127.0.0.1 with `pki`'s certificate, issuing `tok-N` valid for an hour.
    pub async fn start(pki: &Pki) -> Result<OAuthServer> {
        let acceptor = TlsAcceptor::from(pki.server_config()?);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the token endpoint")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            answer: Answer::Issue {
                prefix: "tok".into(),
                expires_in: 3600,
            },
            requests: Vec::new(),
            issued: Vec::new(),
        }));
        let task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Ok(OAuthServer { addr, state, task })
    }

    /// The token URL, by name (the certificate covers `localhost`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}/token", self.addr.port())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues `PREFIX-N` tokens valid for `expires_in` seconds from now on.
    pub fn issue(&self, prefix: &str, expires_in: u64) {
        self.lock().answer = Answer::Issue {
            prefix: prefix.to_string(),
            expires_in,
        };
    }

    /// Refuses every request from now on with `status` and this OAuth error.
    pub fn refuse(&self, status: u16, error: &str, description: &str) {
        self.lock().answer = Answer::Refuse {
            status,
            error: error.to_string(),
            description: description.to_string(),
        };
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.lock().requests.clone()
    }

    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<String> {
        self.lock().issued.clone()
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<Mutex<State>>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let state = state.clone();
                conns.spawn(async move {
                    // Errors (bad TLS, a vanished client) end the connection only.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        serve(acceptor, tcp, state),
                    )
                    .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    state: Arc<Mutex<State>>,
) -> Result<()> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, then as much body as Content-Length says.
    let (head_end, length) = loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 || raw.len() > MAX_REQUEST {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == "content-length")
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while raw.len() < head_end + length {
        let n = tls.read(&mut buf).await?;
        if n == 0 || raw.len() > MAX_REQUEST {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let form = parse_form(&String::from_utf8_lossy(&raw[head_end..head_end + length]));
    let (status, body) = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        state.requests.push(TokenRequest {
            request_line: request_line.clone(),
            content_type,
            form,
        });
        if !request_line.starts_with("POST /token ") {
            (404, r#"{"error":"not_found"}"#.to_string())
        } else {
            match state.answer.clone() {
                Answer::Issue { prefix, expires_in } => {
                    let token = format!("{prefix}-{}", state.issued.len() + 1);
                    state.issued.push(token.clone());
                    let body = serde_json::json!({
                        "access_token": token,
                        "token_type": "Bearer",
                        "expires_in": expires_in,
                    });
                    (200, body.to_string())
                }
                Answer::Refuse {
                    status,
                    error,
                    description,
                } => {
                    let body = serde_json::json!({
                        "error": error,
                        "error_description": description,
                    });
                    (status, body.to_string())
                }
            }
        }
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await?;
    Ok(())
}

/// Decodes an `application/x-www-form-urlencoded` body (WHATWG URL §5.1): `&`-separated
/// `name=value` pairs, `+` for a space, `%XX` escapes.
fn parse_form(body: &str) -> BTreeMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                        Some(Ok(b)) => {
                            out.push(b);
                            i += 2;
                        }
                        Some(Err(_)) | None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms() {
        let f = super::parse_form(
            "grant_type=client_credentials&scope=https%3A%2F%2Fa%2F.default&id=a+b&x=%",
        );
        assert_eq!(f["grant_type"], "client_credentials");
        assert_eq!(f["scope"], "https://a/.default");
        assert_eq!(f["id"], "a b");
        assert_eq!(f["x"], "%");
    }
}
