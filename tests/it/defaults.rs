//! The embedded default config (issue 16 item 1): `relaygate serve` started in an empty
//! directory runs on the default compiled into the binary and says so in its first log
//! line; `relaygate config print-default` writes it out, identical to
//! `config/relaygate.toml`.
//!
//! The default listens on 127.0.0.1:2525 and 127.0.0.1:9025 (fixed ports: it is the
//! shipped default); this is the only test that uses them.

use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::support::gateway::{binary, run_relaygate};
use crate::support::temp_dir;

#[tokio::test]
async fn print_default_is_the_shipped_file() -> Result<()> {
    let dir = temp_dir("relaygate-defaults-")?;
    let out = run_relaygate(&["config", "print-default"], dir.path()).await?;
    ensure!(out.code == Some(0), "{out}");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/relaygate.toml"
    ))?;
    ensure!(
        out.stdout == shipped,
        "print-default differs from config/relaygate.toml"
    );
    Ok(())
}

#[tokio::test]
async fn serve_in_an_empty_directory_runs_on_the_embedded_default() -> Result<()> {
    let dir = temp_dir("relaygate-defaults-")?;
    let mut child = tokio::process::Command::new(binary())
        .arg("serve")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            seen.push(line.clone());
            if line.contains("relaygate ready") {
                return anyhow::Ok(true);
            }
        }
        anyhow::Ok(false)
    })
    .await;
    ensure!(
        matches!(ready, Ok(Ok(true))),
        "not ready on the embedded default:\n{}",
        seen.join("\n")
    );
    ensure!(
        seen.first().is_some_and(|l| l.contains("embedded default")),
        "the first log line does not say which config: {seen:?}"
    );
    // It answers on the default's submission port, and made its data dir here.
    let mut s = tokio::net::TcpStream::connect("127.0.0.1:2525").await?;
    let mut greeting = [0u8; 64];
    let n =
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut greeting)).await??;
    ensure!(
        greeting[..n].starts_with(b"220 "),
        "{:?}",
        String::from_utf8_lossy(&greeting[..n])
    );
    ensure!(dir.path().join("data").is_dir(), "no ./data");
    if let Some(pid) = child.id() {
        // SIGTERM: a clean stop.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(40), child.wait()).await??;
    ensure!(status.success(), "serve exited with {status}");
    Ok(())
}
