//! A full disk under the real gateway (issue 11): `data_dir` on a small tmpfs that the
//! test mounts (tests run as root; without the right to mount, these tests say so and
//! pass, and the fault-injecting spool tests in `src/spool/tests.rs` still cover every
//! errno). Space and inodes are filled with files; every message body carries its own
//! id, so a message delivered with another's body shows.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context, Result};
use tokio::task::JoinSet;

use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::{Mode, Received, Sink};
use crate::support::smtp_client::SmtpClient;
use crate::support::{deadline, wait_until};

const FROM: &str = "app@src.test";
const TO: &str = "user@dst.test";

/// A tmpfs mounted on a temp dir; unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options`; `None` when this process may not mount.
    fn mount(options: &str) -> Result<Option<Tmpfs>> {
        let dir = crate::support::temp_dir("relaygate-tmpfs-")?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Ok(Some(Tmpfs { _dir: dir, path })),
            _ => Ok(None),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills the file system under `dir`: space first, then every free inode. Returns the
/// files made, to delete them later.
fn fill(dir: &Path) -> Vec<PathBuf> {
    use std::io::Write;
    let mut made = Vec::new();
    let space = dir.join("fill-space");
    if let Ok(mut f) = std::fs::File::create(&space) {
        made.push(space);
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        // Whatever is left, byte-sized.
        while f.write_all(&chunk[..512]).is_ok() {}
        while f.write_all(&chunk[..1]).is_ok() {}
    }
    for i in 0.. {
        let p = dir.join(format!("fill-inode-{i}"));
        if std::fs::File::create(&p).is_err() {
            break;
        }
        made.push(p);
    }
    made
}

fn free(files: &[PathBuf]) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// A message whose headers and body both name `id`, padded to about `size` bytes.
fn message(id: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: {id}\r\nMessage-ID: <{id}@client.test>\r\n\r\nbody-of {id}\r\n"
    );
    while m.len() < size {
        m.push_str(&format!(
            "padding line of {id} ........................................\r\n"
        ));
    }
    m.into_bytes()
}

/// The id a delivered message claims in its Message-ID, checked against its body.
fn delivered_id(m: &Received) -> Result<String> {
    let mid = m.header("Message-ID").context("no Message-ID")?;
    let id = mid
        .trim()
        .trim_start_matches('<')
        .split('@')
        .next()
        .unwrap_or_default()
        .to_string();
    let text = m.text();
    ensure!(
        text.contains(&format!("\r\nbody-of {id}\r\n")),
        "message {id} was delivered with another body: {:?}",
        &text[..text.len().min(300)]
    );
    let foreign = text
        .lines()
        .filter_map(|l| l.strip_prefix("padding line of "))
        .find(|rest| !rest.starts_with(&format!("{id} ")));
    ensure!(
        foreign.is_none(),
        "message {id} carries another message's lines"
    );
    Ok(id)
}

async fn spool_health(gw: &Gateway) -> Result<serde_json::Value> {
    let r = gw.http_get("/healthz").await?;
    Ok(serde_json::from_slice(&r.body)?)
}

async fn submit_one(addr: std::net::SocketAddr, id: &str, size: usize) -> Result<u16> {
    let mut c = SmtpClient::connect(addr).await?;
    c.ehlo("client.test").await?;
    let reply = c.send_message(FROM, &[TO], &message(id, size)).await?;
    c.quit().await?;
    Ok(reply.code)
}

/// Everything that got 250 arrives once the sink accepts, each with its own body; every
/// message refused with 451 stays absent. Returns the delivered ids with their counts.
async fn check_deliveries(
    sink: &Sink,
    acked: &HashSet<String>,
    refused: &HashSet<String>,
) -> Result<HashMap<String, usize>> {
    wait_until(
        deadline(90),
        "every acknowledged message at the sink",
        || {
            let got: HashSet<String> = sink
                .messages()
                .iter()
                .filter_map(|m| delivered_id(m).ok())
                .collect();
            acked.iter().all(|id| got.contains(id))
        },
    )
    .await
    .with_context(|| sink.summary())?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in sink.messages() {
        let id = delivered_id(&m)?;
        ensure!(!refused.contains(&id), "{id} got 451 but was delivered");
        *counts.entry(id).or_default() += 1;
    }
    Ok(counts)
}

