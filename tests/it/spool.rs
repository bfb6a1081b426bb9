//! The spool tools against the real gateway (issue 11): a record damaged in the middle
//! of an older segment stops the start with the segment and offset; `spool check` lists
//! it; `spool salvage` keeps every other record, and the gateway delivers them.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};

use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::{Mode, Sink};
use crate::support::smtp_client::SmtpClient;
use crate::support::{deadline, wait_until};

fn message(id: &str) -> Vec<u8> {
    format!(
        "From: <app@src.test>\r\nTo: <user@dst.test>\r\nSubject: {id}\r\nMessage-ID: <{id}@client.test>\r\n\r\nbody-of {id}\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_older_segment_refuses_start_and_salvage_recovers_the_rest() -> Result<()> {
    let sink = Sink::start().await?;
    sink.set_mode(Mode::RejectAll("451 4.3.0 not now".into()));
    let mut gw = Gateway::start(GatewayOptions {
        first_retry: "1h".into(),
        ..GatewayOptions::relay_to(sink.port())
    })
    .await?;
    let mut c = SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("client.test").await?;
    for n in 1..=5 {
        let id = format!("sv-{n}");
        let r = c
            .send_message("app@src.test", &["user@dst.test"], &message(&id))
            .await?;
        ensure!(r.code == 250, "{id}: {r}");
    }
    c.quit().await?;
    // A restart, so the segment holding the five is no longer the newest.
    gw.restart().await?;
    gw.stop().await?;

    let spool = gw.data_dir().join("spool");
    let mut segments: Vec<_> = std::fs::read_dir(&spool)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let first = segments.first().context("no segment")?.clone();
    let mut data = std::fs::read(&first)?;
    let needle = b"body-of sv-3";
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .context("message 3 in the first segment")?;
    data[at + 3] ^= 0x20;
    std::fs::write(&first, &data)?;

    let err = gw
        .restart()
        .await
        .err()
        .context("the start must be refused")?;
    let text = format!("{err:#}");
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    ensure!(text.contains(&name) && text.contains("offset"), "{text}");
    ensure!(text.contains("spool salvage"), "{text}");

    let check = gw.run_cli(&["spool", "check"]).await?;
    ensure!(
        check.code == Some(1),
        "spool check on a damaged spool: {check}"
    );
    ensure!(check.stdout.contains("DAMAGE"), "{check}");
    let salvage = gw.run_cli(&["spool", "salvage"]).await?;
    ensure!(salvage.code == Some(0), "salvage: {salvage}");
    let check = gw.run_cli(&["spool", "check"]).await?;
    ensure!(check.code == Some(0), "spool check after salvage: {check}");

    gw.restart().await?;
    sink.set_mode(Mode::Normal);
    let out = gw.run_cli(&["queue", "retry", "--all"]).await?;
    ensure!(out.code == Some(0), "retry: {out}");
    let want: HashSet<String> = [1, 2, 4, 5].iter().map(|n| format!("sv-{n}")).collect();
    wait_until(deadline(30), "the four intact messages", || {
        let got: HashSet<String> = sink
            .messages()
            .iter()
            .filter_map(|m| m.header("Subject"))
            .map(|s| s.trim().to_string())
            .collect();
        want.iter().all(|id| got.contains(id))
    })
    .await
    .with_context(|| sink.summary())?;
    ensure!(
        !sink
            .messages()
            .iter()
            .any(|m| m.header("Subject").is_some_and(|s| s.trim() == "sv-3")),
        "the damaged message cannot come back"
    );
    gw.stop().await?;
    Ok(())
}
