//! Test support shared by every integration test of relaygate.
//!
//! - [`sink`]: a scriptable in-process SMTP sink (the gateway's outbound peer).
//! - [`gateway`]: runs the real `relaygate` binary as a child process.
//! - [`smtp_client`]: a raw SMTP client for exact-byte submission tests.
//! - [`redis`]: real `redis-server` processes (one server or a 3-node cluster) and
//!   the store CLI.
//! - [`pki`]: a throw-away CA and a server certificate for `localhost`/127.0.0.1 (and
//!   other names, e.g. `mx.dst.test`).
//! - [`https`]: an HTTPS server for MTA-STS policies.
//! - [`oauth_server`]: an HTTPS OAuth2 token endpoint (issues numbered tokens, or
//!   refuses), and the sink's bearer-token AUTH in [`sink_auth`].
//! - [`metrics`]: reading samples from the gateway's Prometheus text.
//! - [`tls_lab`]: DNS with AD bits, a test CA, a policy server and a DSN sink for the
//!   DANE / MTA-STS / REQUIRETLS scenarios.
//! - [`dovecot`]: a private Dovecot submission server, the real SASL peer outside the
//!   project.
//!
//! This module holds the small shared pieces: deadlines, polling with a deadline
//! (never a bare sleep as synchronisation), temp dirs and a python3 runner.

#![allow(dead_code)]

pub mod dkim;
pub mod dovecot;
pub mod gateway;
pub mod https;
pub mod metrics;
pub mod microsocks;
pub mod oauth_server;
pub mod pki;
pub mod redis;
pub mod sink;
pub mod sink_auth;
pub mod smtp_client;
pub mod tls_lab;

use std::future::Future;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncWrite};

/// How often [`wait_until`] and friends re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A byte stream that can be plain TCP or TLS; used by the sink and the client so
/// one session loop survives STARTTLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A deadline `secs` seconds from now.
pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Polls `cond` until it holds or `deadline` passes (then an error naming `what`).
pub async fn wait_until(
    deadline: Instant,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<()> {
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Like [`wait_until`] for an asynchronous, fallible check. An `Err` from the check
/// counts as "not yet" (the last one is reported on timeout), so this can poll a
/// gateway that is still starting up.
pub async fn wait_until_async<F, Fut>(deadline: Instant, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => bail!("timed out waiting for {what} (last error: {e:#})"),
                None => bail!("timed out waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating a temp dir")
}

/// Runs `python3 -c SCRIPT ARGS...` with a 60 s limit and returns its output.
pub async fn run_python(script: &str, args: &[&str]) -> Result<Output> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c").arg(script).args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("python3 did not finish within 60 s")?
        .context("running python3")?;
    Ok(out)
}

/// The value of the first header `name` (case-insensitive) in the header block of
/// `data`, unfolded (continuation lines joined with a single space).
pub fn header_value(data: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None; // end of the header block
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if !field.trim().eq_ignore_ascii_case(name) || field.starts_with([' ', '\t']) {
            continue;
        }
        let mut value = value.trim().to_string();
        while let Some(next) = lines.peek() {
            if next.starts_with([' ', '\t']) {
                value.push(' ');
                value.push_str(next.trim());
                lines.next();
            } else {
                break;
            }
        }
        return Some(value);
    }
    None
}

/// `true` when `text` mentions "line N" for exactly this N (not "line N0").
pub fn mentions_line(text: &str, n: usize) -> bool {
    let needle = format!("line {n}");
    text.match_indices(&needle).any(|(i, m)| {
        !text[i + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Lists the `*.toml` files in `dir` and its subdirectories, sorted.
pub fn toml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
