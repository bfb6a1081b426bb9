//! A small HTTPS server for MTA-STS policies (RFC 8461 §3.3), on 127.0.0.1 with a
//! certificate from a test [`Pki`]: it answers `GET /.well-known/mta-sts.txt` for each
//! policy host (`mta-sts.<domain>`, from the Host header) with what the test set for
//! that domain, counts the requests, and closes every connection after one response.
//! The gateway reaches it through `mtasts.https_port` and trusts the CA through
//! `tls.extra_ca_file`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::pki::Pki;

/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// What the server answers for one domain.
#[derive(Clone, Debug)]
enum Answer {
    /// `200`, `text/plain`, this body.
    Policy(String),
    /// This status with an empty body (404, 500...).
    Status(u16),
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    requests: HashMap<String, usize>,
}

/// The running server; dropping it stops it.
pub struct PolicyServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PolicyServer {
    /// Starts on 127.0.0.1 with `pki`'s server certificate (which must cover the
    /// `mta-sts.<domain>` names asked for). Unknown domains get 404.
    pub async fn start(pki: &Pki) -> Result<PolicyServer> {
        let acceptor = TlsAcceptor::from(pki.server_config()?);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the policy server")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Ok(PolicyServer { addr, state, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `policy` (the policy file text) for `domain`.
    pub fn set_policy(&self, domain: &str, policy: &str) {
        self.lock()
            .answers
            .insert(domain.to_string(), Answer::Policy(policy.to_string()));
    }

    /// Answers `status` (with no policy) for `domain`.
    pub fn set_status(&self, domain: &str, status: u16) {
        self.lock()
            .answers
            .insert(domain.to_string(), Answer::Status(status));
    }

    /// Requests received for `domain`'s policy.
    pub fn requests(&self, domain: &str) -> usize {
        self.lock().requests.get(domain).copied().unwrap_or(0)
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
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let host = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    // "mta-sts.dst.test:PORT" → "dst.test".
    let host = host.split(':').next().unwrap_or_default();
    let domain = host.strip_prefix("mta-sts.").unwrap_or(host).to_string();
    let answer = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        *state.requests.entry(domain.clone()).or_insert(0) += 1;
        state.answers.get(&domain).cloned()
    };
    let well_known = request_line.starts_with("GET /.well-known/mta-sts.txt ");
    let (status, body) = match answer {
        Some(Answer::Policy(body)) if well_known => (200, body),
        Some(Answer::Status(status)) if well_known => (status, String::new()),
        Some(_) | None => (404, String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await?;
    Ok(())
}