/// The scenario: fill space and inodes, a 300 KB message gets 451, free the
/// space, two more get 250. All acknowledged messages arrive with their own bodies,
/// before and after a kill -9 restart; the refused one never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_gets_451_and_no_acked_body_is_lost_or_swapped() -> Result<()> {
    let Some(fs) = Tmpfs::mount("size=4m,nr_inodes=40")? else {
        eprintln!("diskfull: cannot mount a tmpfs here; covered by the spool's fault tests only");
        return Ok(());
    };
    let sink = Sink::start().await?;
    sink.set_mode(Mode::RejectAll("451 4.3.0 not now".into()));
    let mut gw = Gateway::start(GatewayOptions {
        data_dir: Some(fs.path.join("data")),
        first_retry: "1h".into(),
        ..GatewayOptions::relay_to(sink.port())
    })
    .await?;
    let addr = gw.submission_addr();
    ensure!(
        submit_one(addr, "msg-a", 2_000).await? == 250,
        "A before the disk fills"
    );

    let fillers = fill(&fs.path);
    ensure!(!fillers.is_empty(), "could not fill the tmpfs");
    let b = submit_one(addr, "msg-b", 300_000).await?;
    ensure!(b == 451, "B on a full disk got {b}, not 451");
    let b2 = submit_one(addr, "msg-b2", 1_000).await?;
    ensure!(b2 == 451, "B2 on a full disk got {b2}, not 451");
    let health = spool_health(&gw).await?;
    ensure!(
        health["spool"] == "degraded" && health["status"] == "degraded",
        "healthz while the disk is full: {health}"
    );

    free(&fillers);
    for id in ["msg-c", "msg-d"] {
        let code = submit_one(addr, id, 2_000).await?;
        ensure!(code == 250, "{id} after freeing the disk got {code}");
    }
    let health = spool_health(&gw).await?;
    ensure!(
        health["spool"] == "ok",
        "healthz after the disk has room again: {health}"
    );

    gw.kill9()?;
    sink.set_mode(Mode::Normal);
    gw.restart().await?;
    let out = gw.run_cli(&["queue", "retry", "--all"]).await?;
    ensure!(out.code == Some(0), "queue retry: {out}");
    let acked: HashSet<String> = ["msg-a", "msg-c", "msg-d"].map(String::from).into();
    let refused: HashSet<String> = ["msg-b", "msg-b2"].map(String::from).into();
    let counts = check_deliveries(&sink, &acked, &refused).await?;
    for id in &acked {
        ensure!(
            counts.get(id) == Some(&1),
            "{id} delivered {:?} times",
            counts.get(id)
        );
    }
    gw.stop().await?;
    Ok(())
}

/// 20 kill -9 cycles under load from 4 clients, with the disk full for one of them:
/// no acknowledged message is lost and none arrives with another's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_cycles_with_a_full_disk_lose_nothing() -> Result<()> {
    let Some(fs) = Tmpfs::mount("size=24m,nr_inodes=400")? else {
        eprintln!("diskfull: cannot mount a tmpfs here; covered by the spool's fault tests only");
        return Ok(());
    };
    const CYCLES: usize = 20;
    const CLIENTS: usize = 4;
    const FULL_CYCLE: usize = 10;
    let sink = Sink::start().await?;
    let mut gw = Gateway::start(GatewayOptions {
        data_dir: Some(fs.path.join("data")),
        ..GatewayOptions::relay_to(sink.port())
    })
    .await?;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut refused = HashSet::new();
    for cycle in 0..CYCLES {
        if cycle > 0 {
            gw.restart().await?;
        }
        let addr = gw.submission_addr();
        if cycle == FULL_CYCLE {
            let fillers = fill(&fs.path);
            for n in 0..5 {
                let id = format!("k{cycle}-full-{n}");
                match submit_one(addr, &id, 20_000).await? {
                    250 => {
                        acked.lock().unwrap().insert(id);
                    }
                    451 => {
                        refused.insert(id);
                    }
                    other => bail!("{id} on a full disk got {other}"),
                }
            }
            ensure!(!refused.is_empty(), "the full disk refused nothing");
            free(&fillers);
        }
        // Load until 40 more messages are acknowledged, then kill -9 mid-stream.
        let in_cycle = Arc::new(AtomicUsize::new(0));
        let mut clients = JoinSet::new();
        for client in 0..CLIENTS {
            let (acked, in_cycle) = (acked.clone(), in_cycle.clone());
            clients.spawn(async move {
                let Ok(mut c) = SmtpClient::connect(addr).await else {
                    return;
                };
                if c.ehlo("client.test").await.is_err() {
                    return;
                }
                for n in 0..200 {
                    let id = format!("k{cycle}-c{client}-{n}");
                    match c.send_message(FROM, &[TO], &message(&id, 1_500)).await {
                        Ok(r) if r.code == 250 => {
                            acked.lock().unwrap().insert(id);
                            in_cycle.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
        }
        wait_until(
            deadline(30),
            "40 acknowledged messages in this cycle",
            || in_cycle.load(Ordering::SeqCst) >= 40,
        )
        .await?;
        gw.kill9()?;
        while clients.join_next().await.is_some() {}
    }
    gw.restart().await?;
    let acked = acked.lock().unwrap().clone();
    ensure!(acked.len() >= CYCLES * 40, "only {} acked", acked.len());
    check_deliveries(&sink, &acked, &refused).await?;
    gw.stop().await?;
    Ok(())
}
