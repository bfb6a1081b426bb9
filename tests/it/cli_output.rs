//! The command line when its standard output fails: a clear error and status 1 for a
//! full disk, a quiet stop with SIGPIPE's status when the reader has gone (`| head`),
//! never a panic. Both paths of the CLI's output are covered: whole text
//! (`config print-default`) and lines (`check-config`). `sendmail`, which speaks
//! sysexits(3), says `EX_IOERR` (74) in both cases.

use std::process::Stdio;

use anyhow::{ensure, Result};

use crate::support::gateway::run_relaygate_into;
use crate::support::temp_dir;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relaygate.toml");

/// A command, and its status with a full disk and with a closed pipe.
const CASES: [(&[&str], i32, i32); 3] = [
    (&["config", "print-default"], 1, 141),
    (&["check-config", "-c", SHIPPED], 1, 141),
    (&["sendmail", "--help"], 74, 74),
];

#[tokio::test]
async fn a_full_disk_is_an_error_not_a_panic() -> Result<()> {
    let dir = temp_dir("relaygate-cli-output-")?;
    for (args, status, _) in CASES {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
        let out = run_relaygate_into(args, dir.path(), Stdio::from(full)).await?;
        ensure!(!out.stderr.contains("panicked"), "{args:?}: {out}");
        ensure!(out.code == Some(status), "{args:?}: {out}");
        ensure!(
            out.stderr.contains("cannot write to standard output")
                && out.stderr.contains("No space left"),
            "{args:?}: {out}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_reader_that_went_away_stops_it_quietly() -> Result<()> {
    let dir = temp_dir("relaygate-cli-output-")?;
    for (args, _, status) in CASES {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = run_relaygate_into(args, dir.path(), Stdio::from(writer)).await?;
        ensure!(
            out.stderr.is_empty() && out.code == Some(status),
            "{args:?}: {out}"
        );
    }
    Ok(())
}
