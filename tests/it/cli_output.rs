//! The command line when its standard output fails: a clear error and status 1 for a
//! full disk, a quiet stop with SIGPIPE's status when the reader has gone (`| head`),
//! never a panic. Both paths of the CLI's output are covered: whole text
//! (`config print-default`) and lines (`check-config`). `sendmail`, which speaks
//! sysexits(3), says `EX_IOERR` (74) in both cases.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::support::gateway::binary;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relaygate.toml");

/// Runs relaygate with `stdout` as its standard output; returns its status and stderr.
async fn run_into(args: &[&str], stdout: Stdio) -> Result<(Option<i32>, String)> {
    // Not `output()`: tokio's would replace `stdout` with a pipe of its own.
    let child = tokio::process::Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running relaygate {args:?}"))?;
    let out = child.wait_with_output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .with_context(|| format!("relaygate {args:?} did not finish within 60 s"))?
        .with_context(|| format!("running relaygate {args:?}"))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A command, and its status with a full disk and with a closed pipe.
const CASES: [(&[&str], i32, i32); 3] = [
    (&["config", "print-default"], 1, 141),
    (&["check-config", "-c", SHIPPED], 1, 141),
    (&["sendmail", "--help"], 74, 74),
];

#[tokio::test]
async fn a_full_disk_is_an_error_not_a_panic() -> Result<()> {
    for (args, status, _) in CASES {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
        let (code, stderr) = run_into(args, Stdio::from(full)).await?;
        ensure!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        ensure!(code == Some(status), "{args:?}: status {code:?}: {stderr}");
        ensure!(
            stderr.contains("cannot write to standard output") && stderr.contains("No space left"),
            "{args:?}: {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_reader_that_went_away_stops_it_quietly() -> Result<()> {
    for (args, _, status) in CASES {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let (code, stderr) = run_into(args, Stdio::from(writer)).await?;
        ensure!(stderr.is_empty(), "{args:?}: {stderr}");
        ensure!(code == Some(status), "{args:?}: status {code:?}");
    }
    Ok(())
}
